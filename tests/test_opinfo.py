"""PyTorch's own test inputs as an outside suite: every OpInfo sample of every op handprop
implements (``torch.testing._internal.common_methods_invocations.op_db``), in float64, must give
torch's output, torch's gradients and torch's forward-mode tangents.

The samples come from torch's private testing module (tests may use it; the library does not).
It needs the ``expecttest`` package, a test-only dependency; without it these tests skip.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import handprop.functional as F

pytest.importorskip("expecttest", reason="torch's OpInfo database needs expecttest")
from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

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
}
OPS = [op for op in op_db if op.name in OURS]
IDS = [op.name + (f".{op.variant_test_name}" if op.variant_test_name else "") for op in OPS]


def test_every_function_has_opinfo_samples():
    assert {op.name for op in OPS} == set(OURS)
    covered = {F.function_of(_grad_fn(OURS[name])) for name in OURS}
    assert covered == set(F.FUNCTIONS.values())  # quadratic_cost is mse_loss's Function


def _grad_fn(fn):
    """The graph node one small call of ``fn`` makes (which Function it runs)."""
    x = torch.randn(4, 3, dtype=F64, requires_grad=True)
    if fn is F.linear:
        return fn(x, torch.randn(2, 3, dtype=F64)).grad_fn
    if fn in (F.softmax, F.log_softmax):
        return fn(x, 1).grad_fn
    if fn in (F.cross_entropy, F.nll_loss):
        return fn(x, torch.tensor([0, 1, 2, 1])).grad_fn
    if fn in (F.mse_loss, F.binary_cross_entropy_with_logits):
        return fn(x, torch.rand(4, 3, dtype=F64)).grad_fn
    return fn(x).grad_fn


def _differentiable(sample) -> list[torch.Tensor]:
    tensors = [sample.input, *sample.args, *sample.kwargs.values()]
    return [t for t in tensors if isinstance(t, torch.Tensor) and t.requires_grad]


def _call(fn, sample, swap: dict | None = None):
    swap = swap or {}
    sub = [swap.get(id(a), a) for a in (sample.input, *sample.args)]
    kwargs = {k: swap.get(id(v), v) for k, v in sample.kwargs.items()}
    return fn(*sub, **kwargs)


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


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_opinfo_samples_match_torch(op):
    """Output, gradients and forward-mode tangents of every sample; all failures reported."""
    failures = []
    samples = list(op.sample_inputs("cpu", F64, requires_grad=True))
    assert samples
    for i, sample in enumerate(samples):
        try:
            _check_sample(op, sample)
        except Exception as err:  # noqa: BLE001 — collect every failing sample
            shapes = [tuple(t.shape) for t in [sample.input, *sample.args] if hasattr(t, "shape")]
            failures.append(f"sample {i} {shapes} {sample.kwargs}: {type(err).__name__}: {err}")
    assert not failures, f"{len(failures)}/{len(samples)} samples differ:\n" + "\n".join(failures)
