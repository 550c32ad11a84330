"""Activation functions ``a = activation(z)`` and their derivatives."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from handprop.functional.base import HandFunction, _fp32_under_autocast


class SigmoidFunction(HandFunction):
    r"""``a = σ(z) = 1 / (1 + e^{-z})``; derivative ``σ'(z) = a (1 − a)``.

    Shapes: any; elementwise. Forward uses torch's sigmoid kernel, which evaluates the same
    formula without overflow for large ``|z|``. The backward needs only the output ``a``.
    """

    @staticmethod
    def forward(input: Tensor) -> Tensor:
        return torch.sigmoid(input)

    @staticmethod
    def derivative(a: Tensor) -> Tensor:
        """``σ'(z) = a (1 − a)``, from the output ``a = σ(z)``."""
        return a * (1 - a)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (a,) = ctx.saved_tensors
        return grad_output * SigmoidFunction.derivative(a)


def sigmoid(input: Tensor) -> Tensor:
    """``σ(z) = 1 / (1 + e^{-z})``, elementwise."""
    return SigmoidFunction.apply(input)


class TanhFunction(HandFunction):
    r"""``a = tanh(z) = (e^z − e^{-z}) / (e^z + e^{-z})``; derivative ``1 − a²``.

    Shapes: any; elementwise. The backward needs only the output ``a``.
    """

    @staticmethod
    def forward(input: Tensor) -> Tensor:
        return torch.tanh(input)

    @staticmethod
    def derivative(a: Tensor) -> Tensor:
        """``tanh'(z) = 1 − a²``, from the output ``a = tanh(z)``."""
        return 1 - a * a

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (a,) = ctx.saved_tensors
        return grad_output * TanhFunction.derivative(a)


def tanh(input: Tensor) -> Tensor:
    """``tanh(z)``, elementwise."""
    return TanhFunction.apply(input)


class ReLUFunction(HandFunction):
    r"""``a = max(0, z)``; derivative ``1`` where ``z > 0``, else ``0`` (0 at the kink, as torch).

    Shapes: any; elementwise. ``a > 0`` exactly where ``z > 0``, so the output is saved
    instead of the input, and since ``a ≥ 0`` the derivative is ``sign(a)`` (1 where ``a > 0``,
    0 where ``a = 0``): the backward is ``∂C/∂z = sign(a) ⊙ g``, one new float tensor
    multiplied by ``g`` in place, no boolean mask. (``g.masked_fill(a <= 0, 0)`` and
    ``torch.where(a > 0, g, 0)`` build a mask and then select per element; on CPU they were
    ~7-25x slower than this and made a 64-512-512-10 MLP step ~20% slower.) For finite ``g``
    the values are torch's (up to the sign of a zero); an ``inf``/``nan`` in ``g`` at an
    inactive unit gives ``nan`` (``0 · inf``) there, where torch's kernel gives 0.
    """

    @staticmethod
    def forward(input: Tensor) -> Tensor:
        return input.clamp_min(0)

    @staticmethod
    def derivative(a: Tensor) -> Tensor:
        """``1[z > 0] = sign(a)``, from the output ``a = max(0, z) ≥ 0``."""
        return a.sign()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (a,) = ctx.saved_tensors
        return ReLUFunction.derivative(a).mul_(grad_output)  # 1[z > 0] ⊙ g


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """``max(0, z)``, elementwise. ``inplace`` is accepted for signature compatibility only."""
    return ReLUFunction.apply(input)


class LeakyReLUFunction(HandFunction):
    r"""``a = z`` if ``z > 0`` else ``slope · z``; derivative ``1`` if ``z > 0`` else ``slope``.

    Shapes: any; elementwise. ``slope`` is the notes' 0.01 by default.
    """

    @staticmethod
    def forward(input: Tensor, negative_slope: float) -> Tensor:
        return torch.where(input > 0, input, input * negative_slope)

    @staticmethod
    def derivative(z: Tensor, negative_slope: float) -> Tensor:
        """``1`` where ``z > 0``, else ``negative_slope``; from the input ``z`` (with a negative
        slope the output's sign does not tell which side ``z`` was on)."""
        return torch.ones_like(z).masked_fill_(z <= 0, negative_slope)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, negative_slope = inputs
        ctx.save_for_backward(input)
        ctx.negative_slope = negative_slope

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        (z,) = ctx.saved_tensors
        return grad_output * LeakyReLUFunction.derivative(z, ctx.negative_slope), None


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """``z if z > 0 else negative_slope·z``, elementwise (``inplace`` accepted, ignored)."""
    return LeakyReLUFunction.apply(input, float(negative_slope))


class SoftmaxFunction(HandFunction):
    r"""``aᵢ = e^{zᵢ} / Σⱼ e^{zⱼ}`` along ``dim``. Forward uses torch's softmax kernel, which
    evaluates it as ``e^{zᵢ − m} / Σⱼ e^{zⱼ − m}`` with ``m = maxⱼ zⱼ``, so no exponential
    overflows (one fused kernel instead of five tensor operations).

    Jacobian ``∂aᵢ/∂zⱼ = aᵢ (1[i=j] − aⱼ)``, so the backward is
    ``∂C/∂zᵢ = aᵢ (gᵢ − Σⱼ gⱼ aⱼ)`` — no (C × C) matrix is ever built.

    Shapes: any; normalised along ``dim``.
    """

    @staticmethod
    def forward(input: Tensor, dim: int) -> Tensor:
        return torch.softmax(input, dim)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.dim = inputs[1]
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        (a,) = ctx.saved_tensors
        return a * (grad_output - (grad_output * a).sum(ctx.dim, keepdim=True)), None


def softmax(input: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    """``e^{zᵢ} / Σⱼ e^{zⱼ}`` along ``dim``; ``dtype`` casts the input first, as torch does."""
    if dtype is not None:
        input = input.to(dtype)
    (input,) = _fp32_under_autocast(input)
    return SoftmaxFunction.apply(input, dim)
