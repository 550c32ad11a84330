"""The notes' student example: eight students, one network, many epochs.

Study hours, sleep hours and quiz score → exam score (``handprop.trainer.datasets.students(8)``), the
notes' cost ``½(y − ŷ)²``, batch gradient descent: in each epoch the *same* weights predict
every row, the costs of the eight rows are averaged, and the weights are updated once.

Trained twice: by ``handprop-train experiment=students`` itself (Lightning, its per-epoch cost
read from the CSV log), and by the loop below, which also records every student's own cost.
Same config, same seed, so the two cost curves coincide, up to float32 rounding: the two sum
in different orders, and how each rounds depends on the CPU's kernels (a relative difference of
about 1e-6), so the table and caption state the bound ``AGREE`` that holds on every CPU.
"""

from __future__ import annotations

import contextlib
import csv
import io
import tempfile
import warnings
from pathlib import Path

from handprop.demos._figures import COLORS, figure, plain_log, save_figure
from handprop.demos._report import Table, at_most, plain
from handprop.demos._training import build, compose, loss_function, threads, train_run

#: The hand loop and handprop-train agree within this, relative (measured: 1.1e-6 to 1.2e-6).
AGREE_TEXT = "1e-5"
AGREE = float(AGREE_TEXT)


def _within(rel: float) -> str:
    """The two curves' largest relative difference as the text states it: the bound that holds
    on every CPU, or the difference itself (rounded up) where it does not hold."""
    return AGREE_TEXT if rel < AGREE else at_most(rel)


SUMMARY = (
    "One epoch = every row once, through the same weights; with batch gradient descent the "
    "eight students' costs are averaged and the weights move once per epoch. Repeat, and the "
    "cost falls epoch by epoch — the hand loop here and handprop-train give the same curve."
)


def _trainer_costs(cfg) -> dict[int, float]:  # noqa: ANN001
    """Run ``handprop-train`` on ``cfg`` in a scratch directory and return its
    ``train/epoch_loss`` per epoch from the CSV logger."""
    with tempfile.TemporaryDirectory(prefix="handprop-demo-") as tmp:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            train_run(cfg, Path(tmp))
        costs = {}
        with open(Path(tmp) / "csv" / "metrics.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                v = row.get("train/epoch_loss")
                if v not in (None, ""):
                    costs[int(row["epoch"])] = float(v)
    return costs


def compute(quick: bool = False, trainer: bool = True) -> dict:
    import numpy as np
    import torch

    epochs = 60 if quick else 200
    cfg = compose(
        "experiment=students",
        "logger=csv",
        "trainer=cpu",
        f"trainer.max_epochs={epochs}",
        "callbacks.checkpoint.enabled=false",
        "callbacks.lr_monitor=false",
    )

    # ---- the loop, row by row ------------------------------------------------------------------
    with threads(1):
        dm, model, _ = build(cfg)
        net, loss_fn = model.net, loss_function(model)  # MLP(3, [3], 1); the notes' ½(y − ŷ)²
        opt = model.optimizer_fn(net.parameters())
        X, y = dm.split("train")  # all 8 students (no validation split for 8 rows)
        per_row, cost, yhat = [], [], []
        for _ in range(epochs):
            z = net(X)
            with torch.no_grad():  # each student's own cost, with this epoch's weights
                per_row.append(loss_fn(z, y, reduction="none")[:, 0].numpy().copy())
                yhat.append(z[:, 0].numpy().copy())
            c = loss_fn(z, y)  # the epoch's cost: the mean over the eight rows
            opt.zero_grad()
            c.backward()
            opt.step()  # one update per epoch: batch gradient descent
            cost.append(float(c.detach()))
        with torch.no_grad():
            z = net(X)
            per_row.append(loss_fn(z, y, reduction="none")[:, 0].numpy().copy())
            yhat.append(z[:, 0].numpy().copy())
            cost_final = float(loss_fn(z, y))
    per_row, yhat = np.array(per_row), np.array(yhat)  # (epochs + 1, 8)

    # ---- the same config through the trainer ----------------------------------------------------
    trained = {}
    if trainer:
        with threads(1):
            trained = _trainer_costs(cfg)
    common = [e for e in range(epochs) if e in trained]
    rel = max((abs(trained[e] - cost[e]) / cost[e] for e in common), default=float("nan"))

    t = dm.table
    rows = dm.indices["train"]
    return plain(
        {
            "epochs": epochs,
            "cost": cost,
            "cost_final": cost_final,
            "trainer_cost": [trained[e] for e in common],
            "trainer_epochs": common,
            "max_rel_diff_vs_trainer": rel,
            "per_student_cost": per_row,
            "predicted": yhat,  # standardised, (epochs + 1, 8)
            "students": t.X[rows],
            "scores": t.y[rows],
            "y_scale": float(dm.y_scaler.scale[0]),
            "y_shift": float(dm.y_scaler.shift[0]),
        }
    )


def tables(r: dict) -> list[Table]:
    import numpy as np

    epochs = r["epochs"]
    per_row, yhat = np.asarray(r["per_student_cost"]), np.asarray(r["predicted"])
    to_score = lambda v: v * r["y_scale"] + r["y_shift"]  # noqa: E731  standardised → points
    t1 = Table(
        "The eight students: the same weights predict every row",
        [
            "student",
            "study h",
            "sleep h",
            "quiz",
            "exam",
            "predicted, epoch 1",
            f"predicted, epoch {epochs}",
            "cost, epoch 1",
            f"cost, epoch {epochs}",
        ],
        note="Costs are 1/2 (y - yhat)^2 on the standardised exam score, as the network sees it.",
    )
    for i, (x, score) in enumerate(zip(r["students"], r["scores"], strict=True)):
        t1.add(
            i + 1,
            *np.round(x, 1).tolist(),
            round(float(score), 1),
            to_score(yhat[0, i]),
            to_score(yhat[-1, i]),
            per_row[0, i],
            per_row[-1, i],
        )
    trained = dict(zip(r["trainer_epochs"], r["trainer_cost"], strict=True))
    t2 = Table(
        "Cost per epoch (mean over the 8 rows, before that epoch's update)",
        ["epoch", "this loop", "handprop-train experiment=students"],
        note=(
            "Largest relative difference between the two: below "
            f"{_within(r['max_rel_diff_vs_trainer'])} (float32, different summation order). "
            "Config: batch GD, SGD lr 0.05, MLP 3-3-1, "
            "cost quadratic."
            if trained
            else "Trainer run skipped."
        ),
    )
    shown = sorted({1, 2, 3, 5, 10, 20, 50, 100, 200, epochs} & set(range(1, epochs + 1)))
    for e in shown:
        t2.add(e, r["cost"][e - 1], trained.get(e - 1, "-"))
    return [t1, t2]


def caption(r: dict) -> str:
    cost = r["cost"]
    falls = all(b <= a for a, b in zip(cost, cost[1:], strict=False))
    text = (
        "The same weights predict all eight students; each epoch averages their costs and "
        f"updates once, and the cost {'falls epoch by epoch' if falls else 'falls overall'}, "
        f"from {cost[0]:.3g} to {r['cost_final']:.3g} in {r['epochs']} epochs"
    )
    if r["trainer_cost"]:
        text += (
            " — the same curve in the hand loop and in `handprop-train experiment=students` "
            f"(circles), within {_within(r['max_rel_diff_vs_trainer'])} relative"
        )
    return text + "."


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    epochs, cost = r["epochs"], r["cost"]
    per_row, yhat = np.asarray(r["per_student_cost"]), np.asarray(r["predicted"])
    trained = dict(zip(r["trainer_epochs"], r["trainer_cost"], strict=True))
    common = r["trainer_epochs"]
    actual = np.asarray(r["scores"])
    to_score = lambda v: v * r["y_scale"] + r["y_shift"]  # noqa: E731
    fig, axes = figure(13, 4, 1, 3, width_ratios=[1, 1, 1.1])
    ax = axes[0]
    ep = np.arange(1, epochs + 1)
    ax.plot(ep, cost, color=COLORS[0], lw=2.5, label="this loop")
    if trained:
        te = np.array(common)
        step = max(1, len(te) // 25)
        ax.plot(
            te[::step] + 1,
            [trained[e] for e in te[::step]],
            "o",
            mfc="none",
            mec=COLORS[1],
            ms=6,
            label="handprop-train",
        )
    ax.set_yscale("log")
    plain_log(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost: mean of 1/2 (y - yhat)^2 over 8 rows")
    ax.set_title("the cost, epoch by epoch", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    err = to_score(yhat) - actual[None, :]  # (epochs + 1, 8), exam points
    for i in range(err.shape[1]):
        ax.plot(
            np.arange(len(err)) + 1,
            err[:, i],
            lw=1.5,
            color=COLORS[i % len(COLORS)],
            ls="-" if i < len(COLORS) else "--",
            label=f"student {i + 1}",
        )
    ax.axhline(0, color="0.4", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("prediction - actual (exam points)")
    ax.set_title("each student's error (same weights for all)", fontsize=10)
    ax.legend(fontsize=7, ncols=2)
    ax = axes[2]
    idx = np.arange(per_row.shape[1])
    ax.bar(idx, actual, color="0.85", label="actual score")
    marks = sorted({0, min(9, epochs - 1), min(49, epochs - 1), epochs})
    for k, e in enumerate(marks):
        ax.plot(
            idx,
            to_score(yhat[e]),
            "o",
            color=COLORS[(k + 1) % len(COLORS)],
            ms=6,
            label=f"epoch {e + 1 if e < epochs else epochs}" + (" (start)" if e == 0 else ""),
        )
    ax.set_xticks(idx, [str(i + 1) for i in idx])
    ax.set_xlabel("student")
    ax.set_ylabel("exam score")
    lo = min(actual.min(), to_score(yhat).min())
    ax.set_ylim(max(0, lo - 10), 114)
    ax.set_title("predictions move towards the scores", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncols=3, title="predicted at", title_fontsize=7)
    return [save_figure(fig, out, "epochs.png")]
