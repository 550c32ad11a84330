"""Initialisation schemes by name, as the notes list them (``init_linear_``, ``INITS``)."""

from __future__ import annotations

import math

import torch

from handprop.nn.convolution import Conv2d
from handprop.nn.layers import Linear

__all__ = ["INITS", "init_linear_"]


#: Initialisation schemes by name (aliases map to the same scheme).
INITS = ("auto", "xavier", "glorot", "he", "kaiming", "normal", "zeros", "torch")


def init_linear_(layer: Linear | Conv2d, scheme: str, activation: str = "relu") -> None:
    """Re-initialise ``layer`` (a Linear, or a Conv2d: ``fan_in`` counts a filter's weights)
    in place; biases start at 0 except for ``"torch"``.

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
    w = layer.weight
    fan_in, fan_out = w[0].numel(), w.shape[0] * (w[0, 0].numel() if w.dim() > 2 else 1)
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
