"""The notes' recurrent network ("sequence data, memory loops"): how far back the error signal
reaches, in a tanh RNN and in an LSTM.

Both read a sequence of ``T = 30`` random numbers ``x_t ~ N(0, 1)`` one step at a time and must
say, from their last hidden state, whether the **first** number was positive: a memory of 30
steps. Each is one recurrent layer of 32 units (:class:`handprop.nn.RNN`, tanh, and
:class:`handprop.nn.LSTM`) and a linear layer on ``h_T``, the cost BCE with logits, trained by
Adam on the same batches. The gradient of the cost with respect to every hidden state,
``‖∂C/∂h_t‖`` (and the LSTM's cell state, ``‖∂C/∂c_t‖``), is measured at initialisation and
after training, in float64, by running the layer one step at a time so each state is a
tensor of its own; the backward passes are the layers' hand-written ones.

Why they differ: backpropagation through time multiplies the error signal at every step by
``∂h_t/∂h_{t−1} = diag(1 − h_t²) W_hh`` in the RNN, a product of 30 matrices that shrinks
(or blows up) geometrically; in the LSTM the cell state's path is ``∂c_t/∂c_{t−1} = diag(f_t)``,
the forget gate, which the network can hold near 1. The LSTM's forget-gate biases start at
``+2`` (``f ≈ 0.88``; Gers et al., 2000 and Jozefowicz et al., 2015 start them positive, where
torch's default leaves ``f ≈ 0.5``).
"""

from __future__ import annotations

import math
from pathlib import Path

from handprop.demos._figures import COLORS, figure, save_figure
from handprop.demos._report import Table, num, plain
from handprop.demos._training import threads

SUMMARY = (
    "A recurrent network learns from the error signal sent back through its time steps. In a "
    "tanh RNN it is multiplied by the recurrent weights and tanh' at every step and fades "
    "within a few steps; an LSTM's cell state passes it back through the forget gate alone, "
    "so it still reaches the first step, and the LSTM can learn to remember it."
)

CELLS = ("rnn", "lstm")
NAME = {"rnn": "tanh RNN", "lstm": "LSTM"}
T, HIDDEN, BATCH, LR = 30, 32, 64, 0.01
FORGET_BIAS = 2.0
SEED = 0
EVAL_ROWS = 512
EVAL_EVERY = 50  # updates between two accuracy measurements


def batch(generator, n: int):  # noqa: ANN001, ANN201
    """``n`` sequences of ``T`` numbers ``N(0, 1)`` (N, T, 1) and their targets: 1 where the
    first number is positive (N, 1)."""
    import torch

    x = torch.randn(n, T, 1, generator=generator)
    return x, (x[:, 0] > 0).to(x.dtype)


def build(cell: str):  # noqa: ANN201
    """The recurrent layer (batch first) and the linear layer on its last hidden state."""
    import torch

    from handprop.nn import LSTM, RNN, Linear

    torch.manual_seed(SEED)
    if cell == "rnn":
        layer = RNN(1, HIDDEN, batch_first=True)
    else:
        layer = LSTM(1, HIDDEN, batch_first=True)
        with torch.no_grad():  # gates in torch's order i, f, g, o
            layer.bias_hh_l0[HIDDEN : 2 * HIDDEN] += FORGET_BIAS
    return layer, Linear(HIDDEN, 1)


def state_gradients(layer, head, x, y) -> dict[str, list[float]]:  # noqa: ANN001
    """Mean ``‖∂C/∂h_t‖`` over the rows for t = 1…T (and ``‖∂C/∂c_t‖``, t = 1…T−1, for an
    LSTM: ``c_T`` reaches ``C`` inside the last step only), and the LSTM's mean forget gate
    ``f_t``, in float64 on copies of the layers."""
    import copy

    import torch

    from handprop.nn import BCEWithLogitsLoss

    layer, head = copy.deepcopy(layer).double(), copy.deepcopy(head).double()
    x, y = x.double(), y.double()
    hs, cs, forget, state = [], [], [], None
    for t in range(T):
        if isinstance(state, tuple):  # f_t = σ(W_if x_t + b_if + W_hf h_{t−1} + b_hf)
            rows = slice(HIDDEN, 2 * HIDDEN)
            with torch.no_grad():
                z = x[:, t] @ layer.weight_ih_l0[rows].t() + layer.bias_ih_l0[rows]
                z += state[0][0] @ layer.weight_hh_l0[rows].t() + layer.bias_hh_l0[rows]
                forget.append(float(torch.sigmoid(z).mean()))
        _, state = layer(x[:, t : t + 1], state)
        for s, kept in zip(state if isinstance(state, tuple) else (state,), (hs, cs), strict=False):
            s.retain_grad()
            kept.append(s)
    BCEWithLogitsLoss()(head(hs[-1][0]), y).backward()

    def norms(states: list) -> list[float]:
        return [float(s.grad[0].norm(dim=-1).mean()) for s in states if s.grad is not None]

    out = {"h": norms(hs)}
    if cs:
        out |= {"c": norms(cs), "forget": forget}
    return out


def accuracy(layer, head, x, y) -> float:  # noqa: ANN001
    import torch

    with torch.no_grad():
        return float(((head(layer(x)[0][:, -1]) > 0).to(y.dtype) == y).float().mean())


def orders(grads: list[float]) -> float:
    """How many orders of magnitude the gradient shrinks from the last state to the first."""
    return math.log10(grads[-1] / grads[0]) if grads[0] > 0 else math.inf


def compute(quick: bool = False) -> dict:
    import torch

    from handprop.nn import BCEWithLogitsLoss

    updates = 300 if quick else 1200
    r: dict = {"T": T, "hidden": HIDDEN, "batch": BATCH, "lr": LR, "updates": updates}
    r |= {"forget_bias": FORGET_BIAS, "eval_every": EVAL_EVERY}
    x_eval, y_eval = batch(torch.Generator().manual_seed(10_000), EVAL_ROWS)
    cost = BCEWithLogitsLoss()
    with threads(1):
        for cell in CELLS:
            layer, head = build(cell)
            at_init = state_gradients(layer, head, x_eval, y_eval)
            opt = torch.optim.Adam([*layer.parameters(), *head.parameters()], lr=LR)
            data = torch.Generator().manual_seed(SEED + 1)  # the same batches for both
            curve = [accuracy(layer, head, x_eval, y_eval)]
            for u in range(1, updates + 1):
                x, y = batch(data, BATCH)
                loss = cost(head(layer(x)[0][:, -1]), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if u % EVAL_EVERY == 0:
                    curve.append(accuracy(layer, head, x_eval, y_eval))
            trained = state_gradients(layer, head, x_eval, y_eval)
            r[cell] = {"init": at_init, "trained": trained, "accuracy": curve}
            for when, g in (("init", at_init), ("trained", trained)):
                r[cell][f"orders_h_{when}"] = orders(g["h"])
                if "c" in g:
                    r[cell][f"orders_c_{when}"] = orders(g["c"])
    return plain(r)


def learned(r: dict, cell: str) -> bool:
    """Whether ``cell`` recalls the first number's sign on at least 90 % of the test rows."""
    return r[cell]["accuracy"][-1] >= 0.9


def tables(r: dict) -> list[Table]:
    t = Table(
        f"Recall the sign of the first of {r['T']} numbers: {r['hidden']} units, Adam lr "
        f"{r['lr']}, {r['updates']} updates of {r['batch']} sequences",
        [
            "network",
            "orders ‖∂C/∂h‖ shrinks, step T → 1 (init)",
            "(trained)",
            "orders ‖∂C/∂c‖ shrinks, step T−1 → 1 (init)",
            "(trained)",
            "mean forget gate (init → trained)",
            "test accuracy",
        ],
        note="‖·‖: the mean over 512 test sequences of the norm over the 32 units. A negative "
        "number of orders: the gradient grows going back. Chance accuracy: 50 %.",
    )
    for cell in CELLS:
        v = r[cell]
        lstm = cell == "lstm"
        t.add(
            NAME[cell],
            v["orders_h_init"],
            v["orders_h_trained"],
            v["orders_c_init"] if lstm else "-",
            v["orders_c_trained"] if lstm else "-",
            f"{_mean(v['init']['forget']):.2f} → {_mean(v['trained']['forget']):.2f}"
            if lstm
            else "-",
            f"{100 * v['accuracy'][-1]:.1f} %",
        )
    return [t]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _one(v: float) -> str:
    """``v`` to one significant figure, as people write it: ``3e-7``."""
    return num(float(f"{v:.1g}"))


def ratio(grads: list[float]) -> float:
    """The first state's gradient over the last one's: ``‖∂C/∂h_1‖ / ‖∂C/∂h_T‖``."""
    return grads[0] / grads[-1]


def caption(r: dict) -> str:
    rnn, lstm = r["rnn"], r["lstm"]
    outcome = {
        (True, False): "only the LSTM learns it",
        (False, True): "only the tanh RNN learns it",
        (True, True): "both learn it",
        (False, False): "neither has learned it yet",
    }[(learned(r, "lstm"), learned(r, "rnn"))]
    h0, h1 = (ratio(rnn[w]["h"]) for w in ("init", "trained"))
    c0, c1 = (ratio(lstm[w]["c"]) for w in ("init", "trained"))
    return (
        f"In the tanh RNN the error signal that reaches the first of {r['T']} steps, "
        f"‖∂C/∂h_1‖, is {_one(h0)} of the last step's at initialisation and {_one(h1)} after "
        f"training; along the LSTM's cell state, ‖∂C/∂c_1‖ is {c0:.2g} and {c1:.2g} times "
        f"‖∂C/∂c_{r['T'] - 1}‖, passed back step by step through the forget gate alone (mean "
        f"{_mean(lstm['init']['forget']):.2f} at initialisation, "
        f"{_mean(lstm['trained']['forget']):.2f} after). Asked whether the first of the "
        f"{r['T']} numbers was positive, {outcome} in {r['updates']} updates: the LSTM is "
        f"right on {100 * lstm['accuracy'][-1]:.0f} % of the test sequences, the RNN on "
        f"{100 * rnn['accuracy'][-1]:.0f} % (chance: 50 %)."
    )


def draw(r: dict, out: Path) -> list[Path]:
    fig, axes = figure(13, 4.2, 1, 3)
    steps = list(range(1, r["T"] + 1))
    for ax, when, title in (
        (axes[0], "init", "at initialisation"),
        (axes[1], "trained", f"after {r['updates']} updates"),
    ):
        g = r["rnn"][when]["h"]
        ax.plot(steps, g, "o-", color=COLORS[0], ms=3, label="tanh RNN ‖∂C/∂h_t‖")
        g = r["lstm"][when]
        ax.plot(steps, g["h"], "o-", color=COLORS[1], ms=3, label="LSTM ‖∂C/∂h_t‖")
        ax.plot(steps[:-1], g["c"], "s--", color=COLORS[2], ms=3, label="LSTM ‖∂C/∂c_t‖")
        ax.set_yscale("log")
        ax.set_xlabel("time step t (the cost reads h_T)")
        ax.set_ylabel("mean gradient norm")
        ax.set_title(f"the error signal through time, {title}", fontsize=10)
        ax.legend(fontsize=8)
    ax = axes[2]
    for k, cell in enumerate(CELLS):
        acc = r[cell]["accuracy"]
        ax.plot(
            [r["eval_every"] * i for i in range(len(acc))],
            [100 * a for a in acc],
            color=COLORS[k],
            lw=2,
            label=NAME[cell],
        )
    ax.axhline(50, color="0.5", ls=":", lw=1)
    ax.set_ylim(0, 102)
    ax.set_xlabel("update")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"recalling the first of {r['T']} numbers (dotted: chance)", fontsize=10)
    ax.legend(fontsize=8)
    return [save_figure(fig, out, "gradient_through_time.png")]
