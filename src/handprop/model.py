"""The LightningModule: a handprop MLP, a handprop loss, torchmetrics, optimizer and schedule.

The task (regression / binary / multiclass) picks the loss, the rule that turns the network's
output ``z`` into a prediction ``ŷ``, and the metrics. Preprocessing fitted on the training
split is kept in buffers, so a checkpoint alone can evaluate and predict in original units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import Tensor

from handprop import functional as F
from handprop.nn import MLP

TASKS = ("regression", "binary", "multiclass")

LOSSES: dict[str, Callable[..., Tensor]] = {
    "mse": F.mse_loss,
    "quadratic": F.quadratic_cost,
    "bce": F.binary_cross_entropy_with_logits,
    "cross_entropy": F.cross_entropy,
}

METRICS = {
    "regression": ("mse", "mae", "r2"),
    "binary": ("accuracy", "f1", "auroc"),
    "multiclass": ("accuracy", "f1_macro"),
}


def _metric(task: str, name: str, num_classes: int) -> torchmetrics.Metric:
    tm = torchmetrics
    if task == "regression":
        return {
            "mse": tm.MeanSquaredError,
            "mae": tm.MeanAbsoluteError,
            "r2": tm.R2Score,
        }[name]()
    if task == "binary":
        return {
            "accuracy": tm.classification.BinaryAccuracy,
            "f1": tm.classification.BinaryF1Score,
            "auroc": tm.classification.BinaryAUROC,
        }[name]()
    return {
        "accuracy": lambda: tm.classification.MulticlassAccuracy(num_classes, average="micro"),
        "f1_macro": lambda: tm.classification.MulticlassF1Score(num_classes, average="macro"),
    }[name]()


class InverseSqrtLR(torch.optim.lr_scheduler.LambdaLR):
    """``η_t = η / √(t + 1)``: the notes' 1/√t decay, ``t`` counted in epochs (or steps)."""

    def __init__(self, optimizer: torch.optim.Optimizer, last_epoch: int = -1) -> None:
        super().__init__(optimizer, lambda t: 1.0 / math.sqrt(t + 1), last_epoch)


class HandpropModule(L.LightningModule):
    """A handprop MLP trained on one task.

    Args:
        task: ``regression`` | ``binary`` | ``multiclass``.
        in_features, out_features: network input / output widths.
        hidden, activation, init: the MLP (see :class:`handprop.nn.MLP`).
        loss: key of :data:`LOSSES` (the task's default when None).
        optimizer: a partial ``torch.optim`` constructor taking the parameters.
        scheduler: a partial scheduler constructor taking the optimizer, or None.
        scheduler_interval: ``epoch`` or ``step``; scheduler_monitor: metric for plateau.
        x_shift, x_scale, y_shift, y_scale: the fitted preprocessing, ``x' = (x − shift)/scale``.
        feature_names, target_name, class_names: for prediction files.
    """

    def __init__(
        self,
        task: str,
        in_features: int,
        out_features: int,
        hidden: list[int],
        activation: str = "relu",
        init: str = "auto",
        loss: str | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        scheduler_monitor: str | None = None,
        x_shift: list[float] | None = None,
        x_scale: list[float] | None = None,
        y_shift: float = 0.0,
        y_scale: float = 1.0,
        feature_names: list[str] | None = None,
        target_name: str = "target",
        class_names: list[str] | None = None,
        config: dict | None = None,
        gradient_clip_val: float | None = None,
        fused: bool = True,
    ) -> None:
        super().__init__()
        # The loop over optimiser steps is ours (training_step), so that one Lightning step can
        # carry many updates; Lightning still counts every one of them in global_step.
        self.automatic_optimization = False
        if task not in TASKS:
            raise ValueError(f"task={task!r} is not one of {', '.join(TASKS)}")
        # Everything but the callables goes into the checkpoint; the full config too (for
        # eval / predict and the HParams view).
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.task = task
        self.net = MLP(in_features, list(hidden), out_features, activation, init)
        loss = loss or {"regression": "mse", "binary": "bce", "multiclass": "cross_entropy"}[task]
        self.loss_fn = LOSSES[loss]
        self.optimizer_fn, self.scheduler_fn = optimizer, scheduler
        self.scheduler_interval, self.scheduler_monitor = scheduler_interval, scheduler_monitor
        self.gradient_clip_val, self.fused = gradient_clip_val, fused
        self.last_step_values: list[float] = []  # the last chunk's losses, read by the guard
        self._raw_steps = False
        nx = in_features
        self.register_buffer("x_shift", torch.tensor(x_shift or [0.0] * nx, dtype=torch.float32))
        self.register_buffer("x_scale", torch.tensor(x_scale or [1.0] * nx, dtype=torch.float32))
        self.register_buffer("y_shift", torch.tensor(float(y_shift)))
        self.register_buffer("y_scale", torch.tensor(float(y_scale)))
        self.num_classes = len(class_names or []) or out_features
        self.metric_names = METRICS[task]
        self.val_metrics, self.test_metrics = self._metrics(), self._metrics()

    def _metrics(self) -> torchmetrics.MetricCollection:
        return torchmetrics.MetricCollection(
            {m: _metric(self.task, m, self.num_classes) for m in self.metric_names}
        )

    # ---- the network and the prediction rule ----------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Network output ``z`` (logits for classification, scaled value for regression)."""
        return self.net(x)

    def to_prediction(self, z: Tensor) -> Tensor:
        """``ŷ`` from ``z``: original units (regression), P(class 1) (binary), class
        probabilities via softmax (multiclass)."""
        if self.task == "regression":
            return z * self.y_scale + self.y_shift
        if self.task == "binary":
            return F.sigmoid(z)
        return F.softmax(z, dim=-1)

    def _metric_inputs(self, z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.task == "regression":
            return (
                self.to_prediction(z).squeeze(-1),
                (y * self.y_scale + self.y_shift).squeeze(-1),
            )
        if self.task == "binary":
            return self.to_prediction(z).squeeze(-1), y.squeeze(-1).long()
        return self.to_prediction(z), y

    @torch.no_grad()
    def predict_raw(self, x_raw: Tensor) -> Tensor:
        """Predictions ``ŷ`` for raw (unscaled) feature rows (N, in_features)."""
        x = (x_raw.to(self.x_shift) - self.x_shift) / self.x_scale
        return self.to_prediction(self(x))

    # ---- steps --------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """One or more optimiser steps: ``batch`` is ``(x, y)`` or a list of them (a chunk).

        Each ``(x, y)`` is one update, exactly as a Lightning step of its own would make it:
        forward, ``C``, backward, optional gradient clipping, ``W ← W − η ∂C/∂W`` (or the
        optimizer's rule), and the LR scheduler's step when it counts steps. Per-step losses
        stay on the device and go to the loggers once per chunk, each with its global step.
        """
        batches = batch if isinstance(batch, list) else [batch]
        opt = self.optimizers()
        sched = self.lr_schedulers() if self.scheduler_interval == "step" else None
        first_step = self.trainer.global_step
        losses = torch.empty(len(batches), device=self.device)
        total, rows = torch.zeros((), device=self.device), 0
        raw = self._raw_steps
        for i, (x, y) in enumerate(batches):
            loss = self.loss_fn(self(x), y)
            if raw:
                # The fast path: the update itself, without Lightning's per-step hook dispatch
                # (its callbacks' backward/optimizer hooks); _on_before_step/_on_after_step
                # keep Lightning's step count, so global_step is every update.
                opt.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.gradient_clip_val:
                    torch.nn.utils.clip_grad_norm_(self.parameters(), self.gradient_clip_val)
                opt._on_before_step()
                opt.optimizer.step()
                opt._on_after_step()
            else:
                opt.zero_grad(set_to_none=True)
                self.manual_backward(loss)
                if self.gradient_clip_val:
                    self.clip_gradients(opt, gradient_clip_val=self.gradient_clip_val)
                opt.step()
            if sched is not None:
                sched.step()
            loss = loss.detach()
            losses[i] = loss
            total += loss * len(x)
            rows += len(x)
        # One device-to-host copy per chunk, shared by the loggers and the divergence guard.
        self.last_step_values = losses.tolist()
        self._log_steps(self.last_step_values, first_step)
        # sync_dist: under DDP the epoch values are over every rank's rows, not rank 0's alone
        self.log(
            "train/epoch_loss",
            total / rows,
            on_step=False,
            on_epoch=True,
            batch_size=rows,
            sync_dist=True,
        )
        return losses[-1]

    def on_fit_start(self) -> None:
        # Raw optimiser steps where nothing needs Lightning's wrappers: several steps per
        # call, one process (DDP syncs inside its backward hooks) and no loss scaling.
        dm = getattr(self.trainer, "datamodule", None)
        k = getattr(dm, "steps_per_call", 1) or 1
        self._raw_steps = (
            k > 1 and self.trainer.world_size == 1 and "16-mixed" not in str(self.trainer.precision)
        )

    def _log_steps(self, values: list[float], first_step: int) -> None:
        """``train/loss`` of every step, written in bulk with its true global step."""
        if not self.loggers or self.trainer.sanity_checking:
            return
        for i, v in enumerate(values):
            for lg in self.loggers:
                lg.log_metrics({"train/loss": v}, step=first_step + i)

    def on_train_epoch_end(self) -> None:
        # Manual optimisation: epoch-interval schedulers step here, after validation, as
        # Lightning would step them (plateau reads the monitored metric).
        if self.scheduler_interval != "epoch" or self.scheduler_fn is None:
            return
        sched = self.lr_schedulers()
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            value = self.trainer.callback_metrics.get(self.scheduler_monitor)
            if value is not None:
                sched.step(value)
        else:
            sched.step()

    def _eval_step(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        z = self(x)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(*self._metric_inputs(z, y))
        self.log(
            f"{stage}/loss",
            self.loss_fn(z, y),
            batch_size=len(x),
            prog_bar=stage == "val",
            sync_dist=True,  # DDP: the loss over all ranks' shards (checkpoint, early stopping)
        )

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _log_metrics(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        # torchmetrics already reduced these over DDP ranks; sync_dist only marks them as such
        self.log_dict({f"{stage}/{k}": v for k, v in metrics.compute().items()}, sync_dist=True)
        metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """Loss and metrics of one whole split (scaled tensors as the data module gives)."""
        z = self(x)
        out = {"loss": float(self.loss_fn(z, y))}
        coll = self._metrics().to(z.device)
        coll.update(*self._metric_inputs(z, y))
        out.update({k: float(v) for k, v in coll.compute().items()})
        return out

    # ---- optimisation --------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        if self.optimizer_fn is None:
            raise RuntimeError("HandpropModule was built without an optimizer")
        opt = None
        if self.fused:  # one fused kernel per step where torch has one (Adam, AdamW, SGD, …)
            try:
                opt = self.optimizer_fn(self.parameters(), fused=True)
            except (RuntimeError, TypeError, ValueError):
                opt = None
        if opt is None:
            opt = self.optimizer_fn(self.parameters())
        if self.scheduler_fn is None:
            return opt
        # Stepped by this module (training_step / on_train_epoch_end), plateau included.
        sched = {"scheduler": self.scheduler_fn(opt), "interval": self.scheduler_interval}
        return {"optimizer": opt, "lr_scheduler": sched}
