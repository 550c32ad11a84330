"""Cost functions ``C(ŷ, y)``, reduction included, so the loss value itself has a
hand-written derivative."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from handprop.functional.activations import SoftmaxFunction, sigmoid, softmax
from handprop.functional.base import (
    HandFunction,
    _check_reduction,
    _check_same_shape,
    _count,
    _fp32_under_autocast,
    _reduce,
)


class SquaredErrorFunction(HandFunction):
    r"""``C = scale · (ŷ − y)²`` per element, then reduced (mean over all elements, sum, none).

    ``scale = 1`` is ``mse_loss``; ``scale = ½`` is the notes' cost ``½ (y − ŷ)²``, whose
    derivative is simply ``ŷ − y``. In general ``∂C/∂ŷ = 2·scale·(ŷ − y) / n`` (``n`` the
    element count for ``mean``, else 1) and ``∂C/∂y = −∂C/∂ŷ``.

    Shapes: ``ŷ`` and ``y`` the same shape; output scalar, or that
    shape for ``reduction="none"``.
    """

    @staticmethod
    def forward(input: Tensor, target: Tensor, reduction: str, scale: float) -> Tensor:
        diff = input - target
        return _reduce(diff.square().mul_(scale), reduction)

    @staticmethod
    def derivative(input: Tensor, target: Tensor, scale: float, n: int = 1) -> Tensor:
        """``∂C/∂ŷ = 2·scale·(ŷ − y) / n`` per element (``n``: the count a mean divides by)."""
        return (input - target).mul_(2 * scale / n)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, target, reduction, scale = inputs
        ctx.save_for_backward(input, target)
        ctx.reduction, ctx.scale = reduction, scale

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        input, target = ctx.saved_tensors
        n = _count(input.shape, ctx.reduction)
        grad = grad_output * SquaredErrorFunction.derivative(input, target, ctx.scale, n)
        grad_input = grad if ctx.needs_input_grad[0] else None
        grad_target = -grad if ctx.needs_input_grad[1] else None
        return grad_input, grad_target, None, None


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error ``(ŷ − y)²``, reduced. ``input`` and ``target`` the same shape."""
    _check_reduction(reduction)
    _check_same_shape(input, target, "mse_loss")
    input, target = _fp32_under_autocast(input, target)
    return SquaredErrorFunction.apply(input, target, reduction, 1.0)


def quadratic_cost(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """The notes' cost ``C = ½ (y − ŷ)²`` (reduced), whose derivative is ``∂C/∂ŷ = ŷ − y``.

    Half of ``mse_loss``: the ½ is there so the 2 of the square's derivative cancels.
    """
    _check_reduction(reduction)
    _check_same_shape(input, target, "quadratic_cost")
    input, target = _fp32_under_autocast(input, target)
    return SquaredErrorFunction.apply(input, target, reduction, 0.5)


class BCEWithLogitsFunction(HandFunction):
    r"""Binary cross-entropy on logits ``z``, with ``ŷ = σ(z)``:

    ``C = −[y log σ(z) + (1 − y) log(1 − σ(z))]``, evaluated in the softplus form
    ``C = max(z, 0) − z·y + log(1 + e^{−|z|})``, finite for any ``z``.

    Derivatives: ``∂C/∂z = σ(z) − y`` (the sigmoid and the log cancel — no ``σ'`` factor),
    ``∂C/∂y = −z``; both divided by ``n`` for ``mean``.

    Shapes: ``z`` and ``y`` the same shape; ``y`` in [0, 1]. Output scalar or that shape.
    """

    @staticmethod
    def forward(input: Tensor, target: Tensor, reduction: str) -> Tensor:
        loss = input.clamp_min(0) - input * target + torch.log1p(torch.exp(-input.abs()))
        return _reduce(loss, reduction)

    @staticmethod
    def derivative(input: Tensor, target: Tensor) -> Tensor:
        """``∂C/∂z = σ(z) − y`` per element. σ(z) goes through handprop's sigmoid while a graph
        is being built, so double backward runs its hand-written backward too."""
        a = sigmoid(input) if torch.is_grad_enabled() else torch.sigmoid(input)
        return a - target

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, target, reduction = inputs
        ctx.save_for_backward(input, target)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        z, y = ctx.saved_tensors
        g = grad_output / _count(z.shape, ctx.reduction)
        grad_input = grad_target = None
        if ctx.needs_input_grad[0]:
            grad_input = g * BCEWithLogitsFunction.derivative(z, y)
        if ctx.needs_input_grad[1]:
            grad_target = -g * z
        return grad_input, grad_target, None


def binary_cross_entropy_with_logits(
    input: Tensor, target: Tensor, reduction: str = "mean"
) -> Tensor:
    """``−[y log σ(z) + (1−y) log(1−σ(z))]`` from logits ``z``; same shapes, ``y`` in [0, 1]."""
    _check_reduction(reduction)
    _check_same_shape(input, target, "binary_cross_entropy_with_logits")
    input, target = _fp32_under_autocast(input, target)
    return BCEWithLogitsFunction.apply(input, target, reduction)


class CrossEntropyFunction(HandFunction):
    r"""Softmax cross-entropy on logits ``z`` with class dimension ``1`` (or ``0`` unbatched).

    ``C = −Σᵢ pᵢ log softmax(z)ᵢ = logsumexp(z) − Σᵢ pᵢ zᵢ``, where ``p`` is the one-hot of a
    class index ``y`` (long targets) or a given probability vector (float targets, same shape
    as ``z``). ``logsumexp(z) = m + log Σⱼ e^{zⱼ − m}`` with ``m = max z``: finite for any ``z``.

    The fused derivative: ``∂C/∂z = softmax(z) − p`` (the softmax Jacobian and the log
    cancel), divided by the number of samples for ``mean``; for probability targets
    ``∂C/∂p = −log softmax(z)``.

    Shapes: ``z`` (N, C) or (N, C, d₁, …) or (C,); ``y`` (N) / (N, d₁, …) / () class indices,
    or the shape of ``z`` for probabilities. Output scalar, or (N, d₁, …) for ``"none"``.
    """

    @staticmethod
    def forward(input: Tensor, target: Tensor, reduction: str) -> Tensor:
        cdim = 0 if input.dim() == 1 else 1
        lse = torch.logsumexp(input, cdim, keepdim=True)  # (N, 1, d…), stable: max subtracted
        if target.is_floating_point():
            loss = (target * (lse - input)).sum(cdim)
        else:
            z_y = input.gather(cdim, target.unsqueeze(cdim))
            loss = (lse - z_y).squeeze(cdim)
        return _reduce(loss, reduction)

    @staticmethod
    def derivative(input: Tensor, target: Tensor) -> Tensor:
        """``∂C/∂z = softmax(z) − p`` per sample (``p``: the one-hot of a class index, or the
        given probabilities, whose sum scales the softmax term).

        softmax(z) goes through handprop's Function while a graph is being built (double
        backward then runs its hand-written backward too), else straight through its forward.
        """
        cdim = 0 if input.dim() == 1 else 1
        grad = torch.is_grad_enabled()
        a = softmax(input, cdim) if grad else SoftmaxFunction.forward(input, cdim)
        if target.is_floating_point():
            return a * target.sum(cdim, keepdim=True) - target
        return a - torch.zeros_like(a).scatter_(cdim, target.unsqueeze(cdim), 1)  # − one-hot

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, target, reduction = inputs
        ctx.save_for_backward(input, target)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        z, y = ctx.saved_tensors
        cdim = 0 if z.dim() == 1 else 1
        per_sample_shape = z.shape[:cdim] + z.shape[cdim + 1 :]
        g = grad_output / _count(per_sample_shape, ctx.reduction)
        if ctx.reduction == "none":
            g = g.unsqueeze(cdim)  # one weight per sample, broadcast over classes
        grad_input = grad_target = None
        if ctx.needs_input_grad[0]:
            grad_input = g * CrossEntropyFunction.derivative(z, y)
        if ctx.needs_input_grad[1]:
            grad_target = -g * torch.log_softmax(z, cdim)  # −log softmax(z), torch's kernel
        return grad_input, grad_target, None


def cross_entropy(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """``logsumexp(z) − z_y`` from logits ``input`` (N, C, …) and class indices (N, …) or
    class probabilities (same shape as ``input``)."""
    _check_reduction(reduction)
    if target.is_floating_point():
        _check_same_shape(input, target, "cross_entropy")
    else:
        cdim = 0 if input.dim() == 1 else 1
        expected = input.shape[:cdim] + input.shape[cdim + 1 :]
        if target.shape != expected:
            raise ValueError(
                f"cross_entropy: class-index target of shape {tuple(target.shape)} does not "
                f"fit logits of shape {tuple(input.shape)}; expected {tuple(expected)}"
            )
    input, target = _fp32_under_autocast(input, target)
    return CrossEntropyFunction.apply(input, target, reduction)
