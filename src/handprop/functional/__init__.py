"""The notes' equations as ``torch.autograd.Function`` s, each backward written out by hand.

Every op below is one ``Function`` with ``forward`` (the equation), ``setup_context`` (what
the derivatives need, saved with ``save_for_backward`` / ``save_for_forward``), ``backward``
(the derivative from the notes, chain rule included: reverse mode) and ``jvp`` (the same
derivative applied to a tangent: forward mode), plus a ``vmap`` rule for ``torch.func``.
Neither asks autograd for the derivative of the same op; both are built from ordinary
differentiable tensor ops, so double backward (``gradgradcheck``) works too. Each Function's
public wrapper, beside it, has the signatures of ``torch.nn.functional``, so ``import handprop.functional as F`` is a drop-in.

Notation (as in the notes): ``x`` input, ``W`` weights, ``b`` bias, ``z`` pre-activation,
``a`` activation, ``ŷ`` prediction, ``y`` target, ``δ = ∂C/∂z`` the error signal, ``g`` the
gradient arriving from the layer above (``∂C/∂output``).
"""

from __future__ import annotations

from torch.autograd import Function

from handprop.functional.activations import (
    LeakyReLUFunction,
    LogSoftmaxFunction,
    ReLUFunction,
    SigmoidFunction,
    SoftmaxFunction,
    TanhFunction,
    leaky_relu,
    log_softmax,
    relu,
    sigmoid,
    softmax,
    tanh,
)
from handprop.functional.base import REDUCTIONS, HandFunction, function_of
from handprop.functional.convolution import (
    AvgPool2dFunction,
    Conv2dFunction,
    FlattenFunction,
    MaxPool2dFunction,
    avg_pool2d,
    conv2d,
    flatten,
    max_pool2d,
)
from handprop.functional.dispatch import OVERRIDES, everywhere, override
from handprop.functional.dropout import DropoutFunction, dropout
from handprop.functional.embedding import EmbeddingFunction, embedding
from handprop.functional.gelu import GELUFunction, gelu
from handprop.functional.losses import (
    BCEWithLogitsFunction,
    CrossEntropyFunction,
    NLLLossFunction,
    SquaredErrorFunction,
    binary_cross_entropy_with_logits,
    cross_entropy,
    mse_loss,
    nll_loss,
    quadratic_cost,
)
from handprop.functional.neuron import LinearFunction, linear
from handprop.functional.normalization import (
    BatchNormFunction,
    LayerNormFunction,
    batch_norm,
    layer_norm,
)
from handprop.functional.pooling import AdaptiveAvgPool2dFunction, adaptive_avg_pool2d
from handprop.functional.recurrent import LSTMFunction, RNNFunction, lstm, rnn_relu, rnn_tanh

__all__ = [
    "linear",
    "sigmoid",
    "tanh",
    "relu",
    "leaky_relu",
    "softmax",
    "log_softmax",
    "mse_loss",
    "quadratic_cost",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "nll_loss",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "flatten",
    "dropout",
    "rnn_tanh",
    "rnn_relu",
    "lstm",
    "batch_norm",
    "layer_norm",
    "embedding",
    "gelu",
    "adaptive_avg_pool2d",
    "FUNCTIONS",
    "everywhere",
    "OVERRIDES",
    "override",
    "HandFunction",
    "function_of",
    "REDUCTIONS",
]

#: Every Function, by the public name that applies it (tests walk this).
FUNCTIONS: dict[str, type[Function]] = {
    "linear": LinearFunction,
    "sigmoid": SigmoidFunction,
    "tanh": TanhFunction,
    "relu": ReLUFunction,
    "leaky_relu": LeakyReLUFunction,
    "softmax": SoftmaxFunction,
    "log_softmax": LogSoftmaxFunction,
    "mse_loss": SquaredErrorFunction,
    "quadratic_cost": SquaredErrorFunction,
    "binary_cross_entropy_with_logits": BCEWithLogitsFunction,
    "cross_entropy": CrossEntropyFunction,
    "nll_loss": NLLLossFunction,
    "conv2d": Conv2dFunction,
    "max_pool2d": MaxPool2dFunction,
    "avg_pool2d": AvgPool2dFunction,
    "flatten": FlattenFunction,
    "dropout": DropoutFunction,
    "rnn_tanh": RNNFunction,
    "rnn_relu": RNNFunction,
    "lstm": LSTMFunction,
    "batch_norm": BatchNormFunction,
    "layer_norm": LayerNormFunction,
    "embedding": EmbeddingFunction,
    "gelu": GELUFunction,
    "adaptive_avg_pool2d": AdaptiveAvgPool2dFunction,
}
