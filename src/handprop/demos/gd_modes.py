"""Batch vs stochastic vs mini-batch gradient descent, from the same weights on the same data.

The model has two parameters so that its cost surface can be drawn: price ≈ w · area + b
(``MLP(1, [], 1)``: ``model=linear`` on one feature), area min-max normalised and price
standardised by the data module, SGD with one learning rate for all three. The three runs
differ only in ``gd=batch|stochastic|minibatch`` (the trainer's batch sizes): how many
samples each update averages over.
"""

from __future__ import annotations

from pathlib import Path

from handprop.demos._figures import (
    COLORS,
    figure,
    integer_ticks,
    legend_in_order,
    plain_log,
    save_figure,
)
from handprop.demos._report import Table, plain
from handprop.demos._training import build, compose, fit, loss_function, threads

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


def compute(quick: bool = False, lr: float = 0.2) -> dict:
    import numpy as np
    import torch

    from handprop import functional as F
    from handprop.trainer.datasets import Table as DataTable
    from handprop.trainer.datasets import property_prices

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
            area = DataTable(
                full.X[:, :1], full.y, full.feature_names[:1], full.target_name, full.task
            )
            dm, model, p = build(cfg, area)
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
                batch_size=p.batch_size,
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
    w0, b0 = torch.tensor([[start[0]]]), torch.tensor([start[1]])
    r: dict = {
        "lr": lr,
        "epochs": epochs,
        "train_rows": dm.num_train,
        "start_cost": float(loss_function(model)(F.linear(X, w0, b0), y)),
        "surface": {"w": ws, "b": bs, "cost": C},
        "surface_minimum": [float(ws[j]), float(bs[i])],
    }
    minimum = np.array(r["surface_minimum"])
    for mode in MODES:
        h = runs[mode]
        sc = np.array(h.step_train)
        rises = np.diff(sc) > 1e-12
        path = np.array(h.step_params)
        k = h.updates_per_epoch
        dist = np.linalg.norm(path - minimum, axis=1)  # to the minimum, after each update
        r[mode] = {
            "batch_size": h.batch_size,
            "updates_per_epoch": k,
            "updates": len(h.step_loss),
            "seconds": h.seconds,  # wall time: in the results, never in a table or caption
            "final_cost": h.final,
            "epoch_cost": h.epoch_train,
            "step_cost": h.step_train,
            "path": path,
            "fraction_of_updates_raising_cost": float(np.mean(rises)) if rises.size else 0.0,
            # after the first epoch: does it settle, or keep bouncing?
            "fraction_raising_cost_after_epoch_1": float(np.mean(rises[k:]))
            if rises[k:].size
            else 0.0,
            "way_covered_in_epoch_1": float(1 - dist[k] / dist[0]),
            "start": path[0],
            "end": path[-1],
        }
    return plain(r)


def tables(r: dict) -> list[Table]:
    t = Table(
        f"Area -> price, w x + b, SGD lr {r['lr']}, {r['epochs']} epochs, {r['train_rows']} "
        "training rows",
        [
            "mode",
            "batch size",
            "updates / epoch",
            "updates",
            "final cost",
            "updates that raised the cost",
            "way to the minimum after epoch 1",
        ],
        note="'final cost' is the mean squared error on the whole training set (price "
        "standardised, so 1.0 = always guessing the mean). 'updates that raised the cost': "
        "how often one step made the full training cost worse — never for batch GD. 'way to "
        "the minimum': how much of the distance from the start to the cost surface's minimum "
        "the first epoch covered. (Wall times are in results.json: they vary from run to run.)",
    )
    for mode in MODES:
        v = r[mode]
        t.add(
            mode,
            v["batch_size"],
            v["updates_per_epoch"],
            v["updates"],
            v["final_cost"],
            f"{100 * v['fraction_of_updates_raising_cost']:.0f} %",
            f"{100 * v['way_covered_in_epoch_1']:.0f} %",
        )
    return [t]


def caption(r: dict) -> str:
    b, s = r["batch"], r["stochastic"]
    smooth = (
        "a smooth curve (no update raised the cost)"
        if b["fraction_of_updates_raising_cost"] == 0
        else f"a curve on which {100 * b['fraction_of_updates_raising_cost']:.0f} % of the "
        "updates raised the cost"
    )
    return (
        f"Same start, same data, same learning rate: batch GD's path is {smooth} with one "
        f"step per epoch, covering {100 * b['way_covered_in_epoch_1']:.0f} % of the way to the "
        "minimum in its first epoch; stochastic GD's is a jittery random walk that covers "
        f"{100 * s['way_covered_in_epoch_1']:.0f} % of the way in its first epoch "
        f"({s['updates_per_epoch']} updates) and then keeps bouncing around the minimum: "
        f"{100 * s['fraction_raising_cost_after_epoch_1']:.0f} % of its later updates raise "
        "the cost."
    )


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    start = r["batch"]["start"]
    c0 = r["start_cost"]
    fig, axes = figure(12, 4, 1, 3, width_ratios=[1, 1, 1.15])
    ax = axes[0]
    for k, mode in reversed(list(enumerate(MODES))):
        step_cost = r[mode]["step_cost"]
        n = np.arange(1, len(step_cost) + 1)
        style = {
            "batch": dict(lw=2, marker="o", ms=3),
            "minibatch": dict(lw=1.6),
            "stochastic": dict(lw=0.8),
        }[mode]
        ax.plot(n, step_cost, color=COLORS[k], label=mode, **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log(ax)
    ax.set_xlabel("update")
    ax.set_ylabel("training cost after the update")
    ax.set_title("per update: smooth vs jittery", fontsize=10)
    legend_in_order(ax, MODES, fontsize=8)
    ax = axes[1]
    for k, mode in enumerate(MODES):
        v = r[mode]
        ax.plot(
            range(len(v["epoch_cost"]) + 1),
            [c0, *v["epoch_cost"]],
            "-o",
            ms=3,
            color=COLORS[k],
            label=f"{mode} ({v['updates_per_epoch']} upd/epoch)",
        )
    ax.set_yscale("log")
    plain_log(ax)
    integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training cost")
    ax.set_title("per epoch: one update vs hundreds", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[2]
    ws, bs, C = (np.asarray(r["surface"][k]) for k in ("w", "b", "cost"))
    levels = np.geomspace(C.min() * 1.02, C.max(), 14)
    cs = ax.contourf(ws, bs, C, levels=levels, cmap="Greys", alpha=0.55)
    ax.contour(ws, bs, C, levels=levels, colors="white", linewidths=0.4)
    for k, mode in reversed(list(enumerate(MODES))):  # batch drawn last, on top
        p = np.asarray(r[mode]["path"])
        style = {
            "batch": dict(lw=2, marker="o", ms=3),
            "minibatch": dict(lw=1.2),
            "stochastic": dict(lw=0.5, alpha=0.8),
        }[mode]
        ax.plot(p[:, 0], p[:, 1], color=COLORS[k], label=mode, **style)
    ax.plot(*start, "ks", ms=6)
    ax.annotate("start", start, xytext=(6, 4), textcoords="offset points", fontsize=8)
    ax.plot(*r["surface_minimum"], "*", color="white", mec="k", ms=13, label="minimum")
    ax.set_xlabel("w (weight on area)")
    ax.set_ylabel("b (bias)")
    ax.set_title("the paths over the cost surface C(w, b)", fontsize=10)
    legend_in_order(ax, [*MODES, "minimum"], fontsize=8, loc="upper right")
    fig.colorbar(cs, ax=ax, label="cost", format="%.2g")
    return [save_figure(fig, out, "gd_modes.png")]
