"""``torch.nn`` drop-ins built on :mod:`handprop.functional`, and the notes' MLP.

Each module has the constructor arguments, parameter names and shapes of its ``torch.nn``
twin, so ``state_dict`` s load both ways; only the autograd graph differs: every node is a
handprop Function with a hand-written backward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from handprop import functional as F
from handprop.functional.base import _check_reduction, _count

__all__ = [
    "Linear",
    "Sigmoid",
    "Tanh",
    "ReLU",
    "LeakyReLU",
    "Softmax",
    "MSELoss",
    "QuadraticCost",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "MLP",
    "ACTIVATIONS",
    "INITS",
    "ACTIVATION_RULES",
    "init_linear_",
]


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
        # torch.nn.Linear's kaiming_uniform_(a=√5), written out: gain = √(2/(1+a²)),
        # bound = √3 · gain / √fan_in = 1/√fan_in; same expression, same float, same draws.
        gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))
        bound = math.sqrt(3.0) * gain / math.sqrt(self.in_features)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                b = 1 / math.sqrt(self.in_features)
                self.bias.uniform_(-b, b)

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


class Softmax(nn.Module):
    """``e^{zᵢ} / Σⱼ e^{zⱼ}`` along ``dim`` (required here: torch's implicit choice is
    deprecated)."""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        if self.dim is None:
            raise ValueError("handprop.nn.Softmax needs dim, e.g. Softmax(dim=1)")
        return F.softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class _Loss(nn.Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class MSELoss(_Loss):
    """``(ŷ − y)²``, reduced by ``reduction``; input and target the same shape."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(input, target, self.reduction)

    def value_and_delta(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``C`` and ``∂C/∂ŷ = 2 (ŷ − y) / n`` without autograd: where :meth:`MLP.backprop`
        starts the δ recursion."""
        fn, n = F.SquaredErrorFunction, _count(input.shape, self.reduction)
        return fn.forward(input, target, self.reduction, 1.0), fn.derivative(input, target, 1.0, n)


class QuadraticCost(_Loss):
    """The notes' cost ``½ (y − ŷ)²``, reduced; derivative ``ŷ − y``."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.quadratic_cost(input, target, self.reduction)

    def value_and_delta(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``C`` and ``∂C/∂ŷ = (ŷ − y) / n`` without autograd: where :meth:`MLP.backprop`
        starts the δ recursion."""
        fn, n = F.SquaredErrorFunction, _count(input.shape, self.reduction)
        return fn.forward(input, target, self.reduction, 0.5), fn.derivative(input, target, 0.5, n)


class BCEWithLogitsLoss(_Loss):
    """Binary cross-entropy of ``σ(z)`` against ``y``, from logits ``z``; same shapes."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(input, target, self.reduction)

    def value_and_delta(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``C`` and ``∂C/∂z = (σ(z) − y) / n`` without autograd: where :meth:`MLP.backprop`
        starts the δ recursion."""
        fn, n = F.BCEWithLogitsFunction, _count(input.shape, self.reduction)
        return fn.forward(input, target, self.reduction), fn.derivative(input, target).div_(n)


class CrossEntropyLoss(_Loss):
    """Softmax cross-entropy from logits (N, C, …) and class indices (N, …) or probabilities."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(input, target, self.reduction)

    def value_and_delta(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """``C`` and ``∂C/∂z = (softmax(z) − p) / N`` without autograd: where
        :meth:`MLP.backprop` starts the δ recursion."""
        fn, cdim = F.CrossEntropyFunction, 0 if input.dim() == 1 else 1
        n = _count(input.shape[:cdim] + input.shape[cdim + 1 :], self.reduction)
        return fn.forward(input, target, self.reduction), fn.derivative(input, target).div_(n)


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


def init_linear_(layer: Linear, scheme: str, activation: str = "relu") -> None:
    """Re-initialise ``layer`` in place; biases start at 0 except for ``"torch"``.

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
    fan_out, fan_in = layer.weight.shape
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

    def forward(self, input: Tensor) -> Tensor:
        return self.layers(input)

    def backprop(self, input: Tensor, target: Tensor, cost: nn.Module) -> Tensor:
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
            self.backward_from(kept, delta)
        return C

    def forward_kept(self, input: Tensor) -> list[Tensor]:
        """The forward pass of :meth:`backprop`, without autograd, keeping what its backward
        needs: ``[a₀ = x, z₁, a₁, …, z_{L−1}, a_{L−1}, z_L]`` (``a_l = σ(z_l)``; the output
        ``z_L`` is last)."""
        sigma = ACTIVATION_RULES[self.activation][0]
        linears = self.linears
        kept = [input]
        for layer in linears[:-1]:
            kept.append(F.LinearFunction.forward(kept[-1], layer.weight, layer.bias))
            kept.append(sigma(kept[-1]))
        out = linears[-1]
        kept.append(F.LinearFunction.forward(kept[-1], out.weight, out.bias))
        return kept

    def backward_from(
        self, kept: list[Tensor], delta: Tensor, grads: bool = True, input_delta: bool = False
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

        Returns:
            ``∂C/∂x`` (N, in_features) when ``input_delta``, else None.
        """
        sigma_prime = ACTIVATION_RULES[self.activation][1]
        linears = self.linears
        for l in range(len(linears) - 1, -1, -1):
            layer = linears[l]
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
