"""``torch.nn`` drop-ins built on :mod:`handprop.functional`.

Each module has the constructor arguments, parameter names and shapes of its ``torch.nn``
twin, so ``state_dict`` s load both ways; only the autograd graph differs: every node is a
handprop Function with a hand-written backward. One file per family, as the notes name them:

* :mod:`~handprop.nn.layers` — the neuron's ``Linear``, the activations, ``Flatten``, ``Dropout``;
* :mod:`~handprop.nn.losses` — the costs;
* :mod:`~handprop.nn.convolution` — ``Conv2d`` and the poolings;
* :mod:`~handprop.nn.recurrent` — ``RNN`` and ``LSTM``;
* :mod:`~handprop.nn.normalization` — ``BatchNorm1d``, ``BatchNorm2d``, ``LayerNorm``;
* :mod:`~handprop.nn.embedding`, :mod:`~handprop.nn.gelu`, :mod:`~handprop.nn.pooling` —
  ``Embedding``, ``GELU``, ``AdaptiveAvgPool2d``;
* :mod:`~handprop.nn.init` — the initialisation schemes;
* :mod:`~handprop.nn.conversion` — ``to_handprop`` / ``to_torch`` for whole models;
* :mod:`~handprop.nn.report` — ``coverage``: which layers and graph nodes are handprop's.

The notes' networks (``MLP``, ``ConvNet``, ``RecurrentNet``, ``Autoencoder``, ``GAN``) live in
:mod:`handprop.networks`; ``handprop.nn.MLP`` (and ``ConvNet``, ``RecurrentNet``) name the same
classes, loaded on first use so that importing the layers does not import the networks.
"""

from typing import Any

from handprop.nn.conversion import TWINS, to_handprop, to_torch
from handprop.nn.convolution import AvgPool2d, Conv2d, MaxPool2d
from handprop.nn.embedding import Embedding
from handprop.nn.gelu import GELU
from handprop.nn.init import INITS, init_linear_
from handprop.nn.layers import (
    ACTIVATION_RULES,
    ACTIVATIONS,
    Dropout,
    Flatten,
    HandpropLayer,
    LeakyReLU,
    Linear,
    LogSoftmax,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from handprop.nn.losses import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    MSELoss,
    NLLLoss,
    QuadraticCost,
)
from handprop.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from handprop.nn.pooling import AdaptiveAvgPool2d
from handprop.nn.recurrent import LSTM, RNN
from handprop.nn.report import Coverage, coverage

_NETWORKS = ("MLP", "ConvNet", "RecurrentNet")

__all__ = [
    "Linear",
    "Sigmoid",
    "Tanh",
    "ReLU",
    "LeakyReLU",
    "Softmax",
    "LogSoftmax",
    "Flatten",
    "Dropout",
    "MSELoss",
    "QuadraticCost",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "NLLLoss",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "RNN",
    "LSTM",
    "BatchNorm1d",
    "BatchNorm2d",
    "LayerNorm",
    "Embedding",
    "GELU",
    "AdaptiveAvgPool2d",
    "ACTIVATIONS",
    "ACTIVATION_RULES",
    "INITS",
    "init_linear_",
    "TWINS",
    "to_handprop",
    "to_torch",
    "coverage",
    "Coverage",
    "HandpropLayer",
    *_NETWORKS,
]


def __getattr__(name: str) -> Any:
    if name in _NETWORKS:  # the networks sit above the layers: import them on first use
        import handprop.networks

        return getattr(handprop.networks, name)
    raise AttributeError(f"module 'handprop.nn' has no attribute {name!r}")
