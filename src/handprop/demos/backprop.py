"""Backpropagation by hand, for one house through the 4-5-1 network, next to autograd.

The notes' equations, with column vectors and the cost ``C = ½(y − ŷ)²``::

    z₁ = W₁ x + b₁          a₁ = σ(z₁)             (hidden layer, sigmoid)
    ŷ = z₂ = W₂ a₁ + b₂                            (linear output)
    δ₂ = ∂C/∂z₂ = ŷ − y
    δ₁ = ∂C/∂z₁ = (W₂ᵀ δ₂) ⊙ σ'(z₁),   σ'(z₁) = a₁ (1 − a₁)
    ∂C/∂W₂ = δ₂ a₁ᵀ    ∂C/∂b₂ = δ₂    ∂C/∂W₁ = δ₁ xᵀ    ∂C/∂b₁ = δ₁

computed step by step in plain tensor arithmetic, then compared with what ``backward()``
assembles through handprop's Functions for ``handprop.nn.MLP(4, [5], 1)`` and
``quadratic_cost``; they agree to 1e-12 in float64. Then one update ``W ← W − η ∂C/∂W``.
"""

from __future__ import annotations

from pathlib import Path

from handprop.demos._figures import COLORS, figure, save_figure
from handprop.demos._report import Table, at_most, plain

SUMMARY = (
    "Backpropagation is the chain rule, layer by layer: the output error δ = ŷ − y is sent "
    "back through the output weights and scaled by each hidden neuron's slope σ'(z); every "
    "weight's gradient is its error times its input. Done by hand here, and checked against "
    "autograd running handprop's hand-written backward passes."
)

TOLERANCE = 1e-12


def _graph(t) -> list[str]:  # noqa: ANN001
    """The backward nodes autograd will run, output first (one path down the graph)."""
    names, node = [], t.grad_fn
    while node is not None:
        names.append(type(node).__name__)
        nxt = [
            f
            for f, _ in node.next_functions
            if f is not None and type(f).__name__ != "AccumulateGrad"
        ]
        node = nxt[0] if nxt else None
    return names


PARAMS = ("W2", "b2", "W1", "b1")


def compute(quick: bool = False, lr: float = 0.1, sample: int = 5, seed: int = 0) -> dict:
    import torch

    from handprop import functional as F
    from handprop.functional import FUNCTIONS
    from handprop.networks import MLP
    from handprop.trainer.data import Scaler
    from handprop.trainer.datasets import property_prices

    table = property_prices(300 if quick else 2000, seed=0)
    xs = Scaler.fit(table.X, "standardize")
    ys = Scaler.fit(table.y[:, None], "standardize")
    f64 = torch.float64
    x = torch.tensor(xs(table.X[sample]), dtype=f64)  # (4,)
    y = torch.tensor(ys(table.y[sample : sample + 1, None])[0], dtype=f64)  # (1,)
    torch.manual_seed(seed)
    net = MLP(4, [5], 1, activation="sigmoid", init="torch").to(f64)
    W1, b1 = (p.detach().clone() for p in (net.linears[0].weight, net.linears[0].bias))
    W2, b2 = (p.detach().clone() for p in (net.linears[1].weight, net.linears[1].bias))

    # ---- by hand: the notes' equations, one line each -----------------------------------------
    z1 = W1 @ x + b1  # (5,)
    a1 = 1 / (1 + torch.exp(-z1))  # σ(z₁)
    z2 = W2 @ a1 + b2  # (1,)  ŷ
    yhat = z2
    cost = 0.5 * (y - yhat).square().sum()
    d2 = yhat - y  # δ₂ = ŷ − y
    sp = a1 * (1 - a1)  # σ'(z₁)
    back = W2.T @ d2  # W₂ᵀ δ₂, the error each hidden neuron receives
    d1 = back * sp  # δ₁
    hand = {
        "W2": torch.outer(d2, a1),  # δ₂ a₁ᵀ   (1, 5)
        "b2": d2,
        "W1": torch.outer(d1, x),  # δ₁ xᵀ    (5, 4)
        "b1": d1,
    }

    # ---- autograd through handprop's Functions ---------------------------------------------------
    out_net = net(x[None])  # (1, 1)
    C = F.quadratic_cost(out_net, y[None], reduction="sum")
    graph = _graph(C)
    handprop_nodes = {f.__name__ + "Backward" for f in FUNCTIONS.values()}
    if not set(graph) <= handprop_nodes:
        raise AssertionError(f"autograd graph has nodes that are not handprop Functions: {graph}")
    C.backward()
    auto = {
        "W2": net.linears[1].weight.grad,
        "b2": net.linears[1].bias.grad,
        "W1": net.linears[0].weight.grad,
        "b1": net.linears[0].bias.grad,
    }
    diffs = {k: float((hand[k] - auto[k]).abs().max()) for k in hand}
    max_diff = max(diffs.values())
    forward_diff = float((out_net.detach()[0] - yhat).abs().max())
    if not max_diff <= TOLERANCE:  # the demo's claim; kept under python -O too
        raise AssertionError(f"hand vs autograd gradients differ by {max_diff:.3g} > {TOLERANCE:g}")

    # ---- one update: W ← W − η ∂C/∂W ------------------------------------------------------------------
    params = {
        "W1": net.linears[0].weight,
        "b1": net.linears[0].bias,
        "W2": net.linears[1].weight,
        "b2": net.linears[1].bias,
    }
    with torch.no_grad():
        for k, p in params.items():
            p -= lr * hand[k]
        cost_after = float(F.quadratic_cost(net(x[None]), y[None], reduction="sum"))
        yhat_after = float(net(x[None]))
    g2 = float(sum(g.square().sum() for g in hand.values()))
    t = {k: v.tolist() for k, v in (("x", x), ("z1", z1), ("a1", a1), ("z2", z2))}
    return plain(
        {
            "sample": sample,
            "lr": lr,
            "features": table.feature_names,
            "raw": [*table.X[sample], table.y[sample]],
            **t,
            "y": float(y),
            "sigma_prime": sp.tolist(),
            "back": back.tolist(),
            "delta1": d1.tolist(),
            "yhat": float(yhat[0]),
            "delta2": d2.tolist(),
            "hand": {k: hand[k].tolist() for k in PARAMS},
            "autograd": {k: auto[k].tolist() for k in PARAMS},
            "diffs": diffs,
            "max_abs_diff": max_diff,
            "tolerance": TOLERANCE,
            "forward_diff": forward_diff,
            "cost_before": float(cost),
            "cost_after": cost_after,
            "yhat_after": yhat_after,
            "predicted_change": -lr * g2,
            "backward_nodes": graph,
        }
    )


def tables(r: dict) -> list[Table]:
    import numpy as np

    t0 = Table(
        f"House {r['sample']}: inputs standardised, price standardised (float64)",
        ["", *r["features"], "price (target y)"],
    )
    t0.add("raw", *r["raw"])
    t0.add("standardised", *r["x"], r["y"])
    t1 = Table(
        "Forward pass and error signals, layer by layer",
        ["layer", "neuron", "z", "a", "sigma'(z)", "W2^T delta2", "delta = dC/dz"],
        note=f"Output: y = {r['y']:.6f}, cost C = 1/2 (y - yhat)^2 = {r['cost_before']:.6g}. "
        f"Autograd's yhat differs from the hand one by {r['forward_diff']:.1e}.",
    )
    for j in range(len(r["z1"])):
        t1.add(
            "hidden",
            j + 1,
            r["z1"][j],
            r["a1"][j],
            r["sigma_prime"][j],
            r["back"][j],
            r["delta1"][j],
        )
    t1.add("output", 1, r["z2"][0], f"yhat = {r['yhat']:.4g}", "1 (linear)", "-", r["delta2"][0])
    t2 = Table(
        "Every gradient: by hand (delta times input) vs autograd (handprop's backward)",
        ["parameter", "index", "by hand", "autograd", "difference"],
        note=f"Largest difference {r['max_abs_diff']:.2e} (tolerance {r['tolerance']:g}). "
        f"Backward nodes autograd ran: {' -> '.join(r['backward_nodes'])}.",
    )
    for k in PARAMS:
        hk, ak = np.asarray(r["hand"][k]), np.asarray(r["autograd"][k])
        for idx in np.ndindex(*hk.shape):
            t2.add(
                k,
                ",".join(str(i + 1) for i in idx),
                float(hk[idx]),
                float(ak[idx]),
                float(hk[idx] - ak[idx]),
            )
    t3 = Table(
        f"One gradient-descent update, learning rate {r['lr']}",
        ["", "yhat", "cost 1/2 (y - yhat)^2"],
        note=f"First-order prediction of the change: -lr * sum of squared gradients = "
        f"{r['predicted_change']:.4g}; actual change {r['cost_after'] - r['cost_before']:.4g}.",
    )
    t3.add("before", r["yhat"], r["cost_before"])
    t3.add("after", r["yhat_after"], r["cost_after"])
    return [t0, t1, t2, t3]


def _count(r: dict) -> int:
    import numpy as np

    return sum(int(np.asarray(r["hand"][k]).size) for k in PARAMS)


def caption(r: dict) -> str:
    lowers = r["cost_after"] < r["cost_before"]
    d = r["max_abs_diff"]
    agree = "agreeing exactly (every difference 0)" if d == 0 else f"agreeing to {at_most(d)}"
    return (
        f"All {_count(r)} gradients from the notes' equations (`δ_out = ŷ − y`, "
        "`δ_hidden = W_outᵀ δ_out ⊙ σ'(z)`, `∂C/∂W = δ aᵀ`) sit on the diagonal against "
        f"autograd's, {agree} in float64, and one "
        f"update `W ← W − η ∂C/∂W` {'lowers' if lowers else 'does not lower'} the cost "
        f"(from {r['cost_before']:.3g} to {r['cost_after']:.3g})."
    )


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np
    from matplotlib import colormaps

    hand = {k: np.asarray(v) for k, v in r["hand"].items()}
    auto = {k: np.asarray(v) for k, v in r["autograd"].items()}
    names, x, a1, d1, d2 = r["features"], r["x"], r["a1"], r["delta1"], r["delta2"]
    yhat, y, lr, max_diff = r["yhat"], r["y"], r["lr"], r["max_abs_diff"]
    cost, cost_after = r["cost_before"], r["cost_after"]
    fig, axes = figure(13, 4.6, 1, 3, width_ratios=[1.9, 1, 0.7])
    ax = axes[0]
    pos_in = [(0.0, y0) for y0 in np.linspace(3, -3, 4)]
    pos_h = [(1.0, y0) for y0 in np.linspace(4, -4, 5)]
    pos_o = [(2.0, 0.0)]
    gmax = {k: float(np.abs(hand[k]).max()) for k in ("W1", "W2")}  # colours scaled per layer
    cmap = colormaps["RdBu_r"]

    def edge(p, q, g, layer) -> None:  # noqa: ANN001
        r = g / gmax[layer]
        ax.plot(
            [p[0], q[0]], [p[1], q[1]], color=cmap(0.5 + 0.45 * r), lw=0.8 + 4 * abs(r), zorder=1
        )

    for j, ph in enumerate(pos_h):
        for i, pi in enumerate(pos_in):
            edge(pi, ph, float(hand["W1"][j, i]), "W1")
        edge(ph, pos_o[0], float(hand["W2"][0, j]), "W2")
    for i, p in enumerate(pos_in):
        ax.scatter(*p, s=700, color="#fde9a9", ec="k", zorder=2)
        ax.annotate(
            f"{names[i].split('_')[0]}\nx={float(x[i]):+.2f}",
            p,
            xytext=(-14, 0),
            textcoords="offset points",
            ha="right",
            va="center",
            fontsize=8,
        )
    for j, p in enumerate(pos_h):
        ax.scatter(*p, s=700, color="#c7e9c0", ec="k", zorder=2)
        ax.annotate(
            f"a={float(a1[j]):.2f}\ndelta={float(d1[j]):+.3f}",
            p,
            xytext=(0, -27),
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=7,
        )
    ax.scatter(*pos_o[0], s=700, color="#fcbba1", ec="k", zorder=2)
    ax.annotate(
        f"yhat={yhat:+.3f}\ny={y:+.3f}\ndelta={float(d2[0]):+.3f}",
        pos_o[0],
        xytext=(16, 0),
        textcoords="offset points",
        va="center",
        fontsize=8,
    )
    ax.set_xlim(-0.75, 2.75)
    ax.set_ylim(-5, 5)
    ax.axis("off")
    ax.set_title(
        "dC/dW on every edge (red +, blue -, width = size, per layer); delta at each neuron",
        fontsize=10,
    )
    ax = axes[1]
    hv = np.concatenate([hand[k].flatten() for k in PARAMS])
    lim = 1.1 * float(np.abs(hv).max())
    ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=1, ls="--")
    for key, c in zip(PARAMS, COLORS, strict=False):
        ax.scatter(
            hand[key].flatten(),
            auto[key].flatten(),
            s=30,
            color=c,
            label=key,
            zorder=3,
        )
    ax.set_xlabel("gradient by hand (notes' equations)")
    ax.set_ylabel("gradient from autograd (handprop backward)")
    ax.set_title(f"31 gradients, largest difference {max_diff:.1e}", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.bar([0, 1], [float(cost), cost_after], color=[COLORS[1], COLORS[2]])
    ax.set_xticks([0, 1], ["before", "after"])
    ax.set_ylabel("cost 1/2 (y - yhat)^2")
    ax.set_title(f"one update, lr {lr}", fontsize=10)
    for i, v in enumerate((float(cost), cost_after)):
        ax.annotate(
            f"{v:.4f}", (i, v), xytext=(0, 3), textcoords="offset points", ha="center", fontsize=9
        )
    return [save_figure(fig, out, "backprop.png")]
