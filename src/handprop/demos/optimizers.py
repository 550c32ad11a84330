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

from handprop.demos._common import (
    COLORS,
    Report,
    compose,
    figure,
    integer_ticks,
    plain_log,
    run_config,
    threads,
)

SUMMARY = (
    "Plain SGD steps straight down the local slope: in a ravine it zig-zags across the walls. "
    "Momentum averages the steps (the zig-zags cancel, the push along the valley adds up); "
    "RMSProp and Adam scale each weight's step by its own gradient history."
)

OPTIMIZERS = ("sgd", "momentum", "rmsprop", "adam", "adamw")
#: Learning rates for the ravine (its steepest curvature is ~1.05: SGD is stable below ~1.9).
RAVINE_LR = {"sgd": 1.7, "momentum": 0.2, "rmsprop": 0.05, "adam": 0.3, "adamw": 0.3}
RAVINE_START = (-0.3, 3.5)


def _ravine():  # noqa: ANN202
    """Normalised (area, bedrooms) and price / σ as float64 tensors, plus the cost function."""
    import numpy as np
    import torch

    from handprop import functional as F
    from handprop.data import Scaler
    from handprop.datasets import property_prices

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

    H = 2 * Z.T @ Z / len(Z)  # the Hessian of the mean squared error, for the table only
    curv = torch.linalg.eigvalsh(H).numpy()
    return cost, np.sort(curv)


def run(out: Path, quick: bool = False, steps: int | None = None) -> dict:
    import numpy as np
    import torch
    from hydra.utils import instantiate

    rep = Report("optimizers", out, SUMMARY)
    epochs = 10 if quick else 30
    n = 600 if quick else 2000

    # ---- 1. the 4-5-1 network on property prices ---------------------------------------------
    curves, t1_rows = {}, []
    with threads(1):
        for name in OPTIMIZERS:
            cfg = compose(
                f"optimizer={name}", f"data.n_samples={n}", f"trainer.max_epochs={epochs}"
            )
            h, _, _ = run_config(cfg)
            curves[name] = h
            t1_rows.append((name, cfg.optimizer, h))
    first = curves[OPTIMIZERS[0]].initial
    same_start = all(
        all(torch.equal(curves[o].initial[k], v) for k, v in first.items()) for o in OPTIMIZERS
    )
    t1 = rep.table(
        f"4-5-1 on property prices, mini-batch 32, {epochs} epochs, configs from conf/optimizer",
        ["optimizer", "lr", "other settings", "train cost", "val cost", "best val"],
        note="Costs are the mean squared error of the standardised price (1.0 = guessing "
        "the mean). Same initial weights for all five (one seed, one builder).",
    )
    values = {"network": {}, "same_initial_weights": same_start}
    for name, oc, h in t1_rows:
        extra = {k: v for k, v in oc.items() if k not in ("_target_", "_partial_", "lr")}
        t1.add(
            name,
            float(oc.lr),
            ", ".join(f"{k}={v}" for k, v in extra.items()),
            h.final,
            h.epoch_val[-1],
            min(h.epoch_val),
        )
        values["network"][name] = {"train": h.epoch_train, "val": h.epoch_val}

    # ---- 2. the ravine ----------------------------------------------------------------------------
    cost, curv = _ravine()
    n_steps = steps or (40 if quick else 60)
    paths, costs = {}, {}
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
        paths[name], costs[name] = np.array(p), np.array(c)

    ws = np.linspace(-0.6, 4.2, 121)
    bs = np.linspace(-1.2, 4.3, 121)
    Wg, Bg = np.meshgrid(ws, bs)
    grid = torch.tensor(np.stack([Wg.ravel(), Bg.ravel()], 1))
    C = cost(grid, reduction="none").reshape(len(bs), len(ws)).numpy()
    i, j = np.unravel_index(C.argmin(), C.shape)
    c_min = float(C.min())
    t2 = rep.table(
        f"The ravine: price ~ w1 area + w2 bedrooms, {n_steps} steps from w = {RAVINE_START}",
        [
            "optimizer",
            "lr (ravine)",
            "cost after 10 steps",
            f"after {n_steps}",
            "w1",
            "w2",
            "zig-zags",
        ],
        note=f"Curvatures of the cost surface: {curv[0]:.3g} along the valley, {curv[1]:.3g} "
        f"across it ({curv[1] / curv[0]:.0f}x). Lowest cost on the plotted grid: {c_min:.4f}. "
        "'zig-zags': steps whose direction turned by more than 90 degrees from the previous one.",
    )
    values["ravine"] = {"curvatures": curv.tolist()}
    for name in OPTIMIZERS:
        d = np.diff(paths[name], axis=0)
        turns = int(np.sum(np.einsum("ij,ij->i", d[1:], d[:-1]) < 0))
        t2.add(name, RAVINE_LR[name], costs[name][10], costs[name][-1], *paths[name][-1], turns)
        values["ravine"][name] = {
            "cost": costs[name].tolist(),
            "end": paths[name][-1].tolist(),
            "zigzags": turns,
        }

    # ---- figures ----------------------------------------------------------------------------------
    fig, axes = figure(10, 3.8, 1, 2)
    for k, name in enumerate(OPTIMIZERS):
        h = curves[name]
        axes[0].plot(
            range(1, len(h.epoch_train) + 1), h.epoch_train, color=COLORS[k], lw=2, label=name
        )
        axes[1].plot(range(1, len(h.epoch_val) + 1), h.epoch_val, color=COLORS[k], lw=2, label=name)
    for ax, what in zip(axes, ("training", "validation"), strict=True):
        ax.set_yscale("log")
        plain_log(ax)
        integer_ticks(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{what} cost (MSE, standardised price)")
        ax.legend(fontsize=8)
    axes[0].set_title("4-5-1 on property prices: same start, five optimizers", fontsize=10)
    axes[1].set_title("validation", fontsize=10)
    rep.figure(fig, "loss_curves.png")

    fig, axes = figure(12, 4.2, 1, 3, width_ratios=[1, 1, 1.05])
    levels = c_min + np.geomspace(2e-4, C.max() - c_min, 18)  # dense near the valley floor
    groups = (("sgd", "momentum"), ("rmsprop", "adam", "adamw"))
    for ax, group in zip(axes[:2], groups, strict=True):
        ax.contourf(ws, bs, C, levels=levels, cmap="Blues", alpha=0.35)
        ax.contour(ws, bs, C, levels=levels, colors="0.55", linewidths=0.5)
        for name in group:
            k = OPTIMIZERS.index(name)
            p = paths[name]
            ax.plot(
                p[:, 0],
                p[:, 1],
                "-o",
                color=COLORS[k],
                ms=2.5,
                lw=1.3,
                label=f"{name} (lr {RAVINE_LR[name]})",
            )
        ax.plot(*RAVINE_START, "ks", ms=6)
        ax.plot(ws[j], bs[i], "*", color="white", mec="k", ms=13)
        ax.set_xlabel("w1 (area)")
        ax.set_ylabel("w2 (bedrooms)")
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_title("a ravine: SGD zig-zags, momentum smooths", fontsize=10)
    axes[1].set_title("per-weight step sizes: RMSProp, Adam, AdamW", fontsize=10)
    ax = axes[2]
    for k, name in enumerate(OPTIMIZERS):
        ax.plot(costs[name] - c_min + 1e-6, color=COLORS[k], lw=2, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cost - lowest cost")
    ax.set_title("distance to the bottom, per step", fontsize=10)
    ax.legend(fontsize=8)
    rep.figure(fig, "ravine.png")

    rep.values.update(values)
    return rep.finish()
