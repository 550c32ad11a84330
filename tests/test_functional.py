"""handprop.functional: hand-written backward passes checked against finite differences
(gradcheck / gradgradcheck) and against their ``torch.nn.functional`` twins."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as TF
from torch.autograd import gradcheck, gradgradcheck

import handprop.functional as F
from handprop.functional import FUNCTIONS

F64 = torch.float64
F32 = torch.float32
REDUCTIONS = ("mean", "sum", "none")
# (atol, rtol) for comparisons with torch
TOL = {F64: (1e-10, 1e-10), F32: (1e-5, 1e-5)}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, dtype: torch.dtype = F64, seed: int = 0, grad: bool = True):
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype).requires_grad_(grad)


def away_from_zero(*shape: int, dtype: torch.dtype = F64, seed: int = 0, grad: bool = True):
    """Random values with |v| >= 0.1, so finite differences never straddle a kink."""
    r = torch.randn(*shape, generator=_gen(seed), dtype=dtype)
    return (r.sign() * (0.1 + r.abs())).requires_grad_(grad)


def probs(*shape: int, dim: int, dtype: torch.dtype = F64, seed: int = 0, grad: bool = True):
    p = torch.randn(*shape, generator=_gen(seed), dtype=dtype).softmax(dim)
    return p.requires_grad_(grad)


def uniform01(*shape: int, dtype: torch.dtype = F64, seed: int = 0, grad: bool = True):
    return torch.rand(*shape, generator=_gen(seed), dtype=dtype).requires_grad_(grad)


def classes(*shape: int, n_classes: int, seed: int = 0):
    return torch.randint(0, n_classes, shape, generator=_gen(seed))


def classes_some_ignored(*shape: int, n_classes: int, ignore_index: int, seed: int = 0):
    """Class indices with every third one set to ``ignore_index``."""
    y = classes(*shape, n_classes=n_classes, seed=seed)
    flat = y.view(-1)
    flat[::3] = ignore_index
    return y


def class_weights(n_classes: int, dtype: torch.dtype = F64, seed: int = 7):
    return torch.rand(n_classes, generator=_gen(seed), dtype=dtype) + 0.5


# --------------------------------------------------------------------------------------------
# Cases: (id, name in FUNCTIONS, handprop fn, torch twin, factory(dtype) -> args)
# The fn takes the positional tensors the factory returns.
# --------------------------------------------------------------------------------------------
Case = tuple[str, str, Callable, Callable, Callable]


def _cases() -> list[Case]:
    cases: list[Case] = []
    # linear: 1-D / 2-D / 3-D inputs, with and without bias
    for shape in [(3,), (4, 3), (2, 4, 3), (1, 3)]:
        sid = "x".join(map(str, shape))
        cases.append(
            (
                f"linear-bias-{sid}",
                "linear",
                F.linear,
                TF.linear,
                lambda dt, s=shape: (
                    randn(*s, dtype=dt),
                    randn(5, 3, dtype=dt, seed=1),
                    randn(5, dtype=dt, seed=2),
                ),
            )
        )
        cases.append(
            (
                f"linear-nobias-{sid}",
                "linear",
                F.linear,
                TF.linear,
                lambda dt, s=shape: (randn(*s, dtype=dt), randn(5, 3, dtype=dt, seed=1)),
            )
        )
    for shape in [(4, 3), (2, 3, 4), (1, 5), (6,)]:
        sid = "x".join(map(str, shape))
        for name, fn, twin in [
            ("sigmoid", F.sigmoid, torch.sigmoid),
            ("tanh", F.tanh, torch.tanh),
        ]:
            cases.append(
                (f"{name}-{sid}", name, fn, twin, lambda dt, s=shape: (randn(*s, dtype=dt),))
            )
        cases.append(
            (
                f"relu-{sid}",
                "relu",
                F.relu,
                TF.relu,
                lambda dt, s=shape: (away_from_zero(*s, dtype=dt),),
            )
        )
        for slope in (0.01, 0.2):
            cases.append(
                (
                    f"leaky_relu{slope}-{sid}",
                    "leaky_relu",
                    lambda z, k=slope: F.leaky_relu(z, k),
                    lambda z, k=slope: TF.leaky_relu(z, k),
                    lambda dt, s=shape: (away_from_zero(*s, dtype=dt),),
                )
            )
    for shape, dims in [
        ((4, 3), (0, 1, -1)),
        ((2, 3, 4), (0, 1, 2, -1)),
        ((1, 5), (0, 1)),
        ((5,), (0,)),
    ]:
        sid = "x".join(map(str, shape))
        for d in dims:
            for name, fn, twin in [
                ("softmax", F.softmax, TF.softmax),
                ("log_softmax", F.log_softmax, TF.log_softmax),
            ]:
                cases.append(
                    (
                        f"{name}-dim{d}-{sid}",
                        name,
                        lambda z, d=d, f=fn: f(z, d),
                        lambda z, d=d, f=twin: f(z, d),
                        lambda dt, s=shape: (randn(*s, dtype=dt),),
                    )
                )
    for red in REDUCTIONS:
        for shape in [(4, 3), (2, 3, 4), (1, 1), (5,)]:
            sid = "x".join(map(str, shape))
            cases += [
                (
                    f"mse_loss-{red}-{sid}",
                    "mse_loss",
                    lambda a, b, r=red: F.mse_loss(a, b, reduction=r),
                    lambda a, b, r=red: TF.mse_loss(a, b, reduction=r),
                    lambda dt, s=shape: (randn(*s, dtype=dt), randn(*s, dtype=dt, seed=1)),
                ),
                (
                    f"quadratic_cost-{red}-{sid}",
                    "quadratic_cost",
                    lambda a, b, r=red: F.quadratic_cost(a, b, reduction=r),
                    lambda a, b, r=red: 0.5 * TF.mse_loss(a, b, reduction=r),
                    lambda dt, s=shape: (randn(*s, dtype=dt), randn(*s, dtype=dt, seed=1)),
                ),
                (
                    f"bce_logits-{red}-{sid}",
                    "binary_cross_entropy_with_logits",
                    lambda a, b, r=red: F.binary_cross_entropy_with_logits(a, b, reduction=r),
                    lambda a, b, r=red: TF.binary_cross_entropy_with_logits(a, b, reduction=r),
                    lambda dt, s=shape: (randn(*s, dtype=dt), uniform01(*s, dtype=dt, seed=1)),
                ),
            ]
        # cross_entropy: class indices and probabilities; (N,C), (N,C,d), (C,), batch of one
        for shape in [(4, 3), (2, 3, 4), (1, 3), (3,)]:
            sid = "x".join(map(str, shape))
            cdim = 0 if len(shape) == 1 else 1
            idx_shape = shape[:cdim] + shape[cdim + 1 :]
            cases += [
                (
                    f"cross_entropy-index-{red}-{sid}",
                    "cross_entropy",
                    lambda a, r=red, s=idx_shape, c=shape[cdim]: F.cross_entropy(
                        a, classes(*s, n_classes=c), reduction=r
                    ),
                    lambda a, r=red, s=idx_shape, c=shape[cdim]: TF.cross_entropy(
                        a, classes(*s, n_classes=c), reduction=r
                    ),
                    lambda dt, s=shape: (randn(*s, dtype=dt),),
                ),
                (
                    f"cross_entropy-probs-{red}-{sid}",
                    "cross_entropy",
                    lambda a, b, r=red: F.cross_entropy(a, b, reduction=r),
                    lambda a, b, r=red: TF.cross_entropy(a, b, reduction=r),
                    lambda dt, s=shape, c=cdim: (
                        randn(*s, dtype=dt),
                        probs(*s, dim=c, dtype=dt, seed=1),
                    ),
                ),
            ]
            if shape in [(4, 3), (3,)]:
                cases.append(
                    (
                        f"nll_loss-{red}-{sid}",
                        "nll_loss",
                        lambda a, r=red, s=idx_shape, c=shape[cdim]: F.nll_loss(
                            a, classes(*s, n_classes=c), reduction=r
                        ),
                        lambda a, r=red, s=idx_shape, c=shape[cdim]: TF.nll_loss(
                            a, classes(*s, n_classes=c), reduction=r
                        ),
                        lambda dt, s=shape: (randn(*s, dtype=dt),),
                    )
                )
        # the extra arguments: class weights, ignored samples, label smoothing, pos_weight
        # (small shapes: PyTorch's own samples in test_opinfo.py cover more combinations)
        for shape in [(5, 3)] + ([(2, 3, 2)] if red == "mean" else []):
            sid = "x".join(map(str, shape))
            idx_shape = shape[:1] + shape[2:]
            for kw in [
                {"weight": True, "ignore_index": 1},
                {"ignore_index": -100},
                {"label_smoothing": 0.2},
                {"label_smoothing": 0.3, "weight": True, "ignore_index": 2},
            ]:
                kid = "-".join(f"{k}{'' if v is True else v}" for k, v in kw.items())

                def _call(fn, a, r=red, s=idx_shape, c=shape[1], kw=kw):
                    ii = kw.get("ignore_index", -100)
                    y = classes_some_ignored(*s, n_classes=c, ignore_index=ii)
                    w = class_weights(c, a.dtype) if kw.get("weight") else None
                    extra = {k: v for k, v in kw.items() if k != "weight"}
                    return fn(a, y, weight=w, reduction=r, **extra)

                cases.append(
                    (
                        f"cross_entropy-index-{kid}-{red}-{sid}",
                        "cross_entropy",
                        lambda a, c=_call: c(F.cross_entropy, a),
                        lambda a, c=_call: c(TF.cross_entropy, a),
                        lambda dt, s=shape: (randn(*s, dtype=dt),),
                    )
                )
                if "label_smoothing" not in kw:
                    cases.append(
                        (
                            f"nll_loss-{kid}-{red}-{sid}",
                            "nll_loss",
                            lambda a, c=_call: c(F.nll_loss, a),
                            lambda a, c=_call: c(TF.nll_loss, a),
                            lambda dt, s=shape: (randn(*s, dtype=dt),),
                        )
                    )
            cases.append(
                (
                    f"cross_entropy-probs-weight-smoothing-{red}-{sid}",
                    "cross_entropy",
                    lambda a, b, r=red: F.cross_entropy(
                        a, b, weight=class_weights(3, a.dtype), label_smoothing=0.2, reduction=r
                    ),
                    lambda a, b, r=red: TF.cross_entropy(
                        a, b, weight=class_weights(3, a.dtype), label_smoothing=0.2, reduction=r
                    ),
                    lambda dt, s=shape: (
                        randn(*s, dtype=dt),
                        probs(*s, dim=1, dtype=dt, seed=1),
                    ),
                )
            )
            for wshape, pos in [(shape[-1:], True), (shape, False), (None, True)]:
                wid = "x".join(map(str, wshape)) if wshape else "none"

                def _bce(fn, a, b, r=red, ws=wshape, pos=pos):
                    w = None if ws is None else torch.rand(ws, generator=_gen(3), dtype=a.dtype)
                    pw = class_weights(a.shape[-1], a.dtype) if pos else None
                    return fn(a, b, weight=w, pos_weight=pw, reduction=r)

                cases.append(
                    (
                        f"bce_logits-weight{wid}-pos{pos}-{red}-{sid}",
                        "binary_cross_entropy_with_logits",
                        lambda a, b, c=_bce: c(F.binary_cross_entropy_with_logits, a, b),
                        lambda a, b, c=_bce: c(TF.binary_cross_entropy_with_logits, a, b),
                        lambda dt, s=shape: (
                            randn(*s, dtype=dt),
                            uniform01(*s, dtype=dt, seed=1),
                        ),
                    )
                )
    cases += _network_cases()
    cases += _layer_cases()
    return cases


# One intra-op thread: these tensors are tiny, and a second OpenMP thread competing for a
# shared 2-core machine made single convolutions take milliseconds (torch's own too).
pytestmark = pytest.mark.usefixtures("one_thread")


def _network_cases() -> list[Case]:
    """One case per convolutional / recurrent Function (tests/test_convolution.py and
    tests/test_recurrent.py hold their full grids)."""
    from handprop.functional.dropout import DropoutFunction

    def rnn_args(dt, gates=1):
        return (
            randn(3, 2, 3, dtype=dt),
            randn(1, 2, 2, dtype=dt, seed=1),
            *(randn(*s, dtype=dt, seed=2 + k) for k, s in enumerate(
                [(2 * gates, 3), (2 * gates, 2), (2 * gates,), (2 * gates,)]
            )),
        )  # fmt: skip

    def lstm_args(dt):
        x, h, *w = rnn_args(dt, 4)
        return (x, h, randn(1, 2, 2, dtype=dt, seed=9), *w)

    mask = (torch.rand(2, 3, 4, generator=_gen(5)) > 0.3).to(F64) / 0.7
    return [
        (
            "conv2d-2x2x5x4",
            "conv2d",
            lambda x, w, b: F.conv2d(x, w, b, 1, 1),
            lambda x, w, b: TF.conv2d(x, w, b, 1, 1),
            lambda dt: (
                randn(2, 2, 5, 4, dtype=dt),
                randn(3, 2, 3, 3, dtype=dt, seed=1),
                randn(3, dtype=dt, seed=2),
            ),
        ),
        (
            "max_pool2d-2x2x5x4",
            "max_pool2d",
            lambda x: F.max_pool2d(x, 2, 1, 1),
            lambda x: TF.max_pool2d(x, 2, 1, 1),
            lambda dt: (randn(2, 2, 5, 4, dtype=dt),),
        ),
        (
            "avg_pool2d-2x2x5x4",
            "avg_pool2d",
            lambda x: F.avg_pool2d(x, 3, 2, 1),
            lambda x: TF.avg_pool2d(x, 3, 2, 1),
            lambda dt: (randn(2, 2, 5, 4, dtype=dt),),
        ),
        (
            "flatten-2x3x4",
            "flatten",
            lambda x: F.flatten(x, 1),
            lambda x: torch.flatten(x, 1),
            lambda dt: (randn(2, 3, 4, dtype=dt),),
        ),
        (
            "dropout-2x3x4",
            "dropout",
            lambda x: DropoutFunction.apply(x, mask.to(x.dtype)),
            lambda x: x * mask.to(x.dtype),
            lambda dt: (randn(2, 3, 4, dtype=dt),),
        ),
        (
            "rnn_tanh-3x2x3",
            "rnn_tanh",
            lambda x, h, *w: F.rnn_tanh(x, h, w, True, 1, 0.0, False, False, False)[0],
            lambda x, h, *w: torch.rnn_tanh(x, h, w, True, 1, 0.0, False, False, False)[0],
            rnn_args,
        ),
        (
            "rnn_relu-3x2x3",
            "rnn_relu",
            lambda x, h, *w: F.rnn_relu(x, h, w, True, 1, 0.0, False, False, False)[0],
            lambda x, h, *w: torch.rnn_relu(x, h, w, True, 1, 0.0, False, False, False)[0],
            rnn_args,
        ),
        (
            "lstm-3x2x3",
            "lstm",
            lambda x, h, c, *w: F.lstm(x, (h, c), w, True, 1, 0.0, False, False, False)[0],
            lambda x, h, c, *w: torch.lstm(x, (h, c), w, True, 1, 0.0, False, False, False)[0],
            lstm_args,
        ),
    ]


def _layer_cases() -> list[Case]:
    """One case per Function of the layers real networks use (tests/test_layers.py holds their
    full grids, running statistics and modules)."""
    index = torch.tensor([[1, 0, 3], [3, 3, 2]])
    return [
        (
            "batch_norm-4x3x2",
            "batch_norm",
            lambda x, w, b: F.batch_norm(x, None, None, w, b, True),
            lambda x, w, b: TF.batch_norm(x, None, None, w, b, True),
            lambda dt: (
                randn(4, 3, 2, dtype=dt),
                uniform01(3, dtype=dt, seed=1),
                randn(3, dtype=dt, seed=2),
            ),
        ),
        (
            "layer_norm-3x4",
            "layer_norm",
            lambda x, w, b: F.layer_norm(x, (4,), w, b),
            lambda x, w, b: TF.layer_norm(x, (4,), w, b),
            lambda dt: (
                randn(3, 4, dtype=dt),
                uniform01(4, dtype=dt, seed=1),
                randn(4, dtype=dt, seed=2),
            ),
        ),
        (
            "embedding-4x3",
            "embedding",
            lambda w: F.embedding(index, w),
            lambda w: TF.embedding(index, w),
            lambda dt: (randn(4, 3, dtype=dt),),
        ),
        ("gelu-4x3", "gelu", F.gelu, TF.gelu, lambda dt: (randn(4, 3, dtype=dt),)),
        (
            "adaptive_avg_pool2d-2x2x5x4",
            "adaptive_avg_pool2d",
            lambda x: F.adaptive_avg_pool2d(x, (2, 3)),
            lambda x: TF.adaptive_avg_pool2d(x, (2, 3)),
            lambda dt: (randn(2, 2, 5, 4, dtype=dt),),
        ),
    ]


CASES = _cases()
CASE_IDS = [c[0] for c in CASES]


def test_cases_cover_every_function():
    assert {c[1] for c in CASES} == set(FUNCTIONS)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradcheck(case):
    _, _, fn, _, make = case
    assert gradcheck(fn, make(F64), eps=1e-6, atol=1e-7, rtol=1e-5)


# forward mode: each Function's jvp against finite differences, on its first case and on
# every case of the loss arguments with the mean reduction (the op_db suite and test_dropins.py
# compare the tangents with torch's everywhere else)
JVP_CASES = [
    c
    for i, c in enumerate(CASES)
    if c[1] not in {d[1] for d in CASES[:i]} or c[0].endswith("-mean-5x3")
]


@pytest.mark.parametrize("case", JVP_CASES, ids=[c[0] for c in JVP_CASES])
def test_jvp_gradcheck(case):
    _, _, fn, _, make = case
    assert gradcheck(
        fn,
        make(F64),
        eps=1e-6,
        atol=1e-7,
        rtol=1e-5,
        check_forward_ad=True,
        check_backward_ad=False,
    )


# double backward: every case, except that the loss arguments (weights, ignored samples,
# smoothing) are checked with the mean reduction only (the others scale the same rule)
GRADGRAD_CASES = [
    c
    for c in CASES
    if not any(k in c[0] for k in ("weight", "ignore", "smoothing", "pos"))
    or c[0].endswith("-mean-5x3")
]


@pytest.mark.parametrize("case", GRADGRAD_CASES, ids=[c[0] for c in GRADGRAD_CASES])
def test_gradgradcheck(case):
    _, _, fn, _, make = case
    assert gradgradcheck(fn, make(F64), eps=1e-6, atol=1e-7, rtol=1e-5)


def _out_and_grads(fn, args, upstream):
    out = fn(*args)
    (out * upstream).sum().backward() if upstream is not None else out.sum().backward()
    return out, [a.grad for a in args if a.requires_grad]


def _compare(fn, twin, args, dtype):
    atol, rtol = TOL[dtype]
    ours = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]
    theirs = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]
    out = fn(*ours)
    ref = twin(*theirs)
    assert out.dtype == ref.dtype == dtype
    assert out.shape == ref.shape
    # a random (non-constant) upstream gradient, so every output element matters
    upstream = torch.randn(ref.shape, generator=_gen(7), dtype=dtype)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    ref_finite = torch.isfinite(ref)
    assert torch.isfinite(out[ref_finite]).all(), "non-finite output where torch is finite"
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    for a, b in zip(ours, theirs, strict=True):
        if b.requires_grad:
            assert a.grad is not None
            assert torch.isfinite(a.grad[torch.isfinite(b.grad)]).all()
            torch.testing.assert_close(a.grad, b.grad, atol=atol, rtol=rtol)
    return out


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_torch(case, dtype):
    _, name, fn, twin, make = case
    out = _compare(fn, twin, make(dtype), dtype)
    # no silent fallback to a built-in op: the graph's last node is this handprop Function
    assert out.grad_fn is not None
    assert type(out.grad_fn).__name__.endswith("Backward")
    assert F.function_of(out.grad_fn) is FUNCTIONS[name]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_grad_fn_is_handprop_function(name):
    x = randn(3, 4)
    y = randn(3, 4, seed=1)
    out = {
        "linear": lambda: F.linear(x, randn(2, 4, seed=2), randn(2, seed=3)),
        "sigmoid": lambda: F.sigmoid(x),
        "tanh": lambda: F.tanh(x),
        "relu": lambda: F.relu(x),
        "leaky_relu": lambda: F.leaky_relu(x),
        "softmax": lambda: F.softmax(x, 1),
        "log_softmax": lambda: F.log_softmax(x, 1),
        "nll_loss": lambda: F.nll_loss(x, classes(3, n_classes=4)),
        "mse_loss": lambda: F.mse_loss(x, y),
        "quadratic_cost": lambda: F.quadratic_cost(x, y),
        "binary_cross_entropy_with_logits": lambda: F.binary_cross_entropy_with_logits(
            x, y.detach().sigmoid()
        ),
        "cross_entropy": lambda: F.cross_entropy(x, classes(3, n_classes=4)),
        "conv2d": lambda: F.conv2d(x.view(1, 1, 3, 4), randn(2, 1, 2, 2, seed=2)),
        "max_pool2d": lambda: F.max_pool2d(x.view(1, 1, 3, 4), 2),
        "avg_pool2d": lambda: F.avg_pool2d(x.view(1, 1, 3, 4), 2),
        "flatten": lambda: F.flatten(x.view(3, 2, 2), 1),
        "dropout": lambda: F.dropout(x, 0.5),
        "rnn_tanh": lambda: F.rnn_tanh(
            x.view(3, 1, 4),
            y[:1, :2].reshape(1, 1, 2),
            [randn(2, 4), randn(2, 2)],
            False,
            1,
            0.0,
            False,
            False,
            False,
        )[0],
        "rnn_relu": lambda: F.rnn_relu(
            x.view(3, 1, 4),
            y[:1, :2].reshape(1, 1, 2),
            [randn(2, 4), randn(2, 2)],
            False,
            1,
            0.0,
            False,
            False,
            False,
        )[0],
        "lstm": lambda: F.lstm(
            x.view(3, 1, 4),
            (y[:1, :2].reshape(1, 1, 2), y[1:2, :2].reshape(1, 1, 2)),
            [randn(8, 4), randn(8, 2)],
            False,
            1,
            0.0,
            False,
            False,
            False,
        )[0],
        "batch_norm": lambda: F.batch_norm(x, None, None, training=True),
        "layer_norm": lambda: F.layer_norm(x, 4),
        "embedding": lambda: F.embedding(classes(3, n_classes=3), x),
        "gelu": lambda: F.gelu(x),
        "adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(x.view(1, 1, 3, 4), 2),
    }[name]()
    assert type(out.grad_fn).__name__.endswith("Backward")
    assert F.function_of(out.grad_fn) is FUNCTIONS[name]
    assert FUNCTIONS[name].__module__.startswith("handprop.functional.")
    assert F.function_of(TF.relu(x).grad_fn) is None  # torch's own nodes are not taken for ours


# --------------------------------------------------------------------------------------------
# Extreme inputs: |z| up to 1e4
# --------------------------------------------------------------------------------------------
EXTREME = [-1e4, -1e3, -50.0, -1.0, 0.0, 1.0, 50.0, 1e3, 1e4]


def _extreme_cases() -> list[tuple[str, Callable, Callable, Callable]]:
    def col(dt):
        return torch.tensor(EXTREME, dtype=dt).requires_grad_()

    def logits3(dt):  # the logits [-1e4, 0, 1e4] and their permutations, (6, 3)
        rows = [
            [-1e4, 0.0, 1e4],
            [1e4, -1e4, 0.0],
            [0.0, 1e4, -1e4],
            [1e4, 1e4, -1e4],
            [-1e4, -1e4, -1e4],
            [1e4, 0.0, 0.0],
        ]
        return torch.tensor(rows, dtype=dt).requires_grad_()

    cases = [
        ("sigmoid", lambda dt: (col(dt),), F.sigmoid, torch.sigmoid),
        ("tanh", lambda dt: (col(dt),), F.tanh, torch.tanh),
        ("relu", lambda dt: (col(dt),), F.relu, TF.relu),
        ("leaky_relu", lambda dt: (col(dt),), F.leaky_relu, TF.leaky_relu),
        (
            "softmax",
            lambda dt: (logits3(dt),),
            lambda z: F.softmax(z, 1),
            lambda z: TF.softmax(z, 1),
        ),
        (
            "softmax-dim0",
            lambda dt: (logits3(dt),),
            lambda z: F.softmax(z, 0),
            lambda z: TF.softmax(z, 0),
        ),
        (
            "linear",
            lambda dt: (
                col(dt).detach().view(3, 3).requires_grad_(),
                randn(2, 3, dtype=dt),
                randn(2, dtype=dt, seed=1),
            ),
            F.linear,
            TF.linear,
        ),
    ]
    for red in REDUCTIONS:
        cases += [
            (
                f"mse_loss-{red}",
                lambda dt: (col(dt), torch.linspace(-1e4, 1e4, 9, dtype=dt)),
                lambda a, b, r=red: F.mse_loss(a, b, reduction=r),
                lambda a, b, r=red: TF.mse_loss(a, b, reduction=r),
            ),
            (
                f"bce_logits-{red}",
                lambda dt: (
                    col(dt),
                    torch.tensor([0.0, 1, 0.3, 1, 0, 0.5, 0, 1, 0.7], dtype=dt).requires_grad_(),
                ),
                lambda a, b, r=red: F.binary_cross_entropy_with_logits(a, b, reduction=r),
                lambda a, b, r=red: TF.binary_cross_entropy_with_logits(a, b, reduction=r),
            ),
            (
                f"cross_entropy-index-{red}",
                lambda dt: (logits3(dt),),
                lambda a, r=red: F.cross_entropy(a, torch.tensor([0, 1, 2, 2, 1, 0]), reduction=r),
                lambda a, r=red: TF.cross_entropy(a, torch.tensor([0, 1, 2, 2, 1, 0]), reduction=r),
            ),
            (
                f"cross_entropy-probs-{red}",
                lambda dt: (
                    logits3(dt),
                    torch.tensor([[0.2, 0.3, 0.5]] * 6, dtype=dt).requires_grad_(),
                ),
                lambda a, b, r=red: F.cross_entropy(a, b, reduction=r),
                lambda a, b, r=red: TF.cross_entropy(a, b, reduction=r),
            ),
            (
                f"cross_entropy-unbatched-{red}",
                lambda dt: (torch.tensor([-1e4, 0.0, 1e4], dtype=dt).requires_grad_(),),
                lambda a, r=red: F.cross_entropy(a, torch.tensor(0), reduction=r),
                lambda a, r=red: TF.cross_entropy(a, torch.tensor(0), reduction=r),
            ),
        ]
    return cases


EXTREME_CASES = _extreme_cases()


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", EXTREME_CASES, ids=[c[0] for c in EXTREME_CASES])
def test_extreme_inputs_match_torch(case, dtype):
    _, make, fn, twin = case
    args = make(dtype)
    out = _compare(fn, twin, args, dtype)
    assert torch.isfinite(out).all()


def test_extreme_cross_entropy_values():
    z = torch.tensor([[-1e4, 0.0, 1e4]], dtype=F64, requires_grad=True)
    loss = F.cross_entropy(z, torch.tensor([0]))
    loss.backward()
    assert loss.item() == pytest.approx(2e4)
    torch.testing.assert_close(z.grad, torch.tensor([[-1.0, 0.0, 1.0]], dtype=F64))


# --------------------------------------------------------------------------------------------
# The notes' quadratic cost
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4), (1,)])
def test_quadratic_cost_is_half_mse_with_gradient_residual_over_n(shape):
    y_hat = randn(*shape)
    y = randn(*shape, seed=1, grad=False)
    n = y_hat.numel()
    for red in REDUCTIONS:
        q = F.quadratic_cost(y_hat, y, reduction=red)
        m = F.mse_loss(y_hat, y, reduction=red)
        torch.testing.assert_close(q, 0.5 * m, atol=1e-14, rtol=1e-14)
    (g_mean,) = torch.autograd.grad(F.quadratic_cost(y_hat, y), y_hat)
    torch.testing.assert_close(g_mean, (y_hat - y).detach() / n, atol=1e-14, rtol=1e-14)
    (g_sum,) = torch.autograd.grad(F.quadratic_cost(y_hat, y, reduction="sum"), y_hat)
    torch.testing.assert_close(g_sum, (y_hat - y).detach(), atol=1e-14, rtol=1e-14)
    per = F.quadratic_cost(y_hat, y, reduction="none")
    (g_none,) = torch.autograd.grad(per, y_hat, torch.ones_like(per))
    torch.testing.assert_close(g_none, (y_hat - y).detach(), atol=1e-14, rtol=1e-14)


def test_quadratic_cost_value():
    y_hat = torch.tensor([1.0, 3.0], dtype=F64)
    y = torch.tensor([0.0, 0.0], dtype=F64)
    assert F.quadratic_cost(y_hat, y).item() == pytest.approx(0.25 * (1 + 9))
    assert F.quadratic_cost(y_hat, y, reduction="sum").item() == pytest.approx(5.0)


# --------------------------------------------------------------------------------------------
# ctx.needs_input_grad: only the requested gradients are computed
# --------------------------------------------------------------------------------------------
def _backward_returns(out):
    """Call the node's hand-written backward directly; returns its tuple of gradients."""
    return out.grad_fn.apply(torch.ones_like(out))


def test_linear_weight_only():
    x = randn(4, 3, grad=False)
    w = randn(5, 3, seed=1)
    b = randn(5, seed=2, grad=False)
    out = F.linear(x, w, b)
    gx, gw, gb = _backward_returns(out)
    assert gx is None and gb is None
    torch.testing.assert_close(gw, torch.ones(4, 5, dtype=F64).t() @ x)
    out.sum().backward()
    assert x.grad is None and b.grad is None and w.grad is not None


def test_linear_input_only():
    x = randn(2, 4, 3)
    w = randn(5, 3, seed=1, grad=False)
    out = F.linear(x, w)
    gx, gw, gb = _backward_returns(out)
    assert gw is None and gb is None
    torch.testing.assert_close(gx, torch.ones(2, 4, 5, dtype=F64) @ w)


def test_linear_bias_only():
    x = randn(4, 3, grad=False)
    w = randn(5, 3, seed=1, grad=False)
    b = randn(5, seed=2)
    gx, gw, gb = _backward_returns(F.linear(x, w, b))
    assert gx is None and gw is None
    torch.testing.assert_close(gb, torch.full((5,), 4.0, dtype=F64))


@pytest.mark.parametrize(
    "name", ["mse_loss", "quadratic_cost", "binary_cross_entropy_with_logits", "cross_entropy"]
)
@pytest.mark.parametrize("which", ["input", "target"])
def test_loss_needs_input_grad(name, which):
    fn = getattr(F, name)
    z = randn(4, 3, grad=which == "input")
    y = probs(4, 3, dim=1, seed=1, grad=which == "target")
    grads = _backward_returns(fn(z, y))
    assert all(g is None for g in grads[2:])
    if which == "input":
        assert grads[0] is not None and grads[1] is None
    else:
        assert grads[0] is None and grads[1] is not None
    # and through autograd, against torch's twin
    twin = {
        "mse_loss": TF.mse_loss,
        "quadratic_cost": lambda a, b: 0.5 * TF.mse_loss(a, b),
        "binary_cross_entropy_with_logits": TF.binary_cross_entropy_with_logits,
        "cross_entropy": TF.cross_entropy,
    }[name]
    leaf = z if which == "input" else y
    (ours,) = torch.autograd.grad(fn(z, y), leaf)
    (ref,) = torch.autograd.grad(twin(z, y), leaf)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)


def test_cross_entropy_index_target_input_grad():
    z = randn(4, 3)
    grads = _backward_returns(F.cross_entropy(z, classes(4, n_classes=3)))
    assert grads[0] is not None and grads[1] is None and grads[2] is None


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
LOSSES = {
    "mse_loss": lambda r: F.mse_loss(randn(2, 3), randn(2, 3, seed=1), reduction=r),
    "quadratic_cost": lambda r: F.quadratic_cost(randn(2, 3), randn(2, 3, seed=1), reduction=r),
    "binary_cross_entropy_with_logits": lambda r: F.binary_cross_entropy_with_logits(
        randn(2, 3), uniform01(2, 3), reduction=r
    ),
    "cross_entropy": lambda r: F.cross_entropy(randn(2, 3), classes(2, n_classes=3), reduction=r),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("bad", ["avg", "Mean", "", "batchmean"])
def test_bad_reduction_raises(name, bad):
    with pytest.raises(ValueError, match="reduction") as info:
        LOSSES[name](bad)
    msg = str(info.value)
    for allowed in REDUCTIONS:
        assert allowed in msg
    assert repr(bad) in msg


#: (name, arguments) of a loss on shapes that do not fit: torch raises, and handprop raises
#: torch's exception type
MISMATCHES = {
    "mse": ("mse_loss", lambda: (randn(2, 3), randn(3, 2))),
    "bce": ("binary_cross_entropy_with_logits", lambda: (randn(2, 3), uniform01(2, 4))),
    "ce-probs": ("cross_entropy", lambda: (randn(2, 3), probs(2, 4, dim=1))),
    "ce-index": ("cross_entropy", lambda: (randn(2, 3), classes(3, n_classes=3))),
    "ce-index-3d": ("cross_entropy", lambda: (randn(2, 3, 4), classes(2, n_classes=3))),
    "nll-index-2d": ("nll_loss", lambda: (randn(2, 3), classes(2, 3, n_classes=3))),
    "nll-float-target": ("nll_loss", lambda: (randn(2, 3), uniform01(2))),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_loss_shape_mismatch_raises_torchs_error(case):
    name, make = MISMATCHES[case]
    with pytest.raises(Exception) as theirs:  # noqa: PT011 — the type is what is compared
        getattr(TF, name)(*make())
    with pytest.raises(type(theirs.value), match="size|shape|target"):
        getattr(F, name)(*make())


@pytest.mark.parametrize(
    "call, error",
    [
        (lambda: F.mse_loss(randn(4, 1), randn(4)), ValueError),
        (lambda: F.quadratic_cost(randn(4, 1), randn(4)), ValueError),
        (lambda: F.quadratic_cost(randn(2, 3), randn(2, 3, 1)), RuntimeError),
        (lambda: F.cross_entropy(randn(3), classes(1, n_classes=3)), ValueError),
    ],
    ids=["mse-broadcast", "quadratic-broadcast", "quadratic", "ce-unbatched"],
)
def test_loss_shape_mismatch_torch_lets_through_raises(call, error):
    """Shapes torch only warns about and broadcasts ((N, 1) against (N,) is an N × N loss) or
    reads its own way: a ValueError; the notes' cost (no torch twin) on shapes that do not
    broadcast: torch's RuntimeError, as mse_loss."""
    with pytest.raises(error, match="size|shape"):
        call()


# --------------------------------------------------------------------------------------------
# Non-contiguous inputs and upstream gradients
# --------------------------------------------------------------------------------------------
NONCONTIG = [
    (
        "linear-2d-transposed",
        lambda dt: (
            randn(3, 4, dtype=dt).detach().t().requires_grad_(),
            randn(5, 3, dtype=dt, seed=1),
            randn(5, dtype=dt, seed=2),
        ),
        F.linear,
        TF.linear,
    ),
    (
        "linear-3d-permuted",
        lambda dt: (
            randn(3, 2, 4, dtype=dt).detach().permute(2, 1, 0).requires_grad_(),
            randn(5, 3, dtype=dt, seed=1),
        ),
        F.linear,
        TF.linear,
    ),
    (
        "relu-strided",
        lambda dt: (away_from_zero(4, 6, dtype=dt).detach()[:, ::2].requires_grad_(),),
        F.relu,
        TF.relu,
    ),
    (
        "sigmoid-transposed",
        lambda dt: (randn(4, 3, dtype=dt).detach().t().requires_grad_(),),
        F.sigmoid,
        torch.sigmoid,
    ),
    (
        "softmax-transposed",
        lambda dt: (randn(4, 3, dtype=dt).detach().t().requires_grad_(),),
        lambda z: F.softmax(z, 1),
        lambda z: TF.softmax(z, 1),
    ),
    (
        "cross_entropy-transposed",
        lambda dt: (randn(3, 4, dtype=dt).detach().t().requires_grad_(),),
        lambda z: F.cross_entropy(z, classes(4, n_classes=3)),
        lambda z: TF.cross_entropy(z, classes(4, n_classes=3)),
    ),
]


@pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", NONCONTIG, ids=[c[0] for c in NONCONTIG])
def test_non_contiguous_inputs(case, dtype):
    _, make, fn, twin = case
    args = make(dtype)
    assert not args[0].is_contiguous()
    _compare(fn, twin, args, dtype)
    # an expanded (stride-0) upstream gradient, as ``out.sum().backward()`` sends
    ours = [a.detach().clone().requires_grad_() for a in args]
    theirs = [a.detach().clone().requires_grad_() for a in args]
    fn(*ours).sum().backward()
    twin(*theirs).sum().backward()
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=TOL[dtype][0], rtol=TOL[dtype][1])
    if dtype == F64:
        assert gradcheck(fn, make(F64))


def test_functorch_transforms_take_torchs_full_apply_path() -> None:
    """Plain calls run the old-style twin (no per-call signature binding); under torch.func
    transforms torch refuses it and the Function itself runs: torch.func.grad still works."""
    x = torch.randn(5, dtype=torch.float64)
    w = torch.randn(3, 5, dtype=torch.float64)

    def cost(t: torch.Tensor) -> torch.Tensor:
        return F.tanh(F.linear(t.unsqueeze(0), w)).sum()

    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(cost(xr), xr)
    torch.testing.assert_close(torch.func.grad(cost)(x), expected)
