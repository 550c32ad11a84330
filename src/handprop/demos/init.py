"""Zero vs small random initial weights: the symmetry problem, neuron by neuron.

The 4-5-1 network on property prices with sigmoid hidden units (``model.activation=sigmoid``),
trained with the trainer's defaults (Adam, mini-batch 32) from ``model.init=zeros`` and from
small random weights (``model.init=normal``: N(0, 0.01²), and ``xavier``). With zeros, every
hidden neuron computes the same thing, receives the same gradient and takes the same step, so
all five stay identical: the layer is one neuron, five times. Random weights make them differ
from the first step on.

Learning never breaks the symmetry: equal weights get equal gradients, so every update keeps
them equal. Float rounding can: a matrix product's kernel may sum one neuron's column in
another order than the next one's (MKL on AVX2 does; the same run on AVX-512 stays exactly
equal), and the symmetric state is a saddle, so such differences grow. Run in float64 they stay
far below ``ROUNDING`` (about 1e-8 after the full run's 1900 updates, where the random starts
differ by 0.03 and more), so the figure, table and caption say "below 1e-6" rather than the
machine's own rounding; the results keep the measured differences.

With ReLU hidden units a zero start is worse still: ReLU'(0) = 0, so no error reaches the
hidden weights at all (shown in the table).
"""

from __future__ import annotations

import math
from pathlib import Path

from handprop.demos._figures import COLORS, figure, integer_ticks, plain_log, save_figure
from handprop.demos._report import Table, plain
from handprop.demos._training import compose, run_config, threads

SUMMARY = (
    "Start every weight at zero and the hidden neurons are clones: same output, same "
    "gradient, same update, for ever. Small random weights break the symmetry: each neuron "
    "finds its own pattern and the cost falls much further."
)

INITS = ("zeros", "normal", "xavier")
LABEL = {"zeros": "zeros", "normal": "small random N(0, 0.01^2)", "xavier": "random (Xavier)"}


def spread(W) -> float:  # noqa: ANN001
    """The largest difference between any two hidden neurons' weights (rows of W)."""
    return float((W[:, None, :] - W[None, :, :]).abs().max())


RUNS = (*INITS, "zeros-relu")
#: Differences below this are float rounding: neurons that differ by less are one neuron.
ROUNDING_TEXT = "1e-6"
ROUNDING = float(ROUNDING_TEXT)
WINDOW = 15  # houses per moving average in the activation panels
BOTTOM = 1e-8  # the bottom of the spread panel's log axis: the rounding band is below 1e-6


def compute(quick: bool = False) -> dict:
    import numpy as np
    import torch

    epochs = 12 if quick else 30
    n = 600 if quick else 2000
    r: dict = {"epochs": epochs}
    with threads(1):
        for init in RUNS:
            scheme, act = ("zeros", "relu") if init == "zeros-relu" else (init, "sigmoid")
            cfg = compose(
                f"model.init={scheme}",
                f"model.activation={act}",
                f"data.n_samples={n}",
                "model.hidden=[5]",
            )
            track = lambda net: spread(net.linears[0].weight.detach())  # noqa: E731
            h, dm, model = run_config(cfg, epochs=epochs, dtype=torch.float64, track=track)
            net = model.net
            W0 = h.initial["layers.0.weight"]
            W = net.linears[0].weight.detach()
            Wo = net.linears[1].weight.detach()
            distinct = 1 + sum(
                bool((W[i] - W[:i]).abs().amax(1).min() > ROUNDING) for i in range(1, W.shape[0])
            )
            # Each hidden neuron's output over the validation houses, cheapest to dearest,
            # as a moving average of WINDOW houses.
            Xv, yv = dm.split("val")
            with torch.no_grad():
                A = net.layers[1](net.layers[0](Xv.double())).numpy()
            order = np.argsort(yv.numpy()[:, 0])
            kernel = np.ones(WINDOW) / WINDOW
            smooth = [np.convolve(A[order, k], kernel, mode="valid") for k in range(A.shape[1])]
            r[init] = {
                "activation": act,
                "spread_start": spread(W0),
                "spread_end": spread(W),
                "spread_max": max(h.step_params),
                "spread_per_update": h.step_params,
                "output_spread_end": spread(Wo.T),
                "final_cost": h.final,
                "distinct_neurons": distinct,
                "hidden_weights": W.tolist(),
                "cost": h.epoch_train,
                "activations_by_price": smooth,
            }
    r["features"] = dm.table.feature_names
    return plain(r)


def tables(r: dict) -> list[Table]:
    t = Table(
        f"4-5-1 on property prices, Adam, mini-batch 32, {r['epochs']} epochs",
        [
            "init",
            "hidden",
            "spread at start",
            "spread at end",
            "output-weight spread",
            "train cost",
            "distinct neurons",
        ],
        note="'spread': the largest difference between any two hidden neurons' incoming "
        f"weights; 0 means the five neurons are one neuron copied. '< {ROUNDING_TEXT}': float "
        "rounding (exactly 0 on some CPUs, up to about 1e-8 on others, where a matrix product "
        "rounds one neuron's column unlike the next); learning itself never separates them. "
        "'distinct neurons': rows of the hidden weight matrix that differ by more than "
        f"{ROUNDING_TEXT}. Float64 throughout.",
    )
    for init in RUNS:
        v = r[init]
        # ReLU's zero start gets no gradient at all: its spread is exactly 0 on every CPU.
        trained = _rounding if init != "zeros-relu" else float
        t.add(
            "zeros" if init == "zeros-relu" else init,
            "ReLU" if v["activation"] == "relu" else v["activation"],
            v["spread_start"],
            trained(v["spread_end"]),
            trained(v["output_spread_end"]),
            v["final_cost"],
            v["distinct_neurons"],
        )
    return [t]


def _rounding(v: float) -> float | str:
    """A spread as the table shows it: below ``ROUNDING`` it is float rounding, whose size
    (0 included) depends on the CPU's kernels, so it reads "< 1e-6" on every machine."""
    return f"< {ROUNDING_TEXT}" if v < ROUNDING else v


def _zeros_note(v: dict) -> str:
    """What the zero start's spread did, in words: within float rounding throughout (whatever
    this CPU's rounding was, 0 included), or how large the differences became."""
    if v["spread_max"] < ROUNDING:
        return f"float rounding only, below {ROUNDING_TEXT} after every update"
    return f"0 at the start, up to {v['spread_max']:.0e} later: more than float rounding"


def _late_drop(cost: list[float]) -> float:
    """How much the cost fell over the last third of the epochs, as a fraction."""
    start = cost[len(cost) - len(cost) // 3 - 1]
    return (start - cost[-1]) / start


def caption(r: dict) -> str:
    z = r["zeros"]
    if z["distinct_neurons"] != 1:
        return (
            "With zero weights the hidden neurons did not stay identical here: "
            f"{z['distinct_neurons']} distinct neurons after {r['epochs']} epochs."
        )
    rand = [r[k] for k in ("normal", "xavier")]
    five = all(v["distinct_neurons"] == 5 for v in rand)
    drop = _late_drop(z["cost"])
    drops = " and ".join(f"{100 * _late_drop(v['cost']):.0f} %" for v in rand)
    return (
        "With zero weights the five hidden neurons keep identical weights and draw one curve "
        f"five times (the largest difference between them is {_zeros_note(z)}), and the cost "
        f"{'stalls' if drop < 0.05 else 'falls slowly'} at {z['final_cost']:.2g}: "
        f"{100 * drop:.0f} % lower over the last third of the epochs, against "
        f"{drops} from random "
        f"starts, which give {'five different neurons' if five else 'neurons that differ'} and "
        f"a cost at least {z['final_cost'] / max(v['final_cost'] for v in rand):.1f}× lower."
    )


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    short = [s.split("_")[0] for s in r["features"]]
    fig, axes = figure(12, 6.4, 2, 3, width_ratios=[1.1, 1.1, 1])
    for row, init in enumerate(("zeros", "xavier")):
        v = r[init]
        W = np.asarray(v["hidden_weights"])
        ax = axes[row, 0]
        x = np.arange(len(short))
        for k in range(W.shape[0]):
            ax.bar(x + (k - 2) * 0.16, W[k], width=0.16, color=COLORS[k], label=f"neuron {k + 1}")
        ax.set_xticks(x, short)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_ylabel("incoming weight")
        ax.set_title(f"{LABEL[init]}: hidden weights after training", fontsize=10)
        if row == 0:
            ax.legend(fontsize=7, ncols=2)
        ax = axes[row, 1]
        for k, curve in enumerate(v["activations_by_price"]):
            ax.plot(
                curve,
                color=COLORS[k],
                lw=1.2 if init == "zeros" else 1,
                ls=(0, (4, 2 + k)) if init == "zeros" else "-",
                label=f"neuron {k + 1}",
            )
        ax.set_xlabel(f"validation houses, cheapest to dearest (mean of {WINDOW})")
        ax.set_ylabel("hidden activation a = sigmoid(z)")
        one = v["distinct_neurons"] == 1
        ax.set_title(
            "each neuron's output: "
            + ("one curve, five times" if one else "five different curves"),
            fontsize=10,
        )
        ax.set_ylim(-0.02, 1.02)
    ax = axes[0, 2]
    for k, init in enumerate(RUNS):
        cost = r[init]["cost"]
        ax.plot(
            range(1, len(cost) + 1),
            cost,
            color=COLORS[k],
            lw=2,
            ls="--" if init == "zeros-relu" else "-",
            label=LABEL.get(init, "zeros, ReLU hidden units"),
        )
    ax.set_yscale("log")
    plain_log(ax)
    integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training cost (MSE, standardised)")
    ax.set_title("the cost: zeros stall, random keeps falling", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    # Float rounding (below ROUNDING, 0 included: a log axis has no 0) is drawn in one band,
    # at its middle: its own size depends on the CPU's kernels, the figure does not.
    band = math.sqrt(ROUNDING * BOTTOM)
    for k, init in enumerate(INITS):
        sp = np.asarray(r[init]["spread_per_update"], dtype=float)
        sp = np.where(sp < ROUNDING, band, sp)
        ax.plot(np.arange(len(sp)), sp, color=COLORS[k], lw=1.5, label=LABEL[init])
    ax.set_yscale("log")
    ax.set_ylim(BOTTOM, 30)
    ax.axhspan(BOTTOM, ROUNDING, color="0.92", lw=0)
    ax.annotate(
        "float rounding",
        (0, band),
        xytext=(2, 4),
        textcoords="offset points",
        fontsize=7,
        color="0.4",
    )
    ax.annotate(
        f"zeros: {_zeros_note(r['zeros'])}",
        (0.03, 0.3),
        xycoords="axes fraction",
        fontsize=7,
        color=COLORS[0],
    )
    ax.set_xlabel("update")
    ax.set_ylabel("largest difference between neurons")
    ax.set_title("how different the 5 hidden neurons are", fontsize=10)
    ax.legend(fontsize=7, loc="center right")
    return [save_figure(fig, out, "init.png")]
