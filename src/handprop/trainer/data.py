"""A LightningDataModule over in-memory tensors: split, scale (fitted on train only; see
:mod:`handprop.trainer.splits`), batch.

Batches are index slices of tensors that already live on the training device: one gather per
batch, no per-sample collation. The training order is a fresh seeded permutation each epoch
(``shuffle``), and under DDP each rank takes its own shard of that permutation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor

from handprop.trainer.datasets import Table
from handprop.trainer.splits import (  # noqa: F401 — (PREPROCESSING, Scaler, split_*: also here)
    PREPROCESSING,
    Scaler,
    Splits,
    split_indices,
    split_sizes,
)


class TensorBatches:
    """An epoch of mini-batches over in-memory tensors ``(X, y)``.

    ``batch_size`` rows per batch (the plan's: the whole set for batch gradient descent). With ``shuffle`` the order
    is ``randperm`` seeded by ``(seed, epoch)``, so a run is reproducible and resumable.

    With ``steps_per_call=K`` each item is a list of up to K consecutive batches, gathered with
    one index per chunk and split into views: the model then makes K optimiser steps in one
    Lightning step (see :class:`handprop.trainer.model.HandpropModule`). ``len()`` counts items.
    ``start_fn`` gives the items to skip at the start of an iteration: a run resumed mid-epoch
    goes on from there, in the same epoch's order.
    """

    def __init__(
        self,
        X: Tensor,
        y: Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        epoch_fn: Callable[[], int] | None = None,
        steps_per_call: int | None = None,
        start_fn: Callable[[], int] | None = None,
    ) -> None:
        self.X, self.y = X, y
        self.epoch_fn = epoch_fn  # e.g. the trainer's current epoch, so a resumed run matches
        # The items of this epoch already trained when an iteration starts: nonzero only for a
        # run resumed mid-epoch, which goes on with the rest of the same epoch's order.
        self.start_fn = start_fn
        self.batch_size = batch_size
        self.shuffle, self.seed = shuffle, seed
        self.steps_per_call = steps_per_call
        self.epoch = 0

    def _shard(self) -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _rows(self) -> int:
        rank, world = self._shard()
        return len(self.X) // world if world > 1 else len(self.X)

    def num_batches(self) -> int:
        """Optimiser steps per epoch (on this rank)."""
        return -(-self._rows() // self.batch_size)

    def __len__(self) -> int:
        k = self.steps_per_call
        return self.num_batches() if k is None else -(-self.num_batches() // k)

    def _order(self) -> Tensor | None:
        """This epoch's row order on this rank (None: the stored order, whole set)."""
        n = len(self.X)
        order = None
        if self.shuffle:
            epoch = self.epoch_fn() if self.epoch_fn is not None else self.epoch
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            order = torch.randperm(n, generator=g).to(self.X.device)
        self.epoch += 1
        rank, world = self._shard()
        if world > 1:  # each rank: its own stride of the shared permutation, disjoint shards
            # of equal size (the last n % world rows of this epoch's order sit out): a rank
            # with one batch more would wait forever in DDP's gradient all-reduce.
            order = (order if order is not None else torch.arange(n, device=self.X.device))[
                : n - n % world
            ][rank::world]
        return order

    def _take(self, order: Tensor | None, start: int, stop: int) -> tuple[Tensor, Tensor]:
        if order is None:
            return self.X[start:stop], self.y[start:stop]
        idx = order[start:stop]
        return self.X[idx], self.y[idx]

    def __iter__(self) -> Iterator[Any]:
        order = self._order()
        bs, nb = self.batch_size, self.num_batches()
        n_rows = self._rows()
        k = self.steps_per_call
        start = self.start_fn() if self.start_fn is not None else 0
        if k is None:
            for i in range(start, nb):
                yield self._take(order, i * bs, min((i + 1) * bs, n_rows))
            return
        for c in range(start * k, nb, k):
            start, stop = c * bs, min((c + k) * bs, n_rows)
            X, y = self._take(order, start, stop)  # one gather for K batches
            yield list(zip(X.split(bs), y.split(bs), strict=True))


class TabularDataModule(Splits, L.LightningDataModule):
    """:class:`~handprop.trainer.splits.Splits` (the seeded split, the scaling fitted on the
    training rows only, each split's tensors) that serves training batches as index slices of
    device-resident tensors.

    Validation and test rows are not batched: the model evaluates a whole split at once
    (:meth:`split`), on every process under DDP, so the metrics are exact and no row is
    dropped to give the ranks equal shards.
    """

    def __init__(
        self,
        table: Table,
        batch_size: int = 32,
        preprocessing: str = "standardize",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        shuffle: bool = True,
        seed: int = 0,
        steps_per_call: int = 1,
        reconstruct: bool = False,
        pooled_scaling: bool = False,
    ) -> None:
        L.LightningDataModule.__init__(self)
        Splits.__init__(
            self,
            table,
            preprocessing,
            val_fraction,
            test_fraction,
            seed,
            reconstruct,
            pooled_scaling,
        )
        self.batch_size, self.shuffle = batch_size, shuffle
        self.steps_per_call = steps_per_call
        self._train_batches: TensorBatches | None = None

    def _target_device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.strategy.root_device
        return self._device

    def transfer_batch_to_device(self, batch: Any, device: torch.device, idx: int) -> Any:
        # The batches are slices of tensors already on the device (train_dataloader);
        # Lightning's default walks a chunk's 2·K tensors to move them, ~5 ms a chunk.
        return batch

    def train_dataloader(self) -> TensorBatches:
        self._device = self._target_device()
        X, y = self.split("train")
        if self._train_batches is None or self._train_batches.X is not X:
            trainer = getattr(self, "trainer", None)
            epoch_fn = (lambda: trainer.current_epoch) if trainer is not None else None
            start_fn = (
                (lambda: getattr(trainer.lightning_module, "epoch_steps", 0))
                if trainer is not None
                else None
            )
            self._train_batches = TensorBatches(
                X,
                y,
                self.batch_size,
                self.shuffle,
                self.seed,
                epoch_fn=epoch_fn,
                steps_per_call=self.steps_per_call,
                start_fn=start_fn,
            )
        return self._train_batches
