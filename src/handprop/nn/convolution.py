"""The convolutional network's layers: ``Conv2d``, ``MaxPool2d``, ``AvgPool2d`` (drop-ins)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from handprop import functional as F
from handprop.nn.layers import HandpropLayer, _check_positive_int, _torch_default_init_

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d"]


class Conv2d(HandpropLayer):
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
        # torch's modules take these and fail at the first forward: the same error, sooner
        if min(self.kernel_size) <= 0:
            raise RuntimeError(
                f"Conv2d: kernel size should be greater than zero, got {kernel_size}"
            )
        if min(self.stride) <= 0:
            raise RuntimeError(f"Conv2d: non-positive stride is not supported, got {stride}")
        if min(self.dilation) <= 0:
            raise RuntimeError(f"Conv2d: dilation should be greater than zero, got {dilation}")
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


class MaxPool2d(HandpropLayer):
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


class AvgPool2d(HandpropLayer):
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
