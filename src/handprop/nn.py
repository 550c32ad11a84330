"""``torch.nn`` drop-ins built on :mod:`handprop.functional`, and the notes' MLP.

Each module has the constructor arguments, parameter names and shapes of its ``torch.nn``
twin, so ``state_dict`` s load both ways; only the autograd graph differs: every node is a
handprop Function with a hand-written backward.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from handprop import functional as F
from handprop.functional.base import (
    _check_same_shape,
    _count,
    _legacy_reduction,
)
from handprop.functional.dropout import check_probability

__all__ = [
    "Linear",
    "Sigmoid",
    "Tanh",
    "ReLU",
    "LeakyReLU",
    "Softmax",
    "LogSoftmax",
    "MSELoss",
    "QuadraticCost",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "NLLLoss",
    "MLP",
    "ACTIVATIONS",
    "INITS",
    "ACTIVATION_RULES",
    "init_linear_",
    "TWINS",
    "to_handprop",
    "to_torch",
]


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


class Linear(nn.Module):
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
        if in_features <= 0 or out_features <= 0:
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


class Sigmoid(nn.Module):
    """``σ(z) = 1 / (1 + e^{-z})``, elementwise; any shape."""

    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Tanh(nn.Module):
    """``tanh(z)``, elementwise; any shape."""

    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class ReLU(nn.Module):
    """``max(0, z)``, elementwise; any shape. ``inplace`` is accepted and ignored."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input)


class LeakyReLU(nn.Module):
    """``z if z > 0 else negative_slope·z``, elementwise; any shape."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class _AlongDim(nn.Module):
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


class _Loss(nn.Module):
    """torch's loss constructor: ``reduction``, or the deprecated ``size_average`` /
    ``reduce`` pair (mapped to it, with torch's warning)."""

    def __init__(
        self, size_average: bool | None = None, reduce: bool | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__()
        reduction = _legacy_reduction(size_average, reduce, reduction)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class _WeightedLoss(_Loss):
    """A loss with class weights, kept as the buffer ``weight`` (in the state dict when set,
    moved by ``.to()``), as torch keeps them."""

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


def _plain_only(cost: nn.Module, **settings: bool) -> None:
    """The δ recursion (:meth:`MLP.backprop`) starts from the plain cost: refuse the settings
    it does not apply (autograd through the Functions, ``loss.backward()``, applies them)."""
    used = [name for name, on in settings.items() if on]
    if used:
        raise ValueError(
            f"MLP.backprop starts from the plain {type(cost).__name__}; "
            f"{', '.join(used)} set: use loss.backward() instead"
        )


class MSELoss(_Loss):
    """``(ŷ − y)²``, reduced by ``reduction``; input and target the same shape."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, reduction=self.reduction)

    def value_and_delta(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``C`` and ``∂C/∂ŷ = 2 (ŷ − y) / n`` without autograd: where :meth:`MLP.backprop`
        starts the δ recursion."""
        _check_same_shape(input, target, "mse_loss")  # (N,) against (N, 1) would broadcast
        fn, n = F.SquaredErrorFunction, _count(input.shape, self.reduction)
        return fn.forward(input, target, self.reduction, 1.0), fn.derivative(input, target, 1.0, n)


class QuadraticCost(_Loss):
    """The notes' cost ``½ (y − ŷ)²``, reduced; derivative ``ŷ − y``."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.quadratic_cost(input, target, self.reduction)

    def value_and_delta(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``C`` and ``∂C/∂ŷ = (ŷ − y) / n`` without autograd: where :meth:`MLP.backprop`
        starts the δ recursion."""
        _check_same_shape(input, target, "quadratic_cost")
        fn, n = F.SquaredErrorFunction, _count(input.shape, self.reduction)
        return fn.forward(input, target, self.reduction, 0.5), fn.derivative(input, target, 0.5, n)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of ``σ(z)`` against ``y``, from logits ``z``; same shapes.
    ``weight`` (broadcast to ``z``) and ``pos_weight`` (per class, the last dimension) are
    buffers, as in torch."""

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        reduce: bool | None = None,
        reduction: str = "mean",
        pos_weight: Tensor | None = None,
    ) -> None:
        super().__init__(size_average, reduce, reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(
            input, target, self.weight, reduction=self.reduction, pos_weight=self.pos_weight
        )

    def value_and_delta(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``C`` and ``∂C/∂z = (σ(z) − y) / n`` without autograd: where :meth:`MLP.backprop`
        starts the δ recursion."""
        _plain_only(self, weight=self.weight is not None, pos_weight=self.pos_weight is not None)
        _check_same_shape(input, target, "binary_cross_entropy_with_logits")
        fn, n = F.BCEWithLogitsFunction, _count(input.shape, self.reduction)
        return fn.forward(input, target, self.reduction), fn.derivative(input, target).div_(n)


class CrossEntropyLoss(_WeightedLoss):
    """Softmax cross-entropy from logits (N, C, …) and class indices (N, …) or probabilities;
    class ``weight`` (C,), ``ignore_index``, ``label_smoothing`` as in torch."""

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(
            input,
            target,
            self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )

    def value_and_delta(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``C`` and ``∂C/∂z = (softmax(z) − q) / N`` without autograd: where
        :meth:`MLP.backprop` starts the δ recursion. Class indices must lie in ``[0, C)``: the
        recursion drops no ``ignore_index`` sample (``loss.backward()`` does)."""
        _plain_only(
            self,
            weight=self.weight is not None,
            ignore_index=self.ignore_index >= 0,
            label_smoothing=self.label_smoothing != 0,
        )
        fn, cdim = F.CrossEntropyFunction, 0 if input.dim() == 1 else 1
        n = _count(input.shape[:cdim] + input.shape[cdim + 1 :], self.reduction)
        if not target.is_floating_point():  # class indices: C and δ from one log-softmax
            C, delta = fn.value_and_derivative(input, target, self.reduction)
            return C, delta.div_(n)
        return fn.forward(input, target, self.reduction), fn.derivative(input, target).div_(n)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood ``−w_y ℓ_y`` of log-probabilities (N, C, …) at class indices
    (N, …); class ``weight`` (C,) and ``ignore_index`` as in torch."""

    def __init__(
        self,
        weight: Tensor | None = None,
        size_average: bool | None = None,
        ignore_index: int = -100,
        reduce: bool | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(
            input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction
        )


# --------------------------------------------------------------------------------------------
# Initialisation and the multi-layer perceptron
# --------------------------------------------------------------------------------------------
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

#: Initialisation schemes by name (aliases map to the same scheme).
INITS = ("auto", "xavier", "glorot", "he", "kaiming", "normal", "zeros", "torch")


def init_linear_(layer: Linear | Conv2d, scheme: str, activation: str = "relu") -> None:
    """Re-initialise ``layer`` (a Linear, or a Conv2d: ``fan_in`` counts a filter's weights)
    in place; biases start at 0 except for ``"torch"``.

    * ``xavier`` / ``glorot``: ``W ~ U(−r, r)``, ``r = √(6 / (fan_in + fan_out))`` — keeps the
      variance of sigmoid / tanh layers steady forwards and backwards.
    * ``he`` / ``kaiming``: ``W ~ N(0, 2 / fan_in)`` — the ReLU version (half the units are off).
    * ``normal``: ``W ~ N(0, 0.01²)`` — small random weights.
    * ``zeros``: ``W = 0`` — every hidden neuron computes the same thing and gets the same
      gradient, so they stay identical forever (the symmetry problem); kept to show it.
    * ``torch``: ``torch.nn.Linear``'s default; ``auto``: He for ReLU-like, else Xavier.
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r}; choose one of {', '.join(INITS)}")
    if scheme == "auto":
        scheme = "he" if activation in ("relu", "leaky_relu") else "xavier"
    if scheme == "torch":
        layer.reset_parameters()
        return
    w = layer.weight
    fan_in, fan_out = w[0].numel(), w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)
    with torch.no_grad():
        if scheme in ("xavier", "glorot"):
            r = math.sqrt(6.0 / (fan_in + fan_out))
            layer.weight.uniform_(-r, r)
        elif scheme in ("he", "kaiming"):
            layer.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
        elif scheme == "normal":
            layer.weight.normal_(0.0, 0.01)
        else:
            layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()


class MLP(nn.Module):
    r"""A fully connected network: ``in_features → hidden_features… → out_features``.

    Each hidden layer is ``a = activation(x Wᵀ + b)``; the output layer is linear (``z``), and
    the task's loss or prediction rule turns it into ``ŷ`` (identity, sigmoid or softmax).

    ``MLP(4, [5], 1)`` is the notes' 4-5-1 property-price network: 4·5 + 5·1 = 25 weights and
    5 + 1 = 6 biases. ``MLP(4, [], 1)`` has no hidden layer: linear regression, or logistic
    regression under a sigmoid.

    Shapes: input (*, in_features) → output (*, out_features).
    Parameters: ``layers.{2k}.weight`` / ``.bias`` for the k-th Linear, as in ``nn.Sequential``.

    State dicts: ``mlp.layers`` is an ``nn.Sequential``, so its state dict is a plain
    Sequential's (``0.weight``, …); ``mlp.state_dict()`` adds the prefix ``layers.``. Between an
    MLP and a torch ``nn.Sequential`` of the same layers: ``seq.load_state_dict(
    mlp.layers.state_dict())`` and ``mlp.layers.load_state_dict(seq.state_dict())``; a torch
    model that keeps the Sequential as ``self.layers`` loads ``mlp.state_dict()`` as it is.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Sequence[int],
        out_features: int,
        activation: str = "relu",
        init: str = "auto",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        sizes = [in_features, *hidden_features, out_features]
        bad = [s for s in sizes if int(s) != s or s <= 0]
        if bad:
            raise ValueError(f"layer sizes must be positive integers, got {sizes}")
        self.in_features, self.out_features = in_features, out_features
        self.hidden_features = list(hidden_features)
        self.activation, self.init = activation, init
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(Linear(n_in, n_out, bias=bias))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.layers = nn.Sequential(*layers)
        for layer in self.linears:
            init_linear_(layer, init, activation)

    @property
    def linears(self) -> list[Linear]:
        """The Linear layers, input side first."""
        return [m for m in self.layers if isinstance(m, Linear)]

    def _recursion_linears(self) -> list[Linear]:
        """:attr:`linears` for the δ recursion: one per layer, or one clear error when they are
        torch.nn's (after :func:`to_torch`), which :attr:`linears` does not list."""
        linears = self.linears
        if len(linears) != len(self.hidden_features) + 1:
            raise ValueError(
                "MLP.backprop needs handprop layers (its layers are torch.nn's: convert with "
                "to_handprop)"
            )
        return linears

    def forward(self, input: Tensor) -> Tensor:
        return self.layers(input)

    def backprop(
        self,
        input: Tensor,
        target: Tensor,
        cost: nn.Module,
        record: Callable[[str, int, Tensor], None] | None = None,
    ) -> Tensor:
        r"""One forward and one backward pass by the notes' δ recursion, without autograd.

        Forward, keeping what the backward needs (``a₀ = x``; the output layer is linear)::

            z_l = a_{l−1} W_lᵀ + b_l        a_l = σ(z_l)

        Backward, from the cost's derivative ``δ_L = ∂C/∂z_L`` down to the first layer::

            ∂C/∂W_l = δ_lᵀ a_{l−1}          ∂C/∂b_l = Σₙ δ_l
            δ_{l−1} = (δ_l W_l) ⊙ σ'(z_{l−1})

        The same arithmetic as ``cost(self(input), target).backward()`` through the
        Functions (their forward and their derivative rules are what it calls; the tests
        check the gradients agree), minus autograd's bookkeeping: on small networks that
        bookkeeping costs more than the arithmetic.

        Args:
            input: (N, in_features) inputs ``x``.
            target: what ``cost`` compares the output with.
            cost: a handprop loss module; ``cost.value_and_delta(z, y)`` gives ``C`` and
                ``∂C/∂z``, as each cost pairs its ``fn`` with its ``delta`` in Nielsen's
                ``network.py``.
            record: when given, called with ``("activation", l, a_l)`` for each hidden
                layer and ``("delta", l, δ_l)`` for each layer as the recursion computes it
                (``l`` counts the Linear layers from 0 at the input side): what
                :mod:`handprop.monitors` reads. The tensors are not modified afterwards.

        Returns:
            ``C`` (a 0-dim tensor, not part of any graph). Every parameter's ``.grad`` is
            overwritten with ``∂C/∂parameter`` (not accumulated).

        Examples::

            >>> net, cost = MLP(4, [5], 1), MSELoss()
            >>> C = net.backprop(torch.randn(32, 4), torch.randn(32, 1), cost)
            >>> net.layers[0].weight.grad.shape
            torch.Size([5, 4])
        """
        with torch.no_grad():
            kept = self.forward_kept(input)
            C, delta = cost.value_and_delta(kept[-1], target)  # δ_L = ∂C/∂z_L
            if record is not None:
                for l, a in enumerate(kept[2:-1:2]):  # a_1 … a_{L−1}
                    record("activation", l, a)
            self.backward_from(kept, delta, record=record)
        return C

    def forward_kept(self, input: Tensor) -> list[Tensor]:
        """The forward pass of :meth:`backprop`, without autograd, keeping what its backward
        needs: ``[a₀ = x, z₁, a₁, …, z_{L−1}, a_{L−1}, z_L]`` (``a_l = σ(z_l)``; the output
        ``z_L`` is last)."""
        sigma = ACTIVATION_RULES[self.activation][0]
        linears = self._recursion_linears()
        kept = [input]
        for layer in linears[:-1]:
            kept.append(F.LinearFunction.forward(kept[-1], layer.weight, layer.bias))
            kept.append(sigma(kept[-1]))
        out = linears[-1]
        kept.append(F.LinearFunction.forward(kept[-1], out.weight, out.bias))
        return kept

    def backward_from(
        self,
        kept: list[Tensor],
        delta: Tensor,
        grads: bool = True,
        input_delta: bool = False,
        record: Callable[[str, int, Tensor], None] | None = None,
    ) -> Tensor | None:
        r"""The backward pass of :meth:`backprop` from a given ``δ_L = ∂C/∂z_L`` (N, out), over
        what :meth:`forward_kept` kept: ``∂C/∂W_l = δ_lᵀ a_{l−1}``, ``∂C/∂b_l = Σₙ δ_l``,
        ``δ_{l−1} = (δ_l W_l) ⊙ σ'(z_{l−1})``.

        Args:
            kept: :meth:`forward_kept`'s list for the same input.
            delta: ``∂C/∂z_L``, the cost's derivative by the output.
            grads: write each parameter's ``.grad`` (False: leave them, e.g. a network that
                only passes δ on to the one before it).
            input_delta: also return ``∂C/∂x = δ_1 W_1``, the δ of whatever made the input.
            record: called with ``("delta", l, δ_l)`` for each layer, as :meth:`backprop`'s.

        Returns:
            ``∂C/∂x`` (N, in_features) when ``input_delta``, else None.
        """
        sigma_prime = ACTIVATION_RULES[self.activation][1]
        linears = self._recursion_linears()
        for l in range(len(linears) - 1, -1, -1):
            layer = linears[l]
            if record is not None:
                record("delta", l, delta)
            if grads:  # written into the existing .grad tensors: no new tensor per step
                torch.mm(delta.t(), kept[2 * l], out=_grad(layer.weight))  # δᵀ a
                if layer.bias is not None:
                    torch.sum(delta, 0, out=_grad(layer.bias))  # Σₙ δ
            if l:
                delta = delta.mm(layer.weight).mul_(sigma_prime(kept[2 * l - 1], kept[2 * l]))
            elif input_delta:
                return delta.mm(layer.weight)
        return None


def _grad(p: Tensor) -> Tensor:
    """``p.grad``, allocated the first time (and after ``zero_grad(set_to_none=True)``)."""
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad


# ============================================================================================
# Convolutional and recurrent networks: drop-ins for torch.nn's Conv2d, pooling, Flatten,
# Dropout, RNN and LSTM (same arguments, parameter names, shapes and initial draws)
# ============================================================================================
__all__ += [  # noqa: PLE0605 — the section's names, kept beside it
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "Flatten",
    "Dropout",
    "RNN",
    "LSTM",
]


def _check_positive_int(value: object, name: str, owner: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")


class Conv2d(nn.Module):
    r"""A layer of ``out_channels`` filters sliding over the image: the neuron with shared
    weights, ``z[n,o] = b[o] + Σ_c W[o,c] ⋆ x[n,c]`` (see :func:`handprop.functional.conv2d`).

    Shapes: input (N, C_in, H, W) or (C_in, H, W) → output (N, C_out, Ho, Wo).
    Parameters: ``weight`` (C_out, C_in/groups, kh, kw), ``bias`` (C_out,) — as torch.
    Initialised like ``torch.nn.Conv2d``: ``U(−1/√fan_in, 1/√fan_in)`` for both, fan_in =
    ``C_in/groups · kh · kw``, with the same random draws. ``padding_mode`` other than
    ``"zeros"`` is not supported.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: str | int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        from handprop.functional.convolution import _pair  # here: the section stays apart

        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("groups", groups),
        ):
            _check_positive_int(value, name, "Conv2d")
        if in_channels % groups != 0:
            raise ValueError("Conv2d: in_channels must be divisible by groups")
        if out_channels % groups != 0:
            raise ValueError("Conv2d: out_channels must be divisible by groups")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.dilation = _pair(dilation, "dilation")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"Conv2d: invalid padding string {padding!r}, should be 'same' or 'valid'"
                )
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("Conv2d: padding='same' is not supported for strided convolutions")
            self.padding: str | tuple[int, int] = padding
        else:
            self.padding = _pair(padding, "padding")
        if padding_mode != "zeros":
            raise ValueError(
                f"Conv2d: handprop supports padding_mode='zeros' only, got {padding_mode!r}"
            )
        if min(self.kernel_size) <= 0 or min(self.stride) <= 0 or min(self.dilation) <= 0:
            raise ValueError("Conv2d: kernel_size, stride and dilation must be positive")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode = padding_mode
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, *self.kernel_size, **kw)
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels, **kw))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
        _torch_default_init_(self.weight, self.bias, fan_in)

    def forward(self, input: Tensor) -> Tensor:
        return F.conv2d(
            input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class MaxPool2d(nn.Module):
    """Max pooling over (dilated) windows; the gradient goes to each window's maximum.

    Shapes: (N, C, H, W) or (C, H, W) → (N, C, Ho, Wo); arguments as ``torch.nn.MaxPool2d``.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return F.max_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            self.return_indices,
        )

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class AvgPool2d(nn.Module):
    """Average pooling; each input gets an equal share of its windows' δ.

    Shapes: (N, C, H, W) or (C, H, W) → (N, C, Ho, Wo); arguments as ``torch.nn.AvgPool2d``.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Flatten(nn.Module):
    """Dimensions ``start_dim … end_dim`` into one: (N, C, H, W) → (N, C·H·W) by default."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:
        return F.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(nn.Module):
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


class _Recurrent(nn.Module):
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


# --------------------------------------------------------------------------------------------
# Whole-model conversion: torch.nn layers ⇄ their handprop twins
# --------------------------------------------------------------------------------------------
#: Each torch.nn layer with a handprop twin, and the twin: same constructor arguments, same
#: attribute, parameter and buffer names.
TWINS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: Linear,
    nn.Sigmoid: Sigmoid,
    nn.Tanh: Tanh,
    nn.ReLU: ReLU,
    nn.LeakyReLU: LeakyReLU,
    nn.Softmax: Softmax,
    nn.LogSoftmax: LogSoftmax,
    nn.MSELoss: MSELoss,
    nn.BCEWithLogitsLoss: BCEWithLogitsLoss,
    nn.CrossEntropyLoss: CrossEntropyLoss,
    nn.NLLLoss: NLLLoss,
    nn.Conv2d: Conv2d,
    nn.MaxPool2d: MaxPool2d,
    nn.AvgPool2d: AvgPool2d,
    nn.Flatten: Flatten,
    nn.Dropout: Dropout,
    nn.RNN: RNN,
    nn.LSTM: LSTM,
}


def to_handprop(module: nn.Module) -> nn.Module:
    """Swap every torch.nn layer of ``module`` that has a handprop twin (:data:`TWINS`), at any
    depth, for the twin, so its backward pass runs the hand-written derivatives.

    Each twin is built by its public constructor from the layer's settings as they are now
    (``in_features``, ``padding``, ``dropout``, a loss's ``reduction``, …), then takes over the
    layer's own ``Parameter`` and buffer objects and its train/eval mode, so the state dict, its
    keys, the outputs and an optimizer built before (it steps the same Parameters) are
    unchanged. Hooks on the Parameters and on the containers are kept; forward and backward
    hooks registered on a swapped layer itself are not (torch has no public API to read them):
    register those after converting. Layers of exactly these classes are swapped; subclasses and
    layers with parametrizations (``weight_norm``, …) are left alone (parametrize after
    converting); a layer with parameters or buffers its class does not make (``prune``) or with
    a setting the twin does not support (a ``Conv2d`` with ``padding_mode="reflect"``) is an
    error. ``inplace=True`` of a ReLU is kept but ignored. No random numbers are drawn.

    Returns ``module``, changed in place, or the twin when ``module`` itself is such a layer.

    Examples::

        >>> model = to_handprop(model)                    # one line: hand-written backward
        >>> reference = to_torch(copy.deepcopy(model))    # and back, to compare gradients
    """
    return _swap(module, TWINS, "to_handprop", "")


def to_torch(module: nn.Module) -> nn.Module:
    """The reverse of :func:`to_handprop`: every handprop layer of ``module`` back to its
    torch.nn twin, state kept the same way. ``QuadraticCost`` (half of ``MSELoss``) has no twin
    and stays; an :class:`MLP` stays an ``MLP`` whose ``layers`` Sequential holds torch.nn layers
    (its parameter names, ``layers.{2k}.weight``, do not change; :meth:`MLP.backprop` needs
    handprop layers)."""
    return _swap(module, {twin: layer for layer, twin in TWINS.items()}, "to_torch", "")


def _swap(
    module: nn.Module, table: dict[type[nn.Module], type[nn.Module]], caller: str, path: str
) -> nn.Module:
    twin_class = table.get(type(module))
    if twin_class is not None:
        return _twin(module, twin_class, caller, path)
    for name, child in module.named_children():
        swapped = _swap(child, table, caller, f"{path}.{name}" if path else name)
        if swapped is not child:
            setattr(module, name, swapped)
    return module


def _twin(module: nn.Module, twin_class: type[nn.Module], caller: str, path: str) -> nn.Module:
    """``module`` rebuilt as ``twin_class`` by its constructor, holding ``module``'s own
    Parameters and buffers."""
    handprop_class = twin_class if type(module) in TWINS else type(module)
    where = (
        f"{caller}: cannot swap the {type(module).__name__} at {repr(path) if path else 'the top'}"
    )
    # On the meta device the constructor allocates nothing and draws no random numbers: its
    # parameters are placeholders, replaced below. Its warnings (an RNN's dropout with one
    # layer) were given when the layer itself was built.
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        try:
            twin = twin_class(**_settings(module, handprop_class))
        except ValueError as error:  # a setting the twin does not support
            raise ValueError(f"{where}: {error}") from None
    params = dict(module.named_parameters(recurse=False, remove_duplicate=False))
    buffers = dict(module.named_buffers(recurse=False, remove_duplicate=False))
    children = dict(module.named_children())
    made = {n for n, _ in twin.named_parameters(recurse=False, remove_duplicate=False)}
    made |= {n for n, _ in twin.named_buffers(recurse=False, remove_duplicate=False)}
    have = params.keys() | buffers.keys() | children.keys()
    if have != made:
        raise ValueError(
            f"{where}: it holds {', '.join(sorted(have)) or 'nothing'} where its class makes "
            f"{', '.join(sorted(made)) or 'nothing'}; convert it before pruning it or adding to it"
        )
    for name, tensor in (params | buffers).items():
        setattr(twin, name, tensor)  # torch's RNN also updates its list of flat weights
    if isinstance(twin, nn.RNNBase):
        twin.flatten_parameters()  # cuDNN's one weight buffer, on a GPU; else a no-op
    return twin.train(module.training)


def _settings(module: nn.Module, handprop_class: type[nn.Module]) -> dict[str, object]:
    """The constructor arguments that rebuild ``module`` as it is now, named by the handprop
    class's signature: each twin takes torch's arguments and keeps each as the attribute of the
    same name (``bias`` of a Linear or Conv2d: the Parameter, or None)."""
    settings: dict[str, object] = {}
    for name, arg in inspect.signature(handprop_class).parameters.items():
        if name in ("device", "dtype", "size_average", "reduce") or arg.kind in (
            arg.VAR_POSITIONAL,
            arg.VAR_KEYWORD,
        ):
            continue  # placement: the parameters'; the legacy pair: folded into reduction
        value = getattr(module, name)
        settings[name] = value if name != "bias" or isinstance(value, bool) else value is not None
    return settings


# ============================================================================================
# The notes' network types beyond the MLP: a convolutional and a recurrent network, built from
# the drop-ins above, whose input is a data set's feature rows (an image's pixels or a
# sequence's values, flattened) and whose output is the task's ``z``, as the MLP's
# ============================================================================================
__all__ += ["ConvNet", "RecurrentNet", "POOLS", "CELLS"]  # noqa: PLE0605

#: Pooling after each convolution block, by the name a config gives it.
POOLS: dict[str, type[nn.Module] | None] = {"max": MaxPool2d, "avg": AvgPool2d, "none": None}
#: Recurrent cells, by the name a config gives them.
CELLS: dict[str, type[_Recurrent]] = {"rnn": RNN, "lstm": LSTM}


def block_pools(pool: str | Sequence[str], blocks: int) -> list[str]:
    """The pooling after each of ``blocks`` blocks: ``pool`` for every block, or one per
    block (a list)."""
    pools = [pool] * blocks if isinstance(pool, str) else list(pool)
    if len(pools) != blocks or any(p not in POOLS for p in pools):
        raise ValueError(
            f"pool must be one of {', '.join(POOLS)}, or a list of them with one per block "
            f"({blocks}), got {pool!r}"
        )
    return pools


def conv_output_size(size: Sequence[int], pools: Sequence[str], pool_size: int) -> tuple[int, int]:
    """Height and width of the feature maps after the blocks whose poolings are ``pools``:
    each convolution keeps the size (``padding="same"``), each pooling divides it by
    ``pool_size`` (rounded down)."""
    h, w = size
    for p in pools:
        if POOLS[p] is not None:
            h, w = h // pool_size, w // pool_size
    return h, w


class ConvNet(nn.Module):
    r"""The notes' convolutional network ("image processing, uses filters"): blocks of a
    convolution, an activation and a pooling, then an MLP head on the flattened feature maps.

    Block ``k``: ``Conv2d(c_{k−1}, c_k, kernel_sizes[k], padding="same")`` → activation →
    ``MaxPool2d(pool_size)`` (or ``AvgPool2d``, or none: ``pool``). Each filter is the neuron
    ``z = Σ w x + b`` with its weights shared over every position of the image; pooling keeps
    the strongest (or the mean) response of each ``pool_size × pool_size`` window. The head is
    an MLP ``c_K·h·w → hidden_features… → out_features`` (the task's ``z``), with
    :class:`Dropout` after each hidden layer's activation when ``dropout > 0``.

    Args:
        in_shape: ``(C, H, W)`` of one image.
        channels: filters per block, e.g. ``[8, 16]``: two blocks.
        out_features: outputs (classes, or 1).
        kernel_sizes: the filters' size per block, or one size for every block.
        pool: ``max`` | ``avg`` | ``none`` after every block, or a list with one per block.
        pool_size: the pooling window and stride.
        hidden_features: the head's hidden layers (``[]``: a linear head).
        activation: after each convolution and each hidden layer of the head.
        init: the filters' and the head's initial weights (see :func:`init_linear_`).
        dropout: the probability of zeroing each hidden unit of the head while training.

    Shape:
        input (N, C·H·W) feature rows, the pixels in (C, H, W) order (as a data set's columns),
        or (N, C, H, W) images → output (N, out_features).

    Examples::

        >>> net = ConvNet((1, 8, 8), [8, 16], 10, hidden_features=[32])
        >>> net(torch.randn(5, 64)).shape
        torch.Size([5, 10])
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int],
        out_features: int,
        kernel_sizes: int | Sequence[int] = 3,
        pool: str | Sequence[str] = "max",
        pool_size: int = 2,
        hidden_features: Sequence[int] = (),
        activation: str = "relu",
        init: str = "auto",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3 or any(int(s) != s or s <= 0 for s in in_shape):
            raise ValueError(f"ConvNet: in_shape must be (C, H, W), got {list(in_shape)}")
        if not channels or any(int(c) != c or c <= 0 for c in channels):
            raise ValueError(f"ConvNet: channels must be positive integers, got {list(channels)}")
        sizes = [kernel_sizes] * len(channels) if isinstance(kernel_sizes, int) else kernel_sizes
        if len(sizes) != len(channels) or any(int(k) != k or k <= 0 for k in sizes):
            raise ValueError(
                f"ConvNet: kernel_sizes must be one positive size or one per block "
                f"({len(channels)}), got {kernel_sizes}"
            )
        try:
            pools = block_pools(pool, len(channels))
        except ValueError as e:
            raise ValueError(f"ConvNet: {e}") from None
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"ConvNet: unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        h, w = conv_output_size(in_shape[1:], pools, pool_size)
        if h < 1 or w < 1:
            raise ValueError(
                f"ConvNet: the poolings {pools} of {pool_size} shrink a "
                f"{in_shape[1]}×{in_shape[2]} image to nothing; use fewer blocks"
            )
        self.in_shape = tuple(int(s) for s in in_shape)
        self.channels, self.kernel_sizes = list(channels), [int(k) for k in sizes]
        self.pools, self.pool_size, self.activation = pools, pool_size, activation
        self.hidden_features, self.out_features = list(hidden_features), out_features
        self.dropout = dropout
        layers: list[nn.Module] = []
        c_in = self.in_shape[0]
        for c, k, p in zip(self.channels, self.kernel_sizes, pools, strict=True):
            conv = Conv2d(c_in, c, k, padding="same")
            init_linear_(conv, init, activation)
            layers += [conv, ACTIVATIONS[activation]()]
            if POOLS[p] is not None:
                layers.append(POOLS[p](pool_size))
            c_in = c
        layers.append(Flatten())
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = []
        sizes = [c_in * h * w, *self.hidden_features, out_features]
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            linear = Linear(n_in, n_out)
            init_linear_(linear, init, activation)
            head.append(linear)
            if i < len(sizes) - 2:
                head.append(ACTIVATIONS[activation]())
                if dropout:
                    head.append(Dropout(dropout))
        self.head = nn.Sequential(*head)

    def forward(self, input: Tensor) -> Tensor:
        return self.head(self.features(input.reshape(-1, *self.in_shape)))

    def feature_maps(self, input: Tensor) -> list[Tensor]:
        """The output of each convolution block (after its activation and its pooling) for
        the images ``input``: (N, channels[k], h_k, w_k) per block, what each filter responds
        to, and where."""
        maps, x = [], input.reshape(-1, *self.in_shape)
        layers = list(self.features[:-1])  # without the Flatten
        for k, layer in enumerate(layers):
            x = layer(x)
            if k + 1 == len(layers) or isinstance(layers[k + 1], Conv2d):  # a block ends
                maps.append(x)
        return maps

    def describe(self) -> str:
        """One line: ``ConvNet 1×8×8 → conv3×3 16, max-pool 2, conv3×3 32 → 512-64-10``."""
        c, h, w = self.in_shape
        parts = []
        for ch, k, p in zip(self.channels, self.kernel_sizes, self.pools, strict=True):
            parts.append(f"conv{k}×{k} {ch}")
            if p != "none":
                parts.append(f"{p}-pool {self.pool_size}")
        head = "-".join(map(str, [self.head[0].in_features, *self.hidden_features])) + (
            f" (dropout {self.dropout:g})" if self.dropout else ""
        )
        return f"ConvNet {c}×{h}×{w} → {', '.join(parts)} → {head}-{self.out_features}"


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
