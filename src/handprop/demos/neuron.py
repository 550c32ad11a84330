"""Activation functions and their derivatives, the derivatives from the hand-written backward.

Each curve ``a(z)`` is handprop's forward; each derivative ``da/dz`` is
``torch.autograd.grad`` through it, i.e. the ``backward`` of the Function in
:mod:`handprop.functional` (no formula is re-typed here). A central finite difference of the
forward checks each backward. The difference's own error is rounding, about
``eps·|a| / h`` ≈ 1e-10, and its exact size depends on how the CPU's kernels round ``a``, so the
table and caption state the bound ``FD_BOUND`` that holds on every CPU (the results keep each
measured error).
"""

from __future__ import annotations

from pathlib import Path

from handprop.demos._figures import COLORS, figure, save_figure
from handprop.demos._report import Table, at_most, fmt, plain

SUMMARY = (
    "Each neuron computes z = w·x + b and a = activation(z). The curves are handprop's "
    "forward passes; the derivatives are what their hand-written backward returns "
    "(autograd.grad through handprop.functional), checked against finite differences."
)

SLOPE = 0.01  # the notes' leaky ReLU
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu")
PROBE = (-2.0, 0.0, 2.0)
#: Every backward agrees with the finite difference within this (measured: 5e-11 to 1.9e-10).
FD_BOUND_TEXT = "1e-9"
FD_BOUND = float(FD_BOUND_TEXT)


def _derivative(fn, z):  # noqa: ANN001, ANN202
    """``a = fn(z)`` and ``da/dz`` elementwise, from the Function's backward."""
    import torch

    z = z.detach().clone().requires_grad_(True)
    a = fn(z)
    (g,) = torch.autograd.grad(a, z, torch.ones_like(a))
    return a.detach(), g, a.grad_fn


def _central_difference(fn, z, h: float = 1e-6):  # noqa: ANN001, ANN202
    return (fn(z + h) - fn(z - h)) / (2 * h)


def compute(quick: bool = False) -> dict:
    import torch

    from handprop import functional as F
    from handprop.functional import function_of

    z = torch.linspace(-5, 5, 201 if quick else 1001, dtype=torch.float64)
    fns = {
        "sigmoid": F.sigmoid,
        "tanh": F.tanh,
        "relu": F.relu,
        "leaky_relu": lambda t: F.leaky_relu(t, SLOPE),
    }
    probe = torch.tensor(PROBE, dtype=torch.float64)
    r: dict = {"z": z.tolist(), "slope": SLOPE}
    away = z.abs() > 1e-3  # finite differences straddle the kink of (leaky) ReLU at 0
    for name, fn in fns.items():
        a, g, node = _derivative(fn, z)
        if function_of(node) is None:  # the hand-written backward must run
            raise AssertionError(f"{name}: backward node {node} is not a handprop Function")
        err = float((_central_difference(fn, z) - g)[away].abs().max())
        pa, pg, _ = _derivative(fn, probe)
        r[name] = {
            "a": a.tolist(),
            "derivative": g.tolist(),
            "max_derivative": float(g.max()),
            "min_derivative": float(g.min()),
            "derivative_below_zero": float(g[z < -1e-3].max()),
            "fd_error": err,
            "probe_a": pa.tolist(),
            "probe_derivative": pg.tolist(),
            "backward": type(node).__name__,
        }

    # Softmax over three logits z = (t, 0, 1): probabilities and the Jacobian column ∂a/∂z₁.
    Z = torch.stack([z, torch.zeros_like(z), torch.ones_like(z)], dim=1).requires_grad_(True)
    A = F.softmax(Z, dim=1)
    if function_of(A.grad_fn) is None:
        raise AssertionError(f"softmax: backward node {A.grad_fn} is not a handprop Function")
    dA = [
        torch.autograd.grad(A[:, i].sum(), Z, retain_graph=True)[0][:, 0] for i in range(3)
    ]  # rows are independent samples, so the sum picks out ∂aᵢ/∂z₁ per row
    fd0 = _central_difference(
        lambda t: F.softmax(torch.stack([t, Z[:, 1].detach(), Z[:, 2].detach()], 1), 1), z
    )
    z0 = torch.tensor([2.0, 1.0, 0.1], dtype=torch.float64)
    r["softmax"] = {
        "a": A.detach().T.tolist(),  # (3, points): a_i along the curve
        "derivative": [d.tolist() for d in dA],
        "fd_error": max(float((dA[i] - fd0[:, i]).abs().max()) for i in range(3)),
        "z0": z0.tolist(),
        "a0": F.softmax(z0, 0).tolist(),
        "jacobian": torch.autograd.functional.jacobian(lambda v: F.softmax(v, 0), z0).tolist(),
    }
    return plain(r)


def tables(r: dict) -> list[Table]:
    t1 = Table(
        "Activations: values and derivatives (derivatives from the Function's backward)",
        [
            "activation",
            *(f"a({p:g})" for p in PROBE),
            *(f"a'({p:g})" for p in PROBE),
            "max a'",
            "backward",
            "max err vs finite diff",
        ],
        note="a'(0) of ReLU is 0, as torch defines it at the kink. The sigmoid's slope is at "
        f"most {fmt(r['sigmoid']['max_derivative'])}: stacked sigmoid layers shrink the error "
        "signal (vanishing gradients).",
    )
    for name in ACTIVATIONS:
        v = r[name]
        t1.add(
            name,
            *v["probe_a"],
            *v["probe_derivative"],
            v["max_derivative"],
            v["backward"],
            _within(v["fd_error"]),
        )
    s = r["softmax"]
    z0 = ", ".join(f"{v:g}" for v in s["z0"])
    t2 = Table(
        f"Softmax at z = ({z0}): probabilities and Jacobian da_i/dz_j from the backward",
        ["i", "z_i", "a_i", "da_i/dz_1", "da_i/dz_2", "da_i/dz_3"],
        note=f"Every column sums to 0 (the probabilities always sum to 1); max error of the "
        f"backward against a finite difference along the curves: {_within(s['fd_error'])}.",
    )
    for i in range(3):
        t2.add(i + 1, s["z0"][i], s["a0"][i], *s["jacobian"][i])
    return [t1, t2]


def _within(err: float) -> str:
    """A backward's error against the finite difference as the text states it: the bound that
    holds on every CPU, or the error itself (rounded up) where it does not hold."""
    return f"< {FD_BOUND_TEXT}" if err < FD_BOUND else at_most(err)


def caption(r: dict) -> str:
    sig, relu, leaky = r["sigmoid"], r["relu"], r["leaky_relu"]
    err = max(r[n]["fd_error"] for n in ACTIVATIONS)
    within = FD_BOUND_TEXT if err < FD_BOUND else at_most(err)
    return (
        "The dashed derivatives are not re-typed formulas but `autograd.grad` through each "
        f"Function's hand-written backward (within {within} of a finite difference): note the "
        f"sigmoid's slope never exceeds {fmt(sig['max_derivative'], 3)}, while ReLU passes "
        f"{fmt(relu['max_derivative'], 3)} (and leaky ReLU "
        f"{fmt(leaky['derivative_below_zero'], 3)}, not {fmt(relu['derivative_below_zero'], 3)},"
        " below zero)."
    )


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    zs = np.asarray(r["z"])
    slope = r["slope"]
    fig, axes = figure(10, 5.6, 2, 3)
    titles = {
        "sigmoid": "sigmoid  1/(1+e^-z)",
        "tanh": "tanh",
        "relu": "ReLU  max(0, z)",
        "leaky_relu": f"leaky ReLU  (slope {slope} for z<0)",
    }
    for ax, name in zip(axes.flat, ACTIVATIONS, strict=False):
        ax.plot(zs, r[name]["a"], color=COLORS[0], lw=2, label="a(z)")
        ax.plot(zs, r[name]["derivative"], color=COLORS[1], lw=2, ls="--", label="da/dz (backward)")
        ax.axhline(0, color="0.7", lw=0.8)
        ax.axvline(0, color="0.7", lw=0.8)
        ax.set_title(titles[name], fontsize=10)
        ax.set_xlabel("z")
        ax.set_ylim(*{"sigmoid": (-0.1, 1.35), "tanh": (-1.15, 1.6)}.get(name, (-0.3, 5.2)))
        ax.legend(fontsize=8, loc="upper left")
    axes[1, 0].annotate(
        f"slope {slope}, not 0:\nno dead neurons",
        xy=(-3, slope),
        xytext=(-4.6, 1.6),
        fontsize=8,
        arrowprops={"arrowstyle": "->", "color": "0.4"},
    )
    ax = axes[1, 1]
    s = r["softmax"]
    for i in range(3):
        ax.plot(zs, s["a"][i], color=COLORS[i], lw=2, label=f"a{i + 1}")
        ax.plot(zs, s["derivative"][i], color=COLORS[i], lw=1.5, ls="--", label=f"da{i + 1}/dz1")
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_title("softmax of z = (z1, 0, 1)", fontsize=10)
    ax.set_xlabel("z1")
    ax.set_ylim(-0.25, 1.3)
    ax.legend(fontsize=7, ncols=3, loc="upper left")
    # All derivatives side by side: how much error signal each one lets through.
    ax = axes[1, 2]
    for i, name in enumerate(ACTIVATIONS):
        ls = (0, (4, 3)) if i == 3 else "-"
        ax.plot(zs, r[name]["derivative"], color=COLORS[i], lw=2, ls=ls, label=name)
    ax.set_title("the derivatives together", fontsize=10)
    ax.set_xlabel("z")
    ax.set_ylim(-0.05, 1.1)
    ax.legend(fontsize=8)
    return [save_figure(fig, out, "activations.png")]
