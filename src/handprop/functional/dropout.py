"""Dropout: during training each unit is switched off with probability ``p``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from handprop.functional.base import HandFunction


class DropoutFunction(HandFunction):
    r"""``a = x ⊙ m``, with the mask ``m`` drawn before the call: 0 with probability ``p``,
    else ``1 / (1 − p)`` (so the expected activation is unchanged and evaluation needs no
    rescaling).

    Shapes: ``x`` and ``m`` alike, any shape. Backward: the switched-off units pass nothing
    back, the others their scaled gradient: ``∂C/∂x = g ⊙ m``. Forward mode: ``ȧ = ẋ ⊙ m``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(input: Tensor, mask: Tensor) -> Tensor:
        return input * mask

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(inputs[1])
        ctx.save_for_forward(inputs[1])

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        (mask,) = ctx.saved_tensors
        return grad_output * mask, None

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor, _: Any) -> Tensor:
        (mask,) = ctx.saved_tensors
        return input_t * mask


def check_probability(p: Any) -> None:
    """torch's check of a dropout probability: a number in [0, 1] (a ValueError), where
    torch's comparison fails with a TypeError for what is not a number; handprop refuses a
    bool too (a ValueError), which torch reads as 0 or 1."""
    if not isinstance(p, (int, float)):
        raise TypeError(f"dropout probability must be a number, got {type(p).__name__}")
    if isinstance(p, bool) or not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 − p)``, as
    ``torch.nn.functional.dropout`` (the same random draws: one seed, one mask). The identity
    when not ``training`` or ``p = 0``; ``inplace`` is accepted and ignored.
    """
    check_probability(p)
    if not training or p == 0:
        return input
    if p == 1:
        mask = torch.zeros_like(input)
    else:  # torch's draw: Bernoulli(1 − p), then the scale
        mask = torch.empty_like(input).bernoulli_(1 - p).div_(1 - p)
    return DropoutFunction.apply(input, mask)
