"""Overfitting, and early stopping restoring the best weights.

A network far larger than its data: 4-256-256-1 (67,329 weights) on 60 training houses with
30 % price noise, trained by ``handprop-train`` itself (batch gradient descent with Adam, η = 0.001, one
update per epoch) with its default callbacks: early stopping on ``val/loss`` and the best
weights kept in memory and restored for the final metrics (``callbacks.checkpoint.restore_best``).
The training loss keeps falling as the network fits the noise of its 60 rows; the validation
loss (120 other houses) reaches its lowest, then rises; ``patience`` epochs later early
stopping fires. The test split (120 more houses) then scores the restored weights and the last
ones (``checkpoints/last.ckpt``).
"""

from __future__ import annotations

import math
from pathlib import Path

from handprop.demos._figures import COLORS, figure, plain_log, save_figure
from handprop.demos._report import Table, plain
from handprop.demos._training import compose, threads, train_logged

SUMMARY = (
    "Give a network far more weights than rows and it learns the rows' noise: its training "
    "loss keeps falling while the validation loss turns up. Early stopping ends the run "
    "`patience` epochs after the validation loss was lowest, and the weights of that epoch, "
    "restored, score better on the test split than the last ones."
)

HIDDEN = (256, 256)
ROWS, FRACTION = 300, 0.4  # 40 % validation, 40 % test: 60 training rows
NOISE = 0.3  # multiplicative price noise (±30 %)
LR = 0.001  # Adam's


def compute(quick: bool = False) -> dict:
    patience = 50 if quick else 100
    cfg = compose(
        f"data.n_samples={ROWS}",
        f"data.val_fraction={FRACTION}",
        f"data.test_fraction={FRACTION}",
        f"data.noise={NOISE}",
        f"model.hidden=[{','.join(map(str, HIDDEN))}]",
        "gd=batch",
        f"optimizer.lr={LR}",
        "trainer=cpu",
        "trainer.max_epochs=2000",
        f"callbacks.early_stopping.patience={patience}",
        "logger=csv",
    )
    with threads(1):
        metrics, epochs, last = train_logged(cfg)
    val = [row["val/loss"] for row in epochs]
    best = min(range(len(val)), key=val.__getitem__)  # the first lowest, as the trainer keeps
    sizes = [4, *HIDDEN, 1]
    weights = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))

    def scores(m: dict) -> dict:
        return {"loss": m["loss"], "rmse": math.sqrt(m["mse"]), "r2": m["r2"]}

    return plain(
        {
            "train_rows": round(ROWS * (1 - 2 * FRACTION)),
            "hidden": list(HIDDEN),
            "weights": weights,
            "patience": patience,
            "train_loss": [row["train/epoch_loss"] for row in epochs],
            "val_loss": val,
            "best_epoch": best + 1,  # epochs counted from 1
            "stop_epoch": len(epochs),
            "trainer_epochs": metrics["epochs"],
            "restored": scores({k.split("/")[1]: v for k, v in metrics.items() if "test/" in k}),
            "last": scores(last["test"]),
        }
    )


def tables(r: dict) -> list[Table]:
    t = Table(
        f"4-{'-'.join(map(str, r['hidden']))}-1 ({r['weights']:,} weights) on "
        f"{r['train_rows']} training rows; early stopping patience {r['patience']}",
        ["weights", "from epoch", "test loss", "test RMSE ($1000s)", "test R²"],
        note="Test loss: MSE of the standardised price. The restored weights are those with "
        "the lowest validation loss; the last ones are those of the epoch early stopping "
        "fired at.",
    )
    for key, label, epoch in (
        ("restored", "restored (best validation loss)", r["best_epoch"]),
        ("last", "last", r["stop_epoch"]),
    ):
        v = r[key]
        t.add(label, epoch, v["loss"], v["rmse"], v["r2"])
    return [t]


def digits(r: dict) -> int:
    """Decimals that tell the two test RMSEs apart (at most 2)."""
    a, b = r["restored"]["rmse"], r["last"]["rmse"]
    return next((d for d in (0, 1) if f"{a:.{d}f}" != f"{b:.{d}f}"), 2)


def caption(r: dict) -> str:
    tr, val = r["train_loss"], r["val_loss"]
    b, s = r["best_epoch"], r["stop_epoch"]
    rest, last = (f"{v:.{digits(r)}f}" for v in (r["restored"]["rmse"], r["last"]["rmse"]))
    better = r["restored"]["loss"] < r["last"]["loss"]
    return (
        f"{r['weights']:,} weights, {r['train_rows']} training rows: from epoch {b} to epoch "
        f"{s} the training loss keeps falling ({tr[b - 1]:.3g} → {tr[s - 1]:.3g}) while the "
        f"validation loss rises from its lowest, {val[b - 1]:.3g}, to {val[s - 1]:.3g}. Early "
        f"stopping fires after epoch {s}, {r['patience']} epochs without a lower validation "
        f"loss, and the weights of epoch {b} are restored: on the test split they "
        f"{'score better than' if better else 'do not beat'} the last ones (RMSE {rest} "
        f"against {last} thousand dollars, R² {r['restored']['r2']:.3f} against "
        f"{r['last']['r2']:.3f})."
    )


def draw(r: dict, out: Path) -> list[Path]:
    fig, (ax, zx, bx) = figure(14, 4.2, 1, 3, width_ratios=[1.6, 1.1, 0.8])
    epochs = list(range(1, len(r["train_loss"]) + 1))
    b, s = r["best_epoch"], r["stop_epoch"]
    ax.plot(epochs, r["train_loss"], color=COLORS[0], lw=2, label="training loss")
    ax.plot(epochs, r["val_loss"], color=COLORS[1], lw=2, label="validation loss")
    for a in (ax, zx):
        a.axvline(b, color="0.3", ls="--", lw=1, label=f"lowest validation loss (epoch {b})")
        a.axvline(s, color="0.3", ls=":", lw=1, label=f"early stopping fires (epoch {s})")
        a.set_xlabel("epoch (one update each: batch gradient descent)")
    # From the lowest training loss to well above the validation loss at its lowest (the
    # first epochs' large steps are cut).
    ax.set_ylim(min(r["train_loss"]) / 1.3, max(r["val_loss"][b - 1 :]) * 4)
    ax.set_yscale("log")
    plain_log(ax)
    ax.set_ylabel("loss (MSE, standardised)")
    ax.set_title(f"{r['train_rows']} training rows, {r['weights']:,} weights", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    start = max(1, b - (s - b) // 8)  # from a little before the lowest point
    zx.plot(epochs[start - 1 :], r["val_loss"][start - 1 :], color=COLORS[1], lw=2)
    zx.plot([b], [r["val_loss"][b - 1]], "o", color=COLORS[1])
    zx.set_ylabel("validation loss")
    zx.set_title("the validation loss turns up (zoomed)", fontsize=10)
    labels = [f"restored\n(epoch {b})", f"last\n(epoch {s})"]
    values = [r["restored"]["rmse"], r["last"]["rmse"]]
    bars = bx.bar(labels, values, color=[COLORS[2], COLORS[3]], width=0.6)
    bx.bar_label(bars, [f"{v:.{digits(r)}f}" for v in values], fontsize=9)
    bx.set_ylim(0, max(values) * 1.2)
    bx.set_ylabel("test RMSE (thousand dollars)")
    bx.set_title("test split: restored vs last", fontsize=10)
    return [save_figure(fig, out, "overfitting.png")]
