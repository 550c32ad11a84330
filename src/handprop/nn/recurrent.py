"""The recurrent network's layers: ``RNN`` and ``LSTM`` (drop-ins; backpropagation through time)."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from handprop import functional as F
from handprop.nn.layers import HandpropLayer

__all__ = ["RNN", "LSTM"]


def _type(value: object) -> str:
    return type(value).__name__


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
        # torch's checks, in torch's order, with torch's exception types and messages
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
        for name, value in (("bias", bias), ("batch_first", batch_first)):
            if not isinstance(value, bool):
                raise TypeError(f"{owner}: {name} should be of type bool, got: {_type(value)}")
        for name, value in (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{owner}: {name} should be of type int, got: {_type(value)}")
            if value <= 0:
                raise ValueError(f"{owner}: {name} must be greater than zero, got {value}")
        if not isinstance(bidirectional, bool):  # torch takes any truthy value; handprop a bool
            raise ValueError(f"{owner}: bidirectional must be True or False, got {bidirectional!r}")
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

    def _prepare(
        self, input: Tensor, states: tuple[Tensor | None, ...]
    ) -> tuple[Tensor, tuple[Tensor, ...], bool]:
        """Checks the input and the initial states (``(h_0,)`` or ``(h_0, c_0)``, all given or
        all None) as torch's modules do, in their order and with their exception types;
        batches them and fills in missing states."""
        owner = type(self).__name__
        if isinstance(input, nn.utils.rnn.PackedSequence):
            raise ValueError(f"{owner}: PackedSequence input is not supported; pad the batch")
        if input.dim() not in (2, 3):
            raise ValueError(f"{owner}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        batched = input.dim() == 3
        given = [s for s in states if s is not None]
        if given and any(s.dim() != input.dim() for s in given):
            kind = "batched 3-D" if batched else "unbatched 2-D"
            dims = ", ".join(f"{s.dim()}-D" for s in given)
            names = "hx" if len(given) == 1 else "hx and cx"
            got = f"{dims} tensor" if len(given) == 1 else f"({dims}) tensors"
            raise RuntimeError(
                f"For {kind} input, {names} should also be {input.dim()}-D but got {got}"
            )
        if input.dtype != self.weight_ih_l0.dtype:
            w = self.weight_ih_l0.dtype
            raise ValueError(
                f"RNN input dtype ({input.dtype}) does not match weight dtype ({w}). "
                f"Convert input: input.to({w}), or convert model: model.to({input.dtype})"
            )
        if input.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {input.shape[-1]}"
            )
        if not batched:
            input = input.unsqueeze(0 if self.batch_first else 1)
        directions = 2 if self.bidirectional else 1
        batch = input.shape[0 if self.batch_first else 1]
        expected = (self.num_layers * directions, batch, self.hidden_size)
        out = []
        for k, s in enumerate(states):
            if s is None:
                s = torch.zeros(expected, dtype=input.dtype, device=input.device)
            elif not batched:
                s = s.unsqueeze(1)
            if tuple(s.shape) != expected:
                which = f"[{k}]" if len(states) > 1 else ""
                raise RuntimeError(f"Expected hidden{which} size {expected}, got {list(s.shape)}")
            out.append(s)
        return input, tuple(out), batched

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
                f"RNN: Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'."
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
        input, (hx,), batched = self._prepare(input, (hx,))
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
        if hx is not None and not isinstance(hx, (tuple, list)):
            raise ValueError("LSTM: hx must be the pair (h_0, c_0)")
        if hx is not None and len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")  # torch's words
        h0, c0 = (None, None) if hx is None else hx
        if (h0 is None) != (c0 is None):
            raise ValueError("LSTM: give both h_0 and c_0, or neither")
        batched_input, (h0, c0), batched = self._prepare(input, (h0, c0))
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
