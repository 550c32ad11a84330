"""torch's own errors: bad input to a handprop layer or function raises the exception type torch
raises, with a message that says the same thing.

PyTorch's own lists of bad inputs are the outside suite: every ``error_inputs`` sample of its
ModuleInfo database (``module_db``, ``module_error_inputs``) for each layer in ``hnn.TWINS``,
and of its OpInfo database (``op_db``, ``error_inputs``) for each op handprop implements, must
raise the type the database names, and match its regex wherever one is given. As in
tests/test_opinfo.py the databases are read in a child process (importing torch's private test
module changes process-wide settings); they need ``expecttest``, without which these skip.

Further cases, where torch raises and the databases have no sample, run here directly.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as TF

import handprop.functional as F
import handprop.nn as hnn
from handprop.functional.dispatch import OVERRIDES

#: op_db name → the handprop function with torch's signature
OPS = {
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
    "nn.functional.conv2d": F.conv2d,
    "nn.functional.max_pool2d": F.max_pool2d,
    "nn.functional.avg_pool2d": F.avg_pool2d,
    "flatten": F.flatten,
    "nn.functional.dropout": F.dropout,
    "nn.functional.batch_norm": F.batch_norm,
    "nn.functional.layer_norm": F.layer_norm,
    # op_db's embedding takes the table first: (weight, indices)
    "nn.functional.embedding": lambda weight, idx, **kw: F.embedding(idx, weight, **kw),
    "nn.functional.gelu": F.gelu,
    "nn.functional.adaptive_avg_pool2d": F.adaptive_avg_pool2d,
}


def _outcome(run, error_type, regex) -> str | None:  # noqa: ANN001
    """None when ``run()`` raises ``error_type`` with a message matching ``regex``; else what
    happened instead."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run()
    except Exception as err:  # noqa: BLE001 — every outcome is reported
        if type(err) is not error_type:
            return f"{type(err).__name__} where torch raises {error_type.__name__}: {err}"
        if regex and not re.search(regex, str(err)):
            return f"message {str(err)!r} does not match {regex!r}"
        return None
    return f"no error where torch raises {error_type.__name__}"


def check_all() -> dict[str, dict]:
    """Every error sample of every twin and op: name → {"samples": n, "failures": [...],
    "unmapped": op_db ops handprop dispatches but ``OPS`` misses}."""
    from torch.testing._internal.common_methods_invocations import op_db
    from torch.testing._internal.common_modules import ModuleErrorEnum, module_db

    torch.manual_seed(0)
    report: dict[str, dict] = {}
    for info in module_db:
        twin = hnn.TWINS.get(info.module_cls)
        if twin is None or info.module_error_inputs_func is None:
            continue
        entry = report.setdefault(
            f"module {info.module_cls.__name__}", {"samples": 0, "failures": []}
        )
        samples = info.module_error_inputs_func(info, "cpu", torch.float32, False, True)
        for i, sample in enumerate(samples):
            given = sample.module_error_input
            ctor, fwd = given.constructor_input, given.forward_input

            def run(ctor=ctor, fwd=fwd, on=sample.error_on, twin=twin):  # noqa: ANN001
                module = twin(*ctor.args, **ctor.kwargs)
                if on == ModuleErrorEnum.FORWARD_ERROR:
                    module(*fwd.args, **fwd.kwargs)

            entry["samples"] += 1
            failure = _outcome(run, sample.error_type, sample.error_regex)
            if failure:
                entry["failures"].append(f"sample {i}: {failure}")
    unmapped = sorted({op.name for op in op_db if op.op in OVERRIDES and op.name not in OPS})
    report["unmapped"] = {"samples": 0, "failures": unmapped}
    for op in op_db:
        if op.name not in OPS or op.error_inputs_func is None:
            continue
        entry = report.setdefault(f"op {op.name}", {"samples": 0, "failures": []})
        for i, sample in enumerate(op.error_inputs("cpu")):
            s = sample.sample_input
            entry["samples"] += 1
            failure = _outcome(
                lambda s=s, fn=OPS[op.name]: fn(s.input, *s.args, **s.kwargs),
                sample.error_type,
                sample.error_regex,
            )
            if failure:
                entry["failures"].append(f"sample {i}: {failure}")
    return report


@pytest.fixture(scope="module")
def report() -> dict[str, dict]:
    if importlib.util.find_spec("expecttest") is None:
        pytest.skip("torch's test databases need expecttest (a test-only dependency)")
    child = subprocess.run(
        [sys.executable, __file__], capture_output=True, text=True, timeout=600, check=False
    )
    assert child.returncode == 0, child.stderr[-3000:]
    return json.loads(child.stdout.splitlines()[-1])


#: what the databases hold today for handprop's twins and ops (a shrinking list would mean a
#: sample stopped being checked)
EXPECTED = {
    "module CrossEntropyLoss": 7,
    "module NLLLoss": 1,
    "module MaxPool2d": 3,
    "module RNN": 14,
    "module LSTM": 14,
    "op nn.functional.conv2d": 10,
    "op nn.functional.max_pool2d": 7,
    "op nn.functional.avg_pool2d": 5,
    "module BatchNorm1d": 2,
    "module BatchNorm2d": 2,
    "module Embedding": 3,
    "op nn.functional.adaptive_avg_pool2d": 3,
    "op nn.functional.gelu": 1,
    "op nn.functional.embedding": 2,
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_database_error_inputs_raise_torchs_error(report, name):
    """Type and message (the database's regex) of every error sample; all failures listed."""
    entry = report.get(name)
    assert entry, f"no error samples for {name}: {sorted(report)}"
    assert entry["samples"] >= EXPECTED[name], entry
    assert not entry["failures"], "\n".join(entry["failures"])


def test_every_database_with_error_inputs_is_checked(report):
    """Every twin and op with error samples is in EXPECTED, and every op handprop dispatches
    that op_db knows is in OPS."""
    assert not report["unmapped"]["failures"], report["unmapped"]
    assert {k for k, v in report.items() if v["samples"]} == set(EXPECTED)


# --------------------------------------------------------------------------------------------
# More bad calls where torch raises: handprop raises the same type
# --------------------------------------------------------------------------------------------
def _r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _idx(*shape: int) -> torch.Tensor:
    return torch.randint(0, 3, shape, generator=torch.Generator().manual_seed(1))


#: name → a call of ``M.<function>`` (M: torch.nn.functional, or handprop.functional)
CALLS = {
    "mse-no-broadcast": lambda M: M.mse_loss(_r(2, 3), _r(3, 2)),
    "bce-shape": lambda M: M.binary_cross_entropy_with_logits(_r(2, 3), _r(2, 4).sigmoid()),
    "bce-weight": lambda M: M.binary_cross_entropy_with_logits(_r(2, 3), _r(2, 3), _r(4)),
    "ce-probs-long": lambda M: M.cross_entropy(_r(2, 3), _idx(2, 3)),
    "ce-probs-other-shape": lambda M: M.cross_entropy(_r(2, 3), _r(2, 4).softmax(1)),
    "ce-probs-ignore-index": lambda M: M.cross_entropy(_r(2, 3), _r(2, 3), ignore_index=1),
    "ce-probs-weight": lambda M: M.cross_entropy(_r(2, 3), _r(2, 3).softmax(1), _r(2)),
    "ce-index-weight": lambda M: M.cross_entropy(_r(2, 3), _idx(2), _r(2)),
    "ce-float-index": lambda M: M.cross_entropy(_r(2, 3), _r(2)),
    "ce-int32-index": lambda M: M.cross_entropy(_r(2, 3), _idx(2).int()),
    "ce-batch": lambda M: M.cross_entropy(_r(2, 3), _idx(3)),
    "ce-spatial": lambda M: M.cross_entropy(_r(2, 3, 4), _idx(2)),
    "ce-scalar": lambda M: M.cross_entropy(_r(), torch.tensor(1)),
    "ce-smoothing": lambda M: M.cross_entropy(_r(2, 3), _idx(2), label_smoothing=1.5),
    "ce-smoothing-probs": lambda M: M.cross_entropy(_r(2, 3), _r(2, 3), label_smoothing=1.5),
    "ce-reduction": lambda M: M.cross_entropy(_r(2, 3), _idx(2), reduction="avg"),
    "ce-out-of-range": lambda M: M.cross_entropy(_r(2, 3), torch.tensor([0, 5])),
    "nll-float": lambda M: M.nll_loss(_r(2, 3), _r(2)),
    "nll-multi-target": lambda M: M.nll_loss(_r(2, 3), _idx(2, 3)),
    "nll-spatial": lambda M: M.nll_loss(_r(2, 3, 4, 5), _idx(2, 4, 6)),
    "nll-scalar": lambda M: M.nll_loss(_r(), torch.tensor(1)),
    "nll-weight-dtype": lambda M: M.nll_loss(_r(2, 3), _idx(2), torch.ones(3).half()),
    "linear-0d": lambda M: M.linear(_r(), _r(4, 5)),
    "linear-shapes": lambda M: M.linear(_r(2, 3), _r(4, 5)),
    "leaky-slope-str": lambda M: M.leaky_relu(_r(2), "a"),
    "softmax-dim": lambda M: M.softmax(_r(2, 3), 5),
    "conv-weight-3d": lambda M: M.conv2d(_r(1, 2, 5, 5), _r(3, 2, 3)),
    "conv-channels": lambda M: M.conv2d(_r(1, 2, 5, 5), _r(3, 4, 3, 3)),
    "conv-groups-float": lambda M: M.conv2d(_r(1, 2, 5, 5), _r(3, 2, 3, 3), groups=1.0),
    "conv-padding-triple": lambda M: M.conv2d(_r(1, 2, 5, 5), _r(3, 2, 3, 3), padding=(1, 2, 3)),
    "maxpool-kernel-triple": lambda M: M.max_pool2d(_r(1, 2, 5, 5), (1, 2, 3)),
    "maxpool-stride-triple": lambda M: M.max_pool2d(_r(1, 2, 5, 5), 2, (1, 2, 3)),
    "maxpool-dilation-triple": lambda M: M.max_pool2d(_r(1, 2, 5, 5), 2, 2, 0, (1, 2, 3)),
    "maxpool-kernel-float": lambda M: M.max_pool2d(_r(1, 2, 5, 5), 2.5),
    "avgpool-kernel-triple": lambda M: M.avg_pool2d(_r(1, 2, 5, 5), (1, 2, 3)),
    "avgpool-divisor-0": lambda M: M.avg_pool2d(_r(1, 2, 5, 5), 2, divisor_override=0),
    "avgpool-divisor-float": lambda M: M.avg_pool2d(_r(1, 2, 5, 5), 2, divisor_override=1.5),
    "dropout-p": lambda M: M.dropout(_r(2), 1.5),
    "dropout-p-str": lambda M: M.dropout(_r(2), "a"),
}

#: handprop's recurrent ops have the signatures of torch.rnn_tanh / torch.lstm
RECURRENT_CALLS = {
    "rnn-parameters": lambda M: M.rnn_tanh(
        _r(3, 2, 3), _r(1, 2, 4), [_r(4, 3), _r(4, 4)], True, 1, 0.0, False, False, False
    ),
    "lstm-three-states": lambda M: M.lstm(
        _r(3, 2, 3), [_r(1, 2, 4)] * 3, [_r(16, 3), _r(16, 4)], False, 1, 0.0, False, False, False
    ),
}


@pytest.mark.parametrize("case", sorted(CALLS) + sorted(RECURRENT_CALLS))
def test_bad_calls_raise_torchs_error(case):
    call = CALLS.get(case) or RECURRENT_CALLS[case]
    theirs_module = TF if case in CALLS else torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as theirs:  # noqa: PT011 — the type is compared below
            call(theirs_module)
        with pytest.raises(Exception) as ours:  # noqa: PT011
            call(F)
    assert type(ours.value) is type(theirs.value), (ours.value, theirs.value)


@pytest.mark.parametrize("case", sorted(CALLS))
def test_bad_calls_under_everywhere_raise_torchs_error(case):
    """Under the mode torch's function raises its own error: the same type and message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as theirs:  # noqa: PT011
            CALLS[case](TF)
        with F.everywhere(), pytest.raises(Exception) as ours:  # noqa: PT011
            CALLS[case](TF)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)


if __name__ == "__main__":
    print(json.dumps(check_all()))
