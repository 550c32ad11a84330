"""Activation functions ``a = activation(z)`` and their derivatives.

Each Function has its derivative twice, in the two directions autograd runs: ``backward``
multiplies the gradient from above, ``g``, by it (``∂C/∂z = a'(z) ⊙ g``); ``jvp`` multiplies
the tangent from below, ``ż``, by it (``ȧ = a'(z) ⊙ ż``). Under ``torch.func.vmap`` an
elementwise Function runs once on the whole batch: the batch is one more dimension.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from handprop.functional.base import HandFunction, _fp32_under_autocast


class SigmoidFunction(HandFunction):
    r"""``a = σ(z) = 1 / (1 + e^{-z})``; derivative ``σ'(z) = a (1 − a)``.

    Shapes: any; elementwise. Forward uses torch's sigmoid kernel, which evaluates the same
    formula without overflow for large ``|z|``. Both directions need only the output ``a``.
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
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        """``∂C/∂z = a (1 − a) ⊙ g``."""
        (a,) = ctx.saved_tensors
        return grad_output * SigmoidFunction.derivative(a)

    @staticmethod
    def jvp(ctx: Any, input_tangent: Tensor) -> Tensor:
        """``ȧ = a (1 − a) ⊙ ż``."""
        (a,) = ctx.saved_tensors
        return SigmoidFunction.derivative(a) * input_tangent

    @staticmethod
    def vmap(info: Any, in_dims: tuple, input: Tensor) -> tuple[Tensor, int]:
        return SigmoidFunction.apply(input), in_dims[0]


def sigmoid(input: Tensor) -> Tensor:
    """``σ(z) = 1 / (1 + e^{-z})``, elementwise."""
    return SigmoidFunction.apply(input)


class TanhFunction(HandFunction):
    r"""``a = tanh(z) = (e^z − e^{-z}) / (e^z + e^{-z})``; derivative ``1 − a²``.

    Shapes: any; elementwise. Both directions need only the output ``a``.
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
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        """``∂C/∂z = (1 − a²) ⊙ g``."""
        (a,) = ctx.saved_tensors
        return grad_output * TanhFunction.derivative(a)

    @staticmethod
    def jvp(ctx: Any, input_tangent: Tensor) -> Tensor:
        """``ȧ = (1 − a²) ⊙ ż``."""
        (a,) = ctx.saved_tensors
        return TanhFunction.derivative(a) * input_tangent

    @staticmethod
    def vmap(info: Any, in_dims: tuple, input: Tensor) -> tuple[Tensor, int]:
        return TanhFunction.apply(input), in_dims[0]


def tanh(input: Tensor) -> Tensor:
    """``tanh(z)``, elementwise."""
    return TanhFunction.apply(input)


class ReLUFunction(HandFunction):
    r"""``a = max(0, z)``; derivative ``1`` where ``z > 0``, else ``0`` (0 at the kink, as torch).

    Shapes: any; elementwise. ``a > 0`` exactly where ``z > 0``, so the output is saved
    instead of the input, and since ``a ≥ 0`` the derivative is ``sign(a)`` (1 where ``a > 0``,
    0 where ``a = 0``): a float tensor multiplied by ``g``, no boolean mask.
    (``g.masked_fill(a <= 0, 0)`` and ``torch.where(a > 0, g, 0)`` build a mask and then select
    per element; on CPU they were ~7-25x slower than this and made a 64-512-512-10 MLP step
    ~20% slower.) For finite ``g`` the values are torch's (up to the sign of a zero); an
    ``inf``/``nan`` in ``g`` at an inactive unit gives ``nan`` (``0 · inf``) there, where torch's
    kernel gives 0. The backward multiplies ``g`` into the new ``sign(a)`` tensor in place (a
    second new tensor made a 64-512-512-10 step ~5% slower on CPU); under ``vmap``
    (``jacrev``, Hessians) ``g`` can be a batch where ``a`` is not, which cannot be written into
    it, and then the product is a new tensor.
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
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        """``∂C/∂z = 1[z > 0] ⊙ g``."""
        (a,) = ctx.saved_tensors
        derivative = ReLUFunction.derivative(a)
        try:
            return derivative.mul_(grad_output)
        except RuntimeError:  # vmap: a batch of g, one a
            return derivative * grad_output

    @staticmethod
    def jvp(ctx: Any, input_tangent: Tensor) -> Tensor:
        """``ȧ = 1[z > 0] ⊙ ż``."""
        (a,) = ctx.saved_tensors
        return ReLUFunction.derivative(a) * input_tangent

    @staticmethod
    def vmap(info: Any, in_dims: tuple, input: Tensor) -> tuple[Tensor, int]:
        return ReLUFunction.apply(input), in_dims[0]


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """``max(0, z)``, elementwise. ``inplace`` is accepted for signature compatibility only."""
    return ReLUFunction.apply(input)


class LeakyReLUFunction(HandFunction):
    r"""``a = z`` if ``z > 0`` else ``negative_slope · z``; derivative ``1`` if ``z > 0`` else
    ``negative_slope``.

    Shapes: any; elementwise. ``negative_slope`` is the notes' 0.01 by default.
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
        ctx.save_for_forward(input)
        ctx.negative_slope = negative_slope

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        """``∂C/∂z = a'(z) ⊙ g``."""
        (z,) = ctx.saved_tensors
        return grad_output * LeakyReLUFunction.derivative(z, ctx.negative_slope), None

    @staticmethod
    def jvp(ctx: Any, input_tangent: Tensor, _: None) -> Tensor:
        """``ȧ = a'(z) ⊙ ż``."""
        (z,) = ctx.saved_tensors
        return LeakyReLUFunction.derivative(z, ctx.negative_slope) * input_tangent

    @staticmethod
    def vmap(info: Any, in_dims: tuple, input: Tensor, negative_slope: float) -> tuple:
        return LeakyReLUFunction.apply(input, negative_slope), in_dims[0]


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """``z if z > 0 else negative_slope·z``, elementwise (``inplace`` accepted, ignored)."""
    if not isinstance(negative_slope, (int, float)):  # torch's TypeError (a bool is a number)
        raise TypeError(
            "leaky_relu(): argument 'negative_slope' must be Number, not "
            f"{type(negative_slope).__name__}"
        )
    return LeakyReLUFunction.apply(input, float(negative_slope))


class SoftmaxFunction(HandFunction):
    r"""``aᵢ = e^{zᵢ} / Σⱼ e^{zⱼ}`` along ``dim``. Forward uses torch's softmax kernel, which
    evaluates it as ``e^{zᵢ − m} / Σⱼ e^{zⱼ − m}`` with ``m = maxⱼ zⱼ``, so no exponential
    overflows (one fused kernel instead of five tensor operations).

    Jacobian ``∂aᵢ/∂zⱼ = aᵢ (1[i=j] − aⱼ)``, so the backward is
    ``∂C/∂zᵢ = aᵢ (gᵢ − Σⱼ gⱼ aⱼ)`` and the tangent ``ȧᵢ = aᵢ (żᵢ − Σⱼ aⱼ żⱼ)`` — the same
    product from either side, since the Jacobian is symmetric. No (C × C) matrix is built.

    Shapes: any, a size-0 ``dim`` included; normalised along ``dim``.
    """

    @staticmethod
    def forward(input: Tensor, dim: int) -> Tensor:
        return torch.softmax(input, dim)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.dim = inputs[1]
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        """``∂C/∂zᵢ = aᵢ (gᵢ − Σⱼ gⱼ aⱼ)``."""
        (a,) = ctx.saved_tensors
        return a * (grad_output - (grad_output * a).sum(ctx.dim, keepdim=True)), None

    @staticmethod
    def jvp(ctx: Any, input_tangent: Tensor, _: None) -> Tensor:
        """``ȧᵢ = aᵢ (żᵢ − Σⱼ aⱼ żⱼ)``."""
        (a,) = ctx.saved_tensors
        return a * (input_tangent - (input_tangent * a).sum(ctx.dim, keepdim=True))

    @staticmethod
    def vmap(info: Any, in_dims: tuple, input: Tensor, dim: int) -> tuple[Tensor, int]:
        return _along_dim_vmap(SoftmaxFunction, in_dims[0], input, dim)


def softmax(input: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    """``e^{zᵢ} / Σⱼ e^{zⱼ}`` along ``dim``. ``dtype`` casts the input first, as torch does; the
    cast's derivative casts the gradient back."""
    if dtype is not None:
        input = input.to(dtype)
    (input,) = _fp32_under_autocast(input)
    return SoftmaxFunction.apply(input, dim)


class LogSoftmaxFunction(HandFunction):
    r"""``ℓᵢ = log softmax(z)ᵢ = zᵢ − log Σⱼ e^{zⱼ}`` along ``dim`` (torch's fused kernel,
    stable for any ``z``). With ``a = softmax(z) = e^ℓ``:

    Jacobian ``∂ℓᵢ/∂zⱼ = 1[i=j] − aⱼ``, so the backward is ``∂C/∂zⱼ = gⱼ − aⱼ Σᵢ gᵢ`` and
    the tangent ``ℓ̇ᵢ = żᵢ − Σⱼ aⱼ żⱼ``. The first half of cross-entropy; ``nll_loss`` is the
    second.

    Shapes: any, a size-0 ``dim`` included; normalised along ``dim``.
    """

    @staticmethod
    def forward(input: Tensor, dim: int) -> Tensor:
        return torch.log_softmax(input, dim)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.dim = inputs[1]
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        """``∂C/∂zⱼ = gⱼ − aⱼ Σᵢ gᵢ``, ``a = e^ℓ``."""
        (logp,) = ctx.saved_tensors
        return grad_output - logp.exp() * grad_output.sum(ctx.dim, keepdim=True), None

    @staticmethod
    def jvp(ctx: Any, input_tangent: Tensor, _: None) -> Tensor:
        """``ℓ̇ᵢ = żᵢ − Σⱼ aⱼ żⱼ``."""
        (logp,) = ctx.saved_tensors
        return input_tangent - (logp.exp() * input_tangent).sum(ctx.dim, keepdim=True)

    @staticmethod
    def vmap(info: Any, in_dims: tuple, input: Tensor, dim: int) -> tuple[Tensor, int]:
        return _along_dim_vmap(LogSoftmaxFunction, in_dims[0], input, dim)


def log_softmax(input: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    """``zᵢ − log Σⱼ e^{zⱼ}`` along ``dim``. ``dtype`` casts the input first, as torch does."""
    if dtype is not None:
        input = input.to(dtype)
    (input,) = _fp32_under_autocast(input)
    return LogSoftmaxFunction.apply(input, dim)


def _along_dim_vmap(fn: type[HandFunction], batch_dim: int, input: Tensor, dim: int) -> tuple:
    """A batch of inputs normalised along ``dim`` is one input with the batch in front,
    normalised along ``dim`` shifted past it (a batch of scalars: along a new size-1 dim)."""
    x = input.movedim(batch_dim, 0)
    if x.dim() == 1:
        return fn.apply(x.unsqueeze(1), 1).squeeze(1), 0
    return fn.apply(x, dim % (x.dim() - 1) + 1), 0
