"""PyTorch's own test inputs as an outside suite: every OpInfo sample of every op handprop
implements (``torch.testing._internal.common_methods_invocations.op_db``), in float64, must give
torch's output, torch's gradients and torch's forward-mode tangents.

The samples come from torch's private testing module (tests may use it; the library does not).
Importing it changes process-wide settings (it freezes ``torch.backends`` flags, which
Lightning then fails to set), so the samples are checked in a child process: this file run as a
script. It needs the ``expecttest`` package, a test-only dependency; without it these tests skip.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import handprop.functional as F

F64 = torch.float64

#: op_db name → the handprop function with the same signature
OURS = {
    "nn.functional.linear": F.linear,
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "nn.functional.relu": F.relu,
    "nn.functional.leaky_relu": F.leaky_relu,
    "softmax": F.softmax,
    "log_softmax": F.log_softmax,
    "nn.functional.mse_loss": F.mse_loss,
    "nn.functional.binary_cross_entropy_with_logits": F.binary_cross_entropy_with_logits,
    "nn.functional.cross_entropy": F.cross_entropy,
    "nn.functional.nll_loss": F.nll_loss,
    "nn.functional.batch_norm": F.batch_norm,
    "nn.functional.layer_norm": F.layer_norm,
    # op_db's embedding takes the table first: lambda weight, idx, **kw: embedding(idx, weight)
    "nn.functional.embedding": lambda weight, idx, **kw: F.embedding(idx, weight, **kw),
    "nn.functional.gelu": F.gelu,
    "nn.functional.adaptive_avg_pool2d": F.adaptive_avg_pool2d,
}


def _differentiable(sample) -> list[torch.Tensor]:
    tensors = [sample.input, *sample.args, *sample.kwargs.values()]
    return [t for t in tensors if isinstance(t, torch.Tensor) and t.requires_grad]


def _call(fn, sample, swap: dict | None = None):
    swap = swap or {}
    args = [swap.get(id(a), a) for a in (sample.input, *sample.args)]
    kwargs = {k: swap.get(id(v), v) for k, v in sample.kwargs.items()}
    return fn(*args, **kwargs)


def _check_sample(op, sample) -> None:
    ours_fn = OURS[op.name]
    ours, theirs = _call(ours_fn, sample), _call(op.op, sample)
    torch.testing.assert_close(ours, theirs, equal_nan=True)
    assert F.function_of(ours.grad_fn) is not None, "not computed by a handprop Function"

    # reverse mode: the same gradients for a random cotangent
    inputs = _differentiable(sample)
    cotangent = torch.randn_like(theirs)
    g_ours = torch.autograd.grad(ours, inputs, cotangent, allow_unused=True)
    g_theirs = torch.autograd.grad(theirs, inputs, cotangent, allow_unused=True)
    for a, b in zip(g_ours, g_theirs, strict=True):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, equal_nan=True)

    # forward mode: the same tangent of the output for random tangents of every input
    tangents = [torch.randn_like(t) for t in inputs]
    results = []
    for fn in (ours_fn, op.op):
        with fwAD.dual_level():
            duals = {
                id(t): fwAD.make_dual(t.detach(), v) for t, v in zip(inputs, tangents, strict=True)
            }
            results.append(fwAD.unpack_dual(_call(fn, sample, duals)).tangent)
    torch.testing.assert_close(results[0], results[1], equal_nan=True)


def check_all() -> dict[str, list[str]]:
    """Every sample of every op in ``OURS``: op name → one line per failing sample ("n
    samples" first)."""
    from torch.testing._internal.common_methods_invocations import op_db

    torch.manual_seed(0)
    report: dict[str, list[str]] = {}
    for op in op_db:
        if op.name not in OURS:
            continue
        lines = report.setdefault(op.name, [])
        samples = list(op.sample_inputs("cpu", F64, requires_grad=True))
        lines.insert(0, f"{op.variant_test_name or 'default'}: {len(samples)} samples")
        for i, sample in enumerate(samples):
            try:
                _check_sample(op, sample)
            except Exception as err:  # noqa: BLE001 — collect every failing sample
                shapes = [
                    tuple(t.shape) for t in (sample.input, *sample.args) if hasattr(t, "shape")
                ]
                lines.append(f"sample {i} {shapes} {sample.kwargs}: {type(err).__name__}: {err}")
    return report


@pytest.fixture(scope="module")
def report() -> dict[str, list[str]]:
    if importlib.util.find_spec("expecttest") is None:
        pytest.skip("torch's OpInfo database needs expecttest (a test-only dependency)")
    child = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, timeout=600, check=False
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.splitlines()[-1])


@pytest.mark.parametrize("name", sorted(OURS))
def test_opinfo_samples_match_torch(report, name):
    """Output, gradients and forward-mode tangents of every sample; all failures listed."""
    lines = report.get(name)
    assert lines, f"op_db has no samples for {name}"
    counts = [line for line in lines if line.endswith(" samples")]
    assert counts and not any(line.endswith(": 0 samples") for line in counts), counts
    failures = [line for line in lines if not line.endswith(" samples")]
    assert not failures, "\n".join([*counts, *failures])


def test_every_function_is_covered():
    """Each Function of the neuron, activations and losses is behind one of the ops checked
    above (the convolutional and recurrent ones: tests/test_convolution.py, test_recurrent.py)."""
    x = torch.randn(4, 3, dtype=F64, requires_grad=True)
    y, p = torch.tensor([0, 1, 2, 1]), torch.rand(4, 3, dtype=F64)
    nodes = [
        F.linear(x, torch.randn(2, 3, dtype=F64)),
        F.sigmoid(x),
        F.tanh(x),
        F.relu(x),
        F.leaky_relu(x),
        F.softmax(x, 1),
        F.log_softmax(x, 1),
        F.mse_loss(x, p),  # quadratic_cost runs the same Function
        F.binary_cross_entropy_with_logits(x, p),
        F.cross_entropy(x, y),
        F.nll_loss(x, y),
    ]
    modules = {f"handprop.functional.{m}" for m in ("neuron", "activations", "losses")}
    ours = {cls for cls in F.FUNCTIONS.values() if cls.__module__ in modules}
    assert {F.function_of(t.grad_fn) for t in nodes} == ours


def test_every_layer_function_is_covered():
    """Each Function of the normalisation, embedding, GELU and adaptive-pooling modules is
    behind one of the ops checked above."""
    x = torch.randn(4, 3, 2, 2, dtype=F64, requires_grad=True)
    nodes = [
        F.batch_norm(x, None, None, training=True),
        F.layer_norm(x, (2, 2)),
        F.embedding(torch.tensor([0, 2]), x.view(4, 12)),
        F.gelu(x),
        F.adaptive_avg_pool2d(x, 1),
    ]
    modules = {
        f"handprop.functional.{m}" for m in ("normalization", "embedding", "gelu", "pooling")
    }
    ours = {cls for cls in F.FUNCTIONS.values() if cls.__module__ in modules}
    assert len(ours) == 5
    assert {F.function_of(t.grad_fn) for t in nodes} == ours


if __name__ == "__main__":
    print(json.dumps(check_all()))
