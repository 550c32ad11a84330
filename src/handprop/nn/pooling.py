"""``AdaptiveAvgPool2d``: average pooling to a given output size (drop-in)."""

from __future__ import annotations

from torch import Tensor

from handprop import functional as F
from handprop.nn.layers import HandpropLayer

__all__ = ["AdaptiveAvgPool2d"]


class AdaptiveAvgPool2d(HandpropLayer):
    """Average pooling whose windows give the output size ``output_size`` (an int, or an
    (H, W) pair whose ``None`` keeps that input size); ResNet's global pool is
    ``AdaptiveAvgPool2d((1, 1))``. Shapes: (N, C, H, W) or (C, H, W) → (N, C, Ho, Wo)."""

    def __init__(self, output_size: int | None | tuple[int | None, ...]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
