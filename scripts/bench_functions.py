"""Forward + backward time of handprop.nn networks against the same networks built from torch.nn.

Each model is built twice with identical weights: the MLPs as handprop ``MLP`` and a
``torch.nn.Sequential`` of ``Linear``/``ReLU``; a LeNet-5-sized CNN (conv 5×5 → ReLU → max-pool,
twice, then a 400-120-84-10 head, on 1×28×28 images) and a 1-layer LSTM (input 32, hidden 128,
50 steps, batch first, a linear head on the last state) from the drop-ins of ``handprop.nn``
and their ``torch.nn`` twins, a ResNet-18 (torchvision's layout: BasicBlocks, strided 3×3
convolutions with 1×1 downsamples, batch norm, adaptive average pooling; 3×32×32 images, batch 8)
and a GPT block (nanoGPT's: token and position embeddings, layer norm, causal self-attention
through torch's ``scaled_dot_product_attention``, a GELU MLP, dropout 0.1, a linear head; 256
wide, 4 heads, 128 tokens, batch 8). One step is ``zero grads → forward → loss → backward``
(cross-entropy for the classification heads, MSE for the 4-5-1 regression net), float32, on CPU
and, when available, CUDA. Repetitions of the two are interleaved (the order alternates every
repetition) so drifts in machine load hit both alike; the table reports medians and
``ratio = handprop / torch``. ``torch.set_num_threads`` is left at its default unless
``--threads`` is given.

    python scripts/bench_functions.py [--reps 200] [--warmup 10] [--threads N] [--device cpu]
                                      [--only LeNet --only LSTM]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

import handprop.functional as HF
import handprop.nn as hnn


@dataclass(frozen=True)
class Spec:
    name: str
    in_features: int
    hidden: tuple[int, ...]
    out_features: int
    batch: int
    task: str  # "classification" (cross_entropy) or "regression" (mse)


SPECS = (
    Spec("784-256-256-10", 784, (256, 256), 10, 256, "classification"),
    Spec("64-512-512-10", 64, (512, 512), 10, 1024, "classification"),
    Spec("4-5-1", 4, (5,), 1, 32, "regression"),
)


def lenet(m) -> nn.Module:
    """LeNet-5 for 28×28 digits from the module namespace ``m`` (``handprop.nn`` or ``torch.nn``)."""
    return nn.Sequential(
        m.Conv2d(1, 6, 5, padding=2), m.ReLU(), m.MaxPool2d(2),  # 6×28×28 → 6×14×14
        m.Conv2d(6, 16, 5), m.ReLU(), m.MaxPool2d(2),  # 16×10×10 → 16×5×5
        m.Flatten(), m.Linear(400, 120), m.ReLU(), m.Linear(120, 84), m.ReLU(), m.Linear(84, 10),
    )  # fmt: skip


class LastState(nn.Module):
    """An LSTM over the sequence, then a linear head on the last step's output."""

    def __init__(self, m, input_size: int, hidden_size: int, out_features: int) -> None:
        super().__init__()
        self.lstm = m.LSTM(input_size, hidden_size, batch_first=True)
        self.head = m.Linear(hidden_size, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(x)
        return self.head(output[:, -1])


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3×3 convolutions with batch norm, and the input
    added back (through a strided 1×1 convolution and batch norm where the shape changes)."""

    def __init__(self, m, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = m.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = m.BatchNorm2d(planes)
        self.relu = m.ReLU(inplace=True)
        self.conv2 = m.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = m.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                m.Conv2d(inplanes, planes, 1, stride, bias=False), m.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


def resnet18(m, num_classes: int = 10) -> nn.Module:
    """ResNet-18 as torchvision lays it out, from the module namespace ``m``."""
    layers: list[nn.Module] = [
        m.Conv2d(3, 64, 7, 2, 3, bias=False), m.BatchNorm2d(64), m.ReLU(inplace=True),
        m.MaxPool2d(3, 2, 1),
    ]  # fmt: skip
    inplanes = 64
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(m, inplanes, planes, stride), BasicBlock(m, planes, planes)]
        inplanes = planes
    layers += [m.AdaptiveAvgPool2d((1, 1)), m.Flatten(), m.Linear(512, num_classes)]
    return nn.Sequential(*layers)


class GPTBlock(nn.Module):
    """One nanoGPT block with its embeddings and head: tokens → wte + wpe → dropout →
    x + attn(ln_1(x)) → x + mlp(ln_2(x)) → ln_f → lm_head; logits (B·T, vocab)."""

    def __init__(self, m, vocab: int, block_size: int, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, 0.1
        self.wte, self.wpe = m.Embedding(vocab, n_embd), m.Embedding(block_size, n_embd)
        self.drop = m.Dropout(self.dropout)
        self.ln_1, self.ln_2, self.ln_f = (m.LayerNorm(n_embd) for _ in range(3))
        self.c_attn, self.attn_proj = m.Linear(n_embd, 3 * n_embd), m.Linear(n_embd, n_embd)
        self.resid_dropout = m.Dropout(self.dropout)
        self.mlp = nn.Sequential(
            m.Linear(n_embd, 4 * n_embd), m.GELU(), m.Linear(4 * n_embd, n_embd),
            m.Dropout(self.dropout),
        )  # fmt: skip
        self.lm_head = m.Linear(n_embd, vocab, bias=False)

    def attn(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (
            t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
            for t in self.c_attn(x).split(C, dim=2)
        )
        p = self.dropout if self.training else 0.0
        y = nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.resid_dropout(self.attn_proj(y.transpose(1, 2).contiguous().view(B, T, C)))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        logits = self.lm_head(self.ln_f(x))
        return logits.view(-1, logits.shape[-1])


def _tokens(vocab: int, block: int):
    def make(batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.randint(0, vocab, (batch, block), device=device),
            torch.randint(0, vocab, (batch * block,), device=device),
        )

    return make


@dataclass(frozen=True)
class NetSpec:
    name: str
    build: Callable  # module namespace -> model
    input_shape: tuple[int, ...]  # one sample
    out_features: int
    batch: int
    # (batch, device) -> (input, target); default: standard normal images, class targets
    inputs: Callable | None = None


NET_SPECS = (
    NetSpec("LeNet-5 1x28x28", lenet, (1, 28, 28), 10, 64),
    NetSpec("LSTM 32-128, 50 steps", lambda m: LastState(m, 32, 128, 10), (50, 32), 10, 64),
    NetSpec("ResNet-18 3x32x32", resnet18, (3, 32, 32), 10, 8),
    NetSpec(
        "GPT block 256 wide, 128 tokens",
        lambda m: GPTBlock(m, 1024, 128, 256, 4),
        (128,),
        1024,
        8,
        _tokens(1024, 128),
    ),
)


def build_net_pair(spec: NetSpec, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """A network of handprop drop-ins and its torch.nn twin, with the same weights."""
    ours, theirs = spec.build(hnn), spec.build(nn)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours.to(device), theirs.to(device)


def build_pair(spec: Spec, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """A handprop MLP and a torch.nn.Sequential with the same weights."""
    ours = hnn.MLP(spec.in_features, list(spec.hidden), spec.out_features, init="torch")
    layers: list[nn.Module] = []
    sizes = [spec.in_features, *spec.hidden, spec.out_features]
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    theirs = nn.Sequential(*layers)
    theirs.load_state_dict(ours.layers.state_dict(), strict=True)
    return ours.to(device), theirs.to(device)


def make_step(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor):
    params = list(model.parameters())

    def step() -> None:
        for p in params:
            p.grad = None
        loss_fn(model(x), y).backward()

    return step


def time_pair(steps: dict[str, Callable[[], None]], reps: int, warmup: int, device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    names = list(steps)
    for _ in range(warmup):
        for n in names:
            steps[n]()
    sync()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            sync()
            t0 = time.perf_counter()
            steps[n]()
            sync()
            times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(t) * 1e3 for n, t in times.items()}


def check_same(ours: nn.Module, theirs: nn.Module, x: torch.Tensor, loss_ours, loss_theirs, y):
    """Sanity: both models give the same loss and gradients before timing (the same dropout
    draws: reseeded before each)."""
    torch.manual_seed(0)
    lo = loss_ours(ours(x), y)
    torch.manual_seed(0)
    lt = loss_theirs(theirs(x), y)
    go = torch.autograd.grad(lo, list(ours.parameters()))
    gt = torch.autograd.grad(lt, list(theirs.parameters()))
    torch.testing.assert_close(lo, lt, atol=1e-4, rtol=1e-4)
    for a, b in zip(go, gt, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def compare(ours, theirs, x, y, loss_ours, loss_theirs, args, device) -> dict[str, float]:
    """Check both models agree, then time one step of each: medians in ms by name."""
    check_same(ours, theirs, x, loss_ours, loss_theirs, y)
    steps = {
        "torch": make_step(theirs, loss_theirs, x, y),
        "handprop": make_step(ours, loss_ours, x, y),
    }
    return time_pair(steps, args.reps, args.warmup, device)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=200, help="timed repetitions per model")
    parser.add_argument("--warmup", type=int, default=10, help="untimed repetitions first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the CPU runs; default: leave torch's default alone",
    )
    parser.add_argument(
        "--device",
        action="append",
        help="device(s) to run on; default cpu, plus cuda when available",
    )
    parser.add_argument(
        "--only",
        action="append",
        help="time only the models whose name contains this (repeatable); default: all",
    )
    args = parser.parse_args(argv)

    def wanted(name: str) -> bool:
        return not args.only or any(o.lower() in name.lower() for o in args.only)

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32, "
        f"reps {args.reps}, warmup {args.warmup}\n"
    )
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        for spec in [s for s in SPECS if wanted(s.name)]:
            torch.manual_seed(args.seed)
            ours, theirs = build_pair(spec, device)
            x = torch.randn(spec.batch, spec.in_features, device=device)
            if spec.task == "classification":
                y = torch.randint(0, spec.out_features, (spec.batch,), device=device)
                loss_ours, loss_theirs = HF.cross_entropy, nn.functional.cross_entropy
            else:
                y = torch.randn(spec.batch, spec.out_features, device=device)
                loss_ours, loss_theirs = HF.mse_loss, nn.functional.mse_loss
            med = compare(ours, theirs, x, y, loss_ours, loss_theirs, args, device)
            rows.append((spec.name, spec.batch, dev_name, med["torch"], med["handprop"]))
        for net in [n for n in NET_SPECS if wanted(n.name)]:
            torch.manual_seed(args.seed)
            ours, theirs = build_net_pair(net, device)
            if net.inputs is not None:
                x, y = net.inputs(net.batch, device)
            else:
                x = torch.randn(net.batch, *net.input_shape, device=device)
                y = torch.randint(0, net.out_features, (net.batch,), device=device)
            loss_ours, loss_theirs = HF.cross_entropy, nn.functional.cross_entropy
            med = compare(ours, theirs, x, y, loss_ours, loss_theirs, args, device)
            rows.append((net.name, net.batch, dev_name, med["torch"], med["handprop"]))

    print("| model | batch | device | torch median ms | handprop median ms | ratio |")
    print("|---|---:|---|---:|---:|---:|")
    for name, batch, dev, t, h in rows:
        print(f"| {name} | {batch} | {dev} | {t:.3f} | {h:.3f} | {h / t:.3f} |")


if __name__ == "__main__":
    main()
