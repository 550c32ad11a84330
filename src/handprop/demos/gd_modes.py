"""Batch vs stochastic vs mini-batch gradient descent, from the same weights on the same data.

The model has two parameters so that its cost surface can be drawn: price ≈ w · area + b
(``MLP(1, [], 1)``: ``model=linear`` on one feature), area min-max normalised and price
standardised by the data module, SGD with one learning rate for all three. The three runs
differ only in ``gd=batch|stochastic|minibatch`` (the trainer's batch sizes): how many
samples each update averages over.
"""

from __future__ import annotations

from pathlib import Path

from handprop.demos._common import (
    COLORS,
    Report,
    build,
    compose,
    figure,
    fit,
    integer_ticks,
    legend_in_order,
    loss_function,
    plain_log,
    threads,
)

SUMMARY = (
    "Batch gradient descent makes one exact step per epoch; stochastic makes one noisy step "
    "per sample; mini-batch sits between. Same data (area -> price), same start, same "
    "learning rate: per update batch is smooth and SGD jitters, per epoch SGD and mini-batch "
    "are far ahead."
)

MODES = ("batch", "minibatch", "stochastic")


def cost_surface(X, y, loss_fn, w_range, b_range, n: int = 121):  # noqa: ANN001, ANN201
    """The cost of ``ŷ = w x + b`` on a grid of ``(w, b)``: one handprop ``linear`` with every
    grid point as an output neuron, then the per-column loss."""
    import torch

    from handprop import functional as F

    ws = torch.linspace(*w_range, n)
    bs = torch.linspace(*b_range, n)
    Wg, Bg = torch.meshgrid(ws, bs, indexing="xy")  # (n, n): rows over b, columns over w
    yhat = F.linear(X, Wg.reshape(-1, 1), Bg.reshape(-1))  # (N, n²)
    cost = loss_fn(yhat, y.expand_as(yhat), reduction="none").mean(0)
    return ws.numpy(), bs.numpy(), cost.reshape(n, n).numpy()


def _params(net):  # noqa: ANN001, ANN202
    """(w, b) of the one-neuron network, recorded after every update."""
    import numpy as np

    lin = net.linears[0]
    return np.array([float(lin.weight.detach()), float(lin.bias.detach())])


def run(out: Path, quick: bool = False, lr: float = 0.2) -> dict:
    import numpy as np
    import torch

    from handprop import functional as F
    from handprop.datasets import Table, property_prices

    rep = Report("gd-modes", out, SUMMARY)
    epochs = 6 if quick else 15
    start = (-1.0, 2.0)  # (w, b): far from the minimum, so the paths have somewhere to go
    runs, models = {}, {}
    with threads(1):
        for mode in MODES:
            cfg = compose(
                f"gd={mode}",
                "model=linear",
                "optimizer=sgd",
                f"optimizer.lr={lr}",
                "data.preprocessing=normalize",
                f"data.n_samples={300 if quick else 600}",
            )
            full = property_prices(cfg.data.n_samples, cfg.data.noise, cfg.seed)
            area = Table(full.X[:, :1], full.y, full.feature_names[:1], full.target_name, full.task)
            dm, model = build(cfg, area)
            lin = model.net.linears[0]
            with torch.no_grad():
                lin.weight.fill_(start[0])
                lin.bias.fill_(start[1])
            opt = model.optimizer_fn(model.net.parameters())
            runs[mode] = fit(
                model.net,
                loss_function(model),
                opt,
                dm.split("train"),
                epochs,
                batch_size=cfg.gd.batch_size,
                shuffle=cfg.gd.shuffle,
                seed=cfg.seed,
                track=_params,
                step_cost=True,
            )
            runs[mode].batch_size = cfg.gd.batch_size or dm.num_train
            models[mode] = (dm, model)

    dm, model = models["batch"]
    X, y = dm.split("train")
    ends = np.concatenate([runs[m].step_params[-1][None] for m in MODES])
    w_rng = (min(start[0], ends[:, 0].min()) - 0.6, max(start[0], ends[:, 0].max()) + 0.8)
    b_rng = (min(start[1], ends[:, 1].min()) - 0.6, max(start[1], ends[:, 1].max()) + 0.6)
    ws, bs, C = cost_surface(X, y, loss_function(model), w_rng, b_rng)
    i, j = np.unravel_index(C.argmin(), C.shape)

    t = rep.table(
        f"Area -> price, w x + b, SGD lr {lr}, {epochs} epochs, {dm.num_train} training rows",
        [
            "mode",
            "batch size",
            "updates / epoch",
            "updates",
            "wall s",
            "ms / epoch",
            "final cost",
            "updates that raised the cost",
        ],
        note="'final cost' is the mean squared error on the whole training set (price "
        "standardised, so 1.0 = always guessing the mean). 'updates that raised the cost': "
        "how often one step made the full training cost worse — never for batch GD.",
    )
    values = {}
    for mode in MODES:
        h = runs[mode]
        sc = np.array(h.step_train)
        rises = float(np.mean(np.diff(sc) > 1e-12)) if len(sc) > 1 else 0.0
        t.add(
            mode,
            h.batch_size,
            h.updates_per_epoch,
            len(h.step_loss),
            h.seconds,
            1000 * h.seconds / len(h.epoch_train),
            h.final,
            f"{100 * rises:.0f} %",
        )
        values[mode] = {
            "batch_size": h.batch_size,
            "updates_per_epoch": h.updates_per_epoch,
            "updates": len(h.step_loss),
            "seconds": h.seconds,
            "final_cost": h.final,
            "epoch_cost": h.epoch_train,
            "fraction_of_updates_raising_cost": rises,
            "start": h.step_params[0].tolist(),
            "end": h.step_params[-1].tolist(),
        }

    # ---- figure --------------------------------------------------------------------------------
    fig, axes = figure(12, 4, 1, 3, width_ratios=[1, 1, 1.15])
    w0, b0 = torch.tensor([[start[0]]]), torch.tensor([start[1]])
    c0 = float(loss_function(model)(F.linear(X, w0, b0), y))
    ax = axes[0]
    for k, mode in reversed(list(enumerate(MODES))):
        h = runs[mode]
        n = np.arange(1, len(h.step_train) + 1)
        style = {
            "batch": dict(lw=2, marker="o", ms=3),
            "minibatch": dict(lw=1.6),
            "stochastic": dict(lw=0.8),
        }[mode]
        ax.plot(n, h.step_train, color=COLORS[k], label=mode, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log(ax)
    ax.set_xlabel("update")
    ax.set_ylabel("training cost after the update")
    ax.set_title("per update: smooth vs jittery", fontsize=10)
    legend_in_order(ax, MODES, fontsize=8)
    ax = axes[1]
    for k, mode in enumerate(MODES):
        h = runs[mode]
        ax.plot(
            range(len(h.epoch_train) + 1),
            [c0, *h.epoch_train],
            "-o",
            ms=3,
            color=COLORS[k],
            label=f"{mode} ({h.updates_per_epoch} upd/epoch)",
        )
    ax.set_yscale("log")
    plain_log(ax)
    integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training cost")
    ax.set_title("per epoch: one update vs hundreds", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[2]
    levels = np.geomspace(C.min() * 1.02, C.max(), 14)
    cs = ax.contourf(ws, bs, C, levels=levels, cmap="Greys", alpha=0.55)
    ax.contour(ws, bs, C, levels=levels, colors="white", linewidths=0.4)
    for k, mode in reversed(list(enumerate(MODES))):  # batch drawn last, on top
        p = np.array(runs[mode].step_params)
        style = {
            "batch": dict(lw=2, marker="o", ms=3),
            "minibatch": dict(lw=1.2),
            "stochastic": dict(lw=0.5, alpha=0.8),
        }[mode]
        ax.plot(p[:, 0], p[:, 1], color=COLORS[k], label=mode, **style)
    ax.plot(*start, "ks", ms=6)
    ax.annotate("start", start, xytext=(6, 4), textcoords="offset points", fontsize=8)
    ax.plot(ws[j], bs[i], "*", color="white", mec="k", ms=13, label="minimum")
    ax.set_xlabel("w (weight on area)")
    ax.set_ylabel("b (bias)")
    ax.set_title("the paths over the cost surface C(w, b)", fontsize=10)
    legend_in_order(ax, [*MODES, "minimum"], fontsize=8, loc="upper right")
    fig.colorbar(cs, ax=ax, label="cost", format="%.2g")
    rep.figure(fig, "gd_modes.png")

    rep.values.update(values)
    rep.values["surface_minimum"] = [float(ws[j]), float(bs[i])]
    return rep.finish()
