"""The convolutional network's layers: the neuron with shared weights sliding over the image
(``conv2d``), pooling (``max_pool2d``, ``avg_pool2d``) and ``flatten`` before the MLP head.

Notation: ``x`` input (N, C, H, W), ``W`` filters (O, C/G, kh, kw), ``b`` bias (O,), ``z``
output (N, O, Ho, Wo), ``δ = ∂C/∂z`` the error signal arriving from the layer above; ``s``
stride, ``p`` padding, ``d`` dilation, ``G`` groups. Every Function also accepts an unbatched
image (C, H, W), as torch does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor

from handprop.functional.base import HandFunction

_Size2 = tuple[int, int]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pair(value: int | tuple[int, ...] | list[int], name: str, op: str = "conv2d") -> _Size2:
    """``3 → (3, 3)``; ``(2, 3)`` stays; ``(2,)`` → ``(2, 2)``. Anything else is torch's error
    for ``op``: a TypeError for what is not an int or a sequence of ints, a RuntimeError for a
    sequence of another length."""
    if _is_int(value):
        return (value, value)  # type: ignore[return-value]
    if isinstance(value, (tuple, list)) and all(_is_int(v) for v in value):
        if len(value) == 1:
            return (value[0], value[0])
        if len(value) == 2:
            return (value[0], value[1])
        if op == "conv2d":
            raise RuntimeError(
                f"expected {name} to be a single integer value or a list of 2 values to match "
                f"the convolution dimensions, but got {name}={list(value)}"
            )
        omitted = " omitted," if name == "stride" else ""
        raise RuntimeError(
            f"{op}: {name} must either be{omitted} a single int, or a tuple of two ints, "
            f"got {value!r}"
        )
    raise TypeError(
        f"{op}(): argument '{name}' must be an int or a tuple of ints, not {type(value).__name__}"
    )


def _output_padding(size: int, out: int, k: int, s: int, p: int, d: int) -> int:
    """The rows the last window's stride skipped: ``conv_transpose2d`` cannot infer them from
    ``out`` alone (several input sizes give the same output size when ``s > 1``)."""
    return size - ((out - 1) * s - 2 * p + d * (k - 1) + 1)


# --------------------------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------------------------
def _conv(
    x: Tensor,
    w: Tensor,
    b: Tensor | None,
    s: _Size2,
    p: _Size2,
    d: _Size2,
    groups: int,
    extra: _Size2,
) -> Tensor:
    """The forward equation; ``extra`` pads the bottom / right by one more row / column where
    ``padding="same"`` with an even window needs an odd total (torch pads the same side)."""
    if extra != (0, 0):
        x = TF.pad(x, (0, extra[1], 0, extra[0]))
    return TF.conv2d(x, w, b, s, p, d, groups)


class Conv2dFunction(HandFunction):
    r"""The convolution: a neuron per output channel whose weights (a ``kh × kw`` filter over
    ``C/G`` channels) are shared by every position of the image it slides over,

    ``z[n,o,i,j] = b[o] + Σ_{c,u,v} W[o,c,u,v] · x[n, g·C/G + c, i·s + u·d − p, j·s + v·d − p]``

    (zero outside the image; ``g`` is the group of output channel ``o``). Shapes: ``x``
    (N, C, H, W) or (C, H, W), ``W`` (O, C/G, kh, kw), ``b`` (O,) or None, ``z`` (N, O, Ho, Wo)
    with ``Ho = ⌊(H + 2p − d(kh − 1) − 1) / s⌋ + 1``. The forward is torch's kernel.

    Backward, with ``δ = ∂C/∂z`` (N, O, Ho, Wo); each is a sum over the positions where the
    shared weight was used:

    * ``∂C/∂W[o,c,u,v] = Σ_{n,i,j} δ[n,o,i,j] · x[n, c, i·s + u·d − p, j·s + v·d − p]``, the
      *correlation of the input with δ*: δ is the filter (its taps ``s`` apart), sliding over
      ``x`` with step ``d``; one ``conv2d`` with the roles swapped (the batch as channels).
    * ``∂C/∂x = Σ_o δ ⋆ W``: every output position sends its δ back through the filter that
      produced it. That is the *"full" convolution of δ with the flipped filters* (δ with
      ``s − 1`` zeros between its entries, padded by ``d(k − 1) − p``), channels transposed —
      exactly what ``conv_transpose2d`` computes, so it is called with the same ``s, p, d, G``.
    * ``∂C/∂b[o] = Σ_{n,i,j} δ[n,o,i,j]``: the bias is added at every position.

    Forward mode (``jvp``): the convolution is bilinear in ``(x, W)``, so
    ``ż = conv(ẋ, W) + conv(x, Ẇ) + ḃ``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        input: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        stride: _Size2,
        padding: _Size2,
        dilation: _Size2,
        groups: int,
        extra: _Size2,
    ) -> Tensor:
        unbatched = input.dim() == 3
        x = input.unsqueeze(0) if unbatched else input
        z = _conv(x, weight, bias, stride, padding, dilation, groups, extra)
        return z.squeeze(0) if unbatched else z

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        input, weight, bias, ctx.stride, ctx.padding, ctx.dilation, ctx.groups, ctx.extra = inputs
        # ∂C/∂x needs W, ∂C/∂W needs x: keep only what the requested gradients use.
        ctx.save_for_backward(
            input if ctx.needs_input_grad[1] else None,
            weight if ctx.needs_input_grad[0] else None,
        )
        ctx.save_for_forward(input, weight)
        ctx.has_bias = bias is not None
        ctx.input_shape, ctx.weight_shape = input.shape, weight.shape

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        input, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        (sh, sw), (ph, pw), (dh, dw), groups = ctx.stride, ctx.padding, ctx.dilation, ctx.groups
        unbatched = len(ctx.input_shape) == 3
        delta = grad_output.unsqueeze(0) if unbatched else grad_output  # δ (N, O, Ho, Wo)
        H, W = ctx.input_shape[-2] + ctx.extra[0], ctx.input_shape[-1] + ctx.extra[1]
        grad_input = grad_weight = grad_bias = None
        if need_x:
            kh, kw = weight.shape[-2:]
            Ho, Wo = delta.shape[-2:]
            output_padding = (
                _output_padding(H, Ho, kh, sh, ph, dh),
                _output_padding(W, Wo, kw, sw, pw, dw),
            )
            # the full convolution of δ with the flipped filters
            grad_input = TF.conv_transpose2d(
                delta, weight, None, ctx.stride, ctx.padding, output_padding, groups, ctx.dilation
            )
            if ctx.extra != (0, 0):  # the extra "same" row / column is not part of x
                grad_input = grad_input[..., : H - ctx.extra[0], : W - ctx.extra[1]]
            if unbatched:
                grad_input = grad_input.squeeze(0)
        if need_w:
            x = input.unsqueeze(0) if unbatched else input
            if ctx.extra != (0, 0):
                x = TF.pad(x, (0, ctx.extra[1], 0, ctx.extra[0]))
            grad_weight = _correlate_input_with_delta(x, delta, ctx.weight_shape, ctx)
        if ctx.has_bias and need_b:
            grad_bias = delta.sum((0, 2, 3))  # Σ δ over samples and positions
        return grad_input, grad_weight, grad_bias, None, None, None, None, None

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor, weight_t: Tensor, bias_t: Tensor | None, *_: Any) -> Tensor:
        input, weight = ctx.saved_tensors
        args = (ctx.stride, ctx.padding, ctx.dilation, ctx.groups, ctx.extra)
        unbatched = input.dim() == 3
        x, x_t = (input.unsqueeze(0), input_t.unsqueeze(0)) if unbatched else (input, input_t)
        # ż = conv(ẋ, W) + conv(x, Ẇ) + ḃ (torch passes a zero tangent for an input without
        # one; ḃ is None only where there is no bias)
        z_t = _conv(x_t, weight, None, *args) + _conv(x, weight_t, None, *args)
        if unbatched:
            z_t = z_t.squeeze(0)
        if bias_t is not None:  # ḃ at every position
            z_t = z_t + bias_t.view(-1, 1, 1)
        return z_t


def _correlate_input_with_delta(x: Tensor, delta: Tensor, w_shape: torch.Size, ctx: Any) -> Tensor:
    """``∂C/∂W[o,c,u,v] = Σ_{n,i,j} δ[n,o,i,j] · x[n, c, i·s + u·d − p, j·s + v·d − p]``.

    Read as a convolution, the batch ``n`` is the summed channel axis, δ is the filter (taps
    ``s`` apart: dilation ``s``) and it moves over ``x`` in steps of ``d`` (stride ``d``); the
    input channels ``c`` play the batch. With groups, group ``g``'s samples ``(g, n)`` become
    the channels of group ``g``. The result can overhang the filter by a few rows (the last
    stride's leftovers); those are cut off.
    """
    groups, N = ctx.groups, x.shape[0]
    _, cg, kh, kw = w_shape
    if groups == 1:
        x_as_batch = x.transpose(0, 1)  # (C, N, H, W)
    else:  # (C/G, G·N, H, W), channel index (g, n)
        x_as_batch = x.reshape(N, groups, cg, *x.shape[2:]).permute(2, 1, 0, 3, 4)
        x_as_batch = x_as_batch.reshape(cg, groups * N, *x.shape[2:])
    g = TF.conv2d(
        x_as_batch,
        delta.transpose(0, 1),  # (O, N, Ho, Wo): δ as the filters
        None,
        ctx.dilation,  # the conv's dilation is this correlation's stride …
        ctx.padding,
        ctx.stride,  # … and its stride the spacing of δ's taps
        groups,
    )  # (C/G, O, ≥kh, ≥kw)
    return g[..., :kh, :kw].transpose(0, 1)


def conv2d(
    input: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: str | int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Tensor:
    """2-D convolution, as ``torch.nn.functional.conv2d``.

    Args:
        input: (N, C, H, W) or (C, H, W).
        weight: the filters, (O, C/groups, kh, kw).
        bias: (O,) or None.
        stride, dilation: an int or an (h, w) pair.
        padding: an int, an (h, w) pair, ``"valid"`` (none) or ``"same"`` (output the input's
            size; stride 1 only; an odd total pads the bottom / right one more, as torch).
        groups: split the channels into this many independent convolutions.

    Shape:
        output (N, O, Ho, Wo), ``Ho = ⌊(H + 2·padding − dilation·(kh − 1) − 1) / stride⌋ + 1``.

    Examples::

        >>> z = conv2d(torch.randn(8, 1, 28, 28), torch.randn(6, 1, 5, 5), padding="same")
        >>> z.shape
        torch.Size([8, 6, 28, 28])
    """
    if weight.dim() != 4:  # torch's words: a conv1d / conv3d weight is not conv2d's
        raise RuntimeError(
            f"Expected {weight.dim()}-dimensional input for {weight.dim()}-dimensional weight "
            f"{list(weight.shape)}, but got {input.dim()}-dimensional input of size "
            f"{list(input.shape)} instead; conv2d needs a 4-D weight"
        )
    s, d = _pair(stride, "stride"), _pair(dilation, "dilation")
    if not _is_int(groups):
        raise TypeError(f"conv2d(): argument 'groups' must be int, not {type(groups).__name__}")
    if groups < 1:
        raise RuntimeError(f"non-positive groups is not supported, got groups={groups}")
    extra = (0, 0)
    if isinstance(padding, str):
        if padding == "valid":
            p = (0, 0)
        elif padding == "same":
            if s != (1, 1):
                raise RuntimeError("padding='same' is not supported for strided convolutions")
            total = [d[i] * (weight.shape[2 + i] - 1) for i in range(2)]
            p = (total[0] // 2, total[1] // 2)
            extra = (total[0] - 2 * p[0], total[1] - 2 * p[1])
        else:
            raise RuntimeError(
                f"Invalid padding string: {padding!r}; padding must be 'valid', 'same', an int "
                "or a pair"
            )
    else:
        p = _pair(padding, "padding")
    return Conv2dFunction.apply(input, weight, bias, s, p, d, groups, extra)


# --------------------------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------------------------
class MaxPool2dFunction(HandFunction):
    r"""Max pooling: each output is the largest input of its (dilated) window,
    ``z[n,c,i,j] = max_{u,v} x[n, c, i·s + u·d − p, j·s + v·d − p]`` (padding counts as −∞).

    Shapes: ``x`` (N, C, H, W) or (C, H, W) → ``z`` (N, C, Ho, Wo), and the flat index
    ``m = h·W + w`` of each window's maximum (as ``return_indices=True`` gives), which is all the
    backward needs. The forward is torch's kernel (first maximum on ties, NaN wins).

    Backward: ``∂z[n,c,i,j]/∂x`` is 1 at the window's maximum and 0 elsewhere, so the gradient
    goes only to each window's maximum,
    ``∂C/∂x[n,c,m] = Σ_{(i,j): argmax = m} δ[n,c,i,j]`` — a scatter-add of δ onto the indices
    (overlapping windows may share a maximum, whose δ's add up).

    Forward mode: ``ż[n,c,i,j] = ẋ[n,c,argmax]`` (a gather at the same indices).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        input: Tensor,
        kernel_size: _Size2,
        stride: _Size2,
        padding: _Size2,
        dilation: _Size2,
        ceil_mode: bool,
    ) -> tuple[Tensor, Tensor]:
        return TF.max_pool2d(
            input, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: tuple[Tensor, Tensor]) -> None:
        _, indices = output
        ctx.mark_non_differentiable(indices)
        ctx.save_for_backward(indices)
        ctx.save_for_forward(indices)
        ctx.input_shape, ctx.dilation = inputs[0].shape, inputs[4]
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor | None, _: Any) -> tuple[Tensor | None, ...]:
        if grad_output is None:
            return (None,) * 6
        (indices,) = ctx.saved_tensors
        shape = ctx.input_shape
        indices, inside = _in_image(indices, ctx)
        delta = grad_output.flatten(-2)
        if inside is not None:
            delta = delta * inside
        # out of place: the zeros may be unbatched while δ is batched under vmap
        grad = grad_output.new_zeros(*shape[:-2], shape[-2] * shape[-1])
        grad = grad.scatter_add(-1, indices, delta)  # each δ onto its window's maximum
        return grad.view(shape), None, None, None, None, None

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor, *_: Any) -> tuple[Tensor, None]:
        (indices,) = ctx.saved_tensors
        flat, inside = _in_image(indices, ctx)
        z_t = input_t.flatten(-2).gather(-1, flat)  # ẋ at each window's maximum
        if inside is not None:
            z_t = z_t * inside
        return z_t.view(indices.shape), None


def _in_image(indices: Tensor, ctx: Any) -> tuple[Tensor, Tensor | None]:
    """The flat indices, and which of them lie in the image (None: all of them). A window
    wholly in the padding (possible only with dilation) has maximum −∞ and an "index" out of
    range: it is pointed at cell 0 and masked, so it passes nothing on, as in torch."""
    indices = indices.flatten(-2)
    if ctx.dilation == (1, 1):
        return indices, None
    cells = ctx.input_shape[-2] * ctx.input_shape[-1]
    inside = (indices >= 0) & (indices < cells)
    return indices.clamp(0, cells - 1), inside


def _pool_args(
    kernel_size: Any, stride: Any, padding: Any, op: str
) -> tuple[_Size2, _Size2, _Size2]:
    k = _pair(kernel_size, "kernel_size", op)
    s = (
        k
        if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0)
        else (_pair(stride, "stride", op))
    )
    return k, s, _pair(padding, "padding", op)


def max_pool2d(
    input: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Args:
        input: (N, C, H, W) or (C, H, W).
        kernel_size, stride (default: ``kernel_size``), padding, dilation: ints or (h, w) pairs.
        ceil_mode: round the output size up (a last, partial window), not down.
        return_indices: also return the flat index ``h·W + w`` of each maximum.

    Shape:
        output (N, C, Ho, Wo), ``Ho = ⌊(H + 2·padding − dilation·(kh − 1) − 1) / stride⌋ + 1``
        (⌈⌉ with ``ceil_mode``).
    """
    k, s, p = _pool_args(kernel_size, stride, padding, "max_pool2d")
    out, indices = MaxPool2dFunction.apply(
        input, k, s, p, _pair(dilation, "dilation", "max_pool2d"), bool(ceil_mode)
    )
    return (out, indices) if return_indices else out


def _window_sizes(
    size: int, out: int, k: int, s: int, p: int, include_pad: bool, like: Tensor
) -> Tensor:
    """How many cells each window of one axis averages over (torch's rule): a window is cut
    at the padded edge ``size + p``; without ``include_pad`` also at the image's edges."""
    start = torch.arange(out, device=like.device) * s - p
    end = torch.clamp(start + k, max=size + p)
    if not include_pad:
        start, end = start.clamp(min=0), end.clamp(max=size)
    return (end - start).to(like.dtype)


class AvgPool2dFunction(HandFunction):
    r"""Average pooling: ``z[n,c,i,j] = (1 / D[i,j]) Σ_{u,v} x[n, c, i·s + u − p, j·s + v − p]``,
    where ``D`` is the window's divisor: ``kh·kw``, or the cells inside the padded image, or
    only those inside the image (``count_include_pad=False``), or ``divisor_override``.

    Shapes: ``x`` (N, C, H, W) or (C, H, W) → ``z`` (N, C, Ho, Wo). The forward is torch's
    kernel.

    Backward: every input of a window gets an equal share of its δ,
    ``∂C/∂x[n,c,h,w] = Σ_{windows (i,j) ∋ (h,w)} δ[n,c,i,j] / D[i,j]``: the transposed
    convolution of ``δ / D`` with a ``kh × kw`` filter of ones, each channel on its own.

    Forward mode: the map is linear, so ``ż = avg_pool2d(ẋ)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        input: Tensor,
        kernel_size: _Size2,
        stride: _Size2,
        padding: _Size2,
        ceil_mode: bool,
        count_include_pad: bool,
        divisor_override: int | None,
    ) -> Tensor:
        return TF.avg_pool2d(
            input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        _, ctx.kernel_size, ctx.stride, ctx.padding, *ctx.rest = inputs
        ctx.input_shape = inputs[0].shape

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (kh, kw), (sh, sw), (ph, pw) = ctx.kernel_size, ctx.stride, ctx.padding
        _, count_include_pad, divisor_override = ctx.rest
        shape = ctx.input_shape
        H, W = shape[-2:]
        Ho, Wo = grad_output.shape[-2:]
        delta = grad_output.reshape(-1, 1, Ho, Wo)  # every channel on its own
        if divisor_override:
            delta = delta / divisor_override
        else:
            D = torch.outer(
                _window_sizes(H, Ho, kh, sh, ph, count_include_pad, delta),
                _window_sizes(W, Wo, kw, sw, pw, count_include_pad, delta),
            )
            delta = delta / D  # δ / D
        ones = delta.new_ones(1, 1, kh, kw)
        # The canvas starts at −p and covers every window, the last (ceil_mode) one included;
        # output_padding extends it to the image's far edge where the last stride fell short.
        extra = (max(0, ph + H - ((Ho - 1) * sh + kh)), max(0, pw + W - ((Wo - 1) * sw + kw)))
        canvas = TF.conv_transpose2d(delta, ones, None, ctx.stride, 0, extra)
        grad_input = canvas[..., ph : ph + H, pw : pw + W].reshape(shape)
        return grad_input, None, None, None, None, None, None

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor, *_: Any) -> Tensor:
        return TF.avg_pool2d(input_t, ctx.kernel_size, ctx.stride, ctx.padding, *ctx.rest)


def avg_pool2d(
    input: Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Args:
        input: (N, C, H, W) or (C, H, W).
        kernel_size, stride (default: ``kernel_size``), padding: ints or (h, w) pairs.
        ceil_mode: round the output size up (a last, partial window), not down.
        count_include_pad: whether the zero padding counts in a window's divisor.
        divisor_override: divide every window's sum by this instead.

    Shape:
        output (N, C, Ho, Wo), ``Ho = ⌊(H + 2·padding − kh) / stride⌋ + 1`` (⌈⌉ with
        ``ceil_mode``).
    """
    k, s, p = _pool_args(kernel_size, stride, padding, "avg_pool2d")
    if divisor_override is not None:
        if not _is_int(divisor_override):
            raise TypeError(
                "avg_pool2d(): argument 'divisor_override' must be int, not "
                f"{type(divisor_override).__name__}"
            )
        if divisor_override == 0:
            raise RuntimeError("divisor must be not zero")
    return AvgPool2dFunction.apply(
        input, k, s, p, bool(ceil_mode), bool(count_include_pad), divisor_override
    )


# --------------------------------------------------------------------------------------------
# Flatten: the feature maps become one feature vector per sample for the MLP head
# --------------------------------------------------------------------------------------------
class FlattenFunction(HandFunction):
    r"""``z = x.flatten(start_dim, end_dim)``: the dimensions ``start_dim … end_dim`` become
    one (a (N, C, H, W) feature map → (N, C·H·W) with the defaults of ``nn.Flatten``).

    Backward: only the layout changed, so ``∂C/∂x = δ`` reshaped back to ``x``'s shape.
    Forward mode likewise: ``ż = ẋ.flatten(start_dim, end_dim)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(input: Tensor, start_dim: int, end_dim: int) -> Tensor:
        return input.flatten(start_dim, end_dim)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        _, ctx.start_dim, ctx.end_dim = inputs
        ctx.input_shape = inputs[0].shape

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        return grad_output.reshape(ctx.input_shape), None, None

    @staticmethod
    def jvp(ctx: Any, input_t: Tensor, *_: Any) -> Tensor:
        return input_t.flatten(ctx.start_dim, ctx.end_dim)


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """``input.flatten(start_dim, end_dim)``, as ``torch.flatten`` (``nn.Flatten`` uses
    ``start_dim=1``)."""
    return FlattenFunction.apply(input, int(start_dim), int(end_dim))
