"""Learning-rate schedules, and the linear scaling rule across batch sizes.

1. The 4-5-1 network on property prices with plain SGD from a deliberately high rate (0.4),
   under each of the trainer's schedules (``conf/scheduler``: none, step, exponential, cosine,
   inverse_sqrt = :class:`handprop.trainer.model.InverseSqrtLR`, plateau): the rate per epoch and the
   cost it gives.
2. The linear scaling rule (``gd.lr_scaling=true``: ``lr × B / 32``): the same number of epochs
   at batch sizes 8…512, with one fixed rate and with the scaled rate.
"""

from __future__ import annotations

import math
from pathlib import Path

from handprop.demos._figures import (
    COLORS,
    figure,
    finite,
    integer_ticks,
    log_axis_limits,
    plain_log,
    save_figure,
)
from handprop.demos._report import Table, plain, two
from handprop.demos._training import compose, run_config, threads

SUMMARY = (
    "Start high, then decay: a constant rate that is fast at first keeps bouncing at the end; "
    "every schedule lowers it and the cost settles. Bigger batches make fewer updates per "
    "epoch; scaling the rate with the batch size (linear scaling rule) makes up for it, "
    "until the scaled rate passes the stability limit."
)

SCHEDULES = ("none", "step", "exponential", "cosine", "inverse_sqrt", "plateau")
BATCH_SIZES = (8, 32, 128, 512)


BASE_LR = 0.05  # the linear scaling rule's rate at batch 32


def compute(quick: bool = False, lr: float = 0.4) -> dict:
    import numpy as np

    epochs = 30 if quick else 60
    n = 600 if quick else 2000
    r: dict = {"lr": lr, "epochs": epochs, "schedules": {}}
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
            tail = np.log(np.asarray(h.epoch_train[-(len(h.epoch_train) // 3) :]))
            bounce = float(np.std(np.diff(tail))) if np.all(np.isfinite(tail)) else math.inf
            r["schedules"][s] = {
                "scheduler": h.scheduler,
                "lr": h.lr,
                "train": h.epoch_train,
                "val": h.epoch_val,
                "bounce": bounce,
            }

    # ---- linear scaling rule ----------------------------------------------------------------------
    scale_epochs = 12 if quick else 30
    r["scale_epochs"], r["base_lr"], r["scaling"] = scale_epochs, BASE_LR, {}
    with threads(1):
        for b in BATCH_SIZES:
            row = {}
            for scaled in (False, True):
                cfg = compose(
                    "optimizer=sgd",
                    f"optimizer.lr={BASE_LR}",
                    f"gd.batch_size={b}",
                    f"gd.lr_scaling={str(scaled).lower()}",
                    f"data.n_samples={n}",
                )
                h, _, model = run_config(cfg, epochs=scale_epochs)
                key = "scaled" if scaled else "fixed"
                row[f"lr_{key}"] = float(model.optimizer_fn.keywords["lr"])
                row[f"cost_{key}"] = h.final
                row[f"curve_{key}"] = h.epoch_train
                row["updates_per_epoch"] = h.updates_per_epoch
            r["scaling"][b] = row
    return plain(r)


def tables(r: dict) -> list[Table]:
    t1 = Table(
        f"Schedules: 4-5-1 on property prices, SGD from lr {r['lr']}, mini-batch 32, "
        f"{r['epochs']} epochs",
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
    for s in SCHEDULES:
        v = r["schedules"][s]
        t1.add(
            s,
            v["scheduler"] or "-",
            v["lr"][0],
            v["lr"][-1],
            v["train"][-1],
            v["val"][-1],
            v["bounce"],
        )
    t2 = Table(
        f"Linear scaling rule: SGD, {r['scale_epochs']} epochs, base lr {r['base_lr']} at batch 32",
        [
            "batch size",
            "updates / epoch",
            "lr (fixed)",
            "train cost (fixed)",
            "lr (scaled)",
            "train cost (scaled)",
        ],
        note="gd.lr_scaling=true multiplies the rate by B / 32 (handprop.trainer.plan.make_plan). "
        "A B-times bigger batch makes B times fewer updates; a B-times bigger step makes up "
        "for it — while the step stays below the stability limit.",
    )
    for b in BATCH_SIZES:
        v = r["scaling"][str(b)]
        cost = v["cost_scaled"]
        t2.add(
            b,
            v["updates_per_epoch"],
            v["lr_fixed"],
            v["cost_fixed"],
            v["lr_scaled"],
            cost if math.isfinite(cost) else "diverged",
        )
    return [t1, t2]


def settled(r: dict) -> list[str]:
    """The decaying schedules whose cost settled: over the last third it jumps from epoch to
    epoch less than a fifth as much as under the constant rate."""
    sch = r["schedules"]
    return [s for s in SCHEDULES[1:] if 5 * sch[s]["bounce"] < sch["none"]["bounce"]]


def caption(r: dict) -> str:
    sch = r["schedules"]
    calm = settled(r)
    who = (
        "any decaying schedule"
        if len(calm) == len(SCHEDULES) - 1
        else f"{', '.join(calm)} (the others have not settled yet)"
    )
    worst = max(sch[s]["bounce"] for s in calm)
    ends = [sch[s]["train"][-1] for s in SCHEDULES[1:]]
    scaling = {int(b): v for b, v in r["scaling"].items()}
    ok = [b for b in BATCH_SIZES if math.isfinite(scaling[b]["cost_scaled"])]
    bad = [b for b in BATCH_SIZES if b not in ok]
    flat = [scaling[b]["cost_scaled"] for b in ok]
    fixed = [scaling[b]["cost_fixed"] for b in ok]
    text = (
        f"From a start of {r['lr']} the constant rate (dashed) never settles: over the last "
        f"third its cost still jumps {sch['none']['bounce'] / worst:.0f}× more from epoch to "
        f"epoch than under {who}, and it ends at "
        f"{sch['none']['train'][-1]:.2g} while every decaying schedule ends between "
        "{} and {}; scaling the rate with the batch size keeps the cost after {} epochs "
        "between {} and {} from B = {} to {} (a fixed rate: {} to {})".format(
            *two(min(ends), max(ends)),
            r["scale_epochs"],
            *two(min(flat), max(flat)),
            ok[0],
            ok[-1],
            *two(min(fixed), max(fixed)),
        )
    )
    if bad:
        b = bad[0]
        text += f", until at B = {b} the scaled rate ({scaling[b]['lr_scaled']:g}) diverges"
    return text + "."


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    sch = r["schedules"]
    fig, axes = figure(11, 4, 1, 2)
    for k, s in enumerate(SCHEDULES):
        v = sch[s]
        ep = np.arange(1, len(v["lr"]) + 1)
        axes[0].plot(ep, v["lr"], color=COLORS[k], lw=2, label=s, ls="--" if s == "none" else "-")
        axes[1].plot(
            ep,
            v["train"],
            color=COLORS[k],
            lw=2 if s != "none" else 1.5,
            label=s,
            ls="--" if s == "none" else "-",
        )
    axes[0].set_yscale("log")
    plain_log(axes[0])
    axes[0].set_ylabel("learning rate")
    axes[0].set_title(f"the learning rate per epoch (start {r['lr']})", fontsize=10)
    axes[1].set_yscale("log")
    axes[1].set_ylim(*log_axis_limits([c for s in SCHEDULES for c in sch[s]["train"][2:]], 1.2))
    plain_log(axes[1])
    axes[1].set_ylabel("training cost (MSE, standardised)")
    axes[1].set_title("the cost under each schedule", fontsize=10)
    for ax in axes:
        integer_ticks(ax)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8, ncols=2)
    figures = [save_figure(fig, out, "schedules.png")]

    scaling = {int(b): v for b, v in r["scaling"].items()}
    fig, axes = figure(11, 3.8, 1, 2)
    ax = axes[0]
    for k, key in enumerate(("fixed", "scaled")):
        lrs = [scaling[b][f"lr_{key}"] for b in BATCH_SIZES]
        costs = [scaling[b][f"cost_{key}"] for b in BATCH_SIZES]
        label = (
            f"scaled lr = {r['base_lr']:g} x B/32"
            if key == "scaled"
            else f"fixed lr = {r['base_lr']:g}"
        )
        ok = finite(costs)
        ax.plot(BATCH_SIZES, ok, "-o", color=COLORS[k], lw=2, label=label)
        for b, c, lr in zip(BATCH_SIZES, costs, lrs, strict=True):
            if math.isfinite(c) and key == "scaled":
                ax.annotate(
                    f"lr {lr:g}",
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
                    f"lr {lr:g}: diverged",
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
    ax.set_ylabel(f"train cost after {r['scale_epochs']} epochs")
    ax.set_title("linear scaling rule: same epochs, bigger batches", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    for k, b in enumerate(BATCH_SIZES):
        for key, ls in (("fixed", ":"), ("scaled", "-")):
            tr = finite(scaling[b][f"curve_{key}"])
            ax.plot(
                range(1, len(tr) + 1),
                tr,
                ls=ls,
                color=COLORS[k],
                lw=2,
                label=f"B={b}" if key == "scaled" else None,
            )
    ax.set_yscale("log")
    shown = [
        c
        for b in BATCH_SIZES
        for key in ("fixed", "scaled")
        for c in scaling[b][f"curve_{key}"]
        if c < 5
    ]  # not diverged
    ax.set_ylim(*log_axis_limits(shown, 1.2))
    plain_log(ax)
    integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("train cost")
    ax.set_title("per epoch: solid = scaled lr, dotted = fixed lr", fontsize=10)
    ax.legend(fontsize=8)
    figures.append(save_figure(fig, out, "linear_scaling.png"))
    return figures
