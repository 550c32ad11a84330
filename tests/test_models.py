"""Two whole models as their sources write them, converted with ``handprop.nn.to_handprop``,
train in step with torch: ResNet-18 as torchvision defines it (tests/torchvision_resnet.py:
BasicBlock, strided convolutions with a 1×1 downsample, batch norm, adaptive pooling) and a
GPT as nanoGPT defines it (tests/nanogpt.py: its own LayerNorm with optional bias, causal
self-attention, an MLP with GELU, dropout, token and position embeddings, tied weights).

Each is built once from torch.nn, copied, and the copy converted: every layer with a twin
becomes the twin (holding the same Parameters and buffers), and every node of the training
graph is a handprop Function except the few torch ops named in the test (reshapes, the
residual additions, the attention product). A few SGD steps then give the same losses,
gradients, parameters and running statistics as torch, float64.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import nanogpt
import pytest
import torch
import torchvision_resnet
from torch import nn

import handprop.functional as HF
import handprop.nn as hnn
from handprop.functional import function_of

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _nodes(tensor: torch.Tensor) -> Iterator[object]:
    """Every node of the autograd graph behind ``tensor``, once."""
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(next_node for next_node, _ in node.next_functions)


def _torch_nodes(tensor: torch.Tensor) -> set[str]:
    """The names of the graph's nodes that are not handprop Functions (nor the leaves'
    gradient accumulators)."""
    names = {type(n).__name__ for n in _nodes(tensor) if function_of(n) is None}
    return names - {"AccumulateGrad"}


def _converted(model: nn.Module) -> nn.Module:
    """A converted copy, checked: no layer with a twin is left, the Parameters' names and
    ties are kept."""
    ours = hnn.to_handprop(copy.deepcopy(model))
    assert not [name for name, m in ours.named_modules() if type(m) in hnn.TWINS]
    assert list(ours.state_dict()) == list(model.state_dict())
    return ours


def _train_side_by_side(models, step_loss, steps: int, lr: float) -> None:
    """``steps`` SGD steps of both models on ``step_loss(model, step)``: each step the same
    loss, the same gradients (by name) and then the same parameters and buffers."""
    opts = [torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9) for m in models]
    for step in range(steps):
        seen = []
        for model, opt in zip(models, opts, strict=True):
            opt.zero_grad()
            loss = step_loss(model, step)
            loss.backward()
            seen.append((loss.detach(), {k: p.grad for k, p in model.named_parameters()}))
            opt.step()
        torch.testing.assert_close(seen[0], seen[1], msg=lambda m, s=step: f"step {s}: {m}")
        torch.testing.assert_close(models[0].state_dict(), models[1].state_dict())


# --------------------------------------------------------------------------------------------
# ResNet-18
# --------------------------------------------------------------------------------------------
def test_resnet18_converts_fully_and_trains_in_step_with_torch():
    torch.manual_seed(0)
    theirs = torchvision_resnet.resnet18(num_classes=10).to(F64)
    ours = _converted(theirs)
    twins = {type(m) for m in ours.modules()}
    assert {hnn.Conv2d, hnn.BatchNorm2d, hnn.ReLU, hnn.MaxPool2d, hnn.AdaptiveAvgPool2d} <= twins
    assert hnn.Linear in twins
    # 40×40 rather than 32×32: layer4's maps are 2×2, so the global pool averages 4 cells
    # (32×32 leaves 1×1 there) and the last batch norms see 8 values per channel
    x = torch.randn(2, 3, 40, 40, generator=_gen(1), dtype=F64)
    y = torch.randint(0, 10, (2,), generator=_gen(2))
    losses = (HF.cross_entropy, nn.functional.cross_entropy)

    graphs = {}

    def step_loss(model, step):
        loss_fn = losses[0] if model is ours else losses[1]
        loss = loss_fn(model(x + 0.1 * step), y)
        graphs.setdefault(model is ours, _torch_nodes(loss))
        return loss

    _train_side_by_side([ours, theirs], step_loss, steps=3, lr=0.05)
    # the graph: handprop Functions, and torch's for `out += identity` and torch.flatten only
    assert graphs[True] == {"AddBackward0", "ViewBackward0"}
    assert graphs[False] > {"ConvolutionBackward0", "NativeBatchNormBackward0"}  # torch's own
    assert int(ours.bn1.num_batches_tracked) == 3
    for model in (ours, theirs):
        model.eval()  # the running statistics normalise
    torch.testing.assert_close(ours(x), theirs(x))


# --------------------------------------------------------------------------------------------
# nanoGPT
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_nanogpt_converts_fully_and_trains_in_step_with_torch(monkeypatch, bias):
    """nanoGPT's layers converted, and its ``F`` (``torch.nn.functional``) swapped for
    ``handprop.functional`` while the handprop copy runs, as a user would change that import:
    its LayerNorm's ``F.layer_norm`` and the loss's ``F.cross_entropy`` run handprop's. The
    attention product stays torch's (``scaled_dot_product_attention``); dropout is on."""
    config = nanogpt.GPTConfig(
        block_size=8, vocab_size=32, n_layer=2, n_head=2, n_embd=16, dropout=0.1, bias=bias
    )
    torch.manual_seed(0)
    theirs = nanogpt.GPT(config).to(F64)
    ours = _converted(theirs)
    assert ours.transformer.wte.weight is ours.lm_head.weight  # the tie survives
    assert isinstance(ours.transformer.wte, hnn.Embedding)
    assert isinstance(ours.transformer.h[0].mlp.gelu, hnn.GELU)
    assert isinstance(ours.transformer.h[0].attn.c_attn, hnn.Linear)
    assert isinstance(ours.transformer.drop, hnn.Dropout)
    idx = torch.randint(0, 32, (3, 8), generator=_gen(1))
    targets = torch.randint(0, 32, (3, 8), generator=_gen(2))
    targets[0, :2] = -1  # nanoGPT's ignore_index

    def run(model, x, t):
        with monkeypatch.context() as patch:
            if model is ours:
                patch.setattr(nanogpt, "F", HF)
            return model(x, t)

    graphs = {}

    def step_loss(model, step):
        torch.manual_seed(10 + step)  # the same dropout draws for both
        loss = run(model, idx, targets)[1]
        graphs.setdefault(model is ours, _torch_nodes(loss))
        return loss

    _train_side_by_side([ours, theirs], step_loss, steps=3, lr=0.1)
    allowed = {
        # scaled_dot_product_attention (with dropout, in float64, on the CPU: its math path)
        "BmmBackward0",
        "SafeSoftmaxBackward0",
        "MulBackward0",
        "MulBackward1",
        "ExpandBackward0",
        "ScaledDotProductFlashAttentionForCpuBackward0",
        # the heads split and joined, the residual additions
        "SplitBackward0",
        "ViewBackward0",
        "UnsafeViewBackward0",
        "TransposeBackward0",
        "CloneBackward0",
        "AddBackward0",
    }
    assert graphs[True] <= allowed, graphs[True] - allowed
    assert {"NativeLayerNormBackward0", "EmbeddingBackward0"} < graphs[False]  # torch's own
    for model in (ours, theirs):
        model.eval()
    torch.testing.assert_close(run(ours, idx, None)[0], run(theirs, idx, None)[0])
