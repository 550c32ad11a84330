"""Plumbing shared by every handprop Function: no mathematics here.

:class:`HandFunction` is the base class of every Function (how torch runs it: plain calls,
``torch.func`` transforms, forward-mode AD, ``torch.compile``, mixed precision);
:func:`function_of` names the Function behind a graph node; the helpers check and apply a loss's
``reduction`` and the usual shape rules.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function
from torch.autograd.function import BackwardCFunction

REDUCTIONS = ("mean", "sum", "none")

#: Every Function class written by hand, by name (not the generated twins below).
_BY_NAME: dict[str, type[HandFunction]] = {}

#: How many ``handprop.functional.everywhere()`` modes are open, in any thread. While none is,
#: a Function's call pays one test of this global and nothing more.
_modes_open = 0


#: Whether a handprop Function's call is under way while a mode is open: ``everywhere()`` then
#: leaves the torch calls that the Function's own forward makes to torch (no re-dispatch). One
#: flag for the process, not per thread (``torch.compile`` traces a plain global, and guards on
#: it, where a ``threading.local`` fails its guards): while one thread runs a Function, a call
#: in another thread's ``everywhere()`` block runs torch's op instead — the same values.
_shielded = False


def _open_modes(change: int) -> None:
    """Count an ``everywhere()`` mode opened (+1) or closed (−1)."""
    global _modes_open
    _modes_open += change


def inside_handprop() -> bool:
    """Whether a handprop Function is running (while an ``everywhere()`` mode is open)."""
    return _shielded


class _HandFunctionMeta(type(Function)):  # type: ignore[misc]
    """torch's own metaclass, under another name: ``torch.compile`` (Dynamo) then traces
    :meth:`HandFunction.apply` like any classmethod, where it would otherwise take a class of
    exactly torch's metaclass for a bare ``Function`` and refuse to trace one with a ``jvp``."""


class HandFunction(Function, metaclass=_HandFunctionMeta):
    """The base of every handprop Function.

    A subclass writes the mathematics in torch's own form: ``forward(*inputs)``,
    ``setup_context(ctx, inputs, output)``, ``backward(ctx, *grads)`` (reverse mode),
    ``jvp(ctx, *tangents)`` (forward mode; what it needs is saved with ``ctx.save_for_forward``)
    and ``vmap(info, in_dims, *inputs)`` or ``generate_vmap_rule = True`` (``torch.func.vmap``).
    Backward and jvp must not write into a tensor that may be a ``vmap`` batch when another
    operand is one (``jacrev`` batches ``g`` but not what was saved): write into new tensors.
    Everything below is plumbing, so that the mathematics runs wherever a torch op runs, on
    torch's public API only and with as little overhead per call as it allows:

    * **Plain calls** run a generated old-style twin (``forward(ctx, …)`` calling
      ``forward`` then ``setup_context``; same ``backward``). torch's ``Function.apply`` binds
      the arguments to ``forward``'s signature on every call of a class with
      ``setup_context`` (~10 µs, more than a small layer's arithmetic); an old-style class is
      passed straight through.
    * **torch.func transforms and forward-mode tangents**: torch refuses an old-style class
      under a transform (before running it), and a class without ``jvp`` when an input
      carries a tangent (after its forward: forward mode pays one extra forward per call).
      :meth:`apply` then takes torch's full path with the Function itself, whose ``vmap`` and
      ``jvp`` torch uses.
    * **torch.compile** traces :meth:`apply` (see the metaclass) and so the twin, which has
      no ``jvp`` for Dynamo to refuse; the graph holds the hand-written ``backward``.
    * **Mixed precision**: under ``torch.autocast`` the Function runs as its autocast twin,
      whose backward replays the forward's autocast state (what ``torch.amp.custom_bwd`` does
      for old-style Functions), so a forward in bf16 and a backward after leaving the autocast
      region still meet in one dtype. Outside autocast nothing extra runs.
    * Arguments left out of ``apply`` take ``forward``'s defaults, as in torch.
    * **handprop.functional.everywhere()**: while such a mode is open, :meth:`apply` marks the
      call as handprop's own (see ``_shielded``), so that the torch ops its forward calls are
      not dispatched back to a handprop Function. With no mode open this costs one test.
    """

    _autocast: type[HandFunction]
    _plain: type[Function]
    _defaults: tuple = ()
    _n_inputs: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "backward" not in cls.__dict__:
            return
        if not cls.__dict__.get("_is_autocast_twin"):
            _BY_NAME[cls.__name__] = cls
            params = inspect.signature(cls.forward).parameters.values()
            cls._n_inputs = len(params)
            cls._defaults = tuple(p.default for p in params if p.default is not p.empty)
            cls._autocast = _autocast_twin(cls)
        cls._plain = _old_style_twin(cls)

    @classmethod
    def apply(cls, *args: Any) -> Any:
        global _shielded
        if _modes_open and not _shielded:
            # under everywhere(): this Function's own torch calls (its forward's conv2d, …)
            # are torch's, not dispatched back to a handprop Function
            _shielded = True
            try:
                return cls.apply(*args)
            finally:
                _shielded = False
        x = args[0]  # every handprop Function's first input is a tensor
        # (_autocast_on(x), inlined: this runs on every call of every Function)
        on = torch.is_autocast_enabled("cpu" if x.is_cpu else x.device.type)
        fn = cls._autocast if on else cls
        if len(args) < cls._n_inputs:
            args += cls._defaults[len(args) - cls._n_inputs :]
        try:
            return fn._plain.apply(*args)
        except RuntimeError:
            # A torch.func transform or a tangent. A real error (a shape mismatch) runs the
            # forward once more below and is raised from there: no public API tells the two
            # apart before the call, and the plain call must stay cheap.
            pass
        return super(HandFunction, fn).apply(*args)  # noqa: UP008 — fn may be the twin


def _old_style_twin(cls: type[HandFunction]) -> type[Function]:
    """``cls`` as an old-style Function: one ``forward(ctx, *inputs)``, no ``setup_context``
    (so torch does not bind arguments) and no ``jvp`` (so Dynamo traces it)."""
    forward, setup_context = cls.forward, cls.setup_context

    def forward_with_ctx(ctx: Any, *inputs: Any) -> Any:
        output = forward(*inputs)
        setup_context(ctx, inputs, output)
        return output

    body = {
        "forward": staticmethod(forward_with_ctx),
        "backward": staticmethod(cls.backward),
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
    }
    return type(Function)(cls.__name__, (Function,), body)


def _autocast_twin(cls: type[HandFunction]) -> type[HandFunction]:
    """``cls`` recording the forward's autocast state and running its backward under it."""
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
        "__module__": cls.__module__,
        "__qualname__": cls.__qualname__,
    }
    return type(cls)(cls.__name__, (cls,), body)


def function_of(node: Any) -> type[HandFunction] | None:
    """The handprop Function whose hand-written ``backward`` the autograd node ``node`` runs
    (e.g. ``loss.grad_fn``), or None for any other node.

    Examples::

        >>> out = handprop.functional.relu(torch.randn(3, requires_grad=True))
        >>> function_of(out.grad_fn)
        <class 'handprop.functional.activations.ReLUFunction'>
    """
    if not isinstance(node, BackwardCFunction):
        return None
    # torch names a Function's node class after it; every twin keeps the Function's name
    name = type(node).__name__.removesuffix("Backward")
    return _BY_NAME.get(name)


def _autocast_on(tensor: Tensor) -> bool:
    """Whether autocast is on for ``tensor``'s device (``.is_cpu`` first: cheaper than
    ``.device``, which builds a new object)."""
    return torch.is_autocast_enabled("cpu" if tensor.is_cpu else tensor.device.type)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _legacy_reduction(size_average: bool | None, reduce: bool | None, reduction: str) -> str:
    """``reduction``, checked; or, where torch's deprecated ``size_average`` / ``reduce`` pair
    is given, that pair mapped to a reduction as torch maps it, with torch's warning."""
    if size_average is None and reduce is None:
        _check_reduction(reduction)
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    ret = ("mean" if size_average else "sum") if reduce else "none"
    warnings.warn(
        f"size_average and reduce args will be deprecated, please use reduction='{ret}' instead.",
        stacklevel=3,
    )
    return ret


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _count(loss_shape: torch.Size, reduction: str) -> int:
    """How many terms a ``mean`` divides by (1 otherwise)."""
    return max(loss_shape.numel(), 1) if reduction == "mean" else 1


def _fp32_under_autocast(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """Exponentials, logs and sums of squares in float32 under autocast, as torch's autocast
    runs softmax and the losses (bf16 log-sum-exp is off by ~0.3 %)."""
    if not _autocast_on(tensors[0]):
        return tensors
    return tuple(t.float() if t is not None and t.is_floating_point() else t for t in tensors)


def _check_same_shape(
    input: Tensor, target: Tensor, name: str, error: type[Exception] | None = None
) -> None:
    """``input`` and ``target`` of one shape. Otherwise ``error`` (BCE: torch's ValueError); by
    default torch's RuntimeError where the shapes do not broadcast, and a ValueError where they
    do: torch's squared error then only warns and broadcasts, which (N,) against (N, 1) turns
    into an N × N loss."""
    if input.shape == target.shape:
        return
    message = (
        f"{name}: target size {tuple(target.shape)} must be the same as input size "
        f"{tuple(input.shape)}"
    )
    if error is None:
        try:
            torch.broadcast_shapes(input.shape, target.shape)
        except RuntimeError:
            raise RuntimeError(message + "; they do not broadcast either") from None
        error = ValueError
        message += " (torch would broadcast them, with a warning)"
    raise error(message)
