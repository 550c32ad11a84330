"""Vanishing gradients: the error signal δ layer by layer in a deep network, for sigmoid, tanh
and ReLU.

Three MLPs with 8 hidden layers of 32 units on property prices, one per activation, the same
data, the same initialisation rule (He: ``W ~ N(0, 2 / fan_in)``; with one seed, the very same
initial weights) and plain mini-batch SGD. Each update runs :meth:`handprop.nn.MLP.backprop`,
the δ recursion ``δ_{l−1} = (δ_l W_l) ⊙ σ'(z_{l−1})``, whose ``record`` argument hands over
each layer's δ where the recursion computes it (what ``handprop-train monitors=on`` logs as
``monitors/layer<k>/delta_mean_abs``). The mean |δ| of every layer is measured on the whole
training split at initialisation and after training.

Each step back through a sigmoid layer multiplies δ by ``σ'(z) ≤ 0.25``: eight of them leave
the first layers almost no error signal, so their weights barely move and the network stalls
at predicting the mean. tanh's derivative is 1 at 0 and ReLU's is 1 wherever the unit is on,
so their δ reaches the first layer.
"""

from __future__ import annotations

import math
from pathlib import Path

from handprop.demos._figures import COLORS, figure, integer_ticks, plain_log, save_figure
from handprop.demos._report import Table, plain
from handprop.demos._training import build, compose, threads

SUMMARY = (
    "Backpropagation multiplies the error signal δ by each layer's σ'(z) on its way down. "
    "Through eight sigmoid layers (σ' ≤ 0.25) it shrinks by orders of magnitude and the first "
    "layers stop learning; tanh and ReLU pass it on, and ReLU trains fastest."
)

ACTIVATIONS = ("sigmoid", "tanh", "relu")
NAME = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "ReLU"}
DEPTH, WIDTH = 8, 32  # hidden layers, units per hidden layer
INIT = "he"  # the same rule for all three
LR = 0.01  # plain SGD, mini-batch 32
#: The training cost (MSE of the standardised price; 1 = always predicting the mean) counted
#: as "trained": R² ≈ 0.95.
TARGET = 0.05


def mean_abs_delta(net, x, y, cost) -> list[float]:  # noqa: ANN001
    """Mean |δ_l| of every layer (input side first, the output layer last) on ``(x, y)``, as
    :meth:`MLP.backprop` computes them (its gradients are overwritten, nothing is updated)."""
    deltas: dict[int, float] = {}

    def record(kind: str, layer: int, t) -> None:  # noqa: ANN001
        if kind == "delta":
            deltas[layer] = float(t.abs().mean())

    net.backprop(x, y, cost, record)
    return [deltas[k] for k in sorted(deltas)]


def orders(delta: list[float]) -> float:
    """How many orders of magnitude δ shrinks from the output layer to the first layer."""
    return math.log10(delta[-1] / delta[0])


def compute(quick: bool = False) -> dict:
    import torch

    from handprop.trainer.data import TensorBatches

    epochs = 12 if quick else 30
    n = 1000 if quick else 2000
    r: dict = {"depth": DEPTH, "width": WIDTH, "init": INIT, "lr": LR, "epochs": epochs}
    r["target"] = TARGET
    hidden = ",".join([str(WIDTH)] * DEPTH)
    with threads(1):
        for act in ACTIVATIONS:
            cfg = compose(
                f"model.hidden=[{hidden}]",
                f"model.activation={act}",
                f"model.init={INIT}",
                "optimizer=sgd",
                f"optimizer.lr={LR}",
                f"data.n_samples={n}",
            )
            dm, model, p = build(cfg)
            net, cost = model.net, model.task.cost
            X, y = dm.split("train")
            delta_init = mean_abs_delta(net, X, y, cost)
            opt = model.optimizer_fn(net.parameters())
            batches = TensorBatches(X, y, p.batch_size, shuffle=True, seed=cfg.seed)
            with torch.no_grad():
                costs = [float(cost(net(X), y))]  # epoch 0: before any update
            for _ in range(epochs):
                for item in batches:
                    for xb, yb in item if isinstance(item, list) else [item]:
                        net.backprop(xb, yb, cost)  # every .grad, by the δ recursion
                        opt.step()
                with torch.no_grad():
                    costs.append(float(cost(net(X), y)))
            delta_trained = mean_abs_delta(net, X, y, cost)
            reached = [e for e, c in enumerate(costs) if c <= TARGET]
            r[act] = {
                "delta_init": delta_init,
                "delta_trained": delta_trained,
                "orders_init": orders(delta_init),
                "orders_trained": orders(delta_trained),
                "cost": costs,
                "epochs_to_target": reached[0] if reached else None,
            }
    return plain(r)


def fastest(r: dict) -> str:
    """The activation that reached the target cost in the fewest epochs (the lowest final
    cost if none did, or to break a tie)."""

    def key(a: str) -> tuple[float, float]:
        e = r[a]["epochs_to_target"]
        return (math.inf if e is None else e, r[a]["cost"][-1])

    return min(ACTIVATIONS, key=key)


def tables(r: dict) -> list[Table]:
    t = Table(
        f"{DEPTH} hidden layers of {WIDTH}, {r['init']} init, SGD lr {r['lr']}, "
        f"{r['epochs']} epochs",
        [
            "activation",
            "mean |δ| first layer (init)",
            "mean |δ| output (init)",
            "orders shrunk (init)",
            "orders shrunk (trained)",
            f"epochs to cost {r['target']}",
            "final train cost",
        ],
        note="'orders shrunk': log10 of the output layer's mean |δ| over the first layer's, "
        "measured on the whole training split. Cost: MSE of the standardised price (1 = "
        "always predicting the mean).",
    )
    for a in ACTIVATIONS:
        v = r[a]
        t.add(
            NAME[a],
            v["delta_init"][0],
            v["delta_init"][-1],
            v["orders_init"],
            v["orders_trained"],
            "never" if v["epochs_to_target"] is None else v["epochs_to_target"],
            v["cost"][-1],
        )
    return [t]


def _when(v: dict) -> str:
    e = v["epochs_to_target"]
    return "never" if e is None else f"epoch {e}"


def caption(r: dict) -> str:
    shrink = ", ".join(
        f"{NAME[a]} {r[a]['orders_init']:.1f} ({r[a]['orders_trained']:.1f})" for a in ACTIVATIONS
    )
    best = fastest(r)
    others = "; ".join(f"{NAME[a]}: {_when(r[a])}" for a in ACTIVATIONS if a != best)
    return (
        f"With {DEPTH} hidden layers and the same {r['init'].capitalize()} initial weights, "
        "the mean |δ| shrinks from the output layer to the first layer by this many orders of "
        f"magnitude at initialisation (after {r['epochs']} epochs of SGD): {shrink}. "
        f"{NAME[best]} trains fastest: its training cost reaches {r['target']} at "
        f"{_when(r[best])} "
        f"({others}); sigmoid ends at a cost of {r['sigmoid']['cost'][-1]:.2g}, "
        f"{'no better than predicting the mean' if r['sigmoid']['cost'][-1] > 0.9 else 'behind'}."
    )


def draw(r: dict, out: Path) -> list[Path]:
    fig, axes = figure(13, 4.2, 1, 3)
    axes[0].sharey(axes[1])
    layers = list(range(1, DEPTH + 2))
    for ax, key, when in (
        (axes[0], "delta_init", "at initialisation"),
        (axes[1], "delta_trained", f"after {r['epochs']} epochs"),
    ):
        for k, a in enumerate(ACTIVATIONS):
            ax.plot(layers, r[a][key], "o-", color=COLORS[k], lw=2, ms=4, label=NAME[a])
        ax.set_yscale("log")
        ax.set_xticks(layers, [*map(str, layers[:-1]), "out"])
        ax.set_xlabel("layer (1 = first hidden layer)")
        ax.set_ylabel("mean |δ| = mean |∂C/∂z|")
        ax.set_title(f"error signal per layer, {when}", fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[2]
    for k, a in enumerate(ACTIVATIONS):
        cost = r[a]["cost"]
        ax.plot(range(len(cost)), cost, color=COLORS[k], lw=2, label=NAME[a])
    ax.axhline(r["target"], color="0.5", ls=":", lw=1)
    ax.set_yscale("log")
    plain_log(ax)
    integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training cost (MSE, standardised)")
    ax.set_title(f"the loss curves (dotted: cost {r['target']})", fontsize=10)
    ax.legend(fontsize=8)
    return [save_figure(fig, out, "vanishing.png")]
