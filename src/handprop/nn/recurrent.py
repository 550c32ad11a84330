"""The recurrent network's layers: ``RNN`` and ``LSTM`` (drop-ins; backpropagation through time)."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from handprop import functional as F
from handprop.nn.layers import HandpropLayer, _check_positive_int

__all__ = ["RNN", "LSTM"]


class _Recurrent(HandpropLayer):
    """What RNN and LSTM share: arguments, parameters, initialisation and input checks, as
    ``torch.nn.RNNBase``."""

    _gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        for name, value in (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        ):
            _check_positive_int(value, name, owner)
        for name, value in (
            ("bias", bias),
            ("batch_first", batch_first),
            ("bidirectional", bidirectional),
        ):
            if not isinstance(value, bool):
                raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not (0 <= dropout <= 1)
        ):
            raise ValueError(
                f"{owner}: dropout should be a number in range [0, 1] representing the "
                f"probability of an element being zeroed, got {dropout!r}"
            )
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                f"num_layers={num_layers}",
                stacklevel=3,
            )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        kw = {"device": device, "dtype": dtype}
        directions = 2 if bidirectional else 1
        gate_size = self._gates * hidden_size
        # torch's names and registration order (parameters() order = the initial draws' order)
        self._flat_weights_names: list[str] = []
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {
                    "weight_ih": (gate_size, layer_input),
                    "weight_hh": (gate_size, hidden_size),
                }
                if bias:
                    shapes |= {"bias_ih": (gate_size,), "bias_hh": (gate_size,)}
                for name, shape in shapes.items():
                    setattr(self, name + suffix, nn.Parameter(torch.empty(*shape, **kw)))
                    self._flat_weights_names.append(name + suffix)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Every weight and bias ``U(−1/√H, 1/√H)``, drawn in torch's order."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound)

    @property
    def _flat_weights(self) -> list[Tensor]:
        return [getattr(self, n) for n in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters per layer and direction, as ``torch.nn.RNNBase.all_weights``."""
        per = 4 if self.bias else 2
        w = self._flat_weights
        return [w[k : k + per] for k in range(0, len(w), per)]

    def flatten_parameters(self) -> None:
        """A no-op, for code written for torch's modules (cuDNN's one weight buffer)."""

    def _prepare(self, input: Tensor, hx: Tensor | None, name: str) -> tuple[Tensor, Tensor, bool]:
        """Checks the input and one initial state, batches both, fills in a missing state."""
        owner = type(self).__name__
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise ValueError(f"{owner}: PackedSequence input is not supported; pad the batch")
        if input.dim() not in (2, 3):
            raise ValueError(
                f"{owner}: expected input to be 2-D (unbatched) or 3-D, got {input.dim()}-D"
            )
        if input.shape[-1] != self.input_size:
            raise ValueError(
                f"{owner}: input.size(-1) must be equal to input_size. Expected "
                f"{self.input_size}, got {input.shape[-1]}"
            )
        batched = input.dim() == 3
        if not batched:
            input = input.unsqueeze(0 if self.batch_first else 1)
        directions = 2 if self.bidirectional else 1
        batch = input.shape[0 if self.batch_first else 1]
        expected = (self.num_layers * directions, batch, self.hidden_size)
        if hx is None:
            hx = torch.zeros(expected, dtype=input.dtype, device=input.device)
        else:
            if hx.dim() != (3 if batched else 2):
                raise ValueError(
                    f"{owner}: for {input.dim() if batched else 2}-D input, {name} must be "
                    f"{3 if batched else 2}-D, got {hx.dim()}-D"
                )
            if not batched:
                hx = hx.unsqueeze(1)
            if tuple(hx.shape) != expected:
                raise ValueError(
                    f"{owner}: expected {name} of size {list(expected)}, got {list(hx.shape)}"
                )
        if input.dtype != self.weight_ih_l0.dtype:
            raise ValueError(
                f"{owner}: input dtype ({input.dtype}) does not match weight dtype "
                f"({self.weight_ih_l0.dtype}); convert one with .to()"
            )
        return input, hx, batched

    def _unbatch(self, output: Tensor, states: tuple[Tensor, ...], batched: bool) -> tuple:
        if batched:
            return output, states
        return output.squeeze(0 if self.batch_first else 1), tuple(s.squeeze(1) for s in states)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s


class RNN(_Recurrent):
    r"""The Elman RNN, ``h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)`` (or ReLU), with
    ``num_layers`` stacked layers, each optionally reading the sequence both ways.

    Arguments, parameter names (``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}``, ``…_reverse``), shapes and initial draws as ``torch.nn.RNN``.

    Shapes: input (T, N, I) ((N, T, I) with ``batch_first``; (T, I) unbatched), ``h_0``
    (num_layers·D, N, H), D = 2 if bidirectional else 1 → ``output`` (T, N, D·H), every state
    of the last layer, and ``h_n`` (num_layers·D, N, H), every layer's last state.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"RNN: unknown nonlinearity {nonlinearity!r}; select from 'tanh' or 'relu'"
            )
        self.nonlinearity = nonlinearity
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device,
            dtype,
        )

    def forward(self, input: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        input, hx, batched = self._prepare(input, hx, "hx")
        run = F.rnn_tanh if self.nonlinearity == "tanh" else F.rnn_relu
        output, h_n = run(
            input,
            hx,
            self._flat_weights,
            self.bias,
            self.num_layers,
            self.dropout,
            self.training,
            self.bidirectional,
            self.batch_first,
        )
        output, (h_n,) = self._unbatch(output, (h_n,), batched)
        return output, h_n

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", nonlinearity={self.nonlinearity!r}" if self.nonlinearity != "tanh" else "")


class LSTM(_Recurrent):
    r"""The long short-term memory: four gates and a cell state ``c_t = f ⊙ c_{t−1} + i ⊙ g``,
    ``h_t = o ⊙ tanh(c_t)`` (see :class:`handprop.functional.recurrent.LSTMFunction`).

    Arguments, parameter names (``weight_ih_l{k}`` (4H, ·) with the gates in torch's order
    i, f, g, o, …), shapes and initial draws as ``torch.nn.LSTM``; ``proj_size`` must be 0.

    Shapes: input as :class:`RNN`; ``(h_0, c_0)`` each (num_layers·D, N, H) → ``output``
    (T, N, D·H) and ``(h_n, c_n)`` each (num_layers·D, N, H).
    """

    _gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if proj_size != 0:
            raise ValueError(f"LSTM: handprop supports proj_size=0 only, got {proj_size!r}")
        self.proj_size = 0
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device,
            dtype,
        )

    def forward(
        self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise ValueError("LSTM: hx must be the pair (h_0, c_0)")
        h0, c0 = (None, None) if hx is None else hx
        if (h0 is None) != (c0 is None):
            raise ValueError("LSTM: give both h_0 and c_0, or neither")
        batched_input, h0, batched = self._prepare(input, h0, "h_0")
        _, c0, _ = self._prepare(input, c0, "c_0")
        output, h_n, c_n = F.lstm(
            batched_input,
            (h0, c0),
            self._flat_weights,
            self.bias,
            self.num_layers,
            self.dropout,
            self.training,
            self.bidirectional,
            self.batch_first,
        )
        output, (h_n, c_n) = self._unbatch(output, (h_n, c_n), batched)
        return output, (h_n, c_n)
