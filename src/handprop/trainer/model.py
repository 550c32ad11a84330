"""The LightningModule: a network, a task, and the notes' training loop.

Every optimiser update happens in :meth:`HandpropModule.update`, the one place that computes
``C`` and ``∂C/∂W`` and applies ``W ← W − η ∂C/∂W`` (or the optimizer's rule). A Lightning
training step carries a chunk of such updates (``steps_per_call``): each update, scheduler
step and clip is still per update and each early-stopping decision per epoch, but Lightning's
per-step machinery runs once per chunk. The module counts its updates itself (:attr:`updates`, saved in every
checkpoint): it is the x axis of every logged scalar and what ``max_steps`` limits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from handprop.trainer.errors import Diverged
from handprop.trainer.gradients import ByAutograd, ByRecursion
from handprop.trainer.task import Task
from handprop.trainer.trained import NETWORKS as TRAINED_NETWORKS
from handprop.trainer.trained import is_mode_dependent

#: The networks a config can name (:data:`handprop.trainer.trained.NETWORKS`). A GAN trains by
#: its own alternating updates: :class:`handprop.trainer.gan.GANModule`.
NETWORKS = TRAINED_NETWORKS


class InverseSqrtLR(torch.optim.lr_scheduler.LambdaLR):
    """``η_t = η / √(t + 1)``: the notes' 1/√t decay, ``t`` counted in epochs (or steps)."""

    def __init__(self, optimizer: torch.optim.Optimizer, last_epoch: int = -1) -> None:
        super().__init__(optimizer, lambda t: 1.0 / math.sqrt(t + 1), last_epoch)


#: The networks whose δ recursion is written out: ``backprop=recursion`` (and ``auto``) runs it.
WRITTEN_OUT = ("mlp", "autoencoder", "gan")


class HandpropModule(L.LightningModule):
    """A handprop network trained on one task.

    Args:
        network: the network's name in :data:`NETWORKS` and its keyword arguments, e.g.
            ``{"name": "mlp", "in_features": 4, "hidden_features": [5], "out_features": 1}``.
        task: :class:`~handprop.trainer.task.Task`'s keyword arguments (name, cost, preprocessing).
        columns: ``features``, ``target`` and ``classes`` names, for prediction files.
        config: the run's whole config (evaluation, prediction and the HParams view use it).
        optimizer: a partial ``torch.optim`` constructor taking the parameters.
        scheduler: a partial LR-scheduler constructor taking the optimizer, or None.
        scheduler_interval: ``epoch`` or ``step``.
        monitor: the metric that plateau scheduling reads (``val/loss``, or
            ``train/epoch_loss`` when there is no validation split).
        gradient_clip_val: clip ``‖∂C/∂W‖`` to this norm before each update (None: never).
        max_steps: stop after this many updates (−1: no limit).
        log_lr: log the learning rate at the start of each epoch (tag ``lr``).
        backprop: ``recursion`` (:meth:`MLP.backprop`, the δ recursion written out),
            ``autograd`` (``C.backward()`` through the Functions) or ``auto``: the recursion
            where it applies (an MLP, one process, float32), autograd elsewhere.
        monitors: :class:`~handprop.trainer.monitors.Monitors`' keyword arguments (``every_n``,
            ``histograms``) to log per-layer gradients, δ, update ratios and dead units
            every ``every_n`` updates; None: off.
    """

    #: The name of the cost each update returns: the tags ``train/loss``, ``train/epoch_loss``.
    LOSS = "loss"
    #: Further costs an update records, one value each into ``chunk_costs[name]`` (e.g. a
    #: GAN's discriminator cost): read to the host with the loss in one copy per chunk, checked
    #: for divergence, logged as ``train/<name>`` and averaged as ``train/epoch_<name>``.
    LOGGED_COSTS: tuple[str, ...] = ()

    def __init__(
        self,
        network: dict[str, Any],
        task: dict[str, Any],
        columns: dict[str, Any] | None = None,
        config: dict | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        monitor: str = "val/loss",
        gradient_clip_val: float | None = None,
        max_steps: int = -1,
        backprop: str = "auto",
        log_lr: bool = True,
        monitors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # The updates are ours (training_step runs many per Lightning step).
        self.automatic_optimization = False
        # Everything but the callables goes into the checkpoint, so it alone rebuilds the model.
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        kwargs = {k: v for k, v in network.items() if k != "name"}
        self.net = NETWORKS[network["name"]](**kwargs)
        # Whether the network computes differently while training (dropout): validation switches
        # it to eval mode then (checked once here: nothing to do per epoch for the others).
        self.mode_dependent = is_mode_dependent(self.net)
        self.task = Task(**task)
        self.columns = columns or {}
        self.optimizer_fn, self.scheduler_fn = optimizer, scheduler
        self.scheduler_interval, self.monitored_metric = scheduler_interval, monitor
        self.gradient_clip_val, self.max_steps = gradient_clip_val, max_steps
        self.backprop, self.log_lr = backprop, log_lr
        self.monitors = None
        if monitors:  # (imported here: it loads TensorBoard, which the rest does not need)
            from handprop.trainer.monitors import Monitors

            self.monitors = Monitors(**monitors)
        # Where ∂C/∂W comes from: the δ recursion or autograd (decided in on_fit_start).
        self.gradients: ByRecursion | ByAutograd = ByAutograd()
        # (parameter, its gradient's view into the one flat gradient) when the optimizer steps
        # one flat tensor (see contiguous); empty otherwise.
        self.gradient_views: list[tuple[Tensor, Tensor]] = []
        self.updates = 0  # optimiser updates so far
        self.epochs_done = 0  # epochs finished so far (Lightning's epoch is an index mid-run)
        # Called after every update when set: the progress bar's tick (handprop.trainer.progress),
        # which must not wait for the end of a chunk of updates.
        self.after_update: Callable[[], None] | None = None
        self.last_losses: list[float] = []  # the last chunk's per-update losses
        self.chunk_costs: dict[str, list[Tensor]] = {name: [] for name in self.LOGGED_COSTS}
        self.last_costs: dict[str, list[float]] = {}  # the last chunk's, by name (LOGGED_COSTS)
        self._costs_sum: dict[str, float] = dict.fromkeys(self.LOGGED_COSTS, 0.0)
        self._costs_steps = 0
        self.last_finite: float | None = None  # the last update's loss, for a divergence report
        self.epoch_metrics: dict[str, float] = {}  # the last epoch's train/val values
        self._epoch_sum, self._epoch_rows = 0.0, 0
        # Lightning steps (chunks of updates) done in the epoch under way, 0 between epochs: a
        # run resumed from a checkpoint written mid-epoch (a stop on a signal) starts its data
        # there (handprop.trainer.data.TensorBatches), with the epoch's running sums saved beside it.
        self.epoch_steps = 0

    # ---- the network and the prediction rule -------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Network output ``z`` (logits for classification, scaled value for regression)."""
        return self.net(x)

    @torch.no_grad()
    def predict_raw(self, x_raw: Tensor) -> Tensor:
        """Predictions ``ŷ`` for raw (unscaled) feature rows (N, in_features)."""
        return self.task.prediction(self(self.task.scale_inputs(x_raw)))

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """Loss and metrics of one whole split (scaled tensors, as the data module gives), the
        network in eval mode (no dropout)."""
        if self.mode_dependent and self.net.training:
            self.net.eval()
            try:
                return self.task.metrics(self(x), y)
            finally:
                self.net.train()
        return self.task.metrics(self(x), y)

    # ---- one update -----------------------------------------------------------------------------
    def update(self, x: Tensor, y: Tensor) -> Tensor:
        """One step of gradient descent on the batch ``(x, y)``: ``C``, then ``∂C/∂W`` for every
        weight, then ``W ← W − η ∂C/∂W`` (or the optimizer's rule) and the step-interval
        schedule. Returns ``C``, detached."""
        opt = self.optimizers()
        # Every monitors.every_n-th update is watched (None: not this one, or monitors off).
        watch = self.monitors and self.monitors.watch(self.net, self.updates, not self.by_recursion)
        loss = self.gradients.step(
            self,
            opt,
            self.net,
            recursion=lambda: self.net.backprop(x, y, self.task.cost, watch),
            cost=lambda: self.task.cost(self(x), y),
        )
        if watch:
            watch.close(self.loggers)
        if self.scheduler_interval == "step" and self.scheduler_fn is not None:
            self.lr_schedulers().step()
        self.updates += 1
        return loss

    # ---- Lightning's hooks ----------------------------------------------------------------------
    def has_recursion(self) -> bool:
        """Whether the network's δ recursion is written out (``net.backprop``)."""
        return hasattr(self.net, "backprop")

    def uses_recursion(self) -> bool:
        """Whether the updates run the δ recursion (``backprop``: ``recursion``, or ``auto``
        where it applies: a network that has one, in one process, at full precision). False
        outside a Trainer, where nothing runs the updates."""
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached (configure_optimizers called by hand)
            return False
        strategy_ok = trainer.world_size == 1  # DDP syncs inside autograd's backward
        precision_ok = str(trainer.precision) in ("32", "32-true", "64", "64-true")
        recursion_ok = self.has_recursion() and strategy_ok and precision_ok
        if self.backprop == "recursion" and not recursion_ok:
            raise RuntimeError(
                "backprop=recursion needs a network with the δ recursion written out "
                f"({', '.join(WRITTEN_OUT)}) in one process at full precision; use backprop=auto"
            )
        return self.backprop == "recursion" or (self.backprop == "auto" and recursion_ok)

    @property
    def by_recursion(self) -> bool:
        """Whether the updates run the δ recursion written out (:class:`ByRecursion`)."""
        return self.gradients.written_out

    def on_fit_start(self) -> None:
        self.gradients = ByRecursion() if self.uses_recursion() else ByAutograd()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``nn.Module.zero_grad``, except that a gradient that is a view into the flat one the
        optimizer steps (see :func:`contiguous`) is zeroed in place, never set to None: the δ
        recursion would then write into new tensors that the optimizer never sees. (Lightning
        calls this before training.)"""
        super().zero_grad(set_to_none)
        for p, g in self.gradient_views:
            p.grad = g.zero_()

    def learning_rate(self) -> float:
        """The (first) optimizer's current rate."""
        opt = self.optimizers()
        return (opt[0] if isinstance(opt, list) else opt).param_groups[0]["lr"]

    def count_updates(self) -> None:
        """Make Lightning's ``trainer.global_step`` the number of updates made, as it is where
        Lightning runs each optimizer step itself: the updates step the optimizer directly
        (see :meth:`update`), so Lightning's manual-optimisation step counter is set here, once
        per chunk. Stock callbacks that key on it (``ModelCheckpoint``, ``LearningRateMonitor``)
        and the checkpoint's ``global_step`` then count updates (docs/architecture.md)."""
        steps = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.total
        steps.ready = steps.completed = self.updates

    def on_train_epoch_start(self) -> None:
        self._epoch_sum, self._epoch_rows, self.epoch_steps = 0.0, 0, 0
        self._costs_sum, self._costs_steps = dict.fromkeys(self.LOGGED_COSTS, 0.0), 0
        if self.log_lr:  # the rate this epoch starts with
            self.log_scalars({"lr": self.learning_rate()})

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """A chunk of updates: ``batch`` is a list of ``(x, y)`` (or one ``(x, y)``)."""
        batches = batch if isinstance(batch, list) else [batch]
        first = self.updates
        losses, rows = [], []
        for costs in self.chunk_costs.values():
            costs.clear()
        for x, y in batches:
            losses.append(self.update(x, y))
            rows.append(len(x))
            if self.after_update is not None:
                self.after_update()
            if self.updates == self.max_steps:
                self.trainer.should_stop = True
                break
        self.count_updates()
        # One device-to-host copy per chunk: the divergence check, the loggers, the progress bar.
        series = [torch.stack(losses), *(torch.stack(c) for c in self.chunk_costs.values())]
        values, *others = (
            torch.stack(series).tolist() if self.LOGGED_COSTS else [series[0].tolist()]
        )
        self.last_losses, self.last_costs = (
            values,
            dict(zip(self.LOGGED_COSTS, others, strict=True)),
        )
        for i, v in enumerate(values):
            if not math.isfinite(v):
                lr = self.learning_rate()
                raise Diverged(first + i, v, values[i - 1] if i else self.last_finite, lr)
        for costs in others:
            for i, v in enumerate(costs):
                if not math.isfinite(v):
                    raise Diverged(first + i, v, None, self.learning_rate())
        self.last_finite = values[-1]
        self._epoch_sum += sum(v * n for v, n in zip(values, rows, strict=False))
        self._epoch_rows += sum(rows)
        for name, costs in self.last_costs.items():
            self._costs_sum[name] += sum(costs)
        self._costs_steps += len(values)
        if self.loggers:  # every log_every_n_steps-th update's costs (each costs tens of µs)
            every = self.trainer.log_every_n_steps
            tags = [f"train/{self.LOSS}", *(f"train/{n}" for n in self.LOGGED_COSTS)]
            for i in range(-first % every, len(values), every):
                row = [values[i], *(c[i] for c in others)]
                self.log_scalars(dict(zip(tags, row, strict=True)), step=first + i)
        self.epoch_steps += 1

    def on_train_epoch_end(self) -> None:
        """The epoch's mean training loss, validation, then the epoch-interval schedule."""
        self.epochs_done += 1
        self.epoch_steps = 0  # a checkpoint written from here on starts the next epoch afresh
        epoch_loss = self._epoch_sum / max(self._epoch_rows, 1)
        if self.trainer.world_size > 1:  # over every rank's rows, not rank 0's alone
            t = torch.tensor(epoch_loss, device=self.device)
            epoch_loss = float(self.trainer.strategy.reduce(t, reduce_op="mean"))
        row = {"epoch": self.current_epoch, f"train/epoch_{self.LOSS}": epoch_loss}
        for name, total in self._costs_sum.items():  # (per update; LOGGED_COSTS run in one process)
            row[f"train/epoch_{name}"] = total / max(self._costs_steps, 1)
        dm = self.trainer.datamodule
        if dm.has("val"):
            values = self.evaluate(*dm.split("val"))
            row |= {f"val/{k}": v for k, v in values.items()}
        self.epoch_metrics |= row
        # For the callbacks that monitor a metric (early stopping), straight into the dict they
        # read: self.log costs ~0.7 ms a call (its result collection walks the metric's state),
        # more than a small network's whole validation.
        self.trainer.callback_metrics.update({k: torch.tensor(v) for k, v in row.items()})
        self.log_scalars(row)
        if self.scheduler_interval == "epoch" and self.scheduler_fn is not None:
            sched = self.lr_schedulers()
            for s in sched if isinstance(sched, list) else [sched]:
                if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    s.step(row[self.monitored_metric])
                else:
                    s.step()

    def log_scalars(self, values: dict[str, float], step: int | None = None) -> None:
        """Write scalars to every logger at ``step`` (default: the updates made so far)."""
        step = self.updates if step is None else step
        for logger in self.loggers:
            logger.log_metrics(values, step=step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["epochs_done"] = self.epochs_done
        # Where the epoch under way stands (all zero between epochs): what a resume mid-epoch
        # needs to go on as if never stopped.
        checkpoint["epoch_state"] = {
            "steps": self.epoch_steps,
            "loss_sum": self._epoch_sum,
            "rows": self._epoch_rows,
            "costs_sum": dict(self._costs_sum),
            "costs_steps": self._costs_steps,
            "last_finite": self.last_finite,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.updates = int(checkpoint["global_step"])
        self.epochs_done = int(checkpoint.get("epochs_done", checkpoint.get("epoch", 0)))
        state = checkpoint.get("epoch_state")
        if state is not None:
            self.epoch_steps = int(state["steps"])
            self._epoch_sum, self._epoch_rows = float(state["loss_sum"]), int(state["rows"])
            self._costs_sum = {k: float(v) for k, v in state["costs_sum"].items()}
            self._costs_steps = int(state["costs_steps"])
            self.last_finite = state["last_finite"]

    # ---- optimisation ----------------------------------------------------------------------------
    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The configured optimizer over ``params``: one fused kernel per step where torch
        has one (Adam, AdamW, SGD)."""
        try:
            return self.optimizer_fn(params, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return self.optimizer_fn(params)

    def configure_optimizers(self) -> Any:
        if self.optimizer_fn is None:
            raise RuntimeError("HandpropModule was built without an optimizer")
        params = list(self.net.parameters())
        if self.uses_recursion():  # (configure_optimizers runs before on_fit_start)
            whole = contiguous(params)
            self.gradient_views = [(p, p.grad) for p in params]
            params = [whole]
        opt = self.make_optimizer(params)
        if self.scheduler_fn is None:
            return opt
        # Stepped by this module (update / on_train_epoch_end), plateau included.
        sched = {"scheduler": self.scheduler_fn(opt), "interval": self.scheduler_interval}
        return {"optimizer": opt, "lr_scheduler": sched}


def contiguous(params: list[torch.nn.Parameter]) -> torch.nn.Parameter:
    """One Parameter that holds every one of ``params``, values kept; each of them becomes a
    view into it, and so does its gradient (which the δ recursion writes in place).

    The optimizer then steps one tensor instead of one per weight matrix and bias vector: its
    Python overhead is per tensor, ~10 µs of a small MLP's ~150 µs update. The arithmetic is
    elementwise, so the updates are the same. Not for autograd's path: it replaces gradients.
    """
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat[offset : offset + n].view_as(p)  # the module keeps its Parameters
        p.grad = grad[offset : offset + n].view_as(p)
        offset += n
    whole = torch.nn.Parameter(flat)  # flat's storage, not a copy
    whole.grad = grad
    return whole
