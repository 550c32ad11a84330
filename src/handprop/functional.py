"""The notes' equations as ``torch.autograd.Function`` s, each backward written out by hand.

Every op below is one ``Function`` with ``forward`` (the equation), ``setup_context`` (what
the backward needs, saved with ``save_for_backward``) and ``backward`` (the derivative from
the notes, chain rule included). The backward never asks autograd for the derivative of the
same op; it is built from ordinary differentiable tensor ops, so double backward
(``gradgradcheck``) works too. Public wrappers at the bottom have the signatures of
``torch.nn.functional``, so ``import handprop.functional as F`` is a drop-in.

Notation (as in the notes): ``x`` input, ``W`` weights, ``b`` bias, ``z`` pre-activation,
``a`` activation, ``ŷ`` prediction, ``y`` target, ``δ = ∂C/∂z`` the error signal, ``g`` the
gradient arriving from the layer above (``∂C/∂output``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

__all__ = [
    "linear",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "softmax",
    "mse_loss",
    "quadratic_cost",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "FUNCTIONS",
]

_REDUCTIONS = ("mean", "sum", "none")


class HandFunction(Function):
    """The base of every handprop Function: two pieces of plumbing, no mathematics.

    * ``apply`` with every argument positional (as the wrappers below call it). torch's
      ``Function.apply`` binds the arguments to ``forward``'s signature on every call when
      ``setup_context`` is defined (to fill in defaults): ``inspect.signature`` then costs
      ~10 µs, more than a small layer's arithmetic. With all arguments given there is nothing
      to fill in, so this goes straight to the C++ ``apply``; under functorch transforms
      (vmap, grad, …) it takes torch's full path.
    * Mixed precision: a Function applied under ``torch.autocast`` runs as its ``_autocast``
      twin, whose backward replays the forward's autocast state (what ``torch.amp.custom_bwd``
      does for old-style Functions), so a forward in bf16 and a backward after leaving the
      autocast region still meet in one dtype. Outside autocast nothing extra runs.
    """

    _autocast: type[HandFunction] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_is_autocast_twin") or "backward" not in cls.__dict__:
            return
        setup_fn, backward_fn = cls.setup_context, cls.backward

        def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
            dev = inputs[0].device.type  # every handprop Function's first input is a tensor
            ctx.autocast = (dev, torch.get_autocast_dtype(dev))
            setup_fn(ctx, inputs, output)

        def backward(ctx: Any, *grads: Any) -> Any:
            dev, dtype = ctx.autocast
            with torch.autocast(dev, dtype=dtype):
                return backward_fn(ctx, *grads)

        body = {
            "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward),
            "_is_autocast_twin": True,
        }
        cls._autocast = type(cls)(cls.__name__, (cls,), body)

    @classmethod
    def apply(cls, *args: Any) -> Any:
        fn = cls
        if cls._autocast is not None and torch.is_autocast_enabled(args[0].device.type):
            fn = cls._autocast
        if torch._C._are_functorch_transforms_active():
            return super(HandFunction, fn).apply(*args)  # noqa: UP008 — fn may be the twin
        return super(Function, fn).apply(*args)


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _count(loss_shape: torch.Size, reduction: str) -> int:
    """How many terms a ``mean`` divides by (1 otherwise)."""
    return max(loss_shape.numel(), 1) if reduction == "mean" else 1


# --------------------------------------------------------------------------------------------
# The neuron: z = x Wᵀ + b
# --------------------------------------------------------------------------------------------
class LinearFunction(HandFunction):
    r"""The weighted sum of a layer of neurons, ``z = x Wᵀ + b``.

    Shapes: ``x`` (*, in), ``W`` (out, in), ``b`` (out,) or None, ``z`` (*, out); ``*`` is any
    number of leading dimensions, flattened to N rows for the matrix products.

    Backward, with ``δ = ∂C/∂z`` of shape (N, out):

    * ``∂C/∂x = δ W``      (N, in)   — the error sent back to the layer below
    * ``∂C/∂W = δᵀ x``     (out, in) — one row of weight gradients per neuron
    * ``∂C/∂b = Σₙ δₙ``    (out,)    — the bias sees the error of every sample
    """

    @staticmethod
    def forward(input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # (N, in) input, the usual case, goes straight to the product: no reshape / view.
        x = input if input.dim() == 2 else input.reshape(-1, input.shape[-1])
        z = torch.addmm(bias, x, weight.t()) if bias is not None else x.mm(weight.t())
        return z if input.dim() == 2 else z.view(*input.shape[:-1], weight.shape[0])

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, weight, bias = inputs
        # ∂C/∂x needs W, ∂C/∂W needs x: keep only what the requested gradients use.
        ctx.save_for_backward(
            input if ctx.needs_input_grad[1] else None,
            weight if ctx.needs_input_grad[0] else None,
        )
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        input, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        flat = grad_output.dim() == 2
        delta = grad_output if flat else grad_output.reshape(-1, grad_output.shape[-1])  # δ
        grad_input = grad_weight = grad_bias = None
        if need_x:
            grad_input = delta.mm(weight)  # δ W
            if not flat:
                grad_input = grad_input.view(*grad_output.shape[:-1], weight.shape[1])
        if need_w:
            x = input if input.dim() == 2 else input.reshape(-1, input.shape[-1])
            grad_weight = delta.t().mm(x)  # δᵀ x
        if ctx.has_bias and need_b:
            grad_bias = delta.sum(0)  # Σₙ δₙ
        return grad_input, grad_weight, grad_bias


# --------------------------------------------------------------------------------------------
# Activation functions a = activation(z)
# --------------------------------------------------------------------------------------------
class SigmoidFunction(HandFunction):
    r"""``a = σ(z) = 1 / (1 + e^{-z})``; derivative ``σ'(z) = a (1 − a)``.

    Shapes: any; elementwise. Forward uses torch's sigmoid kernel, which evaluates the same
    formula without overflow for large ``|z|``. The backward needs only the output ``a``.
    """

    @staticmethod
    def forward(input: Tensor) -> Tensor:
        return torch.sigmoid(input)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (a,) = ctx.saved_tensors
        return grad_output * a * (1 - a)


class TanhFunction(HandFunction):
    r"""``a = tanh(z) = (e^z − e^{-z}) / (e^z + e^{-z})``; derivative ``1 − a²``.

    Shapes: any; elementwise. The backward needs only the output ``a``.
    """

    @staticmethod
    def forward(input: Tensor) -> Tensor:
        return torch.tanh(input)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (a,) = ctx.saved_tensors
        return grad_output * (1 - a * a)


class ReLUFunction(HandFunction):
    r"""``a = max(0, z)``; derivative ``1`` where ``z > 0``, else ``0`` (0 at the kink, as torch).

    Shapes: any; elementwise. ``a > 0`` exactly where ``z > 0``, so the output is saved
    instead of the input, and since ``a ≥ 0`` the derivative is ``sign(a)`` (1 where ``a > 0``,
    0 where ``a = 0``): the backward is ``∂C/∂z = sign(a) ⊙ g``, one new float tensor
    multiplied by ``g`` in place, no boolean mask. (``g.masked_fill(a <= 0, 0)`` and
    ``torch.where(a > 0, g, 0)`` build a mask and then select per element; on CPU they were
    ~7-25x slower than this and made a 64-512-512-10 MLP step ~20% slower.) For finite ``g``
    the values are torch's (up to the sign of a zero); an ``inf``/``nan`` in ``g`` at an
    inactive unit gives ``nan`` (``0 · inf``) there, where torch's kernel gives 0.
    """

    @staticmethod
    def forward(input: Tensor) -> Tensor:
        return input.clamp_min(0)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (a,) = ctx.saved_tensors
        return a.sign().mul_(grad_output)  # 1[z > 0] ⊙ g


class LeakyReLUFunction(HandFunction):
    r"""``a = z`` if ``z > 0`` else ``slope · z``; derivative ``1`` if ``z > 0`` else ``slope``.

    Shapes: any; elementwise. ``slope`` is the notes' 0.01 by default.
    """

    @staticmethod
    def forward(input: Tensor, negative_slope: float) -> Tensor:
        return torch.where(input > 0, input, input * negative_slope)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, negative_slope = inputs
        ctx.save_for_backward(input)
        ctx.negative_slope = negative_slope

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        (z,) = ctx.saved_tensors
        return torch.where(z > 0, grad_output, grad_output * ctx.negative_slope), None


class SoftmaxFunction(HandFunction):
    r"""``aᵢ = e^{zᵢ} / Σⱼ e^{zⱼ}`` along ``dim``; computed as ``e^{zᵢ − m} / Σⱼ e^{zⱼ − m}``
    with ``m = maxⱼ zⱼ`` so no exponential overflows.

    Jacobian ``∂aᵢ/∂zⱼ = aᵢ (1[i=j] − aⱼ)``, so the backward is
    ``∂C/∂zᵢ = aᵢ (gᵢ − Σⱼ gⱼ aⱼ)`` — no (C × C) matrix is ever built.

    Shapes: any; normalised along ``dim``.
    """

    @staticmethod
    def forward(input: Tensor, dim: int) -> Tensor:
        e = (input - input.amax(dim, keepdim=True)).exp_()
        return e.div_(e.sum(dim, keepdim=True))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.dim = inputs[1]
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        (a,) = ctx.saved_tensors
        return a * (grad_output - (grad_output * a).sum(ctx.dim, keepdim=True)), None


# --------------------------------------------------------------------------------------------
# Cost functions C(ŷ, y), reduction included so the loss value itself has a hand-written grad
# --------------------------------------------------------------------------------------------
class SquaredErrorFunction(HandFunction):
    r"""``C = scale · (ŷ − y)²`` per element, then reduced (mean over all elements, sum, none).

    ``scale = 1`` is ``mse_loss``; ``scale = ½`` is the notes' cost ``½ (y − ŷ)²``, whose
    derivative is simply ``ŷ − y``. In general ``∂C/∂ŷ = 2·scale·(ŷ − y) / n`` (``n`` the
    element count for ``mean``, else 1) and ``∂C/∂y = −∂C/∂ŷ``.

    Shapes: ``ŷ`` and ``y`` the same shape; output scalar, or that
    shape for ``reduction="none"``.
    """

    @staticmethod
    def forward(input: Tensor, target: Tensor, reduction: str, scale: float) -> Tensor:
        diff = input - target
        return _reduce(diff.square().mul_(scale), reduction)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, target, reduction, scale = inputs
        ctx.save_for_backward(input, target)
        ctx.reduction, ctx.scale = reduction, scale

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        input, target = ctx.saved_tensors
        diff = input - target
        n = _count(diff.shape, ctx.reduction)
        grad = grad_output * diff * (2 * ctx.scale / n)
        grad_input = grad if ctx.needs_input_grad[0] else None
        grad_target = -grad if ctx.needs_input_grad[1] else None
        return grad_input, grad_target, None, None


class BCEWithLogitsFunction(HandFunction):
    r"""Binary cross-entropy on logits ``z``, with ``ŷ = σ(z)``:

    ``C = −[y log σ(z) + (1 − y) log(1 − σ(z))]``, evaluated in the softplus form
    ``C = max(z, 0) − z·y + log(1 + e^{−|z|})``, finite for any ``z``.

    Derivatives: ``∂C/∂z = σ(z) − y`` (the sigmoid and the log cancel — no ``σ'`` factor),
    ``∂C/∂y = −z``; both divided by ``n`` for ``mean``.

    Shapes: ``z`` and ``y`` the same shape; ``y`` in [0, 1]. Output scalar or that shape.
    """

    @staticmethod
    def forward(input: Tensor, target: Tensor, reduction: str) -> Tensor:
        loss = input.clamp_min(0) - input * target + torch.log1p(torch.exp(-input.abs()))
        return _reduce(loss, reduction)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, target, reduction = inputs
        ctx.save_for_backward(input, target)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        z, y = ctx.saved_tensors
        g = grad_output / _count(z.shape, ctx.reduction)
        grad_input = grad_target = None
        if ctx.needs_input_grad[0]:
            # σ(z) through handprop's own sigmoid, so double backward uses its backward too.
            grad_input = g * (sigmoid(z) - y)
        if ctx.needs_input_grad[1]:
            grad_target = -g * z
        return grad_input, grad_target, None


class CrossEntropyFunction(HandFunction):
    r"""Softmax cross-entropy on logits ``z`` with class dimension ``1`` (or ``0`` unbatched).

    ``C = −Σᵢ pᵢ log softmax(z)ᵢ = logsumexp(z) − Σᵢ pᵢ zᵢ``, where ``p`` is the one-hot of a
    class index ``y`` (long targets) or a given probability vector (float targets, same shape
    as ``z``). ``logsumexp(z) = m + log Σⱼ e^{zⱼ − m}`` with ``m = max z``: finite for any ``z``.

    The fused derivative: ``∂C/∂z = softmax(z) − p`` (the softmax Jacobian and the log
    cancel), divided by the number of samples for ``mean``; for probability targets
    ``∂C/∂p = −log softmax(z)``.

    Shapes: ``z`` (N, C) or (N, C, d₁, …) or (C,); ``y`` (N) / (N, d₁, …) / () class indices,
    or the shape of ``z`` for probabilities. Output scalar, or (N, d₁, …) for ``"none"``.
    """

    @staticmethod
    def forward(input: Tensor, target: Tensor, reduction: str) -> Tensor:
        cdim = 0 if input.dim() == 1 else 1
        m = input.amax(cdim, keepdim=True)
        lse = (input - m).exp_().sum(cdim, keepdim=True).log_().add_(m)  # (N, 1, d…)
        if target.is_floating_point():
            loss = (target * (lse - input)).sum(cdim)
        else:
            z_y = input.gather(cdim, target.unsqueeze(cdim))
            loss = (lse - z_y).squeeze(cdim)
        return _reduce(loss, reduction)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, target, reduction = inputs
        ctx.save_for_backward(input, target)
        ctx.reduction = reduction

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        z, y = ctx.saved_tensors
        cdim = 0 if z.dim() == 1 else 1
        per_sample_shape = z.shape[:cdim] + z.shape[cdim + 1 :]
        g = grad_output / _count(per_sample_shape, ctx.reduction)
        if ctx.reduction == "none":
            g = g.unsqueeze(cdim)  # one weight per sample, broadcast over classes
        # softmax(z): through handprop's Function when a graph is being built (double backward
        # then runs its hand-written backward too), else just its forward, without the
        # overhead of Function.apply.
        a = softmax(z, cdim) if torch.is_grad_enabled() else SoftmaxFunction.forward(z, cdim)
        grad_input = grad_target = None
        if ctx.needs_input_grad[0]:
            if y.is_floating_point():
                grad_input = g * (a * y.sum(cdim, keepdim=True) - y)
            else:  # softmax − one-hot
                one_hot = torch.zeros_like(a).scatter_(cdim, y.unsqueeze(cdim), 1)
                grad_input = g * (a - one_hot)
        if ctx.needs_input_grad[1]:
            m = z.amax(cdim, keepdim=True)
            log_a = z - m - (z - m).exp().sum(cdim, keepdim=True).log()
            grad_target = -g * log_a
        return grad_input, grad_target, None


# --------------------------------------------------------------------------------------------
# torch.nn.functional-style entry points
# --------------------------------------------------------------------------------------------
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``z = x Wᵀ + b``. ``input`` (*, in), ``weight`` (out, in), ``bias`` (out,) → (*, out)."""
    return LinearFunction.apply(input, weight, bias)


def sigmoid(input: Tensor) -> Tensor:
    """``σ(z) = 1 / (1 + e^{-z})``, elementwise."""
    return SigmoidFunction.apply(input)


def tanh(input: Tensor) -> Tensor:
    """``tanh(z)``, elementwise."""
    return TanhFunction.apply(input)


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """``max(0, z)``, elementwise. ``inplace`` is accepted for signature compatibility only."""
    return ReLUFunction.apply(input)


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """``z if z > 0 else negative_slope·z``, elementwise (``inplace`` accepted, ignored)."""
    return LeakyReLUFunction.apply(input, float(negative_slope))


def softmax(input: Tensor, dim: int, dtype: torch.dtype | None = None) -> Tensor:
    """``e^{zᵢ} / Σⱼ e^{zⱼ}`` along ``dim``; ``dtype`` casts the input first, as torch does."""
    if dtype is not None:
        input = input.to(dtype)
    (input,) = _fp32_under_autocast(input)
    return SoftmaxFunction.apply(input, dim)


def _fp32_under_autocast(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Exponentials, logs and sums of squares in float32 under autocast, as torch's autocast
    runs softmax and the losses (bf16 log-sum-exp is off by ~0.3 %)."""
    dev = tensors[0].device.type
    if not torch.is_autocast_enabled(dev):
        return tensors
    return tuple(t.float() if t.is_floating_point() else t for t in tensors)


def _check_same_shape(input: Tensor, target: Tensor, name: str) -> None:
    if input.shape != target.shape:
        raise ValueError(
            f"{name}: target size {tuple(target.shape)} must be the same as input size "
            f"{tuple(input.shape)}"
        )


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error ``(ŷ − y)²``, reduced. ``input`` and ``target`` the same shape."""
    _check_reduction(reduction)
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


def binary_cross_entropy_with_logits(
    input: Tensor, target: Tensor, reduction: str = "mean"
) -> Tensor:
    """``−[y log σ(z) + (1−y) log(1−σ(z))]`` from logits ``z``; same shapes, ``y`` in [0, 1]."""
    _check_reduction(reduction)
    _check_same_shape(input, target, "binary_cross_entropy_with_logits")
    input, target = _fp32_under_autocast(input, target)
    return BCEWithLogitsFunction.apply(input, target, reduction)


def cross_entropy(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """``logsumexp(z) − z_y`` from logits ``input`` (N, C, …) and class indices (N, …) or
    class probabilities (same shape as ``input``)."""
    _check_reduction(reduction)
    if target.is_floating_point():
        _check_same_shape(input, target, "cross_entropy")
    else:
        cdim = 0 if input.dim() == 1 else 1
        expected = input.shape[:cdim] + input.shape[cdim + 1 :]
        if target.shape != expected:
            raise ValueError(
                f"cross_entropy: class-index target of shape {tuple(target.shape)} does not "
                f"fit logits of shape {tuple(input.shape)}; expected {tuple(expected)}"
            )
    input, target = _fp32_under_autocast(input, target)
    return CrossEntropyFunction.apply(input, target, reduction)


#: Every Function, by the public name that applies it (tests walk this).
FUNCTIONS: dict[str, type[Function]] = {
    "linear": LinearFunction,
    "sigmoid": SigmoidFunction,
    "tanh": TanhFunction,
    "relu": ReLUFunction,
    "leaky_relu": LeakyReLUFunction,
    "softmax": SoftmaxFunction,
    "mse_loss": SquaredErrorFunction,
    "quadratic_cost": SquaredErrorFunction,
    "binary_cross_entropy_with_logits": BCEWithLogitsFunction,
    "cross_entropy": CrossEntropyFunction,
}
