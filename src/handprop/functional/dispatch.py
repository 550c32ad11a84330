"""torch's own calls, run by handprop's Functions: ``with handprop.functional.everywhere():``.

Inside the block every call of a ``torch.nn.functional`` function, ``torch`` function or
``Tensor`` method that handprop implements (:data:`OVERRIDES`) runs handprop's Function, so its
backward is the hand-written one; every other call is torch's own. Built on torch's public
``torch.overrides.TorchFunctionMode``: code written for torch (``F.relu(x)``,
``torch.flatten(x, 1)``, ``x.log_softmax(1)``, an ``nn.Linear`` that calls ``F.linear``) needs
no change.

What stays torch's, so that values, gradients, side effects and errors are always torch's:

* arguments handprop does not take (``inplace=True``, ``out=``, ``F.mse_loss``'s ``weight``,
  named dimensions, a softmax without ``dim``): the adapter returns ``NotImplemented``;
* a call handprop refuses (a bad argument, or an input handprop guards against where torch
  only warns, such as ``mse_loss`` on shapes that broadcast): torch runs it, and gives its own
  result or raises its own error;
* the torch calls inside a handprop Function (its forward calls torch's ``conv2d`` kernel):
  never dispatched again (see ``HandFunction.apply``).

To register a new Function, add its adapter with :func:`override` (one entry per torch
callable that computes the same thing, with that callable's signature).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as TF
from torch import Tensor
from torch.overrides import TorchFunctionMode

from handprop.functional import base
from handprop.functional.activations import leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from handprop.functional.convolution import avg_pool2d, conv2d, flatten, max_pool2d
from handprop.functional.dropout import dropout
from handprop.functional.embedding import embedding
from handprop.functional.gelu import gelu
from handprop.functional.losses import (
    binary_cross_entropy_with_logits,
    cross_entropy,
    mse_loss,
    nll_loss,
)
from handprop.functional.neuron import linear
from handprop.functional.normalization import batch_norm, layer_norm
from handprop.functional.pooling import adaptive_avg_pool2d
from handprop.functional.recurrent import lstm, rnn_relu, rnn_tanh

__all__ = ["OVERRIDES", "everywhere", "override"]

#: torch callable → handprop's adapter with the same signature. An adapter returns
#: ``NotImplemented`` for arguments it leaves to torch.
OVERRIDES: dict[Callable[..., Any], Callable[..., Any]] = {}


def override(*torch_callables: Callable[..., Any]) -> Callable[[Callable], Callable]:
    """Register the decorated adapter for each of ``torch_callables`` (decorator)."""

    def register(adapter: Callable[..., Any]) -> Callable[..., Any]:
        for fn in torch_callables:
            OVERRIDES[fn] = adapter
        return adapter

    return register


class everywhere(TorchFunctionMode):  # noqa: N801 — used as a function: everywhere()
    """Run torch's calls that handprop implements with handprop's Functions, in this block.

    Examples::

        >>> with handprop.functional.everywhere():
        ...     loss = F.nll_loss(F.log_softmax(model(x), dim=1), y)   # torch.nn.functional
        >>> loss.backward()                                            # hand-written backward

    The mode is per thread, as torch's modes are. Nested blocks are allowed.
    """

    def __enter__(self) -> everywhere:
        base._open_modes(+1)
        try:
            return super().__enter__()
        except BaseException:
            base._open_modes(-1)
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            super().__exit__(*exc)
        finally:
            base._open_modes(-1)

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: tuple,
        args: tuple = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        adapter = OVERRIDES.get(func)
        if adapter is not None and not base.inside_handprop():
            try:
                out = adapter(*args, **kwargs)
            except Exception:  # noqa: BLE001 — torch's own call gives torch's result or error
                out = NotImplemented
            if out is not NotImplemented:
                return out
        return func(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# The adapters: torch's signatures, handprop's Functions
# --------------------------------------------------------------------------------------------
def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


override(TF.linear)(linear)
override(TF.conv2d)(conv2d)
override(TF.avg_pool2d)(avg_pool2d)
override(TF.binary_cross_entropy_with_logits)(binary_cross_entropy_with_logits)
override(TF.cross_entropy)(cross_entropy)
override(TF.nll_loss)(nll_loss)
override(TF.batch_norm)(batch_norm)
override(TF.layer_norm)(layer_norm)
override(TF.embedding)(embedding)
override(TF.gelu)(gelu)
override(TF.adaptive_avg_pool2d)(adaptive_avg_pool2d)


@override(TF.relu, torch.relu, Tensor.relu)
def _relu(input: Tensor, inplace: bool = False) -> Any:
    return NotImplemented if inplace else relu(input)


@override(TF.leaky_relu)
def _leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Any:
    return NotImplemented if inplace else leaky_relu(input, negative_slope)


@override(TF.sigmoid, torch.sigmoid, Tensor.sigmoid)
def _sigmoid(input: Tensor, *, out: Tensor | None = None) -> Any:
    return NotImplemented if out is not None else sigmoid(input)


@override(TF.tanh, torch.tanh, Tensor.tanh)
def _tanh(input: Tensor, *, out: Tensor | None = None) -> Any:
    return NotImplemented if out is not None else tanh(input)


@override(TF.softmax)
def _f_softmax(
    input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: torch.dtype | None = None
) -> Any:
    return softmax(input, dim, dtype) if _is_int(dim) else NotImplemented


@override(torch.softmax, Tensor.softmax)
def _softmax(input: Tensor, dim: int, dtype: torch.dtype | None = None) -> Any:
    return softmax(input, dim, dtype) if _is_int(dim) else NotImplemented


@override(TF.log_softmax)
def _f_log_softmax(
    input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: torch.dtype | None = None
) -> Any:
    return log_softmax(input, dim, dtype) if _is_int(dim) else NotImplemented


@override(torch.log_softmax, Tensor.log_softmax)
def _log_softmax(input: Tensor, dim: int, dtype: torch.dtype | None = None) -> Any:
    return log_softmax(input, dim, dtype) if _is_int(dim) else NotImplemented


@override(TF.mse_loss)
def _mse_loss(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Any:
    if weight is not None:
        return NotImplemented
    return mse_loss(input, target, size_average, reduce, reduction)


@override(TF.max_pool2d)
def _f_max_pool2d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


@override(TF.max_pool2d_with_indices)
def _max_pool2d_with_indices(
    input: Tensor,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


@override(torch.max_pool2d)
def _max_pool2d(
    input: Tensor,
    kernel_size: Any,
    stride: Any = (),
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
) -> Any:
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode)


@override(torch.flatten, Tensor.flatten)
def _flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1, *rest: Any) -> Any:
    if rest or not (_is_int(start_dim) and _is_int(end_dim)):
        return NotImplemented  # named dimensions
    return flatten(input, start_dim, end_dim)


@override(TF.dropout)
def _f_dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
    return NotImplemented if inplace else dropout(input, p, training)


@override(torch.dropout)
def _dropout(input: Tensor, p: float, train: bool) -> Any:
    return dropout(input, p, train)


def _recurrent(run: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.rnn_tanh`` / ``rnn_relu`` / ``lstm`` on a padded batch (what ``nn.RNN`` and
    ``nn.LSTM`` call); the packed-sequence form (8 arguments) stays torch's."""

    def adapter(*args: Any) -> Any:
        # padded: (input, hx, params, has_biases: bool, …); packed: (data, batch_sizes, hx,
        # params, …) — the same count, told apart by the fourth argument
        if len(args) != 9 or not isinstance(args[3], bool):
            return NotImplemented
        return run(*args)

    return adapter


override(torch.rnn_tanh)(_recurrent(rnn_tanh))
override(torch.rnn_relu)(_recurrent(rnn_relu))
override(torch.lstm)(_recurrent(lstm))
