"""The costs: drop-ins for ``torch.nn``'s losses, and the notes' ``QuadraticCost`` ½(y − ŷ)²."""

from __future__ import annotations

from torch import Tensor, nn

from handprop import functional as F
from handprop.functional.base import (
    _check_same_shape,
    _count,
    _legacy_reduction,
)
from handprop.nn.layers import HandpropLayer

__all__ = ["MSELoss", "QuadraticCost", "BCEWithLogitsLoss", "CrossEntropyLoss", "NLLLoss"]


class _Loss(HandpropLayer):
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
        _check_same_shape(input, target, "binary_cross_entropy_with_logits", ValueError)
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
