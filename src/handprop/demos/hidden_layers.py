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

from handprop.demos._figures import COLORS, figure, save_figure
from handprop.demos._report import Table, plain
from handprop.demos._training import compose, run_config, threads

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


#: How a caption names each pattern.
SAY = {
    "historic (age > 100)": "historic homes (age > 100)",
    "large near the city (area > 2000, < 10 mi)": "large houses near the city (area > 2000 sq ft, under 10 miles)",
    "family (4+ bedrooms, < 20 years)": "family homes (4+ bedrooms, under 20 years old)",
}
SHORT = ["area", "beds", "dist", "age"]


def _hidden(net, X):  # noqa: ANN001, ANN202
    """The hidden layer's activations a = ReLU(x Wᵀ + b) for scaled inputs X."""
    import torch

    with torch.no_grad():
        return net.layers[1](net.layers[0](X)).numpy()


def compute(quick: bool = False) -> dict:
    import numpy as np
    import torch

    n = 1000 if quick else 2000
    epochs = 30 if quick else 60
    fitted = {}
    with threads(1):
        for name, exp in (("linear", "property_prices_linear"), ("4-5-1", "property_prices")):
            cfg = compose(f"experiment={exp}", f"data.n_samples={n}")
            fitted[name] = run_config(cfg, epochs=epochs)

    r: dict = {"epochs": epochs}
    for name, (_, dm, model) in fitted.items():
        ys, yt = float(dm.y_scaler.scale[0]), float(dm.y_scaler.shift[0])
        rmse = {}
        for split in ("train", "val", "test"):
            X, y = dm.split(split)
            with torch.no_grad():
                z = model.net(X)
            p, t = z.numpy()[:, 0] * ys + yt, y.numpy()[:, 0] * ys + yt  # back to $1000s
            rmse[split] = math.sqrt(float(np.mean((p - t) ** 2)))
        r2 = 1 - float(np.sum((p - t) ** 2) / np.sum((t - t.mean()) ** 2))  # the test split
        r[name] = {
            "rmse": rmse,
            "r2": r2,
            "parameters": sum(p.numel() for p in model.net.parameters()),
            "test_actual": t,
            "test_predicted": p,
        }
    r["test_historic"] = dm.table.X[dm.indices["test"], 3] > 100

    # ---- the hidden neurons of the 4-5-1 network --------------------------------------------------
    _, dm, model = fitted["4-5-1"]
    net, table = model.net, dm.table
    W = net.linears[0].weight.detach().numpy()  # (5, 4), per standardised input
    b = net.linears[0].bias.detach().numpy()
    w_out = net.linears[1].weight.detach().numpy()[0]
    X_raw = table.X[dm.indices["train"]]
    A = _hidden(net, torch.tensor(dm.x_scaler(X_raw), dtype=torch.float32))
    masks = {p: f(X_raw) for p, f in PATTERNS.items()}
    med = np.median(X_raw, 0)
    neurons = []
    for k in range(W.shape[0]):
        base = A[:, k].mean()
        lift = {
            p: (float(A[m, k].mean() / base) if base > 0 and m.any() else 0.0)
            for p, m in masks.items()
        }
        best = max(lift, key=lift.get)
        # its activation as one input sweeps its range, the others at the median house
        sweeps = {}
        for f, _ in SWEEPS:
            grid = np.linspace(table.X[:, f].min(), table.X[:, f].max(), 200)
            pts = np.tile(med, (len(grid), 1))
            pts[:, f] = grid
            a = _hidden(net, torch.tensor(dm.x_scaler(pts), dtype=torch.float32))[:, k]
            sweeps[SHORT[f]] = {"x": grid, "a": a}
        neurons.append(
            {
                "weights": W[k],
                "bias": float(b[k]),
                "w_out": float(w_out[k]),
                "fires_on": float(np.mean(A[:, k] > 0)),
                "lift": lift,
                "pattern": best if lift[best] >= 2 else ("inactive" if base == 0 else "-"),
                "sweeps": sweeps,
            }
        )
    r["neurons"] = neurons
    r["patterns_found"] = sorted({v["pattern"] for v in neurons if v["pattern"] in PATTERNS})
    return plain(r)


def tables(r: dict) -> list[Table]:
    t1 = Table(
        f"Property prices: no hidden layer vs one hidden layer of 5 ({r['epochs']} epochs, Adam)",
        ["network", "weights + biases", "train RMSE ($1000s)", "val RMSE", "test RMSE", "test R^2"],
        note="RMSE in the price's own units ($1000s); R^2 = 1 - SSE/SST on the test houses.",
    )
    for name in ("linear", "4-5-1"):
        v = r[name]
        e = v["rmse"]
        t1.add(name, v["parameters"], e["train"], e["val"], e["test"], v["r2"])
    t2 = Table(
        "What each hidden neuron responds to (4-5-1, weights per standardised input)",
        [
            "neuron",
            *[f"w {s}" for s in SHORT],
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
    for k, v in enumerate(r["neurons"]):
        t2.add(
            k + 1,
            *v["weights"],
            v["bias"],
            v["w_out"],
            f"{100 * v['fires_on']:.0f} %",
            *(v["lift"][p] for p in PATTERNS),
            v["pattern"],
        )
    return [t1, t2]


def caption(r: dict) -> str:
    lin, net = r["linear"]["rmse"]["test"], r["4-5-1"]["rmse"]["test"]
    text = (
        f"The hidden layer {'cuts' if net < lin else 'does not cut'} the test error (RMSE) "
        f"from {lin:.0f} to {net:.0f} thousand dollars"
    )
    found = [
        f"neuron {k + 1} fires on {100 * v['fires_on']:.0f} % of the houses and "
        f"{v['lift'][v['pattern']]:.1f}× as strongly on {SAY[v['pattern']]} as on average"
        for k, v in enumerate(r["neurons"])
        if v["pattern"] in PATTERNS
    ]
    if found:
        text += "; in the neuron grid, " + "; ".join(found)
    else:
        text += "; no hidden neuron prefers one of the notes' patterns by 2× or more"
    return text + "."


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    fig, axes = figure(10, 4, 1, 2, sharex=True, sharey=True)
    hist = np.asarray(r["test_historic"])
    for ax, name in zip(axes, ("linear", "4-5-1"), strict=True):
        v = r[name]
        t, p = np.asarray(v["test_actual"]), np.asarray(v["test_predicted"])
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, ls="--")
        ax.scatter(t[~hist], p[~hist], s=7, alpha=0.5, color=COLORS[0], label="houses")
        ax.scatter(t[hist], p[hist], s=12, alpha=0.8, color=COLORS[1], label="historic (age > 100)")
        ax.set_xlabel("actual price ($1000s)")
        ax.set_title(f"{name}: test RMSE {v['rmse']['test']:.0f}k, R^2 {v['r2']:.3f}", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("predicted price ($1000s)")
    figures = [save_figure(fig, out, "errors.png")]

    neurons = r["neurons"]
    fig, axes = figure(
        12, 1.9 * len(neurons) + 0.4, len(neurons), 4, width_ratios=[1, 1.1, 1.1, 1.1]
    )
    for k, v in enumerate(neurons):
        ax = axes[k, 0]
        w = v["weights"]
        ax.bar(range(4), w, color=[COLORS[1] if x < 0 else COLORS[0] for x in w])
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xticks(range(4), SHORT, fontsize=8)
        ax.set_ylabel(f"neuron {k + 1}\n(to output {v['w_out']:+.2f})", fontsize=9)
        found = v["pattern"] in PATTERNS
        ax.set_title(
            v["pattern"] if found else "incoming weights",
            fontsize=8,
            color=COLORS[2] if found else "0.3",
            fontweight="bold" if found else "normal",
        )
        for c, (f, fname) in enumerate(SWEEPS, start=1):
            sweep = v["sweeps"][SHORT[f]]
            ax = axes[k, c]
            ax.plot(sweep["x"], sweep["a"], color=COLORS[3], lw=2)
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
            if k == len(neurons) - 1:
                ax.set_xlabel(fname, fontsize=9)
            ax.tick_params(labelsize=7)
    figures.append(save_figure(fig, out, "neurons.png"))
    return figures
