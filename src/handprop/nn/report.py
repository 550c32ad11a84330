"""What runs handprop's hand-written backward in a model: :func:`coverage`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from handprop.functional import function_of

__all__ = ["Coverage", "coverage", "graph_nodes"]


@dataclass(frozen=True)
class Coverage:
    """Which of a model's layers are handprop's, and what share of a forward pass's autograd
    graph runs handprop's Functions.

    ``handprop`` and ``torch`` list the layers, ``(name, type name)``: every module without
    children, and every module with parameters or buffers of its own. ``nodes`` counts the
    operations in the graph of one forward pass (``AccumulateGrad`` leaves left out) and
    ``handprop_nodes`` those whose backward is a handprop Function's (both None without
    inputs); ``torch_nodes`` names the others, with their counts.
    """

    model: str
    handprop: list[tuple[str, str]] = field(default_factory=list)
    torch: list[tuple[str, str]] = field(default_factory=list)
    nodes: int | None = None
    handprop_nodes: int | None = None
    torch_nodes: dict[str, int] = field(default_factory=dict)

    @property
    def share(self) -> float | None:
        """``handprop_nodes / nodes`` (None without inputs or without nodes)."""
        if not self.nodes or self.handprop_nodes is None:
            return None
        return self.handprop_nodes / self.nodes

    def __str__(self) -> str:
        layers = len(self.handprop) + len(self.torch)
        head = f"{self.model}: {len(self.handprop)} of {layers} layers are handprop's"
        if self.nodes is not None:
            share = f" ({self.share:.0%})" if self.share is not None else ""
            head += (
                f"; {self.handprop_nodes} of {self.nodes} graph nodes of a forward pass run "
                f"handprop's backward{share}"
            )
        width = max((len(name) for name, _ in self.handprop + self.torch), default=0)
        lines = [head]
        lines += [f"  handprop  {name:<{width}}  {kind}" for name, kind in self.handprop]
        lines += [f"  torch     {name:<{width}}  {kind}" for name, kind in self.torch]
        if self.torch_nodes:
            named = ", ".join(f"{name} ×{n}" for name, n in sorted(self.torch_nodes.items()))
            lines.append(f"  torch's graph nodes: {named}")
        return "\n".join(lines)


def _is_handprop(module: nn.Module) -> bool:
    return type(module).__module__.split(".")[0] == "handprop"


def _layers(model: nn.Module) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(handprop's, torch's) layers of ``model``, each ``(name, type name)``."""
    from handprop.nn.conversion import TWINS

    ours, theirs = [], []
    for name, module in model.named_modules():
        has_own_state = any(True for _ in module.parameters(recurse=False)) or any(
            True for _ in module.buffers(recurse=False)
        )
        if next(module.children(), None) is not None and not has_own_state:
            continue  # a container: its layers are listed themselves
        kind = type(module).__name__
        if _is_handprop(module):
            ours.append((name or "(top)", kind))
        else:
            twin = TWINS.get(type(module))  # exactly that class: to_handprop would swap it
            kind += f" (twin: handprop.nn.{twin.__name__})" if twin is not None else ""
            theirs.append((name or "(top)", kind))
    return ours, theirs


def graph_nodes(*outputs: Any) -> list[Any]:
    """Every operation node of the autograd graph behind ``outputs`` (tensors, or tuples /
    lists / dicts of them), each once; ``AccumulateGrad`` (a leaf's gradient sink) left out."""
    stack: list[Any] = []

    def collect(value: Any) -> None:
        if isinstance(value, Tensor):
            stack.append(value.grad_fn)
        elif isinstance(value, (tuple, list)):
            for v in value:
                collect(v)
        elif isinstance(value, dict):
            for v in value.values():
                collect(v)

    collect(outputs)
    seen: set[Any] = set()
    nodes = []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ != "AccumulateGrad":
            nodes.append(node)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return nodes


def coverage(model: nn.Module, *example_inputs: Any, show: bool = True) -> Coverage:
    """Which layers of ``model`` are handprop's, and — given inputs for one forward pass — what
    share of that pass's autograd graph runs handprop's hand-written backward. Printed unless
    ``show=False``; returned as a :class:`Coverage`.

    The forward pass runs with gradients on, as in training, but leaves the model as it was:
    random numbers are drawn from a forked generator and buffers (a BatchNorm's running
    statistics) are put back. Inputs that are not tensors (a target, a flag) are passed on.

    Examples::

        >>> model = hnn.to_handprop(model, functional=True)
        >>> hnn.coverage(model, torch.randn(64, 1, 28, 28))
        Net: 6 of 6 layers are handprop's; 12 of 12 graph nodes of a forward pass run ...
    """
    ours, theirs = _layers(model)
    report: dict[str, Any] = {}
    if example_inputs:
        buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
        devices = [
            t.device.index or 0
            for t in example_inputs
            if isinstance(t, Tensor) and t.device.type == "cuda"
        ]
        try:
            with torch.random.fork_rng(devices=devices), torch.enable_grad():
                output = model(*example_inputs)
        finally:
            with torch.no_grad():
                for name, b in model.named_buffers():
                    if name in buffers:
                        b.copy_(buffers[name])
        nodes = graph_nodes(output)
        theirs_nodes = Counter(type(n).__name__ for n in nodes if function_of(n) is None)
        report = {
            "nodes": len(nodes),
            "handprop_nodes": len(nodes) - sum(theirs_nodes.values()),
            "torch_nodes": dict(theirs_nodes),
        }
    result = Coverage(type(model).__name__, ours, theirs, **report)
    if show:
        print(result)
    return result
