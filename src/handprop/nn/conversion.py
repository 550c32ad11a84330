"""Whole-model conversion: torch.nn layers ⇄ their handprop twins (``to_handprop``, ``to_torch``)."""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import nn

from handprop.functional.dispatch import everywhere
from handprop.nn.convolution import AvgPool2d, Conv2d, MaxPool2d
from handprop.nn.embedding import Embedding
from handprop.nn.gelu import GELU
from handprop.nn.layers import (
    Dropout,
    Flatten,
    LeakyReLU,
    Linear,
    LogSoftmax,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from handprop.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from handprop.nn.normalization import BatchNorm1d, BatchNorm2d, LayerNorm
from handprop.nn.pooling import AdaptiveAvgPool2d
from handprop.nn.recurrent import LSTM, RNN

__all__ = ["TWINS", "to_handprop", "to_torch"]


#: Each torch.nn layer with a handprop twin, and the twin: same constructor arguments, same
#: attribute, parameter and buffer names.
TWINS: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: Linear,
    nn.Sigmoid: Sigmoid,
    nn.Tanh: Tanh,
    nn.ReLU: ReLU,
    nn.LeakyReLU: LeakyReLU,
    nn.Softmax: Softmax,
    nn.LogSoftmax: LogSoftmax,
    nn.MSELoss: MSELoss,
    nn.BCEWithLogitsLoss: BCEWithLogitsLoss,
    nn.CrossEntropyLoss: CrossEntropyLoss,
    nn.NLLLoss: NLLLoss,
    nn.Conv2d: Conv2d,
    nn.MaxPool2d: MaxPool2d,
    nn.AvgPool2d: AvgPool2d,
    nn.Flatten: Flatten,
    nn.Dropout: Dropout,
    nn.RNN: RNN,
    nn.LSTM: LSTM,
    nn.BatchNorm1d: BatchNorm1d,
    nn.BatchNorm2d: BatchNorm2d,
    nn.LayerNorm: LayerNorm,
    nn.Embedding: Embedding,
    nn.GELU: GELU,
    nn.AdaptiveAvgPool2d: AdaptiveAvgPool2d,
}


def to_handprop(
    module: nn.Module,
    *,
    functional: bool = False,
    verbose: bool = False,
    example_inputs: tuple | None = None,
) -> nn.Module:
    """Swap every torch.nn layer of ``module`` that has a handprop twin (:data:`TWINS`), at any
    depth, for the twin, so its backward pass runs the hand-written derivatives.

    ``functional=True`` also runs the model's forward inside
    :func:`handprop.functional.everywhere`, so the functional calls written in it
    (``F.relu(x)``, ``torch.flatten(x, 1)``, ``F.log_softmax``) run handprop's Functions too
    (the wrapper is the instance attribute ``forward``: state dict and parameter names stay;
    :func:`to_torch` takes it off). ``verbose=True`` prints :func:`coverage`'s report: the
    layers, and with ``example_inputs`` (a tuple of the forward's arguments) the share of the
    forward pass's graph that runs handprop's Functions.

    Each twin is built by its public constructor from the layer's settings as they are now
    (``in_features``, ``padding``, ``dropout``, a loss's ``reduction``, …), then takes over the
    layer's own ``Parameter`` and buffer objects and its train/eval mode, so the state dict, its
    keys, the outputs and an optimizer built before (it steps the same Parameters) are
    unchanged. Hooks on the Parameters and on the containers are kept; forward and backward
    hooks registered on a swapped layer itself are not (torch has no public API to read them):
    register those after converting. Layers of exactly these classes are swapped; subclasses and
    layers with parametrizations (``weight_norm``, …) are left alone (parametrize after
    converting); a layer with parameters or buffers its class does not make (``prune``) or with
    a setting the twin does not support (a ``Conv2d`` with ``padding_mode="reflect"``) is an
    error. ``inplace=True`` of a ReLU is kept but ignored. No random numbers are drawn.

    Returns ``module``, changed in place, or the twin when ``module`` itself is such a layer.

    Examples::

        >>> model = to_handprop(model)                    # one line: hand-written backward
        >>> reference = to_torch(copy.deepcopy(model))    # and back, to compare gradients
    """
    converted = _swap(module, TWINS, "to_handprop", "")
    if functional and not isinstance(converted.__dict__.get("forward"), _ForwardEverywhere):
        converted.forward = _ForwardEverywhere(converted)
    if verbose:
        from handprop.nn.report import coverage

        coverage(converted, *(example_inputs or ()))
    return converted


class _ForwardEverywhere:
    """A module's own forward, run inside :func:`handprop.functional.everywhere` (what
    ``to_handprop(functional=True)`` sets as the module's ``forward``). It holds the module, not
    a bound method, so ``copy.deepcopy`` and pickling carry it over to the copy."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with everywhere():
            return type(self.module).forward(self.module, *args, **kwargs)


def to_torch(module: nn.Module) -> nn.Module:
    """The reverse of :func:`to_handprop`: every handprop layer of ``module`` back to its
    torch.nn twin, state kept the same way. ``QuadraticCost`` (half of ``MSELoss``) has no twin
    and stays; an :class:`MLP` stays an ``MLP`` whose ``layers`` Sequential holds torch.nn layers
    (its parameter names, ``layers.{2k}.weight``, do not change; :meth:`MLP.backprop` needs
    handprop layers); the forward of ``to_handprop(functional=True)`` is the class's again."""
    if isinstance(module.__dict__.get("forward"), _ForwardEverywhere):
        del module.forward
    return _swap(module, {twin: layer for layer, twin in TWINS.items()}, "to_torch", "")


def _swap(
    module: nn.Module, table: dict[type[nn.Module], type[nn.Module]], caller: str, path: str
) -> nn.Module:
    twin_class = table.get(type(module))
    if twin_class is not None:
        return _twin(module, twin_class, caller, path)
    for name, child in module.named_children():
        swapped = _swap(child, table, caller, f"{path}.{name}" if path else name)
        if swapped is not child:
            setattr(module, name, swapped)
    return module


def _twin(module: nn.Module, twin_class: type[nn.Module], caller: str, path: str) -> nn.Module:
    """``module`` rebuilt as ``twin_class`` by its constructor, holding ``module``'s own
    Parameters and buffers."""
    handprop_class = twin_class if type(module) in TWINS else type(module)
    where = (
        f"{caller}: cannot swap the {type(module).__name__} at {repr(path) if path else 'the top'}"
    )
    # On the meta device the constructor allocates nothing and draws no random numbers: its
    # parameters are placeholders, replaced below. Its warnings (an RNN's dropout with one
    # layer) were given when the layer itself was built.
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        try:
            twin = twin_class(**_settings(module, handprop_class))
        except (ValueError, TypeError, RuntimeError) as error:  # a setting it does not take
            raise type(error)(f"{where}: {error}") from None
    params = dict(module.named_parameters(recurse=False, remove_duplicate=False))
    buffers = dict(module.named_buffers(recurse=False, remove_duplicate=False))
    children = dict(module.named_children())
    made = {n for n, _ in twin.named_parameters(recurse=False, remove_duplicate=False)}
    made |= {n for n, _ in twin.named_buffers(recurse=False, remove_duplicate=False)}
    have = params.keys() | buffers.keys() | children.keys()
    if have != made:
        raise ValueError(
            f"{where}: it holds {', '.join(sorted(have)) or 'nothing'} where its class makes "
            f"{', '.join(sorted(made)) or 'nothing'}; convert it before pruning it or adding to it"
        )
    for name, tensor in (params | buffers).items():
        setattr(twin, name, tensor)  # torch's RNN also updates its list of flat weights
    if isinstance(twin, nn.RNNBase):
        twin.flatten_parameters()  # cuDNN's one weight buffer, on a GPU; else a no-op
    return twin.train(module.training)


def _settings(module: nn.Module, handprop_class: type[nn.Module]) -> dict[str, object]:
    """The constructor arguments that rebuild ``module`` as it is now, named by the handprop
    class's signature: each twin takes torch's arguments and keeps each as the attribute of the
    same name (``bias`` of a Linear or Conv2d: the Parameter, or None)."""
    settings: dict[str, object] = {}
    for name, arg in inspect.signature(handprop_class).parameters.items():
        if (
            name in ("device", "dtype", "size_average", "reduce")
            or name.startswith("_")
            or arg.kind in (arg.VAR_POSITIONAL, arg.VAR_KEYWORD)
        ):
            # placement: the parameters'; the legacy pair: folded into reduction; an
            # Embedding's _weight / _freeze: the Parameter itself, taken over below
            continue
        value = getattr(module, name)
        settings[name] = value if name != "bias" or isinstance(value, bool) else value is not None
    return settings
