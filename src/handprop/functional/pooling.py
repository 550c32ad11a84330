"""Adaptive average pooling: the window sizes follow from the output size wanted
(``adaptive_avg_pool2d``; ResNet's global average pool is ``output_size=1``)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor

from handprop.functional.base import HandFunction


def _averaging_matrix(size: int, out: int, like: Tensor) -> Tensor:
    """``A`` (out, size): row ``i`` averages the cells ``⌊i·size/out⌋ … ⌈(i+1)·size/out⌉ − 1``
    of one axis, torch's adaptive windows."""
    i = torch.arange(out, device=like.device)
    start = (i * size) // out
    end = ((i + 1) * size + out - 1) // out
    cells = torch.arange(size, device=like.device)
    inside = (cells >= start.unsqueeze(1)) & (cells < end.unsqueeze(1))
    return inside.to(like.dtype) / (end - start).unsqueeze(1).to(like.dtype)


class AdaptiveAvgPool2dFunction(HandFunction):
    r"""Adaptive average pooling to (Ho, Wo): window ``(i, j)`` covers rows
    ``⌊i·H/Ho⌋ … ⌈(i+1)·H/Ho⌉ − 1`` and the columns likewise, and ``z[i,j]`` is its mean. Each
    axis is a linear map, so ``z = A_H x A_Wᵀ`` with ``A_H`` (Ho, H) holding ``1/(window
    height)`` over each window's rows (``A_W`` likewise).

    Shapes: ``x`` (N, C, H, W) or (C, H, W) → ``z`` (N, C, Ho, Wo). The forward is torch's
    kernel.

    Backward: the transposed maps, ``∂C/∂x = A_Hᵀ δ A_W``: every input gets each window's
    ``δ`` divided by that window's size, summed over the windows it lies in. For the global
    pool (Ho = Wo = 1) that is ``δ / (H·W)`` at every cell.

    Forward mode: linear, ``ż = adaptive_avg_pool2d(ẋ)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(input: Tensor, output_size: tuple[int, int]) -> Tensor:
        return TF.adaptive_avg_pool2d(input, output_size)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, ctx.output_size = inputs
        ctx.input_shape = input.shape

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        shape = ctx.input_shape
        H, W = shape[-2:]
        Ho, Wo = ctx.output_size
        if (Ho, Wo) == (1, 1):  # the global pool: δ / (H·W) at every cell
            return (grad_output / (H * W)).expand(shape), None
        a_h = _averaging_matrix(H, Ho, grad_output)
        a_w = _averaging_matrix(W, Wo, grad_output)
        return a_h.t() @ grad_output @ a_w, None  # A_Hᵀ δ A_W

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor, _: Any) -> Tensor:
        return TF.adaptive_avg_pool2d(input_t, ctx.output_size)


def adaptive_avg_pool2d(
    input: Tensor, output_size: int | None | tuple[int | None, int | None] | list[int | None]
) -> Tensor:
    """Adaptive 2-D average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Args:
        input: (N, C, H, W) or (C, H, W).
        output_size: (Ho, Wo), or one int for both; ``None`` keeps that axis's input size.

    Shape: (N, C, Ho, Wo).
    """
    # torch checks a sequence's length against the input's dimensions first, and an int not at all
    if isinstance(output_size, (tuple, list)) and input.dim() <= len(output_size):
        raise ValueError(f"Input dimension should be at least {len(output_size) + 1}")
    if input.dim() not in (3, 4):
        raise RuntimeError(
            f"adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got {list(input.shape)}"
        )
    sizes = (
        (output_size, output_size) if not isinstance(output_size, (tuple, list)) else output_size
    )
    if len(sizes) != 2:
        raise RuntimeError("adaptive_avg_pool2d: output_size must be 2")
    out = tuple(int(s) if s is not None else input.shape[-2 + k] for k, s in enumerate(sizes))
    return AdaptiveAvgPool2dFunction.apply(input, out)
