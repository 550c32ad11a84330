"""Learning-rate schedules, and the linear scaling rule across batch sizes.

1. The 4-5-1 network on property prices with plain SGD from a deliberately high rate (0.4),
   under each of the trainer's schedules (``conf/scheduler``: none, step, exponential, cosine,
   inverse_sqrt = :class:`handprop.model.InverseSqrtLR`, plateau): the rate per epoch and the
   cost it gives.
2. The linear scaling rule (``gd.lr_scaling=true``: ``lr × B / 32``): the same number of epochs
   at batch sizes 8…512, with one fixed rate and with the scaled rate.
"""

from __future__ import annotations

import math
from pathlib import Path

from handprop.demos._common import (
    COLORS,
    Report,
    compose,
    figure,
    integer_ticks,
    log_axis_limits,
    plain_log,
    run_config,
    threads,
)

SUMMARY = (
    "Start high, then decay: a constant rate that is fast at first keeps bouncing at the end; "
    "every schedule lowers it and the cost settles. Bigger batches make fewer updates per "
    "epoch; scaling the rate with the batch size (linear scaling rule) makes up for it, "
    "until the scaled rate passes the stability limit."
)

SCHEDULES = ("none", "step", "exponential", "cosine", "inverse_sqrt", "plateau")
BATCH_SIZES = (8, 32, 128, 512)


def run(out: Path, quick: bool = False, lr: float = 0.4) -> dict:
    import numpy as np

    rep = Report("lr-schedules", out, SUMMARY)
    epochs = 30 if quick else 60
    n = 600 if quick else 2000
    runs = {}
    with threads(1):
        for s in SCHEDULES:
            cfg = compose(
                f"scheduler={s}",
                "optimizer=sgd",
                f"optimizer.lr={lr}",
                f"trainer.max_epochs={epochs}",
                f"data.n_samples={n}",
            )
            h, _, _ = run_config(cfg)
            runs[s] = h

    t1 = rep.table(
        f"Schedules: 4-5-1 on property prices, SGD from lr {lr}, mini-batch 32, {epochs} epochs",
        [
            "schedule",
            "scheduler class",
            "lr, first epoch",
            "lr, last epoch",
            "train cost",
            "val cost",
            "bounce",
        ],
        note="Costs: MSE of the standardised price. 'bounce': the standard deviation of "
        "log(train cost) from epoch to epoch over the last third — how much the cost still "
        "jumps. Settings from conf/scheduler: step halves every 10 epochs, exponential "
        "x0.95 per epoch, cosine to 0 over the run, inverse_sqrt lr/sqrt(t+1), plateau halves "
        "after 5 epochs without a better validation cost.",
    )
    values: dict = {"schedules": {}}
    for s in SCHEDULES:
        h = runs[s]
        tail = np.log(np.asarray(h.epoch_train[-(len(h.epoch_train) // 3) :]))
        bounce = float(np.std(np.diff(tail))) if np.all(np.isfinite(tail)) else math.inf
        t1.add(s, h.scheduler or "-", h.lr[0], h.lr[-1], h.final, h.epoch_val[-1], bounce)
        values["schedules"][s] = {
            "scheduler": h.scheduler,
            "lr": h.lr,
            "train": h.epoch_train,
            "val": h.epoch_val,
            "bounce": bounce,
        }

    # ---- linear scaling rule ----------------------------------------------------------------------
    scale_epochs = 12 if quick else 30
    base_lr = 0.05
    scaling = {}
    with threads(1):
        for scaled in (False, True):
            for b in BATCH_SIZES:
                cfg = compose(
                    "optimizer=sgd",
                    f"optimizer.lr={base_lr}",
                    f"gd.batch_size={b}",
                    f"gd.lr_scaling={str(scaled).lower()}",
                    f"data.n_samples={n}",
                )
                h, dm, model = run_config(cfg, epochs=scale_epochs)
                scaling[scaled, b] = (float(model.optimizer_fn.keywords["lr"]), h)
    t2 = rep.table(
        f"Linear scaling rule: SGD, {scale_epochs} epochs, base lr {base_lr} at batch 32",
        [
            "batch size",
            "updates / epoch",
            "lr (fixed)",
            "train cost (fixed)",
            "lr (scaled)",
            "train cost (scaled)",
        ],
        note="gd.lr_scaling=true multiplies the rate by B / 32 (handprop.train.build_model). "
        "A B-times bigger batch makes B times fewer updates; a B-times bigger step makes up "
        "for it — while the step stays below the stability limit.",
    )
    values["scaling"] = {}
    for b in BATCH_SIZES:
        lr_f, hf = scaling[False, b]
        lr_s, hs = scaling[True, b]
        t2.add(
            b,
            hf.updates_per_epoch,
            lr_f,
            hf.final,
            lr_s,
            hs.final if math.isfinite(hs.final) else "diverged",
        )
        values["scaling"][b] = {
            "lr_fixed": lr_f,
            "cost_fixed": hf.final,
            "lr_scaled": lr_s,
            "cost_scaled": hs.final,
            "updates_per_epoch": hf.updates_per_epoch,
        }

    # ---- figures ------------------------------------------------------------------------------------
    fig, axes = figure(11, 4, 1, 2)
    for k, s in enumerate(SCHEDULES):
        h = runs[s]
        ep = np.arange(1, len(h.lr) + 1)
        axes[0].plot(ep, h.lr, color=COLORS[k], lw=2, label=s, ls="--" if s == "none" else "-")
        axes[1].plot(
            ep,
            h.epoch_train,
            color=COLORS[k],
            lw=2 if s != "none" else 1.5,
            label=s,
            ls="--" if s == "none" else "-",
        )
    axes[0].set_yscale("log")
    plain_log(axes[0])
    axes[0].set_ylabel("learning rate")
    axes[0].set_title(f"the learning rate per epoch (start {lr})", fontsize=10)
    axes[1].set_yscale("log")
    axes[1].set_ylim(*log_axis_limits([v for s in SCHEDULES for v in runs[s].epoch_train[2:]], 1.2))
    plain_log(axes[1])
    axes[1].set_ylabel("training cost (MSE, standardised)")
    axes[1].set_title("the cost under each schedule", fontsize=10)
    for ax in axes:
        integer_ticks(ax)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8, ncols=2)
    rep.figure(fig, "schedules.png")

    fig, axes = figure(11, 3.8, 1, 2)
    ax = axes[0]
    for k, scaled in enumerate((False, True)):
        lrs = [scaling[scaled, b][0] for b in BATCH_SIZES]
        costs = [scaling[scaled, b][1].final for b in BATCH_SIZES]
        label = "scaled lr = 0.05 x B/32" if scaled else "fixed lr = 0.05"
        ok = [c if math.isfinite(c) else np.nan for c in costs]
        ax.plot(BATCH_SIZES, ok, "-o", color=COLORS[k], lw=2, label=label)
        for b, c, r in zip(BATCH_SIZES, costs, lrs, strict=True):
            if math.isfinite(c) and scaled:
                ax.annotate(
                    f"lr {r:g}",
                    (b, c),
                    xytext=(4, -12),
                    textcoords="offset points",
                    fontsize=8,
                    color=COLORS[k],
                )
            elif not math.isfinite(c):
                top = max(x for x in ok if np.isfinite(x))
                ax.plot([b], [top], "x", color=COLORS[k], ms=10, mew=2)
                ax.annotate(
                    f"lr {r:g}: diverged",
                    (b, top),
                    xytext=(-70, 8),
                    textcoords="offset points",
                    fontsize=8,
                    color=COLORS[k],
                )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    plain_log(ax)
    ax.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
    ax.set_xlabel("batch size B")
    ax.set_ylabel(f"train cost after {scale_epochs} epochs")
    ax.set_title("linear scaling rule: same epochs, bigger batches", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    for k, b in enumerate(BATCH_SIZES):
        for scaled, ls in ((False, ":"), (True, "-")):
            h = scaling[scaled, b][1]
            tr = [v if math.isfinite(v) else np.nan for v in h.epoch_train]
            ax.plot(
                range(1, len(tr) + 1),
                tr,
                ls=ls,
                color=COLORS[k],
                lw=2,
                label=f"B={b}" if scaled else None,
            )
    ax.set_yscale("log")
    shown = [v for key in scaling for v in scaling[key][1].epoch_train if v < 5]  # not diverged
    ax.set_ylim(*log_axis_limits(shown, 1.2))
    plain_log(ax)
    integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("train cost")
    ax.set_title("per epoch: solid = scaled lr, dotted = fixed lr", fontsize=10)
    ax.legend(fontsize=8)
    rep.figure(fig, "linear_scaling.png")

    rep.values.update(values)
    return rep.finish()
