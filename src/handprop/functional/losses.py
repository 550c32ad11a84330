"""Cost functions ``C(ŷ, y)``, reduction included, so the loss value itself has a
hand-written derivative.

Each cost's derivative appears three times, in one form: ``derivative`` (per element or per
sample, before the reduction), ``backward`` (times the gradient from above, reduced), and
``jvp`` (the tangent ``Ċ = Σ ∂C/∂ŷ ⊙ ẏ̂ + ∂C/∂y ⊙ ẏ``, reduced the same way). Under
``torch.func.vmap`` torch generates the batched rule from them (``generate_vmap_rule``): each
sample of a batch keeps its own reduction.

Class weights ``w`` and ``pos_weight`` are constants, as in torch (no gradient flows to them).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from handprop.functional.activations import SoftmaxFunction, sigmoid, softmax
from handprop.functional.base import (
    HandFunction,
    _check_reduction,
    _check_same_shape,
    _count,
    _fp32_under_autocast,
    _legacy_reduction,
    _reduce,
)


class SquaredErrorFunction(HandFunction):
    r"""``C = scale · (ŷ − y)²`` per element, then reduced (mean over all elements, sum, none).

    ``scale = 1`` is ``mse_loss``; ``scale = ½`` is the notes' cost ``½ (y − ŷ)²``, whose
    derivative is simply ``ŷ − y``. In general ``∂C/∂ŷ = 2·scale·(ŷ − y) / n`` (``n`` the
    element count for ``mean``, else 1) and ``∂C/∂y = −∂C/∂ŷ``; the tangent is
    ``Ċ = Σ ∂C/∂ŷ ⊙ (ẏ̂ − ẏ)`` (elementwise for ``none``).

    Shapes: ``ŷ`` and ``y`` the same shape; output scalar, or that
    shape for ``reduction="none"``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(input: Tensor, target: Tensor, reduction: str, scale: float) -> Tensor:
        loss = (input - target).square()
        return _reduce(loss if scale == 1 else loss.mul_(scale), reduction)

    @staticmethod
    def derivative(input: Tensor, target: Tensor, scale: float, n: int = 1) -> Tensor:
        """``∂C/∂ŷ = 2·scale·(ŷ − y) / n`` per element (``n``: the count a mean divides by)."""
        return (input - target).mul_(2 * scale / n)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, target, reduction, scale = inputs
        ctx.save_for_backward(input, target)
        ctx.save_for_forward(input, target)
        ctx.reduction, ctx.scale = reduction, scale

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        """``∂C/∂ŷ = g · 2·scale·(ŷ − y) / n``, ``∂C/∂y = −∂C/∂ŷ``."""
        input, target = ctx.saved_tensors
        n = _count(input.shape, ctx.reduction)
        grad = grad_output * SquaredErrorFunction.derivative(input, target, ctx.scale, n)
        grad_input = grad if ctx.needs_input_grad[0] else None
        grad_target = -grad if ctx.needs_input_grad[1] else None
        return grad_input, grad_target, None, None

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor, target_t: Tensor, _r: None, _s: None) -> Tensor:
        """``Ċ = Σ 2·scale·(ŷ − y)/n ⊙ (ẏ̂ − ẏ)``."""
        input, target = ctx.saved_tensors
        n = _count(input.shape, ctx.reduction)
        tangent = SquaredErrorFunction.derivative(input, target, ctx.scale, n) * (
            input_t - target_t
        )
        return tangent if ctx.reduction == "none" else tangent.sum()


def mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Mean squared error ``(ŷ − y)²``, reduced. ``input`` and ``target`` the same shape.
    ``size_average`` / ``reduce``: torch's deprecated spelling of ``reduction``."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_same_shape(input, target, "mse_loss")
    input, target = _fp32_under_autocast(input, target)
    return SquaredErrorFunction.apply(input, target, reduction, 1.0)


def quadratic_cost(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """The notes' cost ``C = ½ (y − ŷ)²`` (reduced), whose derivative is ``∂C/∂ŷ = ŷ − y``.

    Half of ``mse_loss``: the ½ is there so the 2 of the square's derivative cancels.
    """
    _check_reduction(reduction)
    _check_same_shape(input, target, "quadratic_cost")
    input, target = _fp32_under_autocast(input, target)
    return SquaredErrorFunction.apply(input, target, reduction, 0.5)


class BCEWithLogitsFunction(HandFunction):
    r"""Binary cross-entropy on logits ``z``, with ``ŷ = σ(z)``, weight ``w`` and the weight of
    positive examples ``p`` (``pos_weight``, one per class, broadcast along the last dim):

    ``C = −w [p·y log σ(z) + (1 − y) log(1 − σ(z))]``, evaluated as
    ``C = w [(1 − y) z + l·softplus(−z)]`` with ``l = 1 + (p − 1) y`` and
    ``softplus(−z) = log(1 + e^{−|z|}) + max(−z, 0)``: finite for any ``z``. Without ``p``
    this is ``max(z, 0) − z·y + log(1 + e^{−|z|})``.

    Derivatives (divided by ``n`` for ``mean``):

    * ``∂C/∂z = w (l·σ(z) − p·y)``: without ``p``, ``w (σ(z) − y)`` (the sigmoid and the log
      cancel — no ``σ'`` factor); ``p`` scales the pull of the positive examples;
    * ``∂C/∂y = w (−z + (p − 1) softplus(−z))``: without ``p``, ``−w z``.

    Tangent ``Ċ = Σ ∂C/∂z ⊙ ż + ∂C/∂y ⊙ ẏ``.

    Shapes: ``z`` and ``y`` the same shape; ``y`` in [0, 1]; ``w`` broadcastable to it, ``p``
    to its last dimension. Output scalar or that shape.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        input: Tensor,
        target: Tensor,
        reduction: str,
        weight: Tensor | None = None,
        pos_weight: Tensor | None = None,
    ) -> Tensor:
        if pos_weight is None:
            loss = input.clamp_min(0) - input * target + torch.log1p(torch.exp(-input.abs()))
        else:
            log_weight = 1 + (pos_weight - 1) * target  # l
            loss = (1 - target) * input + log_weight * _softplus_neg(input)
        return _reduce(loss if weight is None else loss * weight, reduction)

    @staticmethod
    def derivative(
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        pos_weight: Tensor | None = None,
    ) -> Tensor:
        """``∂C/∂z = w (l·σ(z) − p·y)`` per element, ``l = 1 + (p − 1) y``; ``σ(z) − y`` without
        weights. σ(z) goes through handprop's sigmoid while a graph is being built, so double
        backward runs its hand-written backward too."""
        a = sigmoid(input) if torch.is_grad_enabled() else torch.sigmoid(input)
        if pos_weight is None:
            grad = a - target
        else:
            grad = (1 + (pos_weight - 1) * target) * a - pos_weight * target
        return grad if weight is None else grad * weight

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, target, reduction, weight, pos_weight = inputs
        ctx.save_for_backward(input, target, weight, pos_weight)
        ctx.save_for_forward(input, target, weight, pos_weight)
        ctx.reduction = reduction

    @staticmethod
    def target_derivative(
        input: Tensor, weight: Tensor | None, pos_weight: Tensor | None
    ) -> Tensor:
        """``∂C/∂y = w (−z + (p − 1) softplus(−z))`` per element; ``−z`` without weights."""
        grad = -input if pos_weight is None else (pos_weight - 1) * _softplus_neg(input) - input
        return grad if weight is None else grad * weight

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        """``∂C/∂z = g·w (l·σ(z) − p·y) / n``, ``∂C/∂y = g·w (−z + (p − 1) softplus(−z)) / n``."""
        z, y, weight, pos_weight = ctx.saved_tensors
        g = grad_output / _count(z.shape, ctx.reduction)
        grad_input = grad_target = None
        if ctx.needs_input_grad[0]:
            grad_input = g * BCEWithLogitsFunction.derivative(z, y, weight, pos_weight)
        if ctx.needs_input_grad[1]:
            grad_target = g * BCEWithLogitsFunction.target_derivative(z, weight, pos_weight)
        return grad_input, grad_target, None, None, None

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor, target_t: Tensor, *_: None) -> Tensor:
        """``Ċ = Σ [∂C/∂z ⊙ ż + ∂C/∂y ⊙ ẏ] / n``."""
        z, y, weight, pos_weight = ctx.saved_tensors
        tangent = BCEWithLogitsFunction.derivative(z, y, weight, pos_weight) * input_t
        tangent = (
            tangent + BCEWithLogitsFunction.target_derivative(z, weight, pos_weight) * target_t
        )
        return _reduce(tangent, ctx.reduction)


def _softplus_neg(z: Tensor) -> Tensor:
    """``softplus(−z) = log(1 + e^{−z}) = log(1 + e^{−|z|}) + max(−z, 0)``, finite for any z."""
    return torch.log1p(torch.exp(-z.abs())) + (-z).clamp_min(0)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    """``−w [p·y log σ(z) + (1−y) log(1−σ(z))]`` from logits ``z``; same shapes, ``y`` in
    [0, 1]; ``weight`` broadcasts to ``z``, ``pos_weight`` (``p``) along its last dimension."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_same_shape(input, target, "binary_cross_entropy_with_logits", ValueError)
    input, target, weight, pos_weight = _fp32_under_autocast(input, target, weight, pos_weight)
    return BCEWithLogitsFunction.apply(input, target, reduction, weight, pos_weight)


class NLLLossFunction(HandFunction):
    r"""The negative log-likelihood of log-probabilities ``ℓ`` (class dimension ``1``, or ``0``
    unbatched) at class indices ``y``, weighted by the class weights ``w``:

    ``Cₙ = −w_{yₙ} ℓ_{n,yₙ}``, and ``0`` where ``yₙ = ignore_index``. ``mean`` divides the sum
    by ``Σₙ w_{yₙ}`` over the samples not ignored (their count without weights), as torch does.

    Derivative: ``∂Cₙ/∂ℓₙ = −w_{yₙ} · onehot(yₙ)`` (zero for an ignored sample), divided by
    that sum for ``mean``. Tangent ``Ċₙ = −w_{yₙ} ℓ̇_{n,yₙ}``, reduced the same way.

    Shapes: ``ℓ`` (N, C) or (N, C, d₁, …) or (C,); ``y`` (N) / (N, d₁, …) / (); ``w`` (C,).
    Output scalar, or (N, d₁, …) for ``"none"``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        input: Tensor,
        target: Tensor,
        reduction: str,
        weight: Tensor | None = None,
        ignore_index: int = -100,
    ) -> Tensor:
        # torch's kernel picks and sums the entries (one op, torch's exact mean divisor)
        return torch.nn.functional.nll_loss(
            input, target, weight, ignore_index=ignore_index, reduction=reduction
        )

    @staticmethod
    def derivative(
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        ignore_index: int | None = None,
    ) -> Tensor:
        """``∂Cₙ/∂ℓₙ = −w_{yₙ} onehot(yₙ)`` per sample, zero where ``yₙ = ignore_index``
        (None: every sample counts)."""
        return -_target_weights(input, target, weight, ignore_index)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, target, reduction, weight, ignore_index = inputs
        ctx.save_for_backward(input, target, weight)
        ctx.save_for_forward(input, target, weight)
        ctx.reduction, ctx.ignore_index = reduction, ignore_index

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        """``∂C/∂ℓₙ = −g · w_{yₙ} onehot(yₙ)``, over ``Σ w_{yₙ}`` for ``mean``."""
        logp, y, weight = ctx.saved_tensors
        grad_input = None
        if ctx.needs_input_grad[0]:
            g = _per_sample(grad_output, logp, y, weight, ctx.ignore_index, ctx.reduction)
            grad_input = g * NLLLossFunction.derivative(logp, y, weight, ctx.ignore_index)
        return grad_input, None, None, None, None

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor, *_: Any) -> Tensor:
        """``Ċₙ = −w_{yₙ} ℓ̇_{n,yₙ}``, reduced as ``C``."""
        logp, y, weight = ctx.saved_tensors
        d = NLLLossFunction.derivative(logp, y, weight, ctx.ignore_index)
        tangent = (d * input_t).sum(_cdim(logp))
        return _reduce_per_sample(tangent, y, weight, ctx.ignore_index, ctx.reduction)


def nll_loss(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """``−w_y ℓ_y`` from log-probabilities ``input`` (N, C, …) and class indices (N, …);
    ``weight`` (C,) per class, samples with ``target == ignore_index`` left out."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    target = _check_class_target(input, target, "nll_loss")
    _check_class_weight(input, weight)
    input, weight = _fp32_under_autocast(input, weight)
    return NLLLossFunction.apply(input, target, reduction, weight, int(ignore_index))


class CrossEntropyFunction(HandFunction):
    r"""Softmax cross-entropy on logits ``z`` with class dimension ``1`` (or ``0`` unbatched):
    ``log_softmax`` and ``nll_loss`` in one Function, with one fused derivative.

    ``Cₙ = −Σ_c P_c log softmax(zₙ)_c = Σ_c P_c logsumexp(zₙ) − Σ_c P_c z_c``, where ``P`` is
    the target distribution times the class weights, ``P_c = w_c q_c``, and ``q`` is

    * the one-hot of a class index ``y`` (long targets); zero for ``y = ignore_index``;
    * or a given probability vector (float targets, same shape as ``z``);
    * smoothed by ``ε = label_smoothing``: ``q ← (1 − ε) q + ε / C`` (a sample ignored stays 0).

    ``mean`` divides by ``Σₙ w_{yₙ}`` over the samples not ignored for class indices (their
    count without weights) and by the number of samples for probabilities, as torch does.
    ``log softmax`` is torch's fused kernel: finite for any ``z``.

    The fused derivative: ``∂Cₙ/∂zₙ = softmax(zₙ) Σ_c P_c − P`` (the softmax Jacobian and the
    log cancel): ``softmax(z) − onehot(y)`` in the plain case. For probability targets
    ``∂C/∂p = −(1 − ε) w ⊙ log softmax(z)``. Tangent
    ``Ċₙ = Σ_c ∂Cₙ/∂z_c ż_c + ∂Cₙ/∂p_c ṗ_c``, reduced as ``C``.

    Shapes: ``z`` (N, C) or (N, C, d₁, …) or (C,); ``y`` (N) / (N, d₁, …) / () class indices,
    or the shape of ``z`` for probabilities; ``w`` (C,). Output scalar, or (N, d₁, …) for
    ``"none"``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        input: Tensor,
        target: Tensor,
        reduction: str,
        weight: Tensor | None = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
    ) -> Tensor:
        cdim = _cdim(input)
        logp = torch.log_softmax(input, cdim)  # log softmax(z), stable: max subtracted
        if target.is_floating_point():
            P = _target_weights(input, target, weight, ignore_index, label_smoothing)
            return _reduce(-(P * logp).sum(cdim), reduction)
        nll = torch.nn.functional.nll_loss(
            logp, target, weight, ignore_index=ignore_index, reduction=reduction
        )
        if not label_smoothing:
            return nll
        # the ε/C part spreads over every class: −Σ_c w_c log softmax(z)_c per sample
        w = 1 if weight is None else _along_cdim(weight, input)
        spread = -(logp * w).sum(cdim).masked_fill(target == ignore_index, 0)
        spread = _reduce_per_sample(spread, target, weight, ignore_index, reduction)
        return (1 - label_smoothing) * nll + label_smoothing / input.shape[cdim] * spread

    @staticmethod
    def derivative(
        input: Tensor,
        target: Tensor,
        weight: Tensor | None = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
    ) -> Tensor:
        """``∂Cₙ/∂zₙ = softmax(zₙ) Σ_c P_c − P`` per sample (``P``: the weighted target
        distribution; ``softmax(z) − onehot(y)`` in the plain case, where each row of ``P``
        sums to 1). ``ignore_index``: the samples to leave out (None: every sample counts).

        softmax(z) goes through handprop's Function while a graph is being built (double
        backward then runs its hand-written backward too), else straight through its forward.
        """
        cdim = _cdim(input)
        a = (
            softmax(input, cdim)
            if torch.is_grad_enabled()
            else SoftmaxFunction.forward(input, cdim)
        )
        P = _target_weights(input, target, weight, ignore_index, label_smoothing)
        if weight is None and ignore_index is None and not target.is_floating_point():
            return a - P
        return a * P.sum(cdim, keepdim=True) - P

    @staticmethod
    def value_and_derivative(
        input: Tensor, target: Tensor, reduction: str
    ) -> tuple[Tensor, Tensor]:
        """:meth:`forward`'s ``C`` and :meth:`derivative`'s ``softmax(z) − onehot(y)`` for
        class-index targets without weight, ``ignore_index`` or smoothing, from one
        log-softmax: ``softmax(z) = exp(log softmax(z))``. Where the δ recursion starts
        (``CrossEntropyLoss.value_and_delta``): one pass instead of two, ~7 µs an update."""
        cdim = _cdim(input)
        logp = torch.log_softmax(input, cdim)
        C = torch.nn.functional.nll_loss(logp, target, reduction=reduction)
        delta = logp.exp_()  # softmax(z); logp is not needed after C
        return C, delta.scatter_(cdim, target.unsqueeze(cdim), -1.0, reduce="add")

    @staticmethod
    def target_derivative(
        input: Tensor, weight: Tensor | None = None, label_smoothing: float = 0.0
    ) -> Tensor:
        """``∂Cₙ/∂pₙ = −(1 − ε) w ⊙ log softmax(zₙ)`` per sample, for probability targets."""
        logp = torch.log_softmax(input, _cdim(input))  # torch's kernel: a constant here
        w = (
            (1 - label_smoothing)
            if weight is None
            else (1 - label_smoothing) * _along_cdim(weight, input)
        )
        return -w * logp

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, target, reduction, weight, ignore_index, label_smoothing = inputs
        ctx.save_for_backward(input, target, weight)
        ctx.save_for_forward(input, target, weight)
        ctx.reduction, ctx.ignore_index, ctx.label_smoothing = (
            reduction,
            ignore_index,
            label_smoothing,
        )

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        """``∂C/∂zₙ = gₙ (softmax(zₙ) Σ_c P_c − P)``, ``∂C/∂pₙ = −gₙ (1 − ε) w ⊙ log softmax(zₙ)``,
        with ``g`` divided by the mean's divisor."""
        z, y, weight = ctx.saved_tensors
        g = _per_sample(grad_output, z, y, weight, ctx.ignore_index, ctx.reduction)
        grad_input = grad_target = None
        if ctx.needs_input_grad[0]:
            d = CrossEntropyFunction.derivative(z, y, weight, ctx.ignore_index, ctx.label_smoothing)
            grad_input = g * d
        if ctx.needs_input_grad[1]:
            grad_target = g * CrossEntropyFunction.target_derivative(z, weight, ctx.label_smoothing)
        return grad_input, grad_target, None, None, None, None

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor, target_t: Tensor | None, *_: Any) -> Tensor:
        """``Ċₙ = Σ_c ∂Cₙ/∂z_c ż_c + ∂Cₙ/∂p_c ṗ_c``, reduced as ``C``."""
        z, y, weight = ctx.saved_tensors
        d = CrossEntropyFunction.derivative(z, y, weight, ctx.ignore_index, ctx.label_smoothing)
        tangent = d * input_t
        if y.is_floating_point() and target_t is not None:
            dp = CrossEntropyFunction.target_derivative(z, weight, ctx.label_smoothing)
            tangent = tangent + dp * target_t
        return _reduce_per_sample(tangent.sum(_cdim(z)), y, weight, ctx.ignore_index, ctx.reduction)


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """``logsumexp(z) − z_y`` from logits ``input`` (N, C, …) and class indices (N, …) or
    class probabilities (same shape as ``input``): ``weight`` (C,) per class, samples with
    ``target == ignore_index`` left out, ``label_smoothing`` ε mixing in the uniform
    distribution."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    # torch's checks, in torch's order, with torch's exception types
    if label_smoothing > 1.0:
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if label_smoothing < 0.0:  # torch ignores it (class indices) or applies it (probabilities)
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    if input.shape == target.shape:  # class probabilities: torch tells them apart by shape
        if not target.is_floating_point():
            raise RuntimeError(
                "Expected floating point type for target with class probabilities, got "
                f"{_dtype_name(target.dtype)}"
            )
        if ignore_index >= 0:
            raise RuntimeError("ignore_index is not supported for floating point target")
    else:
        target = _check_class_target(input, target, "cross_entropy")
    _check_class_weight(input, weight)
    input, target, weight = _fp32_under_autocast(input, target, weight)
    return CrossEntropyFunction.apply(
        input, target, reduction, weight, int(ignore_index), float(label_smoothing)
    )


# --------------------------------------------------------------------------------------------
# The pieces cross-entropy and NLL share
# --------------------------------------------------------------------------------------------
def _cdim(input: Tensor) -> int:
    """The class dimension: 1, or 0 for one unbatched sample (C,)."""
    return 0 if input.dim() == 1 else 1


def _along_cdim(weight: Tensor, input: Tensor) -> Tensor:
    """Class weights (C,) shaped to broadcast along ``input``'s class dimension."""
    return weight.view(-1, *([1] * (input.dim() - 2))) if input.dim() > 1 else weight


def _target_weights(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int | None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """``P = w ⊙ q``, input's shape: ``q`` the one-hot of each class index (zero rows for
    ``ignore_index``, unless None) or the given probabilities, smoothed to
    ``(1 − ε) q + ε / C``."""
    cdim = _cdim(input)
    if target.is_floating_point():
        q = target
        if label_smoothing:
            q = (1 - label_smoothing) * q + label_smoothing / input.shape[cdim]
        return q if weight is None else q * _along_cdim(weight, input)
    # scatter out of place: under vmap the targets can be a batch where the logits are not
    if ignore_index is None:
        kept: Tensor | float = 1.0
        q = torch.zeros_like(input).scatter(cdim, target.unsqueeze(cdim), 1.0)
    else:
        keep = target != ignore_index
        index = torch.where(keep, target, 0).unsqueeze(cdim)
        kept = keep.unsqueeze(cdim).to(input.dtype)  # 1, or 0 for an ignored sample
        q = torch.zeros_like(input).scatter(cdim, index, kept)
    if label_smoothing:
        q = (1 - label_smoothing) * q + kept * (label_smoothing / input.shape[cdim])
    return q if weight is None else q * _along_cdim(weight, input)


def _mean_divisor(target: Tensor, weight: Tensor | None, ignore_index: int, n: int) -> Any:
    """What ``mean`` divides by: ``Σₙ w_{yₙ}`` over the samples not ignored (class indices),
    or the ``n`` samples (probabilities)."""
    if target.is_floating_point():
        return max(n, 1)
    keep = target != ignore_index
    if weight is None:
        total = keep.sum()
    else:
        total = torch.where(keep, weight[torch.where(keep, target, 0)], 0).sum()
    # every sample ignored: the mean is 0/0 (nan, as torch), its gradient 0 (as torch's)
    return torch.where(total == 0, 1, total)


def _per_sample(
    grad_output: Tensor,
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
) -> Tensor:
    """The gradient from above per sample, broadcast along the class dimension: ``g`` over the
    mean's divisor, ``g`` for ``sum``, ``gₙ`` for ``none``."""
    cdim = _cdim(input)
    if reduction == "none":
        return grad_output.unsqueeze(cdim)
    if reduction == "mean":
        n = input.numel() // max(input.shape[cdim], 1) if input.dim() else 1
        return grad_output / _mean_divisor(target, weight, ignore_index, n)
    return grad_output


def _reduce_per_sample(
    loss: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, reduction: str
) -> Tensor:
    """Per-sample values reduced as the loss is: summed, over the mean's divisor, or kept."""
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / _mean_divisor(target, weight, ignore_index, loss.numel())


#: torch's names of the dtypes, as its error messages spell them
_DTYPE_NAMES = {
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.bool: "Bool",
    torch.float64: "Double",
    torch.float32: "Float",
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
}


def _dtype_name(dtype: torch.dtype) -> str:
    return _DTYPE_NAMES.get(dtype, str(dtype))


def _check_class_target(input: Tensor, target: Tensor, name: str) -> Tensor:
    """torch's checks of class indices against logits / log-probabilities, in torch's order
    with torch's exception types; returns the target as int64 (torch also takes uint8)."""
    if input.dim() < 1:
        raise ValueError(f"{name}: Expected 1 or more dimensions (got {input.dim()})")
    if input.dim() > 1 and target.dim() > 0 and input.shape[0] != target.shape[0]:
        raise ValueError(
            f"Expected input batch_size ({input.shape[0]}) to match target batch_size "
            f"({target.shape[0]})."
        )
    cdim = _cdim(input)
    expected = input.shape[:cdim] + input.shape[cdim + 1 :]
    if target.shape != expected:
        if input.dim() <= 2 and target.dim() > 1:
            raise RuntimeError(
                f"{name}: 0D or 1D target tensor expected, multi-target not supported (got "
                f"target of shape {tuple(target.shape)} for input of shape {tuple(input.shape)})"
            )
        if input.dim() == 1:  # torch reads a (1,) target of one sample; handprop wants ()
            raise ValueError(
                f"{name}: class-index target of shape {tuple(target.shape)} does not "
                f"fit logits of shape {tuple(input.shape)}; expected {tuple(expected)}"
            )
        raise RuntimeError(
            f"{name}: Expected target size {list(expected)}, got {list(target.shape)}"
        )
    if target.dtype not in (torch.int64, torch.uint8):
        raise RuntimeError(
            f"{name}: expected target dtype to be Long or Byte, but got {_dtype_name(target.dtype)}"
        )
    return target if target.dtype == torch.int64 else target.long()


def _check_class_weight(input: Tensor, weight: Tensor | None) -> None:
    """Class weights: one per class, as torch requires."""
    if weight is None or input.dim() < 1:
        return
    classes = input.shape[_cdim(input)]
    if weight.dim() != 1 or weight.numel() != classes:
        raise RuntimeError(
            f"weight tensor should be defined either for all {classes} classes or no classes "
            f"but got weight tensor of shape: {list(weight.shape)}"
        )
