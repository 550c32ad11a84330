"""The notes' convolutional network: blocks of convolution → activation → pooling, then an MLP head."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from handprop.nn.convolution import AvgPool2d, Conv2d, MaxPool2d
from handprop.nn.init import init_linear_
from handprop.nn.layers import (
    ACTIVATIONS,
    Dropout,
    Flatten,
    Linear,
)

__all__ = ["ConvNet", "POOLS", "block_pools", "conv_output_size"]


POOLS: dict[str, type[nn.Module] | None] = {"max": MaxPool2d, "avg": AvgPool2d, "none": None}


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
