"""The neuron's layer (``Linear``), the activations, ``Flatten`` and ``Dropout``: drop-ins for
their ``torch.nn`` twins, and the activations by name (``ACTIVATIONS``, ``ACTIVATION_RULES``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from handprop import functional as F
from handprop.functional.dropout import check_probability

__all__ = [
    "HandpropLayer",
    "Linear",
    "Sigmoid",
    "Tanh",
    "ReLU",
    "LeakyReLU",
    "Softmax",
    "LogSoftmax",
    "Flatten",
    "Dropout",
    "ACTIVATIONS",
    "ACTIVATION_RULES",
]


class HandpropLayer(nn.Module):
    """The base of every handprop layer: its ``repr`` ends in `` [handprop]``, e.g.
    ``Linear(in_features=4, out_features=5, bias=True) [handprop]``, so a printed model shows
    which layers run the hand-written backward. Nothing else: no state, no parameters, so the
    state dict and parameter names are the torch twin's."""

    def __repr__(self) -> str:
        return super().__repr__() + " [handprop]"


def _torch_default_init_(weight: Tensor, bias: Tensor | None, fan_in: int) -> None:
    """torch.nn.Linear's and Conv2d's default initialisation, kaiming_uniform_(a=√5), written
    out: gain = √(2/(1+a²)), bound = √3 · gain / √fan_in = 1/√fan_in; the bias U(±1/√fan_in).
    The same expression, the same floats and the same random draws as torch's."""
    gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
    bound = math.sqrt(3.0) * gain / math.sqrt(fan_in)
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        if bias is not None:
            b = 1 / math.sqrt(fan_in)
            bias.uniform_(-b, b)


class Linear(HandpropLayer):
    r"""A layer of ``out_features`` neurons, each ``z = w·x + b``: ``z = x Wᵀ + b``.

    Shapes: input (*, in_features) → output (*, out_features).
    Parameters: ``weight`` (out_features, in_features), ``bias`` (out_features,) — as torch.
    Initialised like ``torch.nn.Linear``: ``U(−1/√in, 1/√in)`` for both, with the same random
    draws, so one seed gives both modules the same weights.
    """

    __constants__ = ["in_features", "out_features"]

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, size in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(size, bool) or not isinstance(size, int):  # torch's TypeError
                raise TypeError(f"Linear: {name} should be of type int, got: {type(size).__name__}")
            if size < 0:  # torch's words for its weight of that size
                raise RuntimeError(
                    f"Linear: Trying to create tensor with negative dimension {size}: "
                    f"[{out_features}, {in_features}]"
                )
        if in_features == 0 or out_features == 0:  # torch builds an empty layer, with a warning
            raise ValueError(
                f"Linear needs positive sizes, got in_features={in_features}, "
                f"out_features={out_features}"
            )
        kw = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **kw))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **kw))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _torch_default_init_(self.weight, self.bias, self.in_features)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Sigmoid(HandpropLayer):
    """``σ(z) = 1 / (1 + e^{-z})``, elementwise; any shape."""

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(HandpropLayer):
    """``tanh(z)``, elementwise; any shape."""

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class ReLU(HandpropLayer):
    """``max(0, z)``, elementwise; any shape. ``inplace`` is accepted and ignored."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input)


class LeakyReLU(HandpropLayer):
    """``z if z > 0 else negative_slope·z``, elementwise; any shape."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class _AlongDim(HandpropLayer):
    """A normalisation along ``dim``, which is required here (torch's implicit choice of it is
    deprecated)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def _dim(self) -> int:
        if self.dim is None:
            name = type(self).__name__
            raise ValueError(f"handprop.nn.{name} needs dim, e.g. {name}(dim=1)")
        return self.dim

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_AlongDim):
    """``e^{zᵢ} / Σⱼ e^{zⱼ}`` along ``dim``; any shape."""

    def forward(self, input: Tensor) -> Tensor:
        return F.softmax(input, self._dim())


class LogSoftmax(_AlongDim):
    """``zᵢ − log Σⱼ e^{zⱼ}`` along ``dim``; any shape."""

    def forward(self, input: Tensor) -> Tensor:
        return F.log_softmax(input, self._dim())


class Flatten(HandpropLayer):
    """Dimensions ``start_dim … end_dim`` into one: (N, C, H, W) → (N, C·H·W) by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:
        return F.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(HandpropLayer):
    """While training, zero each element with probability ``p`` and scale the rest by
    ``1 / (1 − p)`` (torch's draws); the identity in ``eval()``. Any shape."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        check_probability(p)
        self.p, self.inplace = p, inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
}

#: The δ recursion's view of each activation, as scikit-learn's ``ACTIVATIONS`` and
#: ``DERIVATIVES``: ``σ(z)`` and ``σ'(z)`` (from ``z`` and ``a = σ(z)``), both the Functions' own
#: forward and derivative rule, with the modules' default arguments (as :class:`MLP` builds them).
ACTIVATION_RULES: dict[
    str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor, Tensor], Tensor]]
] = {
    "sigmoid": (F.SigmoidFunction.forward, lambda z, a: F.SigmoidFunction.derivative(a)),
    "tanh": (F.TanhFunction.forward, lambda z, a: F.TanhFunction.derivative(a)),
    "relu": (F.ReLUFunction.forward, lambda z, a: F.ReLUFunction.derivative(a)),
    "leaky_relu": (
        lambda z: F.LeakyReLUFunction.forward(z, 0.01),
        lambda z, a: F.LeakyReLUFunction.derivative(z, 0.01),
    ),
}


def _check_positive_int(value: object, name: str, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
