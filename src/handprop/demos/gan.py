"""The notes' "GANs: image generation, adversarial model", on the 2-D ring of 8 Gaussians.

``handprop-train experiment=gan_ring``: a generator 2-64-64-2 turns noise into points, a
discriminator 2-64-64-1 tells them from the real rows, each trained in turn by its own Adam.
Watched during training: the generator's points for the same 2500 noise vectors at several
epochs, over the validation rows; both networks' costs at every update; and after each epoch
the benchmark's two numbers (Metz et al., 2017): how many of the 8 modes have at least 20 of
the points within 3 standard deviations, and what share of the points is that close to a mode.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from handprop.demos._figures import COLORS, figure, integer_ticks, save_figure
from handprop.demos._report import Table, plain
from handprop.demos._training import compose, fit_trainer, threads

SUMMARY = (
    "Two networks play against each other: the discriminator learns to tell real points from "
    "generated ones, the generator learns to make points the discriminator takes for real. "
    "Noise that lands between modes is rejected, so the generator moves it onto the ring's "
    "8 modes, and both costs move towards log 2, where the discriminator could do no better "
    "than a coin toss (the caption says how near they end)."
)

SHOWN = 800  # generated points per snapshot
BLOCK = 10  # updates averaged per point of the loss curves
LOG2 = math.log(2)


def _watcher(snap_epochs: list[int]):  # noqa: ANN202
    """A Lightning callback recording both costs per update, the quality after each epoch and
    the generated points at ``snap_epochs`` (1-based)."""
    import lightning as L
    import torch

    class Watch(L.Callback):
        def __init__(self) -> None:
            self.g: list[float] = []
            self.d: list[float] = []
            self.epochs: list[dict] = []
            self.snapshots: dict[str, list] = {}

        def on_train_batch_end(self, trainer, module, *args) -> None:  # noqa: ANN001, ANN002
            self.g += module.last_losses
            self.d += module.last_costs["d_loss"]

        def on_train_epoch_end(self, trainer, module) -> None:  # noqa: ANN001
            dm = trainer.datamodule
            values = module.evaluate(*dm.split("val"))
            self.epochs.append({"updates": module.updates, **values})
            epoch = trainer.current_epoch + 1
            if epoch in snap_epochs:
                with torch.no_grad():
                    points = module.task.unscale_inputs(module.sample(module.eval_noise[:SHOWN]))
                self.snapshots[str(epoch)] = points.tolist()

    return Watch()


def _blocks(values: list[float]) -> list[float]:
    return [
        sum(values[i : i + BLOCK]) / len(values[i : i + BLOCK])
        for i in range(0, len(values), BLOCK)
    ]


def compute(quick: bool = False) -> dict:
    epochs = 10 if quick else 45  # the preset's 45
    snap = [1, 3, 6, 10] if quick else [1, 5, 15, 45]
    cfg = compose(
        "experiment=gan_ring", f"trainer.max_epochs={epochs}", "logger=none", "progress=false"
    )
    watch = _watcher(snap)
    with threads(1), tempfile.TemporaryDirectory(prefix="handprop-demo-") as tmp:
        run = fit_trainer(cfg, Path(tmp), (watch,))
    dm, module = run.datamodule, run.module
    test = module.evaluate(*dm.split("test"))  # the best weights, as handprop-train reports
    best = min(range(len(watch.epochs)), key=lambda e: watch.epochs[e]["energy_distance"])
    return plain(
        {
            "epochs": epochs,
            "updates_per_epoch": watch.epochs[0]["updates"],
            "snapshots": watch.snapshots,
            "real": dm.table.X[dm.indices["val"]][:SHOWN],
            "modes": dm.table.modes,
            "mode_std": dm.table.mode_std,
            "g_loss": _blocks(watch.g),
            "d_loss": _blocks(watch.d),
            "last_epoch": {
                "g_loss": sum(watch.g[-watch.epochs[0]["updates"] :]) / watch.epochs[0]["updates"],
                "d_loss": sum(watch.d[-watch.epochs[0]["updates"] :]) / watch.epochs[0]["updates"],
            },
            "per_epoch": watch.epochs,
            "best_epoch": best + 1,
            "test": test,
        }
    )


def tables(r: dict) -> list[Table]:
    t = Table(
        f"The ring GAN after each of {r['epochs']} epochs ({r['updates_per_epoch']} updates each; "
        "validation rows, the same 2500 noise vectors every time)",
        [
            "epoch",
            "updates",
            "modes covered",
            "high quality",
            "energy distance",
            "D acc. real",
            "D acc. fake",
            "D cost",
            "G cost",
        ],
        note="One update: one discriminator step (256 real rows, 256 generated) and one "
        "generator step. High quality: within 3 standard deviations of the nearest mode; a "
        "mode is covered by at least 20 such points. D cost: ½[BCE(D(x),1) + BCE(D(G(z)),0)], "
        "G cost: BCE(D(G(z)),1); both log 2 = 0.693 when D cannot tell.",
    )
    for e, v in enumerate(r["per_epoch"], start=1):
        t.add(
            e,
            v["updates"],
            int(v["modes_covered"]),
            f"{100 * v['high_quality']:.0f} %",
            v["energy_distance"],
            v["d_real_accuracy"],
            v["d_fake_accuracy"],
            v["d_loss"],
            v["g_loss"],
        )
    return [t]


def caption(r: dict) -> str:
    first, test = r["per_epoch"][0], r["test"]
    last = r["last_epoch"]
    near = all(abs(last[k] - LOG2) < 0.15 for k in ("d_loss", "g_loss"))
    return (
        f"After one epoch the generated points (red) cover {int(first['modes_covered'])} of "
        f"the 8 modes, {100 * first['high_quality']:.0f} % of them within 3 standard "
        f"deviations of one; the weights of epoch {r['best_epoch']} (the lowest energy "
        f"distance to the validation rows, as handprop-train keeps) cover "
        f"{int(test['modes_covered'])} with {100 * test['high_quality']:.0f} % of their points "
        f"that close. Over the last epoch the discriminator's cost averages "
        f"{last['d_loss']:.2f} and the generator's {last['g_loss']:.2f}, "
        f"{'both near' if near else 'not both near'} log 2 = 0.69."
    )


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    snaps = r["snapshots"]
    fig, axes = figure(3.2 * len(snaps), 3.4, 1, len(snaps), sharex=True, sharey=True)
    real = np.asarray(r["real"])
    per_epoch = r["per_epoch"]
    for ax, (epoch, points) in zip(axes, snaps.items(), strict=True):
        p = np.asarray(points)
        ax.scatter(real[:, 0], real[:, 1], s=3, color="0.75")
        ax.scatter(p[:, 0], p[:, 1], s=3, color=COLORS[1])
        v = per_epoch[int(epoch) - 1]
        ax.set_title(
            f"epoch {epoch}: {int(v['modes_covered'])}/8 modes, {100 * v['high_quality']:.0f} % HQ",
            fontsize=9,
        )
        ax.set_aspect("equal")
        ax.set_xticks([-2, 0, 2])
        ax.set_yticks([-2, 0, 2])
    figures = [save_figure(fig, out, "samples.png")]

    fig, axes = figure(11, 3.6, 1, 2)
    ax = axes[0]
    x = [BLOCK * (i + 0.5) for i in range(len(r["d_loss"]))]
    ax.plot(x, r["d_loss"], color=COLORS[0], label="discriminator")
    ax.plot(x, r["g_loss"], color=COLORS[1], label="generator (non-saturating)")
    ax.axhline(LOG2, color="0.5", ls="--", lw=1, label="log 2")
    ax.set_xlabel("update")
    ax.set_ylabel(f"cost (mean of {BLOCK} updates)")
    ax.set_title("both networks' costs", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1]
    epochs = range(1, len(per_epoch) + 1)
    ax.plot(
        epochs,
        [v["high_quality"] for v in per_epoch],
        "o-",
        color=COLORS[2],
        ms=3,
        label="high-quality share",
    )
    ax.plot(
        epochs,
        [v["modes_covered"] / 8 for v in per_epoch],
        "s-",
        color=COLORS[3],
        ms=3,
        label="modes covered / 8",
    )
    ax.axvline(r["best_epoch"], color="0.6", ls=":", lw=1)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("epoch")
    ax.set_title("sample quality (validation; dotted: the kept epoch)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    integer_ticks(ax)
    figures.append(save_figure(fig, out, "losses.png"))
    return figures
