"""Normalisation layers: ``batch_norm`` (statistics over the batch, per channel) and
``layer_norm`` (statistics over each sample's last dimensions).

Both standardise, ``x̂ = (x − μ) / σ`` with ``σ = √(var + ε)`` (the biased variance, as torch),
then scale and shift, ``y = γ x̂ + β``. Their backward is the one derivation (docs/equations.md,
section 14), over different axes: with ``g = γ ⊙ ∂C/∂y`` and means over the ``M`` values that
share ``μ`` and ``σ``,

    ``∂C/∂x = (1/σ) (g − mean(g) − x̂ ⊙ mean(g ⊙ x̂))``,
    ``∂C/∂γ = Σ ∂C/∂y ⊙ x̂``,   ``∂C/∂β = Σ ∂C/∂y``   (sums over the same values).

Each Function returns ``(y, μ, var)``: the statistics are outputs, not intermediates, so
that they reach ``setup_context`` (the forward has no ``ctx``) and so that a second derivative
(``gradgradcheck``, Hessians) sees how they depend on ``x``: the backward uses the saved
``μ`` and ``var``, and under ``create_graph`` torch sends their gradients back into the same
backward (``g_mean``, ``g_var`` below). The public wrappers return ``y`` alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from handprop.functional.base import HandFunction


def _channel_view(input: Tensor) -> tuple[tuple[int, ...], list[int]]:
    """The axes batch norm averages over (all but the channels, dim 1) and the shape that
    broadcasts a per-channel vector against ``input``: (0, 2, 3) and (1, C, 1, 1) for NCHW."""
    dims = (0, *range(2, input.dim()))
    shape = [1] * input.dim()
    shape[1] = input.shape[1]
    return dims, shape


def _stats_derivative(
    xmu: Tensor, g_mean: Tensor | None, g_var: Tensor | None, m: int, view: Any
) -> Tensor | None:
    """The part of ``∂C/∂x`` that comes through the statistics when they are themselves used
    (a second derivative): ``∂μ/∂x = 1/M``, ``∂var/∂x = 2 (x − μ) / M``."""
    grad = None
    if g_var is not None:
        grad = xmu * view(g_var * (2.0 / m))
    if g_mean is not None:
        grad = view(g_mean / m) if grad is None else grad + view(g_mean / m)
    return grad


# --------------------------------------------------------------------------------------------
# Batch normalisation
# --------------------------------------------------------------------------------------------
class BatchNormFunction(HandFunction):
    r"""Batch normalisation, per channel ``c`` (dim 1) over the ``M = N·H·W…`` values of the
    batch that share it:

    ``μ = mean(x)``, ``var = mean((x − μ)²)`` (biased), ``x̂ = (x − μ) / √(var + ε)``,
    ``y = γ x̂ + β``.

    In evaluation (``training=False``) ``μ`` and ``var`` are the running statistics, constants.
    The forward takes ``μ``, then ``var = mean((x − μ)²)`` (two passes: stable), and evaluates
    ``y = a (x − μ) + β`` with ``a = γ/σ`` per channel; in evaluation ``y = a x + b`` with
    ``b = β − μ a`` (one pass over ``x``, as torch's CPU kernel).

    Shapes: ``x`` (N, C, *), ``γ``, ``β``, ``μ``, ``var`` (C,). Returns ``(y, μ, var)``.

    Backward, with ``δ = ∂C/∂y``, ``σ = √(var + ε)`` and sums over the ``M`` values of a channel:

    * training: ``∂C/∂x = (γ/σ) (δ − mean(δ) − x̂ ⊙ mean(δ ⊙ x̂))`` — the mean and the variance
      depend on every ``x`` of the channel, which subtracts the part of ``δ`` along ``1`` and
      along ``x̂``. Written as ``∂C/∂x = a δ + k (x − μ) + c`` with per-channel
      ``a = γ/σ``, ``k = −a Σ δ(x − μ) / (σ² M)``, ``c = −a Σ δ / M``: two reductions, then
      two fused multiply-adds.
    * evaluation: ``∂C/∂x = (γ/σ) δ`` (constant statistics).
    * ``∂C/∂γ = Σ δ ⊙ x̂ = (1/σ) Σ δ (x − μ)``, ``∂C/∂β = Σ δ``.

    Forward mode, tangents ``ẋ, γ̇, β̇``: ``μ̇ = mean(ẋ)``, ``v̇ar = 2 mean((x − μ) ẋ)``,
    ``ẏ = (γ/σ) (ẋ − μ̇ − (x − μ) v̇ar / (2σ²)) + γ̇ x̂ + β̇`` (training; in evaluation
    ``ẏ = (γ/σ) ẋ + γ̇ x̂ + β̇``).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        training: bool,
        eps: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        if input.numel() == 0:  # an empty batch, empty output: no statistics
            c = input.shape[1] if input.dim() > 1 else 0  # (torch's one 1-D case is empty)
            return torch.empty_like(input), input.new_zeros(c), input.new_zeros(c)
        dims, shape = _channel_view(input)
        dt = input.dtype
        if training:
            # two passes, μ then mean((x − μ)²): stable, and on CPU several times faster than
            # torch.var_mean over the non-contiguous axes (0, 2, 3)
            mean = input.mean(dims)
            xmu = input - mean.view(shape)
            var = xmu.square().mean(dims)
            scale = (var + eps).rsqrt()  # 1/σ
            if weight is not None:
                scale = scale * weight  # a = γ/σ
            scale = scale.to(dt).view(shape)
            if bias is None:
                return xmu * scale, mean, var
            return torch.addcmul(bias.to(dt).view(shape), xmu, scale), mean, var  # a (x − μ) + β
        mean, var = running_mean, running_var
        scale = (var + eps).rsqrt()  # 1/σ
        if weight is not None:
            scale = scale * weight  # a = γ/σ
        shift = -mean * scale  # b = β − μ a
        if bias is not None:
            shift = shift + bias
        y = torch.addcmul(shift.to(dt).view(shape), input, scale.to(dt).view(shape))  # a x + b
        if not training:  # new tensors, not the buffers themselves (marked constant below)
            mean, var = mean.detach().clone(), var.detach().clone()
        return y, mean, var

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        input, weight, bias, _, _, ctx.training, ctx.eps = inputs
        _, mean, var = output
        if not ctx.training:
            ctx.mark_non_differentiable(mean, var)
        ctx.save_for_backward(input, weight, mean, var)
        ctx.save_for_forward(input, weight, mean, var)
        ctx.has_bias = bias is not None
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(
        ctx: Any, grad_output: Tensor | None, g_mean: Tensor | None, g_var: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, weight, mean, var = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if x.numel() == 0:  # an empty batch: nothing to pass back
            zeros = torch.zeros_like(mean)
            return (
                torch.zeros_like(x) if need_x else None,
                zeros if weight is not None and need_w else None,
                zeros if ctx.has_bias and need_b else None,
            ) + (None,) * 4
        dims, shape = _channel_view(x)
        m = x.numel() // max(x.shape[1], 1)  # M: the values per channel

        def view(t: Tensor) -> Tensor:
            return t.view(shape)

        rstd = (var + ctx.eps).rsqrt()  # 1/σ
        need_dot = (weight is not None and need_w) or (need_x and ctx.training)
        xmu = x - view(mean) if need_dot or ctx.training else None  # x − μ
        grad_input = grad_weight = grad_bias = None
        if grad_output is not None:
            delta = grad_output  # δ
            sum_delta = delta.sum(dims)  # Σ δ
            dot = (delta * xmu).sum(dims) if need_dot else None  # Σ δ (x − μ)
            a = rstd if weight is None else weight * rstd  # γ/σ
            if need_x:
                if ctx.training:
                    k = -a * dot * rstd * rstd / m  # −a Σ δ(x − μ) / (σ² M)
                    c = -a * sum_delta / m  # −a Σ δ / M
                    grad_input = torch.addcmul(torch.addcmul(view(c), xmu, view(k)), delta, view(a))
                else:
                    grad_input = delta * view(a)  # (γ/σ) δ
            if weight is not None and need_w:
                grad_weight = dot * rstd  # Σ δ x̂
            if ctx.has_bias and need_b:
                grad_bias = sum_delta  # Σ δ
        if need_x and ctx.training:
            through_stats = _stats_derivative(xmu, g_mean, g_var, m, view)
            if through_stats is not None:
                grad_input = through_stats if grad_input is None else grad_input + through_stats
        if grad_input is not None:
            grad_input = grad_input.expand_as(x)
        return grad_input, grad_weight, grad_bias, None, None, None, None

    @staticmethod
    def jvp(
        ctx: Any, input_t: Tensor, weight_t: Tensor | None, bias_t: Tensor | None, *_: Any
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        x, weight, mean, var = ctx.saved_tensors
        if x.numel() == 0:
            zeros = torch.zeros_like(mean) if ctx.training else None
            return torch.zeros_like(x), zeros, zeros
        dims, shape = _channel_view(x)
        rstd = (var + ctx.eps).rsqrt().view(shape)
        xmu = x - mean.view(shape)
        a = rstd if weight is None else weight.view(shape) * rstd
        if input_t is None:  # (a tangent torch left undefined: zero)
            input_t = torch.zeros_like(x)
        mean_t = var_t = None
        if ctx.training:
            mean_t = input_t.mean(dims)  # μ̇ = mean(ẋ)
            var_t = 2 * (xmu * input_t).mean(dims)  # v̇ar = 2 mean((x − μ) ẋ)
            y_t = a * (input_t - mean_t.view(shape) - xmu * rstd * rstd * var_t.view(shape) / 2)
        else:
            y_t = a * input_t
        if weight_t is not None:
            y_t = y_t + weight_t.view(shape) * xmu * rstd  # γ̇ x̂
        if bias_t is not None:
            y_t = y_t + bias_t.view(shape)  # β̇
        return y_t, mean_t, var_t


def _check_batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
) -> None:
    """torch's checks of ``F.batch_norm``, with its exception types and messages."""
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if not training and running_mean is None:
        raise RuntimeError("running_mean must be defined in evaluation mode")
    if training:
        size = input.shape
        values = size[0]
        for d in size[2:]:
            values *= d
        if values == 1:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input size {size}"
            )
    if input.dim() == 1 and input.numel() == 0:
        return  # torch's one 1-D case: empty in, empty out
    channels = input.size(1)  # torch's IndexError for a non-empty 1-D input
    for name, t in (
        ("weight", weight),
        ("bias", bias),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ):
        if t is not None and t.numel() != channels:
            raise RuntimeError(f"{name} should contain {channels} elements not {t.numel()}")


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation, as ``torch.nn.functional.batch_norm``.

    Args:
        input: (N, C, *).
        running_mean, running_var: (C,) or None. Used in place of the batch's statistics when
            not ``training``; when ``training`` they are updated in place, as torch:
            ``r ← (1 − momentum) r + momentum · s`` with ``s`` the batch mean, and for the
            variance the unbiased one, ``var · M / (M − 1)`` (an empty batch changes nothing).
        weight, bias: ``γ``, ``β`` (C,) or None.
        training: normalise with the batch's statistics (else the running ones).

    Shape: output like ``input``.
    """
    if training and eps <= 0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    _check_batch_norm(input, running_mean, running_var, weight, bias, training)
    y, mean, var = BatchNormFunction.apply(
        input, weight, bias, running_mean, running_var, bool(training), float(eps)
    )
    if training and running_mean is not None and input.numel():
        m = input.numel() // input.shape[1]
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            unbiased = var.detach() * (m / (m - 1))
            running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
    return y


# --------------------------------------------------------------------------------------------
# Layer normalisation
# --------------------------------------------------------------------------------------------
class LayerNormFunction(HandFunction):
    r"""Layer normalisation: each sample (row) over its last ``D = len(normalized_shape)``
    dimensions, ``M`` values:

    ``μ = mean(x)``, ``var = mean((x − μ)²)`` (biased), ``x̂ = (x − μ) / √(var + ε)``,
    ``y = γ ⊙ x̂ + β`` (``γ``, ``β`` of ``normalized_shape``, one per normalised position).

    Shapes: ``x`` (*, normalized_shape), ``γ``, ``β`` (normalized_shape) or None; returns
    ``(y, μ, var)``, the statistics (*, 1, …, 1) (``D`` ones).

    Backward, with ``δ = ∂C/∂y``, ``g = γ ⊙ δ``, ``σ = √(var + ε)`` and means over a row:

    * ``∂C/∂x = (1/σ) (g − mean(g) − x̂ ⊙ mean(g ⊙ x̂))``;
    * ``∂C/∂γ = Σ_rows δ ⊙ x̂``, ``∂C/∂β = Σ_rows δ``.

    Forward mode: ``ẋ̂ = (1/σ) (ẋ − mean(ẋ) − x̂ ⊙ mean(x̂ ⊙ ẋ))``,
    ``ẏ = γ ⊙ ẋ̂ + γ̇ ⊙ x̂ + β̇``; ``μ̇ = mean(ẋ)``, ``v̇ar = 2 mean((x − μ) ẋ)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        input: Tensor,
        normalized_shape: tuple[int, ...],
        weight: Tensor | None,
        bias: Tensor | None,
        eps: float,
    ) -> tuple[Tensor, Tensor, Tensor]:
        dims = tuple(range(-len(normalized_shape), 0))
        if input.numel():  # two passes (stable; faster than torch.var_mean on CPU)
            mean = input.mean(dims, keepdim=True)
            xmu = input - mean
            var = xmu.square().mean(dims, keepdim=True)
        else:  # no values: no statistics (two tensors: each output its own)
            stat_shape = input.shape[: input.dim() - len(dims)] + (1,) * len(dims)
            mean, var = input.new_zeros(stat_shape), input.new_zeros(stat_shape)
            xmu = input
        xhat = xmu * (var + eps).rsqrt()  # x̂ = (x − μ)/σ
        if weight is None:
            y = xhat if bias is None else xhat + bias
        elif bias is None:
            y = xhat * weight
        else:
            y = torch.addcmul(bias, xhat, weight)  # γ x̂ + β
        return y, mean, var

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        input, ctx.normalized_shape, weight, bias, ctx.eps = inputs
        _, mean, var = output
        ctx.save_for_backward(input, weight, mean, var)
        ctx.save_for_forward(input, weight, mean, var)
        ctx.has_bias = bias is not None
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(
        ctx: Any, grad_output: Tensor | None, g_mean: Tensor | None, g_var: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        x, weight, mean, var = ctx.saved_tensors
        need_x, _, need_w, need_b = ctx.needs_input_grad[:4]
        dims = tuple(range(-len(ctx.normalized_shape), 0))
        rows = tuple(range(x.dim() - len(dims)))
        m = 1
        for d in ctx.normalized_shape:
            m *= d
        rstd = (var + ctx.eps).rsqrt()  # 1/σ, per row
        xmu = x - mean
        xhat = xmu * rstd  # x̂
        grad_input = grad_weight = grad_bias = None
        if grad_output is not None:
            delta = grad_output  # δ
            if need_x:
                g = delta if weight is None else delta * weight  # g = γ δ
                mean_g = g.mean(dims, keepdim=True)
                mean_gx = (g * xhat).mean(dims, keepdim=True)
                # (1/σ) (g − mean(g) − x̂ mean(g x̂))
                grad_input = torch.addcmul(g - mean_g, xhat, -mean_gx) * rstd
            # Σ_rows (none: a single sample, torch's sum(()) would sum everything)
            if weight is not None and need_w:
                grad_weight = (delta * xhat).sum(rows) if rows else delta * xhat  # Σ δ x̂
            if ctx.has_bias and need_b:
                grad_bias = delta.sum(rows) if rows else delta  # Σ δ
        if need_x:
            through_stats = _stats_derivative(xmu, g_mean, g_var, m, lambda t: t)
            if through_stats is not None:
                grad_input = through_stats if grad_input is None else grad_input + through_stats
            if grad_input is not None:
                grad_input = grad_input.expand_as(x)
        return grad_input, None, grad_weight, grad_bias, None

    @staticmethod
    def jvp(
        ctx: Any, input_t: Tensor, _: Any, weight_t: Tensor | None, bias_t: Tensor | None, __: Any
    ) -> tuple[Tensor, Tensor, Tensor]:
        x, weight, mean, var = ctx.saved_tensors
        dims = tuple(range(-len(ctx.normalized_shape), 0))
        rstd = (var + ctx.eps).rsqrt()
        xmu = x - mean
        xhat = xmu * rstd
        if input_t is None:  # (a tangent torch left undefined: zero)
            input_t = torch.zeros_like(x)
        mean_t = input_t.mean(dims, keepdim=True)  # μ̇
        var_t = 2 * (xmu * input_t).mean(dims, keepdim=True)  # v̇ar
        xhat_t = rstd * (input_t - mean_t - xhat * rstd * var_t / 2)  # ẋ̂
        y_t = xhat_t if weight is None else xhat_t * weight
        if weight_t is not None:
            y_t = y_t + weight_t * xhat  # γ̇ x̂
        if bias_t is not None:
            y_t = y_t + bias_t  # β̇
        return y_t, mean_t, var_t


def layer_norm(
    input: Tensor,
    normalized_shape: int | list[int] | tuple[int, ...] | torch.Size,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Layer normalisation over the last dimensions, as ``torch.nn.functional.layer_norm``.

    Args:
        input: (*, normalized_shape).
        normalized_shape: the trailing shape normalised over (an int: the last dimension).
        weight, bias: ``γ``, ``β`` of shape ``normalized_shape``, or None.

    Shape: output like ``input``.
    """
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if len(shape) == 0:
        raise RuntimeError(
            "Expected normalized_shape to be at least 1-dimensional, i.e., containing at least "
            "one element, but got normalized_shape = []"
        )
    if tuple(input.shape[input.dim() - len(shape) :]) != shape:
        raise RuntimeError(
            f"Given normalized_shape={list(shape)}, expected input with shape "
            f"[*, {', '.join(map(str, shape))}], but got input of size{list(input.shape)}"
        )
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise RuntimeError(
                f"Expected {name} to be of same shape as normalized_shape, but got {name} of "
                f"shape {list(t.shape)} and normalized_shape = {list(shape)}"
            )
    return LayerNormFunction.apply(input, shape, weight, bias, float(eps))[0]
