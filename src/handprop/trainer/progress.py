"""Progress of a training run on the terminal: the epoch, updates per second, the latest
training and validation loss and the time left.

On a terminal it is a live ``tqdm`` bar; elsewhere (CI, a log file) one plain line every
``every_seconds``, so a log is not flooded. The bar counts updates, not Lightning steps.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import lightning as L
from tqdm import tqdm


class Progress(L.Callback):
    """Show training progress. ``every_seconds``: the interval of plain lines (no terminal)."""

    def __init__(self, every_seconds: float = 10.0, stream: TextIO | None = None) -> None:
        self.every_seconds = every_seconds
        self.stream = stream or sys.stderr
        self.bar: tqdm | None = None
        self.total = 0
        self._start = self._last_line = 0.0
        self._start_updates = 0
        self.trainer: L.Trainer | None = None
        self.module: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        per_epoch = trainer.train_dataloader.num_batches()
        self.total = per_epoch * trainer.max_epochs
        if pl_module.max_steps > 0:
            self.total = min(self.total, pl_module.max_steps)
        self._start = self._last_line = time.monotonic()
        self._start_updates = pl_module.updates  # a resumed run starts part-way
        self.trainer, self.module = trainer, pl_module
        pl_module.after_update = self.tick  # per update, not per chunk of updates
        if self.stream.isatty():
            self.bar = tqdm(
                total=self.total,
                initial=pl_module.updates,
                unit="upd",
                file=self.stream,
                dynamic_ncols=True,
                leave=False,
            )

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        if not trainer.is_global_zero:
            return
        if self.bar is not None:  # the chunk's losses, read once per chunk
            self.bar.set_description(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")
            self.bar.set_postfix(self._losses(pl_module), refresh=False)

    def tick(self) -> None:
        """After each update: the bar moves (tqdm redraws at most 10 times a second), or a
        plain line once ``every_seconds`` have passed."""
        if self.bar is not None:
            self.bar.update(self.module.updates - self.bar.n)
        elif time.monotonic() - self._last_line >= self.every_seconds:
            self._line(self.trainer, self.module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(pl_module, "after_update", None) == self.tick:  # the bar is gone
            pl_module.after_update = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, err: Any) -> None:
        self.on_train_end(trainer, pl_module)

    def _losses(self, pl_module: Any) -> dict[str, str]:
        out = {}
        if pl_module.last_losses:
            out["loss"] = f"{pl_module.last_losses[-1]:.4g}"
        if "val/loss" in pl_module.epoch_metrics:
            out["val_loss"] = f"{pl_module.epoch_metrics['val/loss']:.4g}"
        return out

    def _line(self, trainer: L.Trainer, pl_module: Any) -> None:
        now = time.monotonic()
        done = pl_module.updates
        rate = (done - self._start_updates) / max(now - self._start, 1e-9)
        left = (self.total - done) / rate if rate > 0 else float("nan")
        losses = "  ".join(f"{k} {v}" for k, v in self._losses(pl_module).items())
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  update {done}/{self.total}"
            f"  {rate:.0f} upd/s  {losses}  {tqdm.format_interval(now - self._start)} elapsed,"
            f" ~{tqdm.format_interval(left) if left == left else '?'} left",
            file=self.stream,
            flush=True,
        )
        self._last_line = now
