"""Property prices trained raw vs standardised vs min-max normalised.

The notes: scaling the inputs "helps avoid biased weight updates, speeds up convergence, and
improves accuracy". Raw inputs range from ~1 (bedrooms) to ~4000 (area in sq ft), so one
learning rate cannot suit every weight: small enough for the area weight is far too small
for the rest. Each scheme is ``data.preprocessing=none|standardize|normalize`` (the data
module's :class:`~handprop.trainer.data.Scaler`, fitted on the training rows), the 4-5-1 network,
batch gradient descent with plain SGD, and — to be fair to raw inputs — each scheme gets the
best learning rate from a grid of powers of ten. A second run uses the trainer's defaults
(Adam, mini-batch 32).
"""

from __future__ import annotations

import math
from pathlib import Path

from handprop.demos._figures import COLORS, figure, integer_ticks, plain_log, save_figure
from handprop.demos._report import Table, num, plain
from handprop.demos._training import compose, run_config, threads

SUMMARY = (
    "Scaling the inputs speeds up convergence: with raw inputs (area in thousands of sq ft "
    "beside 1-6 bedrooms) no single learning rate works, whatever its size; standardised "
    "inputs converge in a fraction of the epochs to a far lower error."
)

SCHEMES = ("none", "standardize", "normalize")
LABEL = {"none": "raw", "standardize": "standardised", "normalize": "min-max normalised"}
TARGET = 0.2  # 'converged': training cost (MSE of the standardised price) at or below this


def diverged(h) -> bool:  # noqa: ANN001
    """Non-finite, or at some epoch above the cost it started from: the step was too big."""
    c = h.epoch_train
    return not all(math.isfinite(v) for v in c) or max(c) > 1.01 * h.step_loss[0]


def epochs_to(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose cost is at or below ``target``; None if never."""
    for i, c in enumerate(curve):
        if math.isfinite(c) and c <= target:
            return i + 1
    return None


def compute(quick: bool = False) -> dict:
    n = 600 if quick else 2000
    gd_epochs = 120 if quick else 300
    adam_epochs = 10 if quick else 30
    lrs = [10.0**k for k in range(-8, 1)] if not quick else [1e-7, 1e-5, 1e-3, 1e-1, 1.0]
    r: dict = {
        "target_cost": TARGET,
        "gd_epochs": gd_epochs,
        "adam_epochs": adam_epochs,
        "lrs": lrs,
        "sgd": {},
        "adam": {},
    }
    with threads(1):
        for s in SCHEMES:
            sweep = {}
            for lr in lrs:
                cfg = compose(
                    f"data.preprocessing={s}",
                    "optimizer=sgd",
                    f"optimizer.lr={lr}",
                    "gd=batch",
                    f"data.n_samples={n}",
                )
                sweep[lr], dm, _ = run_config(cfg, epochs=gd_epochs)
            y_scale = float(dm.y_scaler.scale[0])  # $1000s per unit of standardised price
            ok = [lr for lr in lrs if not diverged(sweep[lr])] or lrs
            lr_best = min(ok, key=lambda lr: sweep[lr].final)
            h = sweep[lr_best]
            r["sgd"][s] = {
                "best_lr": lr_best,
                "curve": h.epoch_train,
                "epochs_to_target": epochs_to(h.epoch_train, TARGET),
                "final_cost": h.final,
                "val_rmse": math.sqrt(h.epoch_val[-1]) * y_scale,
                "cost_by_lr": [sweep[lr].final for lr in lrs],
                "diverged_by_lr": [diverged(sweep[lr]) for lr in lrs],
                "start_cost": max(sweep[lr].step_loss[0] for lr in lrs),
            }
            cfg = compose(f"data.preprocessing={s}", f"data.n_samples={n}")  # the defaults
            h, dm, _ = run_config(cfg, epochs=adam_epochs)
            r["adam"][s] = {
                "curve": h.epoch_train,
                "epochs_to_target": epochs_to(h.epoch_train, TARGET),
                "final_cost": h.final,
                "val_rmse": math.sqrt(h.epoch_val[-1]) * y_scale,
            }
    return plain(r)


def tables(r: dict) -> list[Table]:
    lrs, target = r["lrs"], r["target_cost"]
    t1 = Table(
        f"Batch gradient descent (SGD), {r['gd_epochs']} epochs, best learning rate of "
        f"{len(lrs)} per scheme",
        ["inputs", "best lr", f"epochs to cost {target}", "final train cost", "val RMSE ($1000s)"],
        note="Cost: mean squared error of the standardised price (1.0 = always guessing the "
        f"mean price; {target} = {100 * (1 - target):.0f} % of the price variance explained). "
        "The learning-rate grid: " + ", ".join(f"{lr:g}" for lr in lrs) + "; 'best' is the "
        "lowest final cost among the rates that did not diverge.",
    )
    for s in SCHEMES:
        v = r["sgd"][s]
        e = v["epochs_to_target"]
        never = f"never ({r['gd_epochs']})"
        t1.add(
            LABEL[s], v["best_lr"], e if e is not None else never, v["final_cost"], v["val_rmse"]
        )
    t2 = Table(
        f"The trainer's defaults (Adam lr 0.01, mini-batch 32), {r['adam_epochs']} epochs",
        ["inputs", f"epochs to cost {target}", "final train cost", "val RMSE ($1000s)"],
    )
    for s in SCHEMES:
        v = r["adam"][s]
        e = v["epochs_to_target"]
        never = f"never ({r['adam_epochs']})"
        t2.add(LABEL[s], e if e is not None else never, v["final_cost"], v["val_rmse"])
    return [t1, t2]


def caption(r: dict) -> str:
    raw, std = r["sgd"]["none"], r["sgd"]["standardize"]
    lrs = r["lrs"]
    bad = [lr for lr, d in zip(lrs, raw["diverged_by_lr"], strict=True) if d]
    good = [lr for lr in lrs if lr not in bad]
    if bad and all(lr in bad for lr in lrs if lr >= bad[0]):
        diverge = f"every learning rate from {num(bad[0])} up diverges"
    else:
        diverge = "rates " + ", ".join(map(num, bad)) + " diverge"
    stays = ""
    if good:
        best = min(good, key=lambda lr: raw["cost_by_lr"][lrs.index(lr)])
        stays = (
            f" and at {num(best)} the cost is still {raw['cost_by_lr'][lrs.index(best)]:.3g} after "
            f"{r['gd_epochs']} epochs (guessing the mean scores 1)"
        )
    e, ea = std["epochs_to_target"], r["adam"]["standardize"]["epochs_to_target"]
    reach = (
        f"explain {100 * (1 - r['target_cost']):.0f} % of the variance in {e} epochs"
        if e is not None
        else f"never reach a cost of {r['target_cost']}"
    )
    with_adam = f" ({ea} with Adam)" if ea is not None else ""
    return (
        f"The middle panel is the point: with raw inputs {diverge}{stays}, while "
        f"standardised inputs {reach}{with_adam}."
    )


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    lrs, target = r["lrs"], r["target_cost"]
    fig, axes = figure(13, 4, 1, 3)
    ax = axes[0]
    for k, s in enumerate(SCHEMES):
        v = r["sgd"][s]
        ax.plot(
            range(1, len(v["curve"]) + 1),
            v["curve"],
            color=COLORS[k],
            lw=2,
            label=f"{LABEL[s]} (lr {v['best_lr']:g})",
        )
    ax.axhline(target, color="0.5", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log(ax, "x")
    ax.set_xlabel("epoch (batch GD: one update each)")
    ax.set_ylabel("training cost (MSE, standardised price)")
    ax.set_title("SGD, each at its best learning rate", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    top = max(r["sgd"][s]["start_cost"] for s in SCHEMES) * 10
    for k, s in enumerate(SCHEMES):
        v = r["sgd"][s]
        c = [np.nan if d else x for x, d in zip(v["cost_by_lr"], v["diverged_by_lr"], strict=True)]
        ax.plot(lrs, c, "-o", color=COLORS[k], lw=2, label=LABEL[s])
        bad = [lr for lr, d in zip(lrs, v["diverged_by_lr"], strict=True) if d]
        ax.plot(bad, [top] * len(bad), "x", color=COLORS[k], ms=9, mew=2)
    ax.axhline(1.0, color="0.5", ls=":", lw=1)
    ax.annotate(
        "guessing the mean",
        (lrs[-1], 1.0),
        xytext=(0, 4),
        textcoords="offset points",
        fontsize=8,
        color="0.4",
        ha="right",
    )
    ax.annotate(
        "x: diverged",
        (lrs[0], top),
        xytext=(2, -14),
        textcoords="offset points",
        fontsize=8,
        color="0.3",
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"training cost after {r['gd_epochs']} epochs")
    ax.set_title("no learning rate works for raw inputs", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[2]
    for k, s in enumerate(SCHEMES):
        curve = r["adam"][s]["curve"]
        ax.plot(range(1, len(curve) + 1), curve, color=COLORS[k], lw=2, label=LABEL[s])
    ax.axhline(target, color="0.5", ls=":", lw=1)
    ax.set_yscale("log")
    plain_log(ax)
    integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training cost")
    ax.set_title("the trainer's defaults: Adam, mini-batch 32", fontsize=10)
    ax.legend(fontsize=8)
    return [save_figure(fig, out, "preprocessing.png")]
