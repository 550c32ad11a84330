"""Checkpoints, all of them: the policy (:class:`Checkpoints`: the best weights kept in memory,
``last.ckpt`` and ``best.ckpt`` written on a wall-clock interval and at the end), atomic writes
(:class:`AtomicCheckpointIO`: never half a file), safe reading (``torch.load(weights_only=True)``,
:func:`~handprop.trainer.trained.read_checkpoint`) and loading a trained module back
(:func:`load_module`, through the registry of modules). ``handprop-eval`` and
``handprop-predict`` load a checkpoint without Lightning: :mod:`handprop.trainer.trained`.
A stop on Ctrl-C or SIGTERM saves the whole training state first (:class:`StopOnSignal`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from handprop.trainer.errors import Stopped
from handprop.trainer.files import writing
from handprop.trainer.gan import GANModule
from handprop.trainer.model import HandpropModule
from handprop.trainer.stops import reclaim_stop_signals, stop_requested
from handprop.trainer.trained import REQUIRED, read_checkpoint  # noqa: F401 — loaded from here too

#: The networks trained by a module of their own (the default: HandpropModule).
MODULES: dict[str, type[HandpropModule]] = {"gan": GANModule}


def module_class(network: str) -> type[HandpropModule]:
    """The LightningModule that trains network ``network`` (a key of ``NETWORKS``)."""
    return MODULES.get(network, HandpropModule)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to ``<name>.tmp``, then renamed over ``<name>``: a crash leaves
    the old checkpoint or the new one, never half of one. A failed write (a full disk) removes
    the ``.tmp`` and raises a :class:`~handprop.trainer.errors.MachineError` naming the checkpoint."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with writing(path, tmp):  # a failed write: no .tmp left, one line naming the path
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:  # a file object: torch then passes on the OSError
                torch.save(checkpoint, fh)
            # The rename is atomic: a killed process leaves the old file or the new one. (No
            # fsync: it doubled the cost of a checkpoint, and power loss is not what this guards.)
            os.replace(tmp, path)


class Checkpoints(Checkpoint):
    """``best.ckpt`` and ``last.ckpt`` in ``dirpath``, for microseconds per epoch.

    * The best weights (lowest ``monitor``) are copied in memory when they improve, and
      :meth:`restore_best` puts them back for the final evaluation. No file is written then.
    * Both files are written together by :meth:`save`: at the end of an epoch once
      ``every_seconds`` have passed since training started or since the last write, when
      training ends, and on a stop asked for by a signal (SIGTERM, Ctrl-C). ``last.ckpt`` is
      the whole training state (weights, optimizer, schedules, callbacks, loops) to resume
      from; ``best.ckpt`` holds the best weights so far (rewritten only when they changed since
      the last write). A run of ``T`` seconds so writes each file at most ``1 + T /
      every_seconds`` times, and a kill (SIGKILL, a crash, a power cut) loses at most
      ``every_seconds`` plus one epoch of training. Resuming is exact: the best weights so far
      travel inside ``last.ckpt``, so after a resume ``best.ckpt`` and the final report still
      hold the best weights seen before the kill (as of the last write).

    A subclass of Lightning's ``Checkpoint``, so it runs after the module's epoch-end hook
    (which computes ``monitor``). Lightning's ``ModelCheckpoint`` writes on every improvement,
    ~5 ms each, more than a small network's whole epoch.
    """

    def __init__(self, dirpath: str | Path, monitor: str, every_seconds: float = 10.0) -> None:
        self.dirpath, self.monitor, self.every_seconds = Path(dirpath), monitor, every_seconds
        self.best_score = float("inf")
        self.best_epoch, self.best_step = -1, -1
        self.best_weights: dict[str, torch.Tensor] | None = None
        self._best_unsaved = False
        self._last_write = -float("inf")

    @property
    def best_path(self) -> Path:
        return self.dirpath / "best.ckpt"

    @property
    def last_path(self) -> Path:
        return self.dirpath / "last.ckpt"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_write = time.monotonic()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        value = pl_module.epoch_metrics[self.monitor]
        if value < self.best_score:  # NaN never improves
            self.best_score, self.best_epoch = value, trainer.current_epoch
            self.best_step = pl_module.updates
            self.best_weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            self._best_unsaved = True
        due = time.monotonic() - self._last_write >= self.every_seconds
        if trainer.world_size > 1:  # every rank must take part in a save: rank 0's clock decides
            due = trainer.strategy.broadcast(due, src=0)
        if due:
            self.save(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.fast_dev_run:
            self.save(trainer, pl_module)

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write both files now: ``best.ckpt`` (when the best weights changed since the last
        write; the file on disk holds them otherwise) and ``last.ckpt``, the state to resume
        from. Call it between updates (an epoch's end, a chunk's end, a stop on a signal), where
        the training state is whole; every DDP rank must call it."""
        if self._best_unsaved and self.best_weights is not None:
            best = {
                "state_dict": self.best_weights,
                "hyper_parameters": dict(pl_module.hparams),
                "epoch": self.best_epoch,
                "global_step": self.best_step,
                "pytorch-lightning_version": L.__version__,
            }
            trainer.strategy.save_checkpoint(best, self.best_path)
            self._best_unsaved = False
        trainer.save_checkpoint(self.last_path)
        self._last_write = time.monotonic()

    def restore_best(self, pl_module: L.LightningModule) -> bool:
        """Load the best weights into ``pl_module``; False when there are none."""
        if self.best_weights is None:
            return False
        pl_module.load_state_dict(self.best_weights)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "best_weights": self.best_weights,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict["best_score"]
        self.best_epoch, self.best_step = state_dict["best_epoch"], state_dict["best_step"]
        self.best_weights = state_dict["best_weights"]


def load_module(path: str | Path) -> HandpropModule:
    """The trained :class:`HandpropModule` in a checkpoint (a
    :class:`~handprop.trainer.gan.GANModule` for a GAN), in eval mode on the CPU."""

    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    model = module_class(hp["network"]["name"])(**hp)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


class StopOnSignal(Checkpoint):
    """A stop asked for by SIGINT or SIGTERM (:func:`handprop.trainer.stops.stop_requested`): at the end
    of the current chunk of updates (a Lightning step), ``last.ckpt`` is written and
    :class:`~handprop.trainer.errors.Stopped` raised. The checkpoint is the whole training state, as
    :class:`Checkpoints` writes it (``best.ckpt`` with it when the best weights changed),
    plus where the epoch stands (the module's ``epoch_steps`` and running sums), so that
    ``ckpt_path=last`` resumes exactly: the same updates on the same batches.

    When that chunk is the epoch's last, the stop waits for the epoch's end (validation, the
    epoch-interval schedule, early stopping), where Lightning's own resume is exact; when
    training ends there anyway, it ends as usual. Under DDP every rank stops at the same step
    when any of them was asked.

    A subclass of Lightning's ``Checkpoint``, so its epoch-end hook runs after the module's and
    after :class:`Checkpoints`'.
    """

    def __init__(self, last_path: str | Path, checkpoints: Checkpoints | None = None) -> None:
        self.last_path, self.checkpoints = Path(last_path), checkpoints

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        reclaim_stop_signals()  # Lightning's own SIGTERM handler would stop mid-step

    def _requested(self, trainer: L.Trainer) -> int | None:
        signum = stop_requested()
        if trainer.world_size > 1:  # every rank stops at the same step, if any rank was asked
            # (one all-reduce of one number per step, as Lightning's own SIGTERM check)
            if trainer.strategy.reduce_boolean_decision(signum is not None, all=False):
                return signum or signal.SIGTERM
            return None
        return signum

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if trainer.should_stop or i + 1 >= trainer.num_training_batches:
            return  # training ends here, or the epoch's end comes next: stop there
        signum = self._requested(trainer)
        if signum is not None:
            self.stop(trainer, pl_module, signum)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = (
            trainer.max_epochs is not None and 0 < trainer.max_epochs <= trainer.current_epoch + 1
        )
        if trainer.should_stop or last:
            return  # the last epoch: training ends as usual
        signum = self._requested(trainer)
        if signum is not None:
            self.stop(trainer, pl_module, signum)

    def stop(self, trainer: L.Trainer, pl_module: L.LightningModule, signum: int) -> None:
        """Write ``last.ckpt`` (and ``best.ckpt`` when due), then raise ``Stopped``."""
        if self.checkpoints is not None:
            self.checkpoints.save(trainer, pl_module)
        else:
            trainer.save_checkpoint(self.last_path)
        raise Stopped(signum, pl_module.updates, self.last_path)
