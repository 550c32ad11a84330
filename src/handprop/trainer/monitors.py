"""Monitors: what happens inside each layer while a network learns.

Every ``every_n`` updates (``monitors=on monitors.every_n=50``) one update is watched, and for
each layer ``k`` (its k-th layer with weights, counted from 1 at the input side; for an MLP the
k-th Linear, ``layerL`` being the output layer) these go to the loggers at that update's
number, under ``monitors/layer<k>/<quantity>``:

* ``weight_grad_norm``, ``bias_grad_norm``: ``‖∂C/∂W‖`` and ``‖∂C/∂b‖`` (Frobenius norms of
  the gradients the update used, after clipping when ``trainer.gradient_clip_val`` is set);
* ``delta_mean_abs``: the mean ``|δ|`` of the error signal ``δ = ∂C/∂z`` the layer's backward
  receives, recorded where the hand-written backward computes it (:meth:`MLP.backprop`'s δ
  recursion, or the Functions' backward under autograd);
* ``update_ratio``: ``‖ΔW‖ / ‖W‖``, how far the update moved the weights relative to their size;
* ``dead_fraction``: the fraction of the layer's ReLU units that output 0 for every row of the
  batch (only for layers followed by a ReLU);
* histograms (TensorBoard only) ``weight``, ``activation`` (hidden layers) and ``delta``.

An unwatched update pays one integer test; a watched one copies the weights before the step,
and on the autograd path registers forward hooks for its duration only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import HistogramProto, Summary
from torch import Tensor, nn
from torch.utils.tensorboard import SummaryWriter

import handprop.nn as hnn

#: Modules read as a layer's activation (the layer is the last one with weights before it).
ACTIVATION_MODULES = (
    *hnn.ACTIVATIONS.values(),
    nn.ReLU,
    nn.LeakyReLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.GELU,
    nn.SiLU,
    nn.ELU,
)
RELUS = (hnn.ReLU, nn.ReLU)

#: Most equal-width bins of a histogram (fewer for few values: Rice's rule, 2·n^⅓).
HISTOGRAM_BINS = 30


def layers(net: nn.Module) -> tuple[list[tuple[str, nn.Module]], dict[int, nn.Module]]:
    """The layers with weights (``layer1``, ``layer2``, …, in module order) and, by layer
    index (from 0), the activation module that follows each one."""
    found: list[tuple[str, nn.Module]] = []
    acts: dict[int, nn.Module] = {}
    for m in net.modules():
        if isinstance(getattr(m, "weight", None), nn.Parameter):
            found.append((f"layer{len(found) + 1}", m))
        elif isinstance(m, ACTIVATION_MODULES) and found:
            acts.setdefault(len(found) - 1, m)
    return found, acts


class Monitors:
    """Watches one update in every ``every_n`` (updates 0, N, 2N, …).

    Args:
        every_n: updates between two watched ones.
        histograms: also write weight, activation and δ histograms (TensorBoard loggers).
    """

    def __init__(self, every_n: int = 50, histograms: bool = True) -> None:
        if every_n <= 0:
            raise ValueError(f"monitors.every_n must be a positive integer, got {every_n}")
        self.every_n, self.histograms = every_n, histograms
        self._layers: tuple[nn.Module, Any] | None = None  # (net, layers(net)), found once

    def watch(self, net: nn.Module, update: int, hooks: bool) -> Watch | None:
        """A :class:`Watch` of update number ``update`` (from 0) if it is due, else None.
        ``hooks``: record δ and activations by module hooks (the autograd path); otherwise
        the caller passes the watch as :meth:`MLP.backprop`'s ``record``."""
        if update % self.every_n:
            return None
        if self._layers is None or self._layers[0] is not net:
            self._layers = (net, layers(net))
        return Watch(self._layers[1], update, hooks, self.histograms)


class Watch:
    """One watched update: the weights before it, and the δ and activations it computes.

    Call it as ``record(kind, l, tensor)`` (``kind``: ``"delta"`` or ``"activation"``, ``l``:
    the layer index from 0); :meth:`close` after the optimizer step logs everything.
    """

    def __init__(
        self,
        found: tuple[list[tuple[str, nn.Module]], dict[int, nn.Module]],
        update: int,
        hooks: bool,
        histograms: bool,
    ) -> None:
        self.update, self.histograms = update, histograms
        self.layers, self.acts = found  # layers(net)
        self.before = [m.weight.detach().clone() for _, m in self.layers]
        self.deltas: dict[int, Tensor] = {}
        self.activations: dict[int, Tensor] = {}
        self.handles: list[Any] = []
        if hooks:
            for l, (_, m) in enumerate(self.layers):
                self.handles.append(m.register_forward_hook(self._delta_hook(l)))
            for l, m in self.acts.items():
                self.handles.append(m.register_forward_hook(self._activation_hook(l)))

    def __call__(self, kind: str, l: int, tensor: Tensor) -> None:
        (self.deltas if kind == "delta" else self.activations)[l] = tensor.detach()

    def _delta_hook(self, l: int) -> Any:
        # δ = ∂C/∂z, z the layer's output: what autograd hands the layer's backward. A hook on
        # the output tensor, not a full backward hook: the first layer's input needs no
        # gradient, and a full backward hook warns about that on every watched update.
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            z = output[0] if isinstance(output, tuple) else output
            if z.requires_grad:
                z.register_hook(lambda g: self("delta", l, g))

        return hook

    def _activation_hook(self, l: int) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            self("activation", l, output)

        return hook

    @torch.no_grad()
    def close(self, loggers: list[Any]) -> dict[str, float]:
        """Remove the hooks, compute the per-layer values and write them (and the histograms)
        to ``loggers`` at step ``update``; returns the scalars."""
        for h in self.handles:
            h.remove()
        names, values = [], []
        for l, ((name, m), w0) in enumerate(zip(self.layers, self.before, strict=True)):
            tag = f"monitors/{name}/"
            for pname in ("weight", "bias"):
                p = getattr(m, pname, None)
                if isinstance(p, Tensor) and p.grad is not None:
                    names.append(tag + f"{pname}_grad_norm")
                    values.append(torch.linalg.vector_norm(p.grad))
            names.append(tag + "update_ratio")
            step = torch.linalg.vector_norm(m.weight - w0)
            values.append(step / torch.linalg.vector_norm(w0).clamp_min(1e-12))
            if l in self.deltas:
                names.append(tag + "delta_mean_abs")
                values.append(self.deltas[l].abs().mean())
            a = self.activations.get(l)
            if a is not None and isinstance(self.acts.get(l), RELUS):
                names.append(tag + "dead_fraction")
                values.append((a.reshape(len(a), -1) <= 0).all(0).float().mean())
        # One device-to-host copy for all of them.
        scalars = dict(zip(names, torch.stack(values).tolist(), strict=True))
        for logger in loggers:
            if not isinstance(logger, TensorBoardLogger):
                logger.log_metrics(scalars, step=self.update)
                continue
            writer = logger.experiment
            if not isinstance(writer, SummaryWriter):
                continue  # a DDP rank other than 0: Lightning's stand-in writes nothing
            # One event for everything: an event per value costs a queue hand-off to the
            # writer thread each (~10 scalars and ~5 histograms here).
            summary = [Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
            if self.histograms:
                summary += self._histograms()
            writer.file_writer.add_summary(Summary(value=summary), self.update)
        return scalars

    def _histograms(self) -> list[Summary.Value]:
        """Weight, activation and δ histograms of every layer, as TensorBoard summary values
        (in numpy: ~10× cheaper than ``SummaryWriter.add_histogram`` on a small layer)."""
        out = []
        for l, (name, m) in enumerate(self.layers):
            series = {
                "weight": m.weight,
                "activation": self.activations.get(l),
                "delta": self.deltas.get(l),
            }
            for q, t in series.items():
                proto = None if t is None else histogram(t.detach().float().cpu().numpy().ravel())
                if proto is not None:
                    out.append(Summary.Value(tag=f"monitors/{name}/{q}", histo=proto))
        return out


def histogram(a: np.ndarray) -> HistogramProto | None:
    """TensorBoard's histogram of the values ``a``: equal bins from min to max, as many as
    Rice's rule ``⌈2·n^⅓⌉`` up to :data:`HISTOGRAM_BINS` (None when a value is not finite).
    Few bins for few values also keeps the event small: the TensorBoard writer checksums
    every byte in Python, in a thread that competes with training for the interpreter."""
    if a.size == 0:  # e.g. the δ of a batch of no rows
        return None
    bins = min(HISTOGRAM_BINS, math.ceil(2 * a.size ** (1 / 3)))
    lo, hi = float(a.min()), float(a.max())
    if not math.isfinite(lo + hi):
        return None
    if hi == lo:  # one value: a bin around it
        lo, hi = lo - 0.5, hi + 0.5
    width = (hi - lo) / bins
    index = ((a - lo) / width).astype(np.intp)
    counts = np.bincount(np.minimum(index, bins - 1, out=index), minlength=bins)
    # TensorBoard reads right edges; an empty first bin carries the left one.
    return HistogramProto(
        min=lo,
        max=hi,
        num=a.size,
        sum=float(a.sum()),
        sum_squares=float(a.dot(a)),
        bucket_limit=[lo + width * i for i in range(bins + 1)],
        bucket=[0, *counts.tolist()],
    )
