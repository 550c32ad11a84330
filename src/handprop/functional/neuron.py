"""The neuron: ``z = w·x + b``, a whole layer at once as ``z = x Wᵀ + b``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from handprop.functional.base import HandFunction


class LinearFunction(HandFunction):
    r"""The weighted sum of a layer of neurons, ``z = x Wᵀ + b``.

    Shapes: ``x`` (*, in), ``W`` (out, in), ``b`` (out,) or None, ``z`` (*, out); ``*`` is any
    number of leading dimensions, flattened to N rows for the matrix products.

    Backward, with ``δ = ∂C/∂z`` of shape (N, out):

    * ``∂C/∂x = δ W``      (N, in)   — the error sent back to the layer below
    * ``∂C/∂W = δᵀ x``     (out, in) — one row of weight gradients per neuron
    * ``∂C/∂b = Σₙ δₙ``    (out,)    — the bias sees the error of every sample

    Forward mode, tangents ``ẋ, Ẇ, ḃ`` in: ``ż = ẋ Wᵀ + x Ẇᵀ + ḃ`` (the product rule; ``z`` is
    linear in each argument, so the tangent is the same map applied twice).

    Under ``torch.func.vmap`` torch generates the batched rule from these same methods
    (``generate_vmap_rule``): a batch of inputs is more rows of ``x``, but a batch of weights
    (an ensemble) is a batched matrix product that no single call of this Function computes.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # (N, in) input, the usual case, goes straight to the product: no reshape / view.
        x = input if input.dim() == 2 else input.reshape(-1, input.shape[-1])
        z = torch.addmm(bias, x, weight.t()) if bias is not None else x.mm(weight.t())
        return z if input.dim() == 2 else z.view(*input.shape[:-1], weight.shape[0])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, weight, bias = inputs
        # ∂C/∂x needs W, ∂C/∂W needs x: keep only what the requested gradients use.
        ctx.save_for_backward(
            input if ctx.needs_input_grad[1] else None,
            weight if ctx.needs_input_grad[0] else None,
        )
        ctx.save_for_forward(input, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        input, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        flat = grad_output.dim() == 2
        delta = grad_output if flat else grad_output.reshape(-1, grad_output.shape[-1])  # δ
        grad_input = grad_weight = grad_bias = None
        if need_x:
            grad_input = delta.mm(weight)  # δ W
            if not flat:
                grad_input = grad_input.view(*grad_output.shape[:-1], weight.shape[1])
        if need_w:
            x = input if input.dim() == 2 else input.reshape(-1, input.shape[-1])
            grad_weight = delta.t().mm(x)  # δᵀ x
        if ctx.has_bias and need_b:
            grad_bias = delta.sum(0)  # Σₙ δₙ
        return grad_input, grad_weight, grad_bias

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor, weight_t: Tensor, bias_t: Tensor | None) -> Tensor:
        """``ż = ẋ Wᵀ + x Ẇᵀ + ḃ``."""
        input, weight = ctx.saved_tensors
        return LinearFunction.forward(input_t, weight, None) + LinearFunction.forward(
            input, weight_t, bias_t
        )


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``z = x Wᵀ + b``. ``input`` (*, in), ``weight`` (out, in), ``bias`` (out,) → (*, out)."""
    if input.dim() == 0 or weight.dim() == 0:
        raise RuntimeError(
            "both arguments to linear need to be at least 1D, but they are "
            f"{input.dim()}D and {weight.dim()}D"
        )
    return LinearFunction.apply(input, weight, bias)
