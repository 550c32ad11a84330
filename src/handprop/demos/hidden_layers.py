"""The notes' property-price walkthrough: no hidden layer vs the 4-5-1 network, and what each
trained hidden neuron responds to.

Both networks are trained exactly as ``handprop-train experiment=property_prices_linear`` and
``experiment=property_prices`` configure them (Adam, mini-batch 32, standardised inputs and
price). Then each of the five hidden ReLU neurons is read off: its incoming weight per input
and its activation as one input sweeps its range (the others at their median house), and how
strongly it fires on the notes' patterns — historic homes (age > 100) and large homes near
the city (area > 2000 sq ft, under 10 miles).
"""

from __future__ import annotations

import math
from pathlib import Path

from handprop.demos._common import COLORS, Report, compose, figure, run_config, threads

SUMMARY = (
    "Without a hidden layer the network is linear regression: price moves in straight lines "
    "with each input. With five hidden ReLU neurons it can bend: some neurons switch on only "
    "for old houses (the historic premium), others for large houses close to the city — "
    "patterns no single weight can express — and the error falls to less than half."
)

PATTERNS = {
    "historic (age > 100)": lambda X: X[:, 3] > 100,
    "large near the city (area > 2000, < 10 mi)": lambda X: (X[:, 0] > 2000) & (X[:, 2] < 10),
    "family (4+ bedrooms, < 20 years)": lambda X: (X[:, 1] >= 4) & (X[:, 3] < 20),
}
SWEEPS = ((3, "age (years)"), (0, "area (sq ft)"), (2, "distance to city (miles)"))


def _hidden(net, X):  # noqa: ANN001, ANN202
    """The hidden layer's activations a = ReLU(x Wᵀ + b) for scaled inputs X."""
    import torch

    with torch.no_grad():
        return net.layers[1](net.layers[0](X)).numpy()


def run(out: Path, quick: bool = False) -> dict:
    import numpy as np
    import torch

    rep = Report("hidden-layers", out, SUMMARY)
    n = 1000 if quick else 2000
    epochs = 30 if quick else 60
    fitted = {}
    with threads(1):
        for name, exp in (("linear", "property_prices_linear"), ("4-5-1", "property_prices")):
            cfg = compose(f"experiment={exp}", f"data.n_samples={n}")
            fitted[name] = run_config(cfg, epochs=epochs)

    t1 = rep.table(
        f"Property prices: no hidden layer vs one hidden layer of 5 ({epochs} epochs, Adam)",
        ["network", "weights + biases", "train RMSE ($1000s)", "val RMSE", "test RMSE", "test R^2"],
        note="RMSE in the price's own units ($1000s); R^2 = 1 - SSE/SST on the test houses.",
    )
    values: dict = {}
    preds = {}
    for name, (_, dm, model) in fitted.items():
        ys, yt = float(dm.y_scaler.scale[0]), float(dm.y_scaler.shift[0])
        row = {}
        for split in ("train", "val", "test"):
            X, y = dm.split(split)
            with torch.no_grad():
                z = model.net(X)
            p, t = z.numpy()[:, 0] * ys + yt, y.numpy()[:, 0] * ys + yt  # back to $1000s
            row[split] = math.sqrt(float(np.mean((p - t) ** 2)))
            if split == "test":
                r2 = 1 - float(np.sum((p - t) ** 2) / np.sum((t - t.mean()) ** 2))
                preds[name] = (t, p)
        n_params = sum(p.numel() for p in model.net.parameters())
        t1.add(name, n_params, row["train"], row["val"], row["test"], r2)
        values[name] = {"rmse": row, "r2": r2, "parameters": n_params}

    # ---- the hidden neurons of the 4-5-1 network --------------------------------------------------
    h, dm, model = fitted["4-5-1"]
    net, table = model.net, dm.table
    W = net.linears[0].weight.detach().numpy()  # (5, 4), per standardised input
    b = net.linears[0].bias.detach().numpy()
    w_out = net.linears[1].weight.detach().numpy()[0]
    rows = dm.indices["train"]
    X_raw = table.X[rows]
    A = _hidden(net, torch.tensor(dm.x_scaler(X_raw), dtype=torch.float32))
    short = ["area", "beds", "dist", "age"]
    t2 = rep.table(
        "What each hidden neuron responds to (4-5-1, weights per standardised input)",
        [
            "neuron",
            *[f"w {s}" for s in short],
            "bias",
            "w to output",
            "fires on",
            *[f"mean a: {p.split(' (')[0]}" for p in PATTERNS],
            "pattern",
        ],
        note="'fires on': share of training houses with a > 0. 'mean a: X': the neuron's mean "
        "activation on houses of pattern X divided by its mean on all houses (1 = no "
        "preference). 'pattern': the notes' pattern it prefers most, if by 2x or more.",
    )
    masks = {p: f(X_raw) for p, f in PATTERNS.items()}
    labels, neuron_values = [], []
    for k in range(W.shape[0]):
        base = A[:, k].mean()
        lift = {
            p: (A[m, k].mean() / base if base > 0 and m.any() else 0.0) for p, m in masks.items()
        }
        best = max(lift, key=lift.get)
        label = best if lift[best] >= 2 else ("inactive" if base == 0 else "-")
        labels.append(label)
        t2.add(
            k + 1,
            *W[k],
            b[k],
            w_out[k],
            f"{100 * np.mean(A[:, k] > 0):.0f} %",
            *lift.values(),
            label,
        )
        neuron_values.append(
            {
                "weights": W[k].tolist(),
                "bias": float(b[k]),
                "w_out": float(w_out[k]),
                "lift": lift,
                "pattern": label,
            }
        )
    values["neurons"] = neuron_values
    values["patterns_found"] = sorted({lab for lab in labels if lab in PATTERNS})

    # ---- figures ------------------------------------------------------------------------------------
    fig, axes = figure(10, 4, 1, 2, sharex=True, sharey=True)
    for ax, (name, (t, p)) in zip(axes, preds.items(), strict=True):
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--")
        hist = dm.table.X[dm.indices["test"], 3] > 100
        ax.scatter(t[~hist], p[~hist], s=7, alpha=0.5, color=COLORS[0], label="houses")
        ax.scatter(t[hist], p[hist], s=12, alpha=0.8, color=COLORS[1], label="historic (age > 100)")
        ax.set_xlabel("actual price ($1000s)")
        ax.set_title(
            f"{name}: test RMSE {values[name]['rmse']['test']:.0f}k, R^2 {values[name]['r2']:.3f}",
            fontsize=10,
        )
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("predicted price ($1000s)")
    rep.figure(fig, "errors.png")

    med = np.median(X_raw, 0)
    fig, axes = figure(12, 1.9 * W.shape[0] + 0.4, W.shape[0], 4, width_ratios=[1, 1.1, 1.1, 1.1])
    for k in range(W.shape[0]):
        ax = axes[k, 0]
        ax.bar(range(4), W[k], color=[COLORS[1] if v < 0 else COLORS[0] for v in W[k]])
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(range(4), short, fontsize=8)
        ax.set_ylabel(f"neuron {k + 1}\n(to output {w_out[k]:+.2f})", fontsize=9)
        found = labels[k] in PATTERNS
        ax.set_title(
            labels[k] if found else "incoming weights",
            fontsize=8,
            color=COLORS[2] if found else "0.3",
            fontweight="bold" if found else "normal",
        )
        for c, (f, fname) in enumerate(SWEEPS, start=1):
            grid = np.linspace(table.X[:, f].min(), table.X[:, f].max(), 200)
            pts = np.tile(med, (len(grid), 1))
            pts[:, f] = grid
            a = _hidden(net, torch.tensor(dm.x_scaler(pts), dtype=torch.float32))[:, k]
            ax = axes[k, c]
            ax.plot(grid, a, color=COLORS[3], lw=2)
            if f == 3:
                ax.axvline(100, color="0.6", ls=":", lw=1)
            if f == 2:
                ax.axvline(10, color="0.6", ls=":", lw=1)
            if f == 0:
                ax.axvline(2000, color="0.6", ls=":", lw=1)
            if k == 0:
                ax.set_title(
                    f"activation vs {fname.split(' (')[0]}\n(other inputs at the median house)",
                    fontsize=9,
                )
            if k == W.shape[0] - 1:
                ax.set_xlabel(fname, fontsize=9)
            ax.tick_params(labelsize=7)
    rep.figure(fig, "neurons.png")

    rep.values.update(values)
    return rep.finish()
