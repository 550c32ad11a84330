"""A LightningDataModule over in-memory tensors: split, scale (fitted on train only), batch.

Batches are index slices of tensors that already live on the training device: one gather per
batch, no per-sample collation. The training order is a fresh seeded permutation each epoch
(``shuffle``), and under DDP each rank takes its own shard of that permutation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor

from handprop.trainer.datasets import DataError, Table

PREPROCESSING = ("standardize", "normalize", "none")


@dataclass
class Scaler:
    """``x' = (x − shift) / scale`` per column: the notes' standardisation
    (shift = μ, scale = σ) or min-max normalisation (shift = min, scale = max − min).

    ``pooled``: one shift and scale for all the columns, from all their values: for an image's
    pixels, which must keep their brightness relative to each other (a filter slides over
    all of them; a near-constant border pixel standardised on its own turns a rare stroke into
    a value of ~50)."""

    shift: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, method: str, pooled: bool = False) -> Scaler:
        if method not in PREPROCESSING:
            raise DataError(
                f"data.preprocessing={method!r} is not one of {', '.join(PREPROCESSING)}"
            )
        if method == "none":
            return cls(np.zeros(x.shape[1]), np.ones(x.shape[1]))
        if pooled:  # the statistics of all the values, in every column
            one = cls.fit(x.reshape(-1, 1), method)
            return cls(np.full(x.shape[1], one.shift[0]), np.full(x.shape[1], one.scale[0]))
        if method == "standardize":
            shift, scale = x.mean(0), x.std(0)
        else:
            shift, scale = x.min(0), x.max(0) - x.min(0)
        const = np.flatnonzero(scale == 0)
        if const.size:
            # A constant column carries no information; scale 1 keeps it finite (all zeros).
            scale = scale.copy()
            scale[const] = 1.0
        return cls(shift, scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.shift) / self.scale


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


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Rows in the train, val and test splits of ``n`` rows."""
    for key, f in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if not 0 <= f < 1:
            raise DataError(f"{key}={f} must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise DataError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} leaves "
            "no training rows; their sum must be below 1"
        )
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    n_train = n - n_val - n_test
    if n_train < 1 or (val_fraction > 0 and n_val < 1) or (test_fraction > 0 and n_test < 1):
        raise DataError(
            f"too few rows ({n}) for the splits val={val_fraction:g}, test={test_fraction:g}: "
            "each split needs at least one row; add rows or change the fractions"
        )
    return n_train, n_val, n_test


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / val / test row indices (:func:`split_sizes` of them)."""
    n_train, n_val, _ = split_sizes(n, val_fraction, test_fraction)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]


class TabularDataModule(L.LightningDataModule):
    """Splits a :class:`~handprop.trainer.datasets.Table`, fits the scaler on the training rows only,
    and serves training batches as index slices of device-resident tensors.

    ``pooled_scaling``: one shift and scale for all the columns (:class:`Scaler`'s ``pooled``),
    for the networks that slide the same weights over every pixel (as image pipelines normalise
    per channel, not per pixel).

    Regression targets are standardised too (``y_scaler``); the model maps predictions back
    to the original units for metrics and prediction. Validation and test rows are not
    batched: the model evaluates a whole split at once (:meth:`split`), on every process
    under DDP, so the metrics are exact and no row is dropped to give the ranks equal shards.

    ``reconstruct``: the target of each row is the row itself (an autoencoder's), ``y is X``.
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
        super().__init__()
        self.reconstruct = reconstruct
        self.table = table
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.steps_per_call = steps_per_call
        idx = split_indices(len(table.y), val_fraction, test_fraction, seed)
        self.indices = dict(zip(("train", "val", "test"), idx, strict=True))
        train_x = table.X[self.indices["train"]]
        self.x_scaler = Scaler.fit(train_x, preprocessing, pooled=pooled_scaling)
        if table.task == "regression":
            ty = table.y[self.indices["train"]]
            self.y_scaler = Scaler(np.array([ty.mean()]), np.array([ty.std() or 1.0]))
        else:
            self.y_scaler = Scaler(np.zeros(1), np.ones(1))
        self._tensors: dict[str, tuple[Tensor, Tensor]] = {}
        self._device = torch.device("cpu")
        self._train_batches: TensorBatches | None = None

    # ---- shapes the model needs -------------------------------------------------------------
    @property
    def in_features(self) -> int:
        return self.table.in_features

    @property
    def out_features(self) -> int:
        return self.table.out_features

    @property
    def num_train(self) -> int:
        return len(self.indices["train"])

    def has(self, name: str) -> bool:
        """Whether split ``name`` has any rows (a fraction of 0 leaves it empty)."""
        return self.indices[name].size > 0

    # ---- tensors ------------------------------------------------------------------------------
    def split(self, name: str, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """Scaled ``(X, y)`` of one split as float32 tensors (y long for multiclass)."""
        device = torch.device(device) if device is not None else self._device
        key = name
        if key not in self._tensors or self._tensors[key][0].device != device:
            rows = self.indices[name]
            X = torch.as_tensor(self.x_scaler(self.table.X[rows]), dtype=torch.float32)
            X = X.to(device)
            y_np = self.table.y[rows]
            if self.reconstruct:
                y = X  # an autoencoder's target is its input: the same tensor
            elif self.table.task == "multiclass":
                y = torch.as_tensor(y_np, dtype=torch.long)
            elif self.table.task == "binary":
                y = torch.as_tensor(y_np, dtype=torch.float32).unsqueeze(1)
            else:
                y = torch.as_tensor(self.y_scaler(y_np[:, None]), dtype=torch.float32)
            self._tensors[key] = (X, y.to(device))
        return self._tensors[key]

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
