"""What keeps a run from being lost: atomic checkpoints and a stop at the first non-finite loss."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from handprop.cli import UserError


class Diverged(UserError, RuntimeError):
    """Training produced a NaN or infinite loss; the message says at which step and why."""

    def __init__(
        self,
        step: int,
        loss: float,
        last_finite: float | None,
        lr: float | None,
        checkpoint_note: str = "",
    ) -> None:
        last = f"{last_finite:.6g}" if last_finite is not None else "none yet"
        lr_txt = f" (lr={lr:g})" if lr is not None else ""
        super().__init__(
            f"training diverged at step {step}: loss is {loss} (last finite loss: {last}); likely "
            f"causes: learning rate too high{lr_txt}, or unscaled inputs "
            f"(data.preprocessing=none).{checkpoint_note}"
        )
        self.step, self.loss, self.last_finite, self.lr = step, loss, last_finite, lr


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to ``<name>.tmp``, then renamed over ``<name>``: a crash leaves
    the old checkpoint or the new one, never half of one."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, tmp)
        # The rename is atomic: a killed process leaves the old file or the new one. (No
        # fsync: it doubled the cost of a checkpoint, and power loss is not what this guards.)
        os.replace(tmp, path)


class DivergenceGuard(L.Callback):
    """Stops training at the first step whose loss is NaN or infinite.

    The module hands over each chunk's per-step losses as floats (``last_step_values``, one
    host read per chunk, not per step); the step named in the error is the first bad one.
    """

    def __init__(self) -> None:
        self.last_finite: float | None = None

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        values = pl_module.last_step_values
        first_step = trainer.global_step - len(values)
        for i, v in enumerate(values):
            if not math.isfinite(v):
                lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
                raise Diverged(first_step + i, v, self.last_finite, lr)
            self.last_finite = v
