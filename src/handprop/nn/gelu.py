"""``GELU``, the transformer's activation (drop-in)."""

from __future__ import annotations

from torch import Tensor

from handprop import functional as F
from handprop.nn.layers import HandpropLayer

__all__ = ["GELU"]


class GELU(HandpropLayer):
    """``z Φ(z)`` elementwise (``approximate="tanh"``: the tanh approximation); any shape."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"
