"""The notes' recurrent network: recurrent layers over the sequence, a linear layer on the last state."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from handprop.nn.layers import (
    Linear,
)
from handprop.nn.recurrent import LSTM, RNN, _Recurrent

__all__ = ["RecurrentNet", "CELLS"]

#: Recurrent cells, by the name a config gives them.
CELLS: dict[str, type[_Recurrent]] = {"rnn": RNN, "lstm": LSTM}


class RecurrentNet(nn.Module):
    r"""The notes' recurrent network ("sequence data, memory loops"): recurrent layers read
    the sequence step by step, then a linear layer maps the last hidden state to the output.

    ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t−1} + b_hh)`` (``cell="rnn"``: :class:`RNN`), or an
    :class:`LSTM`'s gates and cell state (``cell="lstm"``); then ``z = W h_T + b``.

    Args:
        in_shape: ``(T, F)``: ``T`` time steps of ``F`` values each.
        out_features: outputs (classes, or 1).
        hidden_size: the state's size ``H``.
        num_layers: stacked recurrent layers.
        cell: ``rnn`` | ``lstm``.
        nonlinearity: ``tanh`` | ``relu``, for ``cell="rnn"``.

    Shape:
        input (N, T·F) feature rows, step after step (as a data set's columns), or (N, T, F)
        → output (N, out_features).

    Examples::

        >>> net = RecurrentNet((20, 1), 1, hidden_size=16, cell="lstm")
        >>> net(torch.randn(5, 20)).shape
        torch.Size([5, 1])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        hidden_size: int = 32,
        num_layers: int = 1,
        cell: str = "rnn",
        nonlinearity: str = "tanh",
    ) -> None:
        super().__init__()
        if len(in_shape) != 2 or any(int(s) != s or s <= 0 for s in in_shape):
            raise ValueError(f"RecurrentNet: in_shape must be (T, F), got {list(in_shape)}")
        if cell not in CELLS:
            raise ValueError(f"RecurrentNet: cell must be one of {', '.join(CELLS)}, got {cell!r}")
        self.in_shape = tuple(int(s) for s in in_shape)
        self.out_features, self.hidden_size, self.num_layers = out_features, hidden_size, num_layers
        self.cell, self.nonlinearity = cell, nonlinearity
        kw = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.recurrent = CELLS[cell](
            self.in_shape[1], hidden_size, num_layers, batch_first=True, **kw
        )
        self.head = Linear(hidden_size, out_features)

    def forward(self, input: Tensor) -> Tensor:
        output = self.recurrent(input.reshape(-1, *self.in_shape))[0]
        return self.head(output[:, -1])  # the last step's state of the last layer: h_T

    def describe(self) -> str:
        """One line: ``RecurrentNet LSTM 8 steps × 8 → 64 → 10``."""
        t, f = self.in_shape
        layers = f" ×{self.num_layers}" if self.num_layers > 1 else ""
        kind = "LSTM" if self.cell == "lstm" else f"RNN ({self.nonlinearity})"
        return (
            f"RecurrentNet {kind}{layers} {t} steps × {f} → {self.hidden_size} → "
            f"{self.out_features}"
        )
