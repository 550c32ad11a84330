"""Where ``∂C/∂W`` comes from, and the step that uses it: one strategy per run, used by every
update (:meth:`HandpropModule.update`, and both steps of a GAN's update).

* :class:`ByRecursion` — the notes' δ recursion written out (``MLP.backprop``, chained
  through both of a GAN's networks): each Function's forward and derivative rule, no autograd
  graph; then the clip and the optimizer's own step.
* :class:`ByAutograd` — ``C.backward()`` through the Functions' hand-written ``backward``,
  through Lightning (DDP's gradient all-reduce and mixed precision's loss scaling hook into
  its backward and step).

Both give the same gradients (``tests/test_backprop.py``); ``backprop=auto`` picks the
recursion where it applies (:meth:`HandpropModule.uses_recursion`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn


class ByRecursion:
    """``∂C/∂W`` by the δ recursion, then ``W ← W − η ∂C/∂W``."""

    written_out = True

    def step(
        self,
        module: Any,
        opt: Any,
        net: nn.Module,
        recursion: Callable[[], Tensor],
        cost: Callable[[], Tensor],
    ) -> Tensor:
        """``recursion()`` computes ``C`` and writes every ``.grad`` of ``net``; clip (before
        the step), then step. Returns ``C``."""
        loss = recursion()
        if module.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(net.parameters(), module.gradient_clip_val)
        # The optimizer itself: Lightning's wrapper would dispatch its hooks for every update
        # (docs/architecture.md: more than a small network's whole step).
        opt.optimizer.step()
        return loss


class ByAutograd:
    """``∂C/∂W`` by ``C.backward()`` through the Functions, then the step, through Lightning."""

    written_out = False

    def step(
        self,
        module: Any,
        opt: Any,
        net: nn.Module,
        recursion: Callable[[], Tensor],
        cost: Callable[[], Tensor],
    ) -> Tensor:
        """``cost()`` computes ``C`` with its graph; backward, clip (before the step), step.
        Returns ``C``, detached."""
        opt.zero_grad(set_to_none=True)
        loss = cost()
        module.manual_backward(loss)
        if module.gradient_clip_val:
            module.clip_gradients(opt, gradient_clip_val=module.gradient_clip_val)
        opt.step()
        return loss.detach()
