"""SGD, momentum, RMSProp, Adam and AdamW: one problem, one initialisation.

1. The notes' 4-5-1 network on property prices, mini-batch 32: each optimizer exactly as
   ``handprop-train optimizer=NAME`` configures it (``conf/optimizer/NAME.yaml``), all from
   the same initial weights.
2. A ravine: price ≈ w₁·area + w₂·bedrooms (min-max normalised, no bias). Area and bedrooms
   are correlated, so the cost surface is a long narrow valley (curvatures 35× apart). The
   optimizers are ``torch.optim``'s, built from the same configs with a learning rate per
   optimizer suited to this surface; the cost is handprop's ``mse_loss(linear(X, w), y)``.
"""

from __future__ import annotations

from pathlib import Path

from handprop.demos._figures import COLORS, figure, integer_ticks, plain_log, save_figure
from handprop.demos._report import Table, plain
from handprop.demos._training import compose, run_config, threads

SUMMARY = (
    "Plain SGD steps straight down the local slope: in a ravine it zig-zags across the walls. "
    "Momentum averages the steps (the zig-zags cancel, the push along the valley adds up); "
    "RMSProp and Adam scale each weight's step by its own gradient history."
)

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")
#: Learning rates for the ravine (its steepest curvature is ~1.05: SGD is stable below ~1.9).
RAVINE_LR = {"sgd": 1.7, "momentum": 0.2, "rmsprop": 0.05, "adam": 0.3, "adamw": 0.3}
RAVINE_START = (-0.3, 3.5)


def _ravine(vectors: bool = False):  # noqa: ANN202
    """The cost function over normalised (area, bedrooms) and price / σ (float64), and the
    cost surface's curvatures (ascending); with ``vectors``, the curvatures and their
    directions (columns) instead."""
    import torch

    from handprop import functional as F
    from handprop.trainer.data import Scaler
    from handprop.trainer.datasets import property_prices

    t = property_prices(600, seed=42)
    scaler = Scaler.fit(t.X[:, :2], "normalize")
    Z = torch.tensor(scaler(t.X[:, :2]), dtype=torch.float64)
    y = torch.tensor(t.y[:, None] / t.y.std(), dtype=torch.float64)

    def cost(w, reduction: str = "mean"):  # noqa: ANN001, ANN202
        """C(w) for w (1, 2), or for every row of w (G, 2) at once with reduction='none'."""
        yhat = F.linear(Z, w)
        if reduction == "none":
            return F.mse_loss(yhat, y.expand_as(yhat), reduction="none").mean(0)
        return F.mse_loss(yhat, y)

    H = 2 * Z.T @ Z / len(Z)  # the Hessian of the mean squared error
    curv, vec = torch.linalg.eigh(H)  # ascending
    if vectors:
        return curv.numpy(), vec.numpy()
    return cost, curv.numpy()


def compute(quick: bool = False, steps: int | None = None) -> dict:
    import numpy as np
    import torch
    from hydra.utils import instantiate

    epochs = 10 if quick else 30
    n = 600 if quick else 2000

    # ---- 1. the 4-5-1 network on property prices ---------------------------------------------
    curves, configs = {}, {}
    with threads(1):
        for name in OPTIMIZERS:
            cfg = compose(
                f"optimizer={name}", f"data.n_samples={n}", f"trainer.max_epochs={epochs}"
            )
            curves[name], _, _ = run_config(cfg)
            configs[name] = cfg.optimizer
    first = curves[OPTIMIZERS[0]].initial
    same_start = all(
        all(torch.equal(curves[o].initial[k], v) for k, v in first.items()) for o in OPTIMIZERS
    )
    r: dict = {"epochs": epochs, "same_initial_weights": same_start, "network": {}}
    for name in OPTIMIZERS:
        oc, h = configs[name], curves[name]
        extra = {k: v for k, v in oc.items() if k not in ("_target_", "_partial_", "lr")}
        r["network"][name] = {
            "lr": float(oc.lr),
            "settings": ", ".join(f"{k}={v}" for k, v in extra.items()),
            "train": h.epoch_train,
            "val": h.epoch_val,
        }

    # ---- 2. the ravine ----------------------------------------------------------------------------
    cost, curv = _ravine()
    n_steps = steps or (40 if quick else 60)
    ws = np.linspace(-0.6, 4.2, 121)
    bs = np.linspace(-1.2, 4.3, 121)
    Wg, Bg = np.meshgrid(ws, bs)
    grid = torch.tensor(np.stack([Wg.ravel(), Bg.ravel()], 1))
    C = cost(grid, reduction="none").reshape(len(bs), len(ws)).numpy()
    i, j = np.unravel_index(C.argmin(), C.shape)
    r["ravine"] = {
        "steps": n_steps,
        "start": list(RAVINE_START),
        "curvatures": curv,
        "surface": {"w1": ws, "w2": bs, "cost": C},
        "grid_minimum": [float(ws[j]), float(bs[i])],
        "lowest_cost": float(C.min()),
    }
    for name in OPTIMIZERS:
        oc = compose(f"optimizer={name}").optimizer
        make = instantiate(oc)  # functools.partial(torch.optim.X, lr=..., ...)
        w = torch.tensor([RAVINE_START], dtype=torch.float64, requires_grad=True)
        opt = make([w], lr=RAVINE_LR[name])
        p, c = [w.detach().numpy()[0].copy()], []
        for _ in range(n_steps):
            loss = cost(w)
            opt.zero_grad()
            loss.backward()
            opt.step()
            c.append(float(loss.detach()))
            p.append(w.detach().numpy()[0].copy())
        c.append(float(cost(w.detach())))
        path = np.array(p)
        d = np.diff(path, axis=0)
        cos = np.einsum("ij,ij->i", d[1:], d[:-1])
        r["ravine"][name] = {
            "lr": RAVINE_LR[name],
            "cost": c,
            "path": path,
            "end": path[-1],
            "zigzags": int(np.sum(cos < 0)),
            "wall_crossings": _across(path),
        }
    return plain(r)


def _across(path):  # noqa: ANN001, ANN202
    """How often the path's step across the valley changes side: the sign of each step along
    the steep direction (the Hessian's top eigenvector) flips when it heads for the other wall."""
    import numpy as np

    _, curv_vec = _ravine(vectors=True)
    steep = curv_vec[:, -1]
    s = np.sign(np.diff(path, axis=0) @ steep)
    s = s[s != 0]
    return int(np.sum(s[1:] != s[:-1]))


def tables(r: dict) -> list[Table]:
    t1 = Table(
        f"4-5-1 on property prices, mini-batch 32, {r['epochs']} epochs, configs from "
        "conf/optimizer",
        ["optimizer", "lr", "other settings", "train cost", "val cost", "best val"],
        note="Costs are the mean squared error of the standardised price (1.0 = guessing "
        "the mean). Same initial weights for all five (one seed, one builder).",
    )
    for name in OPTIMIZERS:
        v = r["network"][name]
        t1.add(name, v["lr"], v["settings"], v["train"][-1], v["val"][-1], min(v["val"]))
    rav = r["ravine"]
    curv = rav["curvatures"]
    n_steps = rav["steps"]
    t2 = Table(
        f"The ravine: price ~ w1 area + w2 bedrooms, {n_steps} steps from w = "
        f"{tuple(rav['start'])}",
        [
            "optimizer",
            "lr (ravine)",
            "cost after 10 steps",
            f"after {n_steps}",
            "w1",
            "w2",
            "zig-zags",
            "wall crossings",
        ],
        note=f"Curvatures of the cost surface: {curv[0]:.3g} along the valley, {curv[1]:.3g} "
        f"across it ({curv[1] / curv[0]:.0f}x). Lowest cost on the plotted grid: "
        f"{rav['lowest_cost']:.4f}. 'zig-zags': steps whose direction turned by more than 90 "
        "degrees from the previous one. 'wall crossings': how often the step across the "
        "valley changed sides.",
    )
    for name in OPTIMIZERS:
        v = rav[name]
        t2.add(
            name,
            v["lr"],
            v["cost"][10],
            v["cost"][-1],
            *v["end"],
            v["zigzags"],
            v["wall_crossings"],
        )
    return [t1, t2]


def caption(r: dict) -> str:
    rav = r["ravine"]
    curv = rav["curvatures"]
    sgd, mom = rav["sgd"], rav["momentum"]
    n = rav["steps"]
    gap = {k: [c - rav["lowest_cost"] for c in rav[k]["cost"]] for k in ("sgd", "momentum")}
    best = min(range(len(gap["momentum"])), key=gap["momentum"].__getitem__)
    end_m, end_s = gap["momentum"][-1], gap["sgd"][-1]
    overshoot = " then overshoot, and" if end_m > 2 * gap["momentum"][best] else ""
    return (
        "In the ravine (area and bedrooms are correlated, so the valley is "
        f"{curv[1] / curv[0]:.0f}× steeper across than along) plain SGD zig-zags from wall to "
        f"wall: its step across the valley changes side {sgd['wall_crossings']} times in {n} "
        f"steps. Momentum's averaged steps sway in a wide S instead ({mom['wall_crossings']} "
        f"changes of side); they come within {gap['momentum'][best]:.1g} of the lowest cost at "
        f"step {best} (SGD: {gap['sgd'][best]:.1g}),{overshoot} after {n} steps momentum ends "
        f"{'below' if end_m < end_s else 'above'} SGD ({end_m:.2g} vs {end_s:.2g} above the "
        "lowest cost)."
    )


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    fig, axes = figure(10, 3.8, 1, 2)
    for k, name in enumerate(OPTIMIZERS):
        v = r["network"][name]
        axes[0].plot(range(1, len(v["train"]) + 1), v["train"], color=COLORS[k], lw=2, label=name)
        axes[1].plot(range(1, len(v["val"]) + 1), v["val"], color=COLORS[k], lw=2, label=name)
    for ax, what in zip(axes, ("training", "validation"), strict=True):
        ax.set_yscale("log")
        plain_log(ax)
        integer_ticks(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{what} cost (MSE, standardised price)")
        ax.legend(fontsize=8)
    axes[0].set_title("4-5-1 on property prices: same start, five optimizers", fontsize=10)
    axes[1].set_title("validation", fontsize=10)
    figures = [save_figure(fig, out, "loss_curves.png")]

    rav = r["ravine"]
    ws, bs, C = (np.asarray(rav["surface"][k]) for k in ("w1", "w2", "cost"))
    c_min = rav["lowest_cost"]
    fig, axes = figure(12, 4.2, 1, 3, width_ratios=[1, 1, 1.05])
    levels = c_min + np.geomspace(2e-4, C.max() - c_min, 18)  # dense near the valley floor
    groups = (("sgd", "momentum"), ("rmsprop", "adam", "adamw"))
    for ax, group in zip(axes[:2], groups, strict=True):
        ax.contourf(ws, bs, C, levels=levels, cmap="Blues", alpha=0.35)
        ax.contour(ws, bs, C, levels=levels, colors="0.55", linewidths=0.5)
        for name in group:
            k = OPTIMIZERS.index(name)
            p = np.asarray(rav[name]["path"])
            ax.plot(
                p[:, 0],
                p[:, 1],
                "-o",
                color=COLORS[k],
                ms=2.5,
                lw=1.3,
                label=f"{name} (lr {rav[name]['lr']})",
            )
        ax.plot(*rav["start"], "ks", ms=6)
        ax.plot(*rav["grid_minimum"], "*", color="white", mec="k", ms=13)
        ax.set_xlabel("w1 (area)")
        ax.set_ylabel("w2 (bedrooms)")
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_title("a ravine: SGD zig-zags, momentum sways", fontsize=10)
    axes[1].set_title("per-weight step sizes: RMSProp, Adam, AdamW", fontsize=10)
    ax = axes[2]
    for k, name in enumerate(OPTIMIZERS):
        ax.plot(np.asarray(rav[name]["cost"]) - c_min + 1e-6, color=COLORS[k], lw=2, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cost - lowest cost")
    ax.set_title("distance to the bottom, per step", fontsize=10)
    ax.legend(fontsize=8)
    figures.append(save_figure(fig, out, "ravine.png"))
    return figures
