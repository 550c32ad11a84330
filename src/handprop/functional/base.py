"""Plumbing shared by every handprop Function: no mathematics here.

:class:`HandFunction` is the base class of every Function (argument passing and mixed
precision); the helpers check and apply a loss's ``reduction`` and the usual shape rules.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import Function

REDUCTIONS = ("mean", "sum", "none")


class HandFunction(Function):
    """The base of every handprop Function: two pieces of plumbing, no mathematics.

    * ``apply`` with every argument positional (as the wrappers below call it). torch's
      ``Function.apply`` binds the arguments to ``forward``'s signature on every call when
      ``setup_context`` is defined (to fill in defaults): ``inspect.signature`` then costs
      ~10 µs, more than a small layer's arithmetic. With all arguments given there is nothing
      to fill in, so this goes straight to the C++ ``apply``; under functorch transforms
      (vmap, grad, …) it takes torch's full path.
    * Mixed precision: a Function applied under ``torch.autocast`` runs as its ``_autocast``
      twin, whose backward replays the forward's autocast state (what ``torch.amp.custom_bwd``
      does for old-style Functions), so a forward in bf16 and a backward after leaving the
      autocast region still meet in one dtype. Outside autocast nothing extra runs.
    """

    _autocast: type[HandFunction] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("_is_autocast_twin") or "backward" not in cls.__dict__:
            return
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
        }
        cls._autocast = type(cls)(cls.__name__, (cls,), body)

    @classmethod
    def apply(cls, *args: Any) -> Any:
        fn = cls
        if cls._autocast is not None and torch.is_autocast_enabled(args[0].device.type):
            fn = cls._autocast
        if torch._C._are_functorch_transforms_active():
            return super(HandFunction, fn).apply(*args)  # noqa: UP008 — fn may be the twin
        return super(Function, fn).apply(*args)


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _count(loss_shape: torch.Size, reduction: str) -> int:
    """How many terms a ``mean`` divides by (1 otherwise)."""
    return max(loss_shape.numel(), 1) if reduction == "mean" else 1


def _fp32_under_autocast(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Exponentials, logs and sums of squares in float32 under autocast, as torch's autocast
    runs softmax and the losses (bf16 log-sum-exp is off by ~0.3 %)."""
    dev = tensors[0].device.type
    if not torch.is_autocast_enabled(dev):
        return tensors
    return tuple(t.float() if t.is_floating_point() else t for t in tensors)


def _check_same_shape(input: Tensor, target: Tensor, name: str) -> None:
    if input.shape != target.shape:
        raise ValueError(
            f"{name}: target size {tuple(target.shape)} must be the same as input size "
            f"{tuple(input.shape)}"
        )
