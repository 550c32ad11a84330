"""The notes' "brute force vs gradient descent".

One weight: the property price in $100k as ``ŷ = w · area`` (area in 1000 sq ft, so ``w`` is
the price per square foot in $100s), the notes' cost ``½(y − ŷ)²`` averaged over the houses.
Brute force evaluates the cost for every ``w`` from 0.01 to 10.00 in steps of 0.01; gradient
descent starts at one point and follows ``∂C/∂w`` (from handprop's backward) to the minimum.

Then the notes' arithmetic for a whole network: its weights counted from a real
:class:`handprop.nn.MLP` of the given layer sizes, the grid's number of values per weight,
and the time a 93 PFLOP/s machine would need to try every combination.
"""

from __future__ import annotations

import math
from pathlib import Path

from handprop.demos._figures import COLORS, figure, save_figure
from handprop.demos._report import Table, plain

SUMMARY = (
    "Brute force tries every weight on a grid; gradient descent walks downhill along the "
    "slope. For one weight both find the minimum; for a 4-5-1 network the grid has "
    "1000^25 points and brute force would outlast the universe by forty orders of magnitude."
)

FLOPS = 93e15  # Sunway TaihuLight, the notes' "world's fastest supercomputer": 93 PFLOP/s
SECONDS_PER_YEAR = 365.25 * 24 * 3600
UNIVERSE_YEARS = 1.38e10  # age of the universe (Planck 2018: 13.8 billion years)


def parse_layers(layers: str) -> list[int]:
    """``"4-5-1"`` → ``[4, 5, 1]``; at least an input and an output size."""
    try:
        sizes = [int(s) for s in str(layers).replace(",", "-").split("-") if s.strip()]
    except ValueError:
        sizes = []
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(
            f"--layers={layers!r}: give the layer sizes as positive integers, e.g. 4-5-1"
        )
    return sizes


def brute_force_cost(sizes: list[int], values_per_weight: int, flops: float = FLOPS) -> dict:
    """The notes' arithmetic for a network of layer ``sizes``: its weights (checked against a
    :class:`~handprop.nn.MLP` of those sizes), then ``values^weights`` combinations and the time at
    ``flops`` combinations per second, as powers of ten (the numbers overflow floats)."""
    from handprop.networks import MLP

    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    weights = sum(a * b for a, b in pairs)
    biases = sum(sizes[1:])
    if weights + biases <= 1_000_000:  # the same count from the network itself
        net = MLP(sizes[0], sizes[1:-1], sizes[-1])
        assert weights == sum(lin.weight.numel() for lin in net.linears)
        assert biases == sum(lin.bias.numel() for lin in net.linears)
    log_combinations = weights * math.log10(values_per_weight)
    log_seconds = log_combinations - math.log10(flops)
    log_years = log_seconds - math.log10(SECONDS_PER_YEAR)
    return {
        "layers": "-".join(map(str, sizes)),
        "weights": weights,
        "biases": biases,
        "values_per_weight": values_per_weight,
        "log10_combinations": log_combinations,
        "log10_seconds": log_seconds,
        "log10_years": log_years,
        "log10_universe_ages": log_years - math.log10(UNIVERSE_YEARS),
        "flops": flops,
    }


def _sci(log10: float) -> str:
    """``10^x`` written as ``m × 10^e`` (or just ``10^e`` when m rounds to 1)."""
    e = math.floor(log10 + 1e-12)
    m = 10 ** (log10 - e)
    return f"10^{e}" if abs(m - 1) < 5e-3 else f"{m:.2g} x 10^{e}"


def compute(
    quick: bool = False, layers: str = "4-5-1", lr: float = 0.05, start: float = 9.0
) -> dict:
    import torch

    from handprop import functional as F
    from handprop.trainer.datasets import property_prices

    sizes = parse_layers(layers)
    table = property_prices(n_samples=300 if quick else 2000, seed=0)
    x = torch.tensor(table.X[:, :1] / 1000, dtype=torch.float64)  # area, 1000 sq ft  (N, 1)
    y = torch.tensor(table.y[:, None] / 100, dtype=torch.float64)  # price, $100k      (N, 1)

    # ---- brute force: the cost of every weight on the grid, one linear layer per weight ------
    grid = torch.arange(1, 1001, dtype=torch.float64) / 100  # 0.01, 0.02, ..., 10.00
    yhat = F.linear(x, grid[:, None])  # (N, 1000): column k is ŷ for w = grid[k]
    costs = F.quadratic_cost(yhat, y.expand_as(yhat), reduction="none").mean(0)
    k = int(costs.argmin())

    # ---- gradient descent: w ← w − η ∂C/∂w, the gradient from handprop's backward ------------
    w = torch.tensor([[start]], dtype=torch.float64, requires_grad=True)
    path = []
    for _ in range(1000):
        c = F.quadratic_cost(F.linear(x, w), y)
        (g,) = torch.autograd.grad(c, w)
        path.append((float(w.detach()), float(c.detach()), float(g)))
        with torch.no_grad():
            w -= lr * g
        if abs(lr * float(g)) < 1e-7:
            break
    values_per_weight = len(grid)  # the grid above: 1000 values per weight
    return plain(
        {
            "grid": grid.tolist(),
            "grid_costs": costs.tolist(),
            "grid_min_index": k,
            "grid_min_w": float(grid[k]),
            "grid_min_cost": float(costs[k]),
            "grid_step": float(grid[1] - grid[0]),
            "grid_evaluations": len(grid),
            "lr": lr,
            "start": start,
            "gd_path": {"w": [p[0] for p in path], "cost": [p[1] for p in path]},
            "gd_w": float(w.detach()),
            "gd_cost": float(F.quadratic_cost(F.linear(x, w.detach()), y)),
            "gd_steps": len(path),
            "network": brute_force_cost(sizes, values_per_weight),
            "one_weight": brute_force_cost([1, 1], values_per_weight),
        }
    )


def tables(r: dict) -> list[Table]:
    step, w_grid, w_gd = r["grid_step"], r["grid_min_w"], r["gd_w"]
    grid = r["grid"]
    t1 = Table(
        "One weight: brute force vs gradient descent (price = w x area)",
        ["method", "cost evaluations", "w found", "cost at w", "$ per sq ft"],
        note=f"Grid: {len(grid)} weights from {grid[0]:.2f} to {grid[-1]:.2f} in "
        f"steps of {step:.2f}. Gradient descent: start w = {r['start']}, learning rate "
        f"{r['lr']}; it lands {abs(w_gd - w_grid):.4f} from the grid's minimum (one grid step "
        f"is {step:.2f}).",
    )
    t1.add("brute force (grid)", r["grid_evaluations"], w_grid, r["grid_min_cost"], w_grid * 100)
    t1.add("gradient descent", r["gd_steps"], w_gd, r["gd_cost"], w_gd * 100)

    bf = r["network"]
    sizes = parse_layers(bf["layers"])
    vpw = bf["values_per_weight"]
    t2 = Table(
        f"Brute force for a {bf['layers']} network at 93 PFLOP/s",
        ["quantity", "value", "how"],
        note="One combination per floating-point operation, as the notes count (a generous "
        "under-estimate: each combination really needs a forward pass over the data).",
    )
    w_terms = " + ".join(f"{a}x{b}" for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    t2.add("weights", bf["weights"], f"{w_terms} (biases, not counted: {bf['biases']})")
    t2.add("values per weight", vpw, "the grid above")
    t2.add("combinations", _sci(bf["log10_combinations"]), f"{vpw}^{bf['weights']}")
    t2.add("seconds", _sci(bf["log10_seconds"]), "combinations / 93e15 per s")
    t2.add("years", _sci(bf["log10_years"]), "seconds / 31,557,600")
    t2.add("ages of the universe", _sci(bf["log10_universe_ages"]), "years / 1.38e10")
    t2.add(
        "the one-weight grid",
        f"{10 ** r['one_weight']['log10_seconds']:.2g} s",
        f"{vpw} combinations / 93e15 per s",
    )
    return [t1, t2]


def _html_power(log10: float) -> str:
    """``10^x`` for the README: ``3×10<sup>50</sup>``, or ``10<sup>58</sup>`` when m ≈ 1."""
    e = math.floor(log10 + 1e-12)
    m = 10 ** (log10 - e)
    if round(m) >= 10:
        e, m = e + 1, m / 10
    return f"10<sup>{e}</sup>" if round(m) == 1 else f"{m:.0f}×10<sup>{e}</sup>"


def caption(r: dict) -> str:
    bf = r["network"]
    return (
        f"Left: gradient descent walks down to the grid's minimum (w = {r['gd_w']:.2f}; the "
        f"grid's best is {r['grid_min_w']:.2f}) in {r['gd_steps']} steps instead of "
        f"{r['grid_evaluations']} evaluations; right: {bf['layers']} has {bf['weights']} "
        f"weights, {bf['values_per_weight']}<sup>{bf['weights']}</sup> = "
        f"{_html_power(bf['log10_combinations'])} combinations, "
        f"~{_html_power(bf['log10_seconds'])} s = ~{_html_power(bf['log10_years'])} years at "
        f"93 PFLOP/s, while the universe is {UNIVERSE_YEARS / 1e10:.2g}×10<sup>10</sup> years "
        "old."
    )


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    grid, costs = np.asarray(r["grid"]), np.asarray(r["grid_costs"])
    k, w_grid, c_grid, w_gd = r["grid_min_index"], r["grid_min_w"], r["grid_min_cost"], r["gd_w"]
    bf = r["network"]
    values_per_weight = bf["values_per_weight"]
    fig, axes = figure(10, 4, 1, 2, width_ratios=[1.15, 1])
    ax = axes[0]
    ax.plot(grid, costs, color=COLORS[0], lw=2, label="cost on the grid (1000 w)")
    ax.plot(
        [w_grid],
        [c_grid],
        "o",
        ms=9,
        mfc="none",
        mec=COLORS[0],
        mew=2,
        label=f"grid minimum w = {w_grid:.2f}",
    )
    pw, pc = np.asarray(r["gd_path"]["w"]), np.asarray(r["gd_path"]["cost"])
    steps = r["gd_steps"]
    ax.plot(pw, pc, "-o", color=COLORS[1], ms=4, lw=1, label=f"gradient descent ({steps} steps)")
    ax.annotate(
        "start", (pw[0], pc[0]), xytext=(-8, -16), textcoords="offset points", color=COLORS[1]
    )
    ax.set_yscale("log")
    ax.set_xlabel("w  (price per sq ft, $100s)")
    ax.set_ylabel("cost  1/2 (y - w x)^2, mean over houses")
    ax.set_title("one weight: every grid point vs walking downhill", fontsize=10)
    ax.legend(fontsize=8, loc="upper center")
    inset = ax.inset_axes([0.56, 0.13, 0.4, 0.33])
    lo, hi = max(0, k - 12), min(len(grid), k + 13)
    inset.plot(grid[lo:hi], costs[lo:hi], "o-", color=COLORS[0], ms=3, lw=1)
    inset.axvline(w_gd, color=COLORS[1], lw=1.5)
    inset.set_title("near the minimum: grid (dots), GD (red)", fontsize=7)
    inset.tick_params(labelsize=6)

    ax = axes[1]
    n = np.arange(1, max(30, bf["weights"] + 5) + 1)
    log_years = n * math.log10(values_per_weight) - math.log10(FLOPS * SECONDS_PER_YEAR)
    ax.plot(n, log_years, color=COLORS[0], lw=2, label=f"{values_per_weight} values per weight")
    ax.axhline(
        math.log10(UNIVERSE_YEARS), color=COLORS[3], lw=2, ls="--", label="age of the universe"
    )
    ax.axhline(0, color="0.6", lw=1, ls=":", label="one year")
    ax.plot([bf["weights"]], [bf["log10_years"]], "o", color=COLORS[1], ms=8)
    e = math.floor(bf["log10_years"])
    ax.annotate(
        f"{bf['layers']}: {bf['weights']} weights\n"
        f"${10 ** (bf['log10_years'] - e):.1f}\\times10^{{{e}}}$ years",
        (bf["weights"], bf["log10_years"]),
        xytext=(0.55, 0.2),
        textcoords="axes fraction",
        fontsize=9,
        color=COLORS[1],
        arrowprops={"arrowstyle": "->", "color": COLORS[1]},
    )
    ax.set_xlabel("number of weights")
    ax.set_ylabel("log10(years to try every combination)")
    ax.set_title("brute force at 93 PFLOP/s", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    return [save_figure(fig, out, "brute_force.png")]
