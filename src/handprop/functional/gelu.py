"""GELU, the transformer's activation: ``a = z Φ(z)``, the input weighted by how likely a
standard normal variable is to be below it."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor

from handprop.functional.base import HandFunction

APPROXIMATIONS = ("none", "tanh")
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_KAPPA = 0.044715


class GELUFunction(HandFunction):
    r"""``a = z Φ(z)``, ``Φ(z) = ½ (1 + erf(z / √2))`` the standard normal's distribution
    function; derivative ``Φ(z) + z φ(z)``, ``φ(z) = e^{−z²/2} / √(2π)`` its density.

    ``approximate="tanh"``: ``a = ½ z (1 + tanh u)``, ``u = √(2/π) (z + 0.044715 z³)``;
    derivative ``½ (1 + tanh u) + ½ z (1 − tanh² u) · √(2/π) (1 + 3 · 0.044715 z²)``.

    Shapes: any; elementwise. The forward is torch's kernel; both directions need the input.
    Backward ``∂C/∂z = a'(z) ⊙ g``; forward mode ``ȧ = a'(z) ⊙ ż``.
    """

    @staticmethod
    def forward(input: Tensor, approximate: str) -> Tensor:
        return TF.gelu(input, approximate=approximate)

    @staticmethod
    def derivative(z: Tensor, approximate: str) -> Tensor:
        """``a'(z)``, from the input ``z``."""
        if approximate == "tanh":
            t = torch.tanh(_SQRT_2_OVER_PI * (z + _KAPPA * z * z * z))  # tanh u
            du = _SQRT_2_OVER_PI * (1 + 3 * _KAPPA * z * z)  # du/dz
            return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du
        cdf = 0.5 * (1 + torch.erf(z * math.sqrt(0.5)))  # Φ(z)
        pdf = torch.exp(-0.5 * z * z) * (1 / math.sqrt(2 * math.pi))  # φ(z)
        return cdf + z * pdf

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, ctx.approximate = inputs
        ctx.save_for_backward(input)
        ctx.save_for_forward(input)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        """``∂C/∂z = a'(z) ⊙ g``."""
        (z,) = ctx.saved_tensors
        return grad_output * GELUFunction.derivative(z, ctx.approximate), None

    @staticmethod
    def jvp(ctx: Any, input_tangent: Tensor, _: None) -> Tensor:
        """``ȧ = a'(z) ⊙ ż``."""
        (z,) = ctx.saved_tensors
        return GELUFunction.derivative(z, ctx.approximate) * input_tangent

    @staticmethod
    def vmap(info: Any, in_dims: tuple, input: Tensor, approximate: str) -> tuple[Tensor, int]:
        return GELUFunction.apply(input, approximate), in_dims[0]


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """``z Φ(z)`` elementwise (``approximate="tanh"``: the tanh approximation), as
    ``torch.nn.functional.gelu``."""
    if approximate not in APPROXIMATIONS:
        raise RuntimeError("approximate argument must be either none or tanh.")
    return GELUFunction.apply(input, approximate)
