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

from handprop.demos._common import COLORS, Report, figure

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


def run(out: Path, quick: bool = False, lr: float = 0.1, sample: int = 5, seed: int = 0) -> dict:
    import numpy as np
    import torch
    from matplotlib import colormaps

    from handprop import functional as F
    from handprop.data import Scaler
    from handprop.datasets import property_prices
    from handprop.functional import FUNCTIONS
    from handprop.nn import MLP

    rep = Report("backprop", out, SUMMARY)
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

    # ---- tables ------------------------------------------------------------------------------------
    names = table.feature_names
    t0 = rep.table(
        f"House {sample}: inputs standardised, price standardised (float64)",
        ["", *names, "price (target y)"],
    )
    t0.add("raw", *table.X[sample], table.y[sample])
    t0.add("standardised", *x.tolist(), float(y))
    t1 = rep.table(
        "Forward pass and error signals, layer by layer",
        ["layer", "neuron", "z", "a", "sigma'(z)", "W2^T delta2", "delta = dC/dz"],
        note=f"Output: y = {float(y):.6f}, cost C = 1/2 (y - yhat)^2 = {float(cost):.6g}. "
        f"Autograd's yhat differs from the hand one by {forward_diff:.1e}.",
    )
    for j in range(5):
        t1.add(
            "hidden", j + 1, float(z1[j]), float(a1[j]), float(sp[j]), float(back[j]), float(d1[j])
        )
    t1.add(
        "output", 1, float(z2[0]), f"yhat = {float(yhat[0]):.4g}", "1 (linear)", "-", float(d2[0])
    )
    t2 = rep.table(
        "Every gradient: by hand (delta times input) vs autograd (handprop's backward)",
        ["parameter", "index", "by hand", "autograd", "difference"],
        note=f"Largest difference {max_diff:.2e} (tolerance {TOLERANCE:g}). Backward nodes "
        f"autograd ran: {' -> '.join(graph)}.",
    )
    for k in ("W2", "b2", "W1", "b1"):
        hk, ak = hand[k], auto[k]
        for idx in np.ndindex(*hk.shape):
            t2.add(
                k,
                ",".join(str(i + 1) for i in idx),
                float(hk[idx]),
                float(ak[idx]),
                float(hk[idx] - ak[idx]),
            )

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
    t3 = rep.table(
        f"One gradient-descent update, learning rate {lr}",
        ["", "yhat", "cost 1/2 (y - yhat)^2"],
        note=f"First-order prediction of the change: -lr * sum of squared gradients = "
        f"{-lr * g2:.4g}; actual change {cost_after - float(cost):.4g}.",
    )
    t3.add("before", float(yhat[0]), float(cost))
    t3.add("after", yhat_after, cost_after)

    # ---- figure ------------------------------------------------------------------------------------
    fig, axes = figure(13, 4.6, 1, 3, width_ratios=[1.9, 1, 0.7])
    ax = axes[0]
    pos_in = [(0.0, y0) for y0 in np.linspace(3, -3, 4)]
    pos_h = [(1.0, y0) for y0 in np.linspace(4, -4, 5)]
    pos_o = [(2.0, 0.0)]
    gmax = {k: float(hand[k].abs().max()) for k in ("W1", "W2")}  # colours scaled per layer
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
        f"yhat={float(yhat[0]):+.3f}\ny={float(y):+.3f}\ndelta={float(d2[0]):+.3f}",
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
    hv = np.concatenate([hand[k].flatten().numpy() for k in hand])
    lim = 1.1 * float(np.abs(hv).max())
    ax.plot([-lim, lim], [-lim, lim], color="0.6", lw=1, ls="--")
    for key, c in zip(hand, COLORS, strict=False):
        ax.scatter(
            hand[key].flatten().numpy(),
            auto[key].flatten().numpy(),
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
    rep.figure(fig, "backprop.png")

    rep.values.update(
        {
            "max_abs_diff": max_diff,
            "diffs": diffs,
            "forward_diff": forward_diff,
            "cost_before": float(cost),
            "cost_after": cost_after,
            "backward_nodes": graph,
            "hand": {k: v.tolist() for k, v in hand.items()},
        }
    )
    return rep.finish()
