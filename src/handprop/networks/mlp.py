"""The notes' multi-layer perceptron, with its δ recursion written out (``MLP.backprop``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from handprop import functional as F
from handprop.nn.init import init_linear_
from handprop.nn.layers import (
    ACTIVATION_RULES,
    ACTIVATIONS,
    Linear,
)

__all__ = ["MLP"]


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
                :mod:`handprop.trainer.monitors` reads. The tensors are not modified afterwards.

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
