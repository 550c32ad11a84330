"""Zero vs small random initial weights: the symmetry problem, neuron by neuron.

The 4-5-1 network on property prices with sigmoid hidden units (``model.activation=sigmoid``),
trained with the trainer's defaults (Adam, mini-batch 32) from ``model.init=zeros`` and from
small random weights (``model.init=normal``: N(0, 0.01²), and ``xavier``). With zeros, every
hidden neuron computes the same thing, receives the same gradient and takes the same step, so
all five stay identical: the layer is one neuron, five times. Random weights make them differ
from the first step on.

Run in float64: the matrix products do not round every neuron's column in exactly the same
order, and the symmetric state is a saddle, so rounding differences (~1e-16) slowly grow. The
figure shows that too; they stay far below anything that matters for many epochs.

With ReLU hidden units a zero start is worse still: ReLU'(0) = 0, so no error reaches the
hidden weights at all (shown in the table).
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
    "Start every weight at zero and the hidden neurons are clones: same output, same "
    "gradient, same update, for ever. Small random weights break the symmetry: each neuron "
    "finds its own pattern and the cost falls much further."
)

INITS = ("zeros", "normal", "xavier")
LABEL = {"zeros": "zeros", "normal": "small random N(0, 0.01^2)", "xavier": "random (Xavier)"}


def spread(W) -> float:  # noqa: ANN001
    """The largest difference between any two hidden neurons' weights (rows of W)."""
    return float((W[:, None, :] - W[None, :, :]).abs().max())


def run(out: Path, quick: bool = False) -> dict:
    import numpy as np
    import torch

    rep = Report("init", out, SUMMARY)
    epochs = 12 if quick else 30
    n = 600 if quick else 2000
    runs = {}
    with threads(1):
        for init in (*INITS, "zeros-relu"):
            scheme, act = ("zeros", "relu") if init == "zeros-relu" else (init, "sigmoid")
            cfg = compose(
                f"model.init={scheme}",
                f"model.activation={act}",
                f"data.n_samples={n}",
                "model.hidden=[5]",
            )
            track = lambda net: spread(net.linears[0].weight.detach())  # noqa: E731
            h, dm, model = run_config(cfg, epochs=epochs, dtype=torch.float64, track=track)
            runs[init] = (h, dm, model)
    values: dict = {}
    t = rep.table(
        f"4-5-1 on property prices, Adam, mini-batch 32, {epochs} epochs",
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
        "weights; 0 means the five neurons are one neuron copied. 'distinct neurons': rows of "
        "the hidden weight matrix that differ by more than 1e-6. Float64 throughout.",
    )
    for init, (h, _, model) in runs.items():
        W0 = h.initial["layers.0.weight"]
        W = model.net.linears[0].weight.detach()
        Wo = model.net.linears[1].weight.detach()
        distinct = 1 + sum(
            bool((W[i] - W[:i]).abs().amax(1).min() > 1e-6) for i in range(1, W.shape[0])
        )
        act = "ReLU" if init == "zeros-relu" else "sigmoid"
        t.add(
            init if init != "zeros-relu" else "zeros",
            act,
            spread(W0),
            spread(W),
            spread(Wo.T),
            h.final,
            distinct,
        )
        values[init] = {
            "spread_start": spread(W0),
            "spread_end": spread(W),
            "output_spread_end": spread(Wo.T),
            "final_cost": h.final,
            "distinct_neurons": distinct,
            "hidden_weights": W.tolist(),
            "cost": h.epoch_train,
        }

    # ---- figure -------------------------------------------------------------------------------
    names = runs["zeros"][1].table.feature_names
    short = [s.split("_")[0] for s in names]
    fig, axes = figure(12, 6.4, 2, 3, width_ratios=[1.1, 1.1, 1])
    for row, init in enumerate(("zeros", "xavier")):
        h, dm, model = runs[init]
        net = model.net
        W = net.linears[0].weight.detach().numpy()
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
        # activations of each hidden neuron over the validation houses, sorted by price
        Xv, yv = dm.split("val")
        with torch.no_grad():
            A = net.layers[1](net.layers[0](Xv.double())).numpy()
        order = np.argsort(yv.numpy()[:, 0])
        win = 15
        smooth = np.stack(
            [np.convolve(A[order, k], np.ones(win) / win, mode="valid") for k in range(A.shape[1])],
            1,
        )
        ax = axes[row, 1]
        for k in range(A.shape[1]):
            ax.plot(
                smooth[:, k],
                color=COLORS[k],
                lw=1.2 if init == "zeros" else 1,
                ls=(0, (4, 2 + k)) if init == "zeros" else "-",
                label=f"neuron {k + 1}",
            )
        ax.set_xlabel(f"validation houses, cheapest to dearest (mean of {win})")
        ax.set_ylabel("hidden activation a = sigmoid(z)")
        ax.set_title(
            "each neuron's output: "
            + ("one curve, five times" if init == "zeros" else "five different curves"),
            fontsize=10,
        )
        ax.set_ylim(-0.02, 1.02)
    ax = axes[0, 2]
    for k, init in enumerate((*INITS, "zeros-relu")):
        h = runs[init][0]
        lab = LABEL.get(init, "zeros, ReLU hidden units")
        ax.plot(
            range(1, len(h.epoch_train) + 1),
            h.epoch_train,
            color=COLORS[k],
            lw=2,
            ls="--" if init == "zeros-relu" else "-",
            label=lab,
        )
    ax.set_yscale("log")
    plain_log(ax)
    integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training cost (MSE, standardised)")
    ax.set_title("the cost: zeros stall, random keeps falling", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    floor = 1e-17  # exactly 0 drawn here (a log axis has no 0)
    for k, init in enumerate(INITS):
        sp = np.maximum(np.asarray(runs[init][0].step_params, dtype=float), floor)
        ax.plot(np.arange(len(sp)), sp, color=COLORS[k], lw=1.5, label=LABEL[init])
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, 30)
    ax.axhline(1e-6, color="0.5", ls=":", lw=1)
    ax.annotate(
        "1e-6", (0, 1e-6), xytext=(2, 3), textcoords="offset points", fontsize=7, color="0.4"
    )
    ax.annotate(
        "zeros: exactly 0, then rounding\nnoise (float64) slowly growing",
        (0.03, 0.2),
        xycoords="axes fraction",
        fontsize=7,
        color=COLORS[0],
    )
    ax.set_xlabel("update")
    ax.set_ylabel("largest difference between neurons")
    ax.set_title("how different the 5 hidden neurons are", fontsize=10)
    ax.legend(fontsize=7, loc="center right")
    rep.figure(fig, "init.png")

    rep.values.update(values)
    return rep.finish()
