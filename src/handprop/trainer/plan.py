"""The plan of a run: every value derived from the config and the data, computed once and
passed down to what is built from it (the data module, the module, the trainer).

Nothing reads a derived value back from an object it built: the data module, the module and the
trainer are each given the plan's values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from handprop.trainer.data import split_sizes
from handprop.trainer.task import MONITOR


@dataclass(frozen=True)
class Plan:
    """What a run derives from its config and data, decided in one place and passed down."""

    task: str  # regression | binary | multiclass | reconstruction | generation
    cost: str | None  # a key of task.COSTS; None = the task's default
    world_size: int  # processes (DDP) taking part in each update
    num_train: int  # training rows (the split is data.val_fraction / data.test_fraction)
    has_val: bool  # whether there is a validation split
    batch_size: int  # rows per update on each process (gd.batch_size; null: the whole split)
    rows_per_step: int  # rows the data module hands over per update: a GAN's d_steps batches
    global_batch: int  # rows per update over all processes: the linear scaling rule's B
    lr_scale: float  # B / gd.base_batch_size with gd.lr_scaling, else 1
    lr: float  # optimizer.lr × lr_scale
    monitor: str  # val/loss (a GAN: val/energy_distance), or train/epoch_loss without val
    steps_per_call: int  # updates per Lightning step
    max_steps: int  # stop after this many updates (-1: no limit)
    scheduler: Callable[..., Any] | None  # optimizer → LR schedule (None: a constant rate)
    scheduler_interval: str  # step | epoch: when the schedule steps
    monitors: dict[str, Any] | None  # monitors=on: every_n, histograms; None: off
    log_lr: bool  # log the rate at each epoch's start


#: Updates per Lightning step on the fast path, chosen by measurement (see the README).
DEFAULT_STEPS_PER_CALL = 64


def world_size(cfg: DictConfig) -> int:
    """Processes that share each update: devices × nodes under a DDP strategy, else 1."""
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    if "ddp" in str(cfg.trainer.strategy) and isinstance(devices, int):
        return devices * nodes
    return 1


def steps_per_call(cfg: DictConfig) -> int:
    """Updates per Lightning step: ``steps_per_call``, where ``auto`` is 64, or 1 where
    Lightning must see each batch: DDP (its gradient sync runs in each backward) and the debug
    modes (one batch per step)."""
    if cfg.steps_per_call != "auto":
        return int(cfg.steps_per_call)
    if world_size(cfg) > 1 or cfg.debug.fast_dev_run or cfg.debug.overfit_batches:
        return 1
    return DEFAULT_STEPS_PER_CALL


def make_plan(cfg: DictConfig, num_rows: int, task: str, cost: str | None) -> Plan:
    """The plan of ``cfg`` over a data set of ``num_rows`` rows, for ``task`` and ``cost``."""
    world = world_size(cfg)
    d = cfg.data
    num_train, num_val, _ = split_sizes(num_rows, d.val_fraction, d.test_fraction)
    batch = cfg.gd.batch_size or num_train // world  # null: batch gradient descent
    rows_per_step = batch
    if cfg.model.name == "gan" and cfg.gd.batch_size:  # one update: d_steps batches of rows
        rows_per_step = batch * cfg.model.d_steps
    scale = batch * world / cfg.gd.base_batch_size if cfg.gd.lr_scaling else 1.0
    sched = cfg.scheduler
    return Plan(
        task=task,
        cost=cost,
        world_size=world,
        num_train=num_train,
        has_val=num_val > 0,
        batch_size=batch,
        rows_per_step=rows_per_step,
        global_batch=batch * world,
        lr_scale=scale,
        lr=float(cfg.optimizer.lr) * scale,  # a B-times larger batch takes a B-times larger step
        monitor=f"val/{MONITOR.get(task, 'loss')}" if num_val else "train/epoch_loss",
        steps_per_call=steps_per_call(cfg),
        max_steps=int(cfg.trainer.max_steps),
        scheduler=instantiate(sched.fn) if sched.fn is not None else None,
        scheduler_interval=sched.interval,
        monitors=(
            {"every_n": cfg.monitors.every_n, "histograms": cfg.monitors.histograms}
            if cfg.monitors.enabled
            else None
        ),
        log_lr=bool(cfg.callbacks.lr_monitor),
    )
