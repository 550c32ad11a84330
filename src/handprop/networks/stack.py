r"""Many multi-layer perceptrons of one shape trained at once: :class:`MLPStack`, whose every
parameter has a leading model dimension ``J``, with the δ recursion written out for it.

Model ``j`` of a stack computes exactly what an :class:`~handprop.networks.MLP` with model
``j``'s weights computes; the ``J`` models share no weight, no gradient and no cost. What they
share is each operation: one batched matrix product (``torch.baddbmm`` / ``torch.bmm`` over
(J, B, F)) does the work of ``J`` small ones, so ``J`` small networks cost about one network's
per-operation overhead, which dominates small networks (see the README's vectorised sweeps).

:func:`to_stack` and :func:`unstack` convert to and from ``J`` ordinary MLPs;
:func:`per_model_cost` is each model's own cost and its derivative, the start of the δ
recursion; :func:`contiguous_stack` makes the parameters views of one (J, P) tensor, each row
one model's parameters in an MLP's order, for an optimizer that steps one tensor
(:mod:`handprop.optim`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from handprop import functional as F
from handprop.networks.mlp import MLP
from handprop.nn.layers import ACTIVATION_RULES, ACTIVATIONS
from handprop.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, QuadraticCost

__all__ = [
    "MLPStack",
    "StackedLinear",
    "to_stack",
    "unstack",
    "per_model_cost",
    "per_model_value",
    "contiguous_stack",
    "select_models",
    "flat_forward",
]


class StackedLinear(nn.Module):
    r"""``J`` linear layers side by side: ``z_j = a_j W_jᵀ + b_j`` for each model ``j``.

    Shapes: weight (J, out, in), bias (J, out); input (J, B, in) → output (J, B, out).
    One ``torch.baddbmm`` computes all ``J``.
    """

    def __init__(
        self, n_models: int, in_features: int, out_features: int, bias: bool = True
    ) -> None:
        super().__init__()
        self.n_models, self.in_features, self.out_features = n_models, in_features, out_features
        self.weight = nn.Parameter(torch.empty(n_models, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(n_models, out_features)) if bias else None

    def forward(self, input: Tensor) -> Tensor:
        """``z = a Wᵀ + b`` for every model: (J, B, in) → (J, B, out)."""
        if self.bias is None:
            return torch.bmm(input, self.weight.transpose(1, 2))
        return torch.baddbmm(self.bias.unsqueeze(1), input, self.weight.transpose(1, 2))

    def extra_repr(self) -> str:
        return (
            f"n_models={self.n_models}, in_features={self.in_features}, "
            f"out_features={self.out_features}, bias={self.bias is not None}"
        )


class MLPStack(nn.Module):
    r"""``n_models`` MLPs of one shape, ``in_features → hidden_features… → out_features``, as
    one network whose parameters have a leading model dimension ``J``.

    Model ``j`` is the :class:`~handprop.networks.MLP` of the same arguments with the ``j``-th
    slice of every parameter. ``MLPStack(J, …)`` draws its weights as ``J`` MLPs built one after
    another would (the same random draws, in that order): under the same seed it holds the
    weights of ``[MLP(…) for _ in range(J)]``.

    Shapes: input (J, B, in_features), or (B, in_features) shared by every model → output
    (J, B, out_features). Parameters: ``layers.{k}.weight`` (J, out, in) and ``.bias`` (J, out)
    for the k-th linear layer.

    Examples::

        >>> stack = MLPStack(8, 4, [5], 1)          # eight 4-5-1 networks
        >>> stack(torch.randn(8, 32, 4)).shape
        torch.Size([8, 32, 1])
        >>> C = stack.backprop(torch.randn(8, 32, 4), torch.randn(8, 32, 1), MSELoss())
        >>> C.shape, stack.layers[0].weight.grad.shape
        (torch.Size([8]), torch.Size([8, 5, 4]))
    """

    def __init__(
        self,
        n_models: int,
        in_features: int,
        hidden_features: Sequence[int],
        out_features: int,
        activation: str = "relu",
        init: str = "auto",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if int(n_models) != n_models or n_models <= 0:
            raise ValueError(f"n_models must be a positive integer, got {n_models}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
            )
        sizes = [in_features, *hidden_features, out_features]
        bad = [s for s in sizes if int(s) != s or s <= 0]
        if bad:
            raise ValueError(f"layer sizes must be positive integers, got {sizes}")
        self.n_models = int(n_models)
        self.in_features, self.out_features = in_features, out_features
        self.hidden_features = list(hidden_features)
        self.activation, self.init, self.bias = activation, init, bias
        self.layers = nn.ModuleList(
            StackedLinear(self.n_models, i, o, bias)
            for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        # Each model drawn as an MLP draws its weights (torch's default, then the scheme).
        with torch.no_grad():
            for j in range(self.n_models):
                self.load_model_(j, self._mlp(init))

    def _mlp(self, init: str = "auto") -> MLP:
        return MLP(
            self.in_features,
            self.hidden_features,
            self.out_features,
            self.activation,
            init,
            self.bias,
        )

    # ---- models in and out --------------------------------------------------------------------
    @torch.no_grad()
    def load_model_(self, j: int, mlp: MLP) -> None:
        """Copy ``mlp``'s weights into model ``j`` (same shape and activation)."""
        _check_fits(self, mlp)
        for layer, linear in zip(self.layers, mlp.linears, strict=True):
            layer.weight[j].copy_(linear.weight)
            if layer.bias is not None:
                layer.bias[j].copy_(linear.bias)

    def model_state_dict(self, j: int) -> dict[str, Tensor]:
        """Model ``j``'s parameters under the names of an :class:`MLP`'s state dict
        (``layers.0.weight``, ``layers.0.bias``, ``layers.2.weight``, …), detached copies."""
        out = {}
        for k, layer in enumerate(self.layers):
            out[f"layers.{2 * k}.weight"] = layer.weight[j].detach().clone()
            if layer.bias is not None:
                out[f"layers.{2 * k}.bias"] = layer.bias[j].detach().clone()
        return out

    def model(self, j: int) -> MLP:
        """Model ``j`` as a new :class:`MLP` (its own copy of the weights). No random number
        is drawn: the global generator is left as it was."""
        with torch.random.fork_rng(devices=[]):
            mlp = self._mlp("zeros")
        mlp.load_state_dict(self.model_state_dict(j))
        return mlp.to(self.layers[0].weight.device)

    def parameters_in_mlp_order(self) -> list[nn.Parameter]:
        """``W₁, b₁, W₂, b₂, …``: the order of an MLP's ``parameters()``."""
        return list(self.parameters())

    # ---- forward and the δ recursion --------------------------------------------------------
    def forward(self, input: Tensor) -> Tensor:
        """Every model's output ``z`` (J, B, out) for inputs (J, B, in) or shared (B, in)."""
        return self.forward_kept(input)[-1]

    def _input(self, input: Tensor) -> Tensor:
        if input.dim() == 2:
            return input.unsqueeze(0).expand(self.n_models, *input.shape)
        if input.dim() != 3 or input.shape[0] != self.n_models:
            raise ValueError(
                f"MLPStack of {self.n_models} models takes input (J={self.n_models}, B, "
                f"{self.in_features}) or (B, {self.in_features}); got {tuple(input.shape)}"
            )
        return input

    def forward_kept(self, input: Tensor) -> list[Tensor]:
        """The forward pass, keeping what the backward needs: ``[a₀ = x, z₁, a₁, …, z_L]``,
        each (J, B, ·) (``a_l = σ(z_l)``; the output layer is linear)."""
        sigma = ACTIVATION_RULES[self.activation][0]
        kept = [self._input(input)]
        for layer in self.layers[:-1]:
            kept.append(layer(kept[-1]))
            kept.append(sigma(kept[-1]))
        kept.append(self.layers[-1](kept[-1]))
        return kept

    def backprop(self, input: Tensor, target: Tensor, cost: nn.Module) -> Tensor:
        r"""One forward and one backward pass of every model by the δ recursion, without
        autograd. For model ``j`` (each tensor below has a leading model dimension)::

            z_l = a_{l−1} W_lᵀ + b_l                 a_l = σ(z_l)
            ∂C_j/∂W_l = δ_lᵀ a_{l−1}   (torch.bmm)   ∂C_j/∂b_l = Σ_b δ_l
            δ_{l−1} = (δ_l W_l) ⊙ σ'(z_{l−1})        (torch.bmm)

        from ``δ_L = ∂C_j/∂z_L`` (:func:`per_model_cost`). Model ``j``'s gradient is its own
        cost's, ``∂C_j/∂W_j``: the models share nothing.

        Args:
            input: (J, B, in) inputs, or (B, in) shared by every model.
            target: (J, B, out) targets, or (J, B) class indices for a cross-entropy.
            cost: a handprop loss module (``MSELoss``, ``QuadraticCost``,
                ``BCEWithLogitsLoss``, ``CrossEntropyLoss``), each model reduced on its own.

        Returns:
            ``C`` (J,): each model's cost, not part of any graph. Every parameter's ``.grad``
            is overwritten with the per-model gradients (not accumulated).
        """
        with torch.no_grad():
            kept = self.forward_kept(input)
            C, delta = per_model_cost(cost, kept[-1], target)
            self.backward_from(kept, delta)
        return C

    def backward_from(self, kept: list[Tensor], delta: Tensor) -> None:
        """The backward pass of :meth:`backprop` from ``δ_L`` (J, B, out) over
        :meth:`forward_kept`'s list: writes every parameter's ``.grad``."""
        sigma_prime = ACTIVATION_RULES[self.activation][1]
        for l in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[l]
            _write(layer.weight, torch.bmm(delta.transpose(1, 2), kept[2 * l]))  # δᵀ a
            if layer.bias is not None:
                _write(layer.bias, delta.sum(1))  # Σ_b δ
            if l:
                delta = torch.bmm(delta, layer.weight).mul_(
                    sigma_prime(kept[2 * l - 1], kept[2 * l])
                )

    def extra_repr(self) -> str:
        sizes = "-".join(map(str, [self.in_features, *self.hidden_features, self.out_features]))
        return f"n_models={self.n_models}, sizes={sizes}, activation={self.activation}"


def _write(p: Tensor, value: Tensor) -> None:
    """``p.grad = value``, written into the existing gradient (which may be a view into a flat
    one, :func:`contiguous_stack`)."""
    if p.grad is None:
        p.grad = value
    else:
        p.grad.copy_(value)


def _check_fits(stack: MLPStack, mlp: MLP) -> None:
    same = (
        mlp.in_features == stack.in_features
        and mlp.out_features == stack.out_features
        and list(mlp.hidden_features) == stack.hidden_features
        and mlp.activation == stack.activation
        and len(mlp.linears) == len(stack.layers)
        and all((lin.bias is not None) == stack.bias for lin in mlp.linears)
    )
    if not same:
        raise ValueError(
            f"an MLP {mlp.in_features}-{'-'.join(map(str, mlp.hidden_features))}-"
            f"{mlp.out_features} ({mlp.activation}) does not fit a stack of "
            f"{stack.extra_repr()}: every model of a stack has one shape and activation"
        )


def to_stack(mlps: Sequence[MLP]) -> MLPStack:
    """``J`` MLPs of one shape and activation as one :class:`MLPStack` (copies of their
    weights, in their order). No random number is drawn."""
    if not mlps:
        raise ValueError("to_stack needs at least one MLP")
    first = mlps[0]
    with torch.random.fork_rng(devices=[]):
        stack = MLPStack(
            len(mlps),
            first.in_features,
            first.hidden_features,
            first.out_features,
            first.activation,
            "zeros",
            first.linears[0].bias is not None,
        )
    stack.init = first.init
    stack = stack.to(first.linears[0].weight)
    for j, mlp in enumerate(mlps):
        stack.load_model_(j, mlp)
    return stack


def unstack(stack: MLPStack) -> list[MLP]:
    """The stack's models as ``J`` separate MLPs (copies of their weights)."""
    return [stack.model(j) for j in range(stack.n_models)]


def per_model_cost(cost: nn.Module, z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    r"""Each model's cost ``C_j`` (J,) and ``δ_L = ∂C_j/∂z_j`` (J, B, out), each model reduced
    on its own as ``cost`` reduces one batch (``mean``: over model ``j``'s B·out elements, or
    its B samples for a cross-entropy; ``sum``).

    * ``MSELoss`` / ``QuadraticCost``: ``C_j = s·mean (z − y)²`` (s = 1 or ½),
      ``δ = 2s (z − y) / n``;
    * ``BCEWithLogitsLoss``: ``δ = (σ(z) − y) / n``;
    * ``CrossEntropyLoss`` with class indices y (J, B): ``δ = (softmax(z) − onehot(y)) / B``.
    """
    C, delta = _per_model(cost, z, y, True)
    assert delta is not None
    return C, delta


def per_model_value(cost: nn.Module, z: Tensor, y: Tensor) -> Tensor:
    """Each model's cost ``C_j`` (J,), as :func:`per_model_cost`, without its derivative."""
    return _per_model(cost, z, y, False)[0]


def _per_model(
    cost: nn.Module, z: Tensor, y: Tensor, with_delta: bool
) -> tuple[Tensor, Tensor | None]:
    reduction = getattr(cost, "reduction", "mean")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"MLPStack.backprop needs reduction 'mean' or 'sum', got {reduction!r}")
    J = z.shape[0]

    def reduce(C: Tensor) -> Tensor:
        C = C.reshape(J, -1)
        return C.mean(1) if reduction == "mean" else C.sum(1)

    if isinstance(cost, MSELoss | QuadraticCost | BCEWithLogitsLoss):
        if z.shape != y.shape:
            raise ValueError(f"target shape {tuple(y.shape)} differs from output {tuple(z.shape)}")
        n = z[0].numel() if reduction == "mean" else 1
        if isinstance(cost, BCEWithLogitsLoss):
            if cost.weight is not None or cost.pos_weight is not None:
                raise ValueError("MLPStack.backprop starts from the plain BCEWithLogitsLoss")
            bce = F.BCEWithLogitsFunction
            C = reduce(bce.forward(z, y, "none"))
            return C, bce.derivative(z, y).div_(n) if with_delta else None
        scale = 1.0 if isinstance(cost, MSELoss) else 0.5
        sq = F.SquaredErrorFunction
        C = reduce(sq.forward(z, y, "none", scale))
        return C, sq.derivative(z, y, scale, n) if with_delta else None
    if isinstance(cost, CrossEntropyLoss):
        if (
            cost.weight is not None
            or cost.ignore_index >= 0
            or cost.label_smoothing != 0
            or y.is_floating_point()
        ):
            raise ValueError(
                "MLPStack.backprop starts from the plain CrossEntropyLoss with class indices"
            )
        J, B, K = z.shape
        C, delta = F.CrossEntropyFunction.value_and_derivative(
            z.reshape(J * B, K), y.reshape(J * B), "none"
        )
        C = reduce(C)
        if not with_delta:
            return C, None
        return C, delta.view(J, B, K).div_(B) if reduction == "mean" else delta.view(J, B, K)
    raise ValueError(
        f"MLPStack.backprop supports MSELoss, QuadraticCost, BCEWithLogitsLoss and "
        f"CrossEntropyLoss, not {type(cost).__name__}"
    )


def contiguous_stack(params: Sequence[nn.Parameter]) -> nn.Parameter:
    """One (J, P) Parameter holding every one of ``params`` (each (J, …)), values kept; each of
    them becomes a view into it, and so does its gradient (which the δ recursion writes in
    place). Row ``j`` is model ``j``'s parameters flattened in the given order: for an
    :class:`MLPStack`'s ``parameters()``, the flat vector of model ``j``'s MLP.

    An optimizer then steps one tensor instead of one per weight matrix and bias vector.
    """
    J = params[0].shape[0]
    if any(p.shape[0] != J for p in params):
        raise ValueError("contiguous_stack: every parameter needs the same leading dimension J")
    flat = torch.cat([p.detach().reshape(J, -1) for p in params], dim=1)
    return _bind(params, flat)


def _bind(params: Sequence[nn.Parameter], flat: Tensor) -> nn.Parameter:
    """Make each of ``params`` (and its gradient) a view into ``flat`` (J, P) (and a zero
    gradient of its shape); return ``flat`` as a Parameter."""
    J = flat.shape[0]
    grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p[0].numel()
        shape = (J, *p.shape[1:])
        p.data = flat[:, offset : offset + n].view(shape)
        p.grad = grad[:, offset : offset + n].view(shape)
        offset += n
    whole = nn.Parameter(flat)  # flat's storage, not a copy
    whole.grad = grad
    return whole


def select_models(
    stack: MLPStack, flat: nn.Parameter, index: Tensor | Sequence[int]
) -> nn.Parameter:
    """Keep models ``index`` (in that order) of a stack whose parameters are views of ``flat``
    (:func:`contiguous_stack`): the stack then holds ``len(index)`` models, views of the
    returned new flat Parameter (gradients zeroed)."""
    index = torch.as_tensor(index, dtype=torch.long, device=flat.device)
    kept = flat.detach().index_select(0, index)
    stack.n_models = len(index)
    for layer in stack.layers:
        layer.n_models = stack.n_models
    return _bind(list(stack.parameters()), kept)


def flat_forward(stack: MLPStack, flat: Tensor, input: Tensor) -> Tensor:
    """The outputs (J', B, out) of models whose parameters are the rows of ``flat`` (J', P),
    laid out as :func:`contiguous_stack` lays out ``stack``'s: e.g. a few models' best weights,
    without a stack of their own. ``input`` (J', B, in)."""
    sigma = ACTIVATION_RULES[stack.activation][0]
    J, a, offset = flat.shape[0], input, 0
    for k, layer in enumerate(stack.layers):
        o, i = layer.out_features, layer.in_features
        W = flat[:, offset : offset + o * i].view(J, o, i)
        offset += o * i
        if layer.bias is not None:
            a = torch.baddbmm(flat[:, offset : offset + o].unsqueeze(1), a, W.transpose(1, 2))
            offset += o
        else:
            a = torch.bmm(a, W.transpose(1, 2))
        if k < len(stack.layers) - 1:
            a = sigma(a)
    return a
