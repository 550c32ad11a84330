"""The learning-rate range test (``handprop-train lr_find=true``).

The notes say to start the learning rate high and decay it; this finds how high. Starting from
the run's own initial weights, data and optimizer, ``η`` grows exponentially from ``min_lr``
to ``max_lr`` over ``updates`` updates, one batch each, and every update's loss is recorded.
The loss first barely moves (``η`` too small), then falls, then blows up (``η`` too large). The
test stops when the smoothed loss exceeds ``stop_factor`` × its lowest value, or at the first
non-finite loss.

The suggested ``η`` lies halfway along the longest stretch over which the smoothed loss keeps
falling (fastai's ``valley`` rule, :func:`suggest`).

Lightning's own tuner (``Tuner.lr_find``) does not fit handprop's loop: it reads one loss per
Lightning step and changes ``η`` once per step, while handprop runs many updates per step and
counts them itself. So the test runs handprop's own loop: :meth:`HandpropModule.update` with a
step-interval schedule ``η_t = min_lr · (max_lr/min_lr)^{t/(updates−1)}``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig

from handprop.trainer.build import build, plan_run
from handprop.trainer.errors import ConfigError, Diverged
from handprop.trainer.files import write_json_atomic

#: The smoothing of the recorded loss: an exponential moving average, bias-corrected.
BETA = 0.98


@dataclass
class RangeTest:
    """What the test saw: ``lrs[i]`` was the learning rate of update ``i`` and ``losses[i]``
    its loss (before the update); ``smoothed`` the moving average; ``suggestion`` the
    suggested learning rate (None when the loss did not fall: see :func:`suggest`)."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    stopped: str  # why the test ended: "diverged", "loss rose" or "max_lr reached"
    lr_scale: float  # what gd.lr_scaling multiplies optimizer.lr by (the lrs are after it)


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """The bias-corrected exponential moving average of ``losses``."""
    avg, out = 0.0, []
    for i, v in enumerate(losses):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> float | None:
    """fastai's ``valley`` rule: the learning rate halfway along the longest valley of the
    smoothed loss, the valley being the longest stretch over which it keeps falling (the
    longest decreasing subsequence, measured back from its last point). That is where the
    loss falls steadily, well before its minimum, where ``η`` is already about to be too
    large. As fastai, the first 10 % of the updates (the average has seen few losses) and the
    last 5 (the blow-up) are left out. None when there are too few points, or the loss never
    fell over three of them."""
    skip = len(lrs) // 10
    lrs, smoothed = lrs[skip:-5], smoothed[skip:-5]
    n = len(smoothed)
    if n < 3:
        return None
    length, end = [1] * n, 0  # length[i]: the longest decreasing subsequence ending at i
    for i in range(1, n):
        for j in range(i):
            if smoothed[j] > smoothed[i]:
                length[i] = max(length[i], length[j] + 1)
        if length[i] > length[end]:
            end = i
    if length[end] < 3:
        return None
    start = max(end - length[end], 0)
    third = (end - start) / 3
    return lrs[start + int(third) + int(third / 2)]


class _Recorder(L.Callback):
    """Collects each update's loss; stops the test when the smoothed loss exceeds
    ``stop_factor`` × its lowest value."""

    def __init__(self, stop_factor: float) -> None:
        self.stop_factor, self.losses = stop_factor, []
        self.avg, self.best, self.rose = 0.0, float("inf"), False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        for v in pl_module.last_losses:
            self.losses.append(v)
            self.avg = BETA * self.avg + (1 - BETA) * v
            s = self.avg / (1 - BETA ** len(self.losses))
            self.best = min(self.best, s)
            if s > self.stop_factor * self.best:
                self.rose = trainer.should_stop = True


def range_test(
    cfg: DictConfig,
    run_dir: Path,
    min_lr: float = 1e-6,
    max_lr: float = 10.0,
    updates: int = 100,
    stop_factor: float = 4.0,
) -> RangeTest:
    """Run the range test on the run that ``cfg`` describes (same data, initial weights,
    batch size and optimizer; one process). Nothing is written to ``run_dir``'s logs."""
    table, planned = plan_run(cfg)
    if planned.world_size > 1:
        raise ConfigError(
            "lr_find runs in one process: run it without DDP (lr_find=only), then train with "
            "optimizer.lr=<the suggestion>"
        )
    ratio = max_lr / min_lr
    # The run's own plan, its rate swept: η = min_lr · ratio^(t / (updates − 1)) at update t,
    # one batch per Lightning step (the stop is exact), nothing logged.
    p = replace(
        planned,
        lr=min_lr,
        scheduler=functools.partial(
            torch.optim.lr_scheduler.LambdaLR,
            lr_lambda=lambda t: ratio ** (t / max(updates - 1, 1)),
        ),
        scheduler_interval="step",
        max_steps=updates,
        monitors=None,
        steps_per_call=1,
        log_lr=False,
    )
    dm, module = build(cfg, table, p)
    recorder = _Recorder(stop_factor)
    trainer = L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=cfg.trainer.precision,
        max_epochs=-1,
        logger=False,
        callbacks=[recorder],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic=cfg.trainer.deterministic,
    )
    stopped = "max_lr reached"
    try:
        trainer.fit(module, datamodule=dm)
    except Diverged:  # a non-finite loss: the test ends at the update before it
        stopped = "diverged"
    if recorder.rose:
        stopped = "loss rose"
    losses = recorder.losses
    smoothed = smooth(losses)
    lrs = [min_lr * ratio ** (t / max(updates - 1, 1)) for t in range(len(losses))]
    return RangeTest(lrs, losses, smoothed, suggest(lrs, smoothed), stopped, planned.lr_scale)


def plot(result: RangeTest, path: Path) -> Path:
    """Loss against learning rate (log scale), the smoothed curve and the suggestion."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, color="#bbbbbb", lw=1, label="loss of each update")
    ax.plot(result.lrs, result.smoothed, color="#1f77b4", lw=2, label="smoothed")
    if result.suggestion is not None:
        ax.axvline(
            result.suggestion,
            color="#d62728",
            ls="--",
            label=f"suggested lr {result.suggestion:.3g}",
        )
    ax.set_xscale("log")
    finite = [v for v in result.smoothed if math.isfinite(v)]
    if finite:  # the blow-up at the end would hide the rest
        lo, start = min(finite), finite[0]
        ax.set_ylim(lo - 0.1 * (start - lo + 1e-12), start + 0.5 * (start - lo + 1e-12))
    ax.set_xlabel("learning rate η (log scale)")
    ax.set_ylabel("training loss C")
    ax.set_title(f"Learning-rate range test ({len(result.lrs)} updates; {result.stopped})")
    ax.legend()
    fig.savefig(path, dpi=80)
    return path


def find(cfg: DictConfig, run_dir: Path) -> float:
    """``handprop-train lr_find=true``: the range test, its plot ``lr_find.png`` and its
    numbers ``lr_find.json`` in ``run_dir``, one line with the suggestion. Returns the
    suggested ``optimizer.lr`` (before any ``gd.lr_scaling``, as the config's)."""
    f = cfg.lr_finder
    if cfg.ckpt_path is not None:
        raise ConfigError(
            f"lr_find={str(cfg.lr_find).lower()} starts from the initial weights and does not combine with "
            "ckpt_path; run it on its own (lr_find=only), then resume with optimizer.lr set"
        )
    if f.max_lr <= f.min_lr:
        raise ConfigError(
            f"lr_finder.max_lr={f.max_lr} is invalid: it must be above lr_finder.min_lr={f.min_lr}"
        )
    result = range_test(cfg, run_dir, f.min_lr, f.max_lr, f.updates, f.stop_factor)
    if result.suggestion is None:
        raise ConfigError(
            f"lr_find: the loss never fell between lr_finder.min_lr={f.min_lr} and "
            f"lr_finder.max_lr={f.max_lr} in {len(result.lrs)} updates; widen the range or "
            "raise lr_finder.updates"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    png = plot(result, run_dir / "lr_find.png")
    write_json_atomic(run_dir / "lr_find.json", asdict(result))
    # The test ran at the effective rate; the config's lr is before the linear scaling rule.
    lr = result.suggestion / result.lr_scale
    print(
        f"handprop: suggested lr {lr:.3g} (learning-rate range test, {len(result.lrs)} "
        f"updates, {result.stopped}; plot: {png})"
    )
    return lr
