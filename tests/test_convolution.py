"""The convolutional network's Functions (conv2d, max / average pooling, flatten, dropout) and
their handprop.nn drop-ins: finite differences (gradcheck / gradgradcheck), equality with torch
(values and every gradient, float64 and float32, over strides, paddings, dilations and
groups), PyTorch's OpInfo samples, forward-mode AD and torch.func transforms."""

from __future__ import annotations

import itertools
import os
import warnings

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as TF
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import handprop.functional as F
import handprop.nn as hnn
from handprop.functional import FUNCTIONS, function_of
from handprop.functional.dropout import DropoutFunction

F64, F32 = torch.float64, torch.float32
TOL = {F64: (1e-10, 1e-10), F32: (2e-5, 1e-5)}
DTYPES = pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, dtype=F64, seed: int = 0, grad: bool = True) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype).requires_grad_(grad)


def distinct(*shape: int, dtype=F64, seed: int = 0) -> torch.Tensor:
    """Values at least 4/n apart, so no pooling window has a tie within finite differences."""
    n = torch.Size(shape).numel()
    v = torch.randperm(n, generator=_gen(seed)).to(dtype) * (4.0 / n) - 2.0
    return v.view(shape).requires_grad_()


def _compare(fn, twin, args: list[torch.Tensor], dtype) -> torch.Tensor:
    """Same output and the same gradient for every input that requires one."""
    atol, rtol = TOL[dtype]
    ours = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]
    theirs = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]
    out, ref = fn(*ours), twin(*theirs)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    upstream = torch.randn(ref.shape, generator=_gen(7), dtype=ref.dtype)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    for a, b in zip(ours, theirs, strict=True):
        if b.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, atol=atol, rtol=rtol)
    return out


# --------------------------------------------------------------------------------------------
# conv2d: a grid of (input shape, weight shape, stride, padding, dilation, groups)
# --------------------------------------------------------------------------------------------
CONV = [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 0, 1, 1),
    ((2, 3, 7, 6), (4, 3, 3, 2), 2, 1, 1, 1),
    ((1, 2, 8, 9), (3, 2, 2, 3), (2, 3), (1, 2), (2, 1), 1),
    ((2, 4, 6, 6), (6, 2, 3, 3), 1, 1, 1, 2),
    ((2, 4, 7, 5), (4, 1, 3, 2), (1, 2), 0, (1, 2), 4),
    ((2, 2, 6, 7), (3, 2, 2, 2), 1, "same", 1, 1),  # even filter: one more row / column after
    ((2, 3, 6, 7), (3, 1, 3, 2), 1, "same", (2, 1), 3),
    ((1, 2, 5, 5), (2, 2, 3, 3), 2, "valid", 1, 1),
    ((3, 5, 5), (2, 3, 3, 3), 1, 1, 1, 1),  # unbatched (C, H, W)
]
CONV_IDS = [f"conv{i}-s{c[2]}-p{c[3]}-d{c[4]}-g{c[5]}".replace(" ", "") for i, c in enumerate(CONV)]


def _conv_fns(case, bias: bool):
    _, _, s, p, d, g = case
    if bias:
        return (
            lambda x, w, b: F.conv2d(x, w, b, s, p, d, g),
            lambda x, w, b: TF.conv2d(x, w, b, s, p, d, g),
        )
    return (
        lambda x, w: F.conv2d(x, w, None, s, p, d, g),
        lambda x, w: TF.conv2d(x, w, None, s, p, d, g),
    )


def _conv_args(case, bias: bool, dtype=F64):
    x_shape, w_shape = case[:2]
    args = [randn(*x_shape, dtype=dtype), randn(*w_shape, dtype=dtype, seed=1)]
    return args + ([randn(w_shape[0], dtype=dtype, seed=2)] if bias else [])


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", CONV, ids=CONV_IDS)
def test_conv2d_gradcheck(case, bias):
    fn, _ = _conv_fns(case, bias)
    assert gradcheck(fn, _conv_args(case, bias))


@pytest.mark.parametrize("case", CONV[:2] + CONV[4:6], ids=CONV_IDS[:2] + CONV_IDS[4:6])
def test_conv2d_gradgradcheck(case):
    fn, _ = _conv_fns(case, True)
    assert gradgradcheck(fn, _conv_args(case, True))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@DTYPES
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", CONV, ids=CONV_IDS)
def test_conv2d_matches_torch(case, bias, dtype):
    fn, twin = _conv_fns(case, bias)
    out = _compare(fn, twin, _conv_args(case, bias, dtype), dtype)
    assert function_of(out.grad_fn) is FUNCTIONS["conv2d"]


def test_conv2d_only_some_gradients():
    """Each of ∂C/∂x, ∂C/∂W, ∂C/∂b alone, as when the input is data (the first layer)."""
    for needs in itertools.product([True, False], repeat=3):
        if not any(needs):
            continue
        args = [
            a.detach().requires_grad_(n)
            for a, n in zip(_conv_args(CONV[3], True), needs, strict=True)
        ]
        fn, twin = _conv_fns(CONV[3], True)
        _compare(fn, twin, args, F64)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"padding": "same", "stride": 2}, "strided"),
        ({"padding": "full"}, "Invalid padding string"),
        ({"stride": (1, 2, 3)}, "stride to be a single integer value or a list of 2"),
        ({"stride": 1.5}, "stride"),
        ({"groups": 0}, "non-positive groups"),
        ({"groups": 1.0}, "groups"),
    ],
    ids=["same-strided", "padding-string", "stride-triple", "stride-float", "groups-0", "groups-float"],
)  # fmt: skip
def test_conv2d_bad_arguments_raise_torchs_error(kwargs, match):
    """torch's exception type (RuntimeError, TypeError for a value of the wrong type)."""
    x, w = randn(1, 2, 5, 5), randn(3, 2, 3, 3)
    with pytest.raises(Exception) as theirs:  # noqa: PT011 — the type is what is compared
        TF.conv2d(x, w, **kwargs)
    with pytest.raises(type(theirs.value), match=match):
        F.conv2d(x, w, **kwargs)


# --------------------------------------------------------------------------------------------
# Pooling, flatten, dropout
# --------------------------------------------------------------------------------------------
# (input shape, kernel, stride, padding, dilation, ceil_mode); no window lies wholly in the
# padding (there torch's own max_pool2d backward writes out of bounds)
MAX_POOL = [
    ((2, 3, 6, 6), 2, None, 0, 1, False),
    ((2, 2, 7, 5), 3, 2, 1, 1, True),
    ((1, 2, 7, 8), (2, 3), (1, 2), (1, 1), (2, 1), False),
    ((1, 2, 8, 7), 3, 2, 1, 2, True),
    ((2, 5, 5), 2, 1, 1, 1, False),  # unbatched, overlapping windows
]
MAX_IDS = [f"max{i}" for i in range(len(MAX_POOL))]

# (input shape, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_POOL = [
    ((2, 3, 6, 6), 2, None, 0, False, True, None),
    ((2, 2, 7, 5), 3, 2, 1, True, True, None),
    ((2, 2, 7, 5), 3, 2, 1, True, False, None),
    ((1, 2, 7, 8), (2, 3), (1, 2), (1, 1), False, False, None),
    ((1, 2, 6, 7), 3, 2, 1, True, True, 4),
    ((2, 5, 5), 2, 1, 1, False, True, None),  # unbatched
]
AVG_IDS = [f"avg{i}" for i in range(len(AVG_POOL))]


def _max_fns(case):
    k, s, p, d, c = case[1:]
    return lambda x: F.max_pool2d(x, k, s, p, d, c), lambda x: TF.max_pool2d(x, k, s, p, d, c)


def _avg_fns(case):
    k, s, p, c, i, dv = case[1:]
    return (
        lambda x: F.avg_pool2d(x, k, s, p, c, i, dv),
        lambda x: TF.avg_pool2d(x, k, s, p, c, i, dv),
    )


@pytest.mark.parametrize("case", MAX_POOL, ids=MAX_IDS)
def test_max_pool2d_gradcheck(case):
    fn, _ = _max_fns(case)
    assert gradcheck(fn, (distinct(*case[0]),))
    assert gradgradcheck(fn, (distinct(*case[0]),))


@DTYPES
@pytest.mark.parametrize("case", MAX_POOL, ids=MAX_IDS)
def test_max_pool2d_matches_torch(case, dtype):
    fn, twin = _max_fns(case)
    out = _compare(fn, twin, [distinct(*case[0], dtype=dtype)], dtype)
    assert function_of(out.grad_fn) is FUNCTIONS["max_pool2d"]


def test_max_pool2d_gradient_goes_to_each_windows_maximum():
    """Ties go to the first maximum, as torch; overlapping windows add their δ."""
    x = torch.tensor([[[[1.0, 5.0, 5.0], [0.0, 2.0, 1.0]]]], requires_grad=True)
    out, idx = F.max_pool2d(x, 2, 1, return_indices=True)
    ref, ref_idx = TF.max_pool2d(x, 2, 1, return_indices=True)
    assert torch.equal(idx, ref_idx) and torch.equal(out, ref)
    out.backward(torch.tensor([[[[1.0, 10.0]]]]))
    assert x.grad.tolist() == [[[[0.0, 11.0, 0.0], [0.0, 0.0, 0.0]]]]


def test_max_pool2d_window_in_the_padding_passes_nothing():
    """Dilation can put a window wholly in the padding: its max is −∞ and it sends no δ."""
    x = randn(1, 1, 1, 3)
    out = F.max_pool2d(x, 2, None, 1, 2)
    assert torch.isinf(out).all()
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("case", AVG_POOL, ids=AVG_IDS)
def test_avg_pool2d_gradcheck(case):
    fn, _ = _avg_fns(case)
    assert gradcheck(fn, (randn(*case[0]),))
    assert gradgradcheck(fn, (randn(*case[0]),))


@DTYPES
@pytest.mark.parametrize("case", AVG_POOL, ids=AVG_IDS)
def test_avg_pool2d_matches_torch(case, dtype):
    fn, twin = _avg_fns(case)
    out = _compare(fn, twin, [randn(*case[0], dtype=dtype)], dtype)
    assert function_of(out.grad_fn) is FUNCTIONS["avg_pool2d"]


@DTYPES
@pytest.mark.parametrize("dims", [(0, -1), (1, -1), (1, 2), (2, 3)])
def test_flatten_matches_torch(dims, dtype):
    a, b = dims
    out = _compare(
        lambda x: F.flatten(x, a, b),
        lambda x: torch.flatten(x, a, b),
        [randn(2, 3, 4, 2, dtype=dtype)],
        dtype,
    )
    assert function_of(out.grad_fn) is FUNCTIONS["flatten"]
    assert gradgradcheck(lambda x: F.flatten(x, a, b), (randn(2, 3, 4, 2),))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_same_draws_as_torch(p):
    x = randn(4, 5, 6, dtype=F32)
    torch.manual_seed(3)
    ours = F.dropout(x, p)
    torch.manual_seed(3)
    theirs = TF.dropout(x, p)
    torch.testing.assert_close(ours, theirs)
    assert function_of(ours.grad_fn) is FUNCTIONS["dropout"]
    (g,) = torch.autograd.grad(ours.sum(), x)
    torch.testing.assert_close(g, (theirs != 0).float() / (1 - p))
    mask = (torch.rand(2, 3, generator=_gen(1)) > p).double() / (1 - p)
    assert gradcheck(lambda t: DropoutFunction.apply(t, mask), (randn(2, 3),))
    assert gradgradcheck(lambda t: DropoutFunction.apply(t, mask), (randn(2, 3),))


def test_dropout_identity_and_edges():
    x = randn(3, 4)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert torch.equal(F.dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(x, 1.5)
    m = hnn.Dropout(0.5).eval()
    assert m(x) is x


# --------------------------------------------------------------------------------------------
# PyTorch's OpInfo samples
# --------------------------------------------------------------------------------------------
def _op_db() -> list:
    """PyTorch's OpInfo database. Importing torch's test utilities sets process-wide state for
    torch's own suite (frozen ``torch.backends`` flags, which Lightning's Trainer then cannot
    set; an environment variable; warning filters): undone here, for the tests after these."""
    pytest.importorskip("expecttest")  # what torch.testing._internal needs (the dev extra)
    env, filters, frozen = dict(os.environ), list(warnings.filters), torch.backends.flags_frozen()
    from torch.testing._internal.common_methods_invocations import op_db

    os.environ.clear()
    os.environ.update(env)
    warnings.filters[:] = filters
    if not frozen:  # the module global that torch.backends.disable_global_flags() cleared
        torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    return op_db


def _opinfo_samples(name: str, dtype) -> list:
    (op,) = [o for o in _op_db() if o.name == name and o.variant_test_name == ""]
    # the samples themselves (``op.sample_inputs`` reseeds torch's RNG before each, 2 ms)
    return list(op.sample_inputs_func(op, "cpu", dtype, True))


OPINFO = {
    "nn.functional.conv2d": (F.conv2d, TF.conv2d),
    "nn.functional.max_pool2d": (F.max_pool2d, TF.max_pool2d),
    "nn.functional.avg_pool2d": (F.avg_pool2d, TF.avg_pool2d),
}


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@DTYPES
@pytest.mark.parametrize("name", sorted(OPINFO))
def test_opinfo_samples_match_torch(name, dtype):
    ours, theirs = OPINFO[name]
    samples = _opinfo_samples(name, dtype)
    assert samples
    for sample in samples:
        tensors = [sample.input, *(a for a in sample.args if isinstance(a, torch.Tensor))]
        ref = theirs(sample.input, *sample.args, **sample.kwargs)
        ref_out = ref[0] if isinstance(ref, tuple) else ref
        if not torch.isfinite(ref_out).all():  # a window wholly in the padding; see above
            continue

        def fn(*ts, op=ours, sample=sample):
            args = iter(ts[1:])
            rest = [next(args) if isinstance(a, torch.Tensor) else a for a in sample.args]
            out = op(ts[0], *rest, **sample.kwargs)
            return out[0] if isinstance(out, tuple) else out

        def twin(*ts, op=theirs, sample=sample):
            args = iter(ts[1:])
            rest = [next(args) if isinstance(a, torch.Tensor) else a for a in sample.args]
            out = op(ts[0], *rest, **sample.kwargs)
            return out[0] if isinstance(out, tuple) else out

        _compare(fn, twin, tensors, dtype)
        if isinstance(ref, tuple):  # return_indices: the same indices
            got = ours(sample.input, *sample.args, **sample.kwargs)
            assert torch.equal(got[1], ref[1])


# --------------------------------------------------------------------------------------------
# Forward-mode AD and torch.func
# --------------------------------------------------------------------------------------------
FORWARD_CASES = [
    ("conv2d", *_conv_fns(CONV[4], True), lambda: _conv_args(CONV[4], True)),
    ("conv2d-same", *_conv_fns(CONV[5], True), lambda: _conv_args(CONV[5], True)),
    ("conv2d-unbatched", *_conv_fns(CONV[8], True), lambda: _conv_args(CONV[8], True)),
    ("max_pool2d", *_max_fns(MAX_POOL[3]), lambda: [distinct(*MAX_POOL[3][0])]),
    ("avg_pool2d", *_avg_fns(AVG_POOL[2]), lambda: [randn(*AVG_POOL[2][0])]),
    ("flatten", lambda x: F.flatten(x, 1), lambda x: torch.flatten(x, 1), lambda: [randn(2, 3, 4)]),
]
FORWARD_IDS = [c[0] for c in FORWARD_CASES]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", FORWARD_CASES, ids=FORWARD_IDS)
def test_jvp_matches_torch(case):
    """The hand-written jvp against torch's forward mode: every input's tangent at once, and
    each alone (a missing tangent is zero)."""
    _, fn, twin, make = case
    primals = tuple(a.detach() for a in make())
    tangents = tuple(torch.randn_like(p) for p in primals)
    for keep in [None, *range(len(primals))]:
        ts = (
            tangents
            if keep is None
            else tuple(t if i == keep else torch.zeros_like(t) for i, t in enumerate(tangents))
        )
        out, jvp = torch.func.jvp(fn, primals, ts)
        ref, ref_jvp = torch.func.jvp(twin, primals, ts)
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(jvp, ref_jvp)
    with fwAD.dual_level():  # dual numbers, as torch.autograd.forward_ad has them
        duals = [fwAD.make_dual(p, t) for p, t in zip(primals, tangents, strict=True)]
        tangent = fwAD.unpack_dual(fn(*duals)).tangent
    torch.testing.assert_close(tangent, torch.func.jvp(twin, primals, tangents)[1])


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("case", FORWARD_CASES, ids=FORWARD_IDS)
def test_vmap_jacrev_jacfwd_match_torch(case):
    _, fn, twin, make = case
    primals = [a.detach() for a in make()]
    batch = torch.stack([primals[0], primals[0] * 0.5 + 0.1, primals[0].flip(-1)])
    ours = torch.func.vmap(fn, in_dims=(0, *([None] * (len(primals) - 1))))(batch, *primals[1:])
    theirs = torch.func.vmap(twin, in_dims=(0, *([None] * (len(primals) - 1))))(batch, *primals[1:])
    torch.testing.assert_close(ours, theirs)
    for transform in (torch.func.jacrev, torch.func.jacfwd):
        argnums = tuple(range(len(primals)))
        torch.testing.assert_close(
            transform(fn, argnums=argnums)(*primals), transform(twin, argnums=argnums)(*primals)
        )


def test_vmap_over_weights():
    """Several filters banks at once (vmap over W), e.g. an ensemble."""
    x, w, b = (a.detach() for a in _conv_args(CONV[3], True))
    ws = torch.stack([w, 2 * w])
    fn, twin = _conv_fns(CONV[3], True)
    ours = torch.func.vmap(fn, in_dims=(None, 0, None))(x, ws, b)
    torch.testing.assert_close(ours, torch.func.vmap(twin, in_dims=(None, 0, None))(x, ws, b))


# --------------------------------------------------------------------------------------------
# handprop.nn drop-ins
# --------------------------------------------------------------------------------------------
MODULES = [
    ("conv", lambda m: m.Conv2d(3, 4, 3), (2, 3, 7, 6)),
    ("conv-strided", lambda m: m.Conv2d(4, 6, (3, 2), stride=2, padding=1, groups=2), (2, 4, 7, 6)),
    (
        "conv-same",
        lambda m: m.Conv2d(2, 3, 4, padding="same", dilation=2, bias=False),
        (2, 2, 7, 6),
    ),
    ("conv-unbatched", lambda m: m.Conv2d(3, 2, 2, padding="valid"), (3, 5, 5)),
    ("maxpool", lambda m: m.MaxPool2d(2), (2, 3, 6, 6)),
    ("maxpool-ceil", lambda m: m.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 3, 7, 6)),
    ("avgpool", lambda m: m.AvgPool2d(2), (2, 3, 6, 6)),
    ("avgpool-pad", lambda m: m.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 7, 6)),
    ("flatten", lambda m: m.Flatten(), (2, 3, 4, 2)),
]


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@DTYPES
@pytest.mark.parametrize("case", MODULES, ids=[c[0] for c in MODULES])
def test_module_matches_torch(case, dtype):
    _, build, shape = case
    torch.manual_seed(0)
    ours = build(hnn).to(dtype)
    torch.manual_seed(0)
    theirs = build(nn).to(dtype)
    # the same initial draws from one seed, and state dicts that load both ways
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for k, v in ours.state_dict().items():
        assert torch.equal(v, theirs.state_dict()[k]), k
    theirs.load_state_dict(ours.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = distinct(*shape, dtype=dtype)
    a, b = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    out, ref = ours(a), theirs(b)
    assert function_of(out.grad_fn) in FUNCTIONS.values()
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    upstream = torch.randn(ref.shape, generator=_gen(3), dtype=dtype)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=atol, rtol=rtol)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=atol, rtol=rtol, msg=name)


def test_lenet_drop_in_matches_torch():
    """A whole LeNet-style network of drop-ins against torch.nn: loss and every gradient."""

    def lenet(m):
        return nn.Sequential(
            m.Conv2d(1, 4, 5, padding=2), m.ReLU(), m.MaxPool2d(2),
            m.Conv2d(4, 6, 3), m.ReLU(), m.AvgPool2d(2),
            m.Flatten(), m.Linear(6 * 2 * 2, 10),
        )  # fmt: skip

    torch.manual_seed(1)
    ours = lenet(hnn)
    torch.manual_seed(1)
    theirs = lenet(nn)
    x, y = torch.randn(5, 1, 12, 12), torch.randint(0, 10, (5,))
    lo, lt = F.cross_entropy(ours(x), y), TF.cross_entropy(theirs(x), y)
    torch.testing.assert_close(lo, lt)
    go = torch.autograd.grad(lo, list(ours.parameters()))
    gt = torch.autograd.grad(lt, list(theirs.parameters()))
    for a, b in zip(go, gt, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 3, "out_channels": 4, "kernel_size": 3, "groups": 2}, "divisible"),
        ({"in_channels": 4, "out_channels": 3, "kernel_size": 3, "groups": 2}, "divisible"),
        ({"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": "full"}, "padding"),
        ({"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": "same", "stride": 2},
         "strided"),
        ({"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding_mode": "reflect"},
         "padding_mode"),
        ({"in_channels": 0, "out_channels": 4, "kernel_size": 3}, "in_channels"),
    ],
)  # fmt: skip
def test_conv2d_module_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        hnn.Conv2d(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kernel_size": 0}, "kernel size should be greater than zero"),
        ({"kernel_size": 3, "stride": 0}, "non-positive stride"),
        ({"kernel_size": 3, "dilation": 0}, "dilation should be greater than zero"),
    ],
)
def test_conv2d_module_settings_torch_refuses_at_forward(kwargs, match):
    """torch builds these and raises a RuntimeError at the first forward; handprop raises the
    same type when the layer is built."""
    with pytest.raises(RuntimeError, match=match.split()[0]):
        nn.Conv2d(3, 4, **kwargs)(torch.randn(1, 3, 5, 5))
    with pytest.raises(RuntimeError, match=match):
        hnn.Conv2d(3, 4, **kwargs)


def test_opinfo_import_leaves_process_state_alone():
    """Lightning's Trainer sets torch.backends flags: they must stay settable."""
    _op_db()
    assert not torch.backends.flags_frozen()
    torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark
