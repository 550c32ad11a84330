"""The layers real networks use — batch norm, layer norm, the embedding, GELU, adaptive average
pooling — as Functions and as handprop.nn drop-ins: finite differences (gradcheck /
gradgradcheck, forward mode too), equality with torch (values and every gradient, float64 and
float32), forward-mode AD and torch.func transforms through their own rules, PyTorch's
ModuleInfo samples and OpInfo running statistics, running statistics and train / eval, the
embedding's padding row, and torch's exception types for bad input.

(PyTorch's OpInfo samples of the five ops — output, gradients, tangents — are in
tests/test_opinfo.py; whole models, ResNet-18 and a nanoGPT block, in tests/test_models.py.)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as TF
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import handprop.functional as F
import handprop.nn as hnn
from handprop.functional import FUNCTIONS, function_of
from handprop.functional.embedding import EmbeddingFunction
from handprop.functional.gelu import GELUFunction
from handprop.functional.normalization import BatchNormFunction, LayerNormFunction
from handprop.functional.pooling import AdaptiveAvgPool2dFunction

F64, F32 = torch.float64, torch.float32
TOL = {F64: (1e-10, 1e-10), F32: (2e-5, 1e-5)}
DTYPES = pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])

pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, dtype=F64, seed: int = 0, grad: bool = True) -> torch.Tensor:
    return torch.randn(shape, generator=_gen(seed), dtype=dtype).requires_grad_(grad)


def positive(*shape: int, dtype=F64, seed: int = 0, grad: bool = True) -> torch.Tensor:
    return (torch.rand(*shape, generator=_gen(seed), dtype=dtype) + 0.5).requires_grad_(grad)


_STATS = {c: (randn(c, seed=20, grad=False), positive(c, seed=21, grad=False)) for c in (3, 2)}


def _running(c: int, dtype=F64) -> tuple[torch.Tensor, torch.Tensor]:
    """Running statistics away from (0, 1), so that using them shows; new copies (drawn
    once: no random numbers under the torch.func transforms)."""
    return tuple(t.to(dtype).clone() for t in _STATS[c])


# --------------------------------------------------------------------------------------------
# Cases: (id, name in FUNCTIONS, handprop fn, torch twin, factory(dtype) -> tensors, exact)
# ``exact``: the backward is the derivative of the forward (gradcheck applies); the embedding's
# padding row and frequency scaling are rules, not derivatives (checked against torch only).
# --------------------------------------------------------------------------------------------
Case = tuple[str, str, Callable, Callable, Callable, bool]


def _bn(training: bool, running: bool, affine: str = "wb", momentum: float = 0.1):
    """batch_norm as a function of its tensors; running statistics fresh on each call (the
    update in place would otherwise pile up over gradcheck's many calls)."""

    def make(fns):
        def fn(x, *wb):
            w = wb[0] if "w" in affine else None
            b = wb[-1] if "b" in affine else None
            rm, rv = _running(x.shape[1], x.dtype) if running else (None, None)
            return fns.batch_norm(x, rm, rv, w, b, training, momentum, 1e-5)

        return fn

    return make(F), make(TF)


def _bn_args(shape, affine: str = "wb"):
    def make(dt):
        c = shape[1]
        return (
            randn(*shape, dtype=dt),
            *([positive(c, dtype=dt, seed=1)] if "w" in affine else []),
            *([randn(c, dtype=dt, seed=2)] if "b" in affine else []),
        )

    return make


def _ln(shape, affine: str = "wb"):
    def make(fns):
        def fn(x, *wb):
            w = wb[0] if "w" in affine else None
            b = wb[-1] if "b" in affine else None
            return fns.layer_norm(x, shape, w, b, 1e-5)

        return fn

    return make(F), make(TF)


def _ln_args(x_shape, shape, affine: str = "wb"):
    def make(dt):
        return (
            randn(*x_shape, dtype=dt),
            *([positive(*shape, dtype=dt, seed=1)] if "w" in affine else []),
            *([randn(*shape, dtype=dt, seed=2)] if "b" in affine else []),
        )

    return make


IDX = torch.tensor([[1, 2, 4, 1], [0, 4, 9, 1]])


def _emb(index: torch.Tensor, **kwargs):
    return (
        lambda w: F.embedding(index, w, **kwargs),
        lambda w: TF.embedding(index, w, **kwargs),
    )


def _cases() -> list[Case]:
    cases: list[Case] = []
    for name, shape in (("bn1d-2d", (6, 3)), ("bn1d-3d", (4, 3, 5)), ("bn2d", (3, 2, 3, 4))):
        for mode, training, running in (
            ("train", True, False),
            ("train-running", True, True),
            ("eval", False, True),
        ):
            cases.append(
                (f"{name}-{mode}", "batch_norm", *_bn(training, running), _bn_args(shape), True)
            )
    for affine in ("", "w", "b"):
        for mode, training in (("train", True), ("eval", False)):
            cases.append(
                (
                    f"bn2d-{mode}-affine[{affine}]",
                    "batch_norm",
                    *_bn(training, not training, affine),
                    _bn_args((3, 2, 3, 4), affine),
                    True,
                )
            )
    for cid, x_shape, shape, affine in (
        ("ln-last", (4, 5), (5,), "wb"),
        ("ln-2dims", (2, 3, 4), (3, 4), "wb"),
        ("ln-noaffine", (3, 2, 5), (5,), ""),
        ("ln-nobias", (3, 4), (4,), "w"),
        ("ln-onlybias", (3, 4), (4,), "b"),
        ("ln-one-sample", (3, 4), (3, 4), "wb"),
    ):
        cases.append(
            (cid, "layer_norm", *_ln(shape, affine), _ln_args(x_shape, shape, affine), True)
        )
    for approximate in ("none", "tanh"):
        for shape in ((4, 5), (2, 3, 4), ()):
            cases.append(
                (
                    f"gelu-{approximate}-{'x'.join(map(str, shape)) or 'scalar'}",
                    "gelu",
                    lambda z, a=approximate: F.gelu(z, a),
                    lambda z, a=approximate: TF.gelu(z, approximate=a),
                    lambda dt, s=shape: (randn(*s, dtype=dt),),
                    True,
                )
            )
    table = lambda dt: (randn(10, 3, dtype=dt),)  # noqa: E731
    for cid, index, kwargs, exact in (
        ("emb-2d", IDX, {}, True),
        ("emb-1d", IDX[0], {}, True),
        ("emb-scalar", torch.tensor(7), {}, True),
        ("emb-int32", IDX.int(), {}, True),
        ("emb-padding", IDX, {"padding_idx": 1}, False),
        ("emb-padding-negative", IDX, {"padding_idx": -1}, False),
        ("emb-freq", IDX, {"scale_grad_by_freq": True}, False),
        ("emb-freq-padding", IDX, {"scale_grad_by_freq": True, "padding_idx": 4}, False),
    ):
        cases.append((cid, "embedding", *_emb(index, **kwargs), table, exact))
    for cid, shape, size in (
        ("aap-3x4", (2, 3, 7, 6), (3, 4)),
        ("aap-global", (2, 3, 5, 4), 1),
        ("aap-global-pair", (2, 3, 5, 4), (1, 1)),
        ("aap-none", (3, 5, 6), (None, 4)),  # unbatched; None keeps the height
        ("aap-larger", (1, 2, 4, 3), (5, 7)),  # windows overlap
        ("aap-identity", (1, 2, 3, 3), 3),
    ):
        cases.append(
            (
                cid,
                "adaptive_avg_pool2d",
                lambda x, s=size: F.adaptive_avg_pool2d(x, s),
                lambda x, s=size: TF.adaptive_avg_pool2d(x, s),
                lambda dt, sh=shape: (randn(*sh, dtype=dt),),
                True,
            )
        )
    return cases


CASES = _cases()
IDS = [c[0] for c in CASES]
EXACT = [c for c in CASES if c[5]]
NEW = ("batch_norm", "layer_norm", "embedding", "gelu", "adaptive_avg_pool2d")


def test_cases_cover_every_new_function():
    assert {c[1] for c in CASES} == set(NEW)
    assert all(name in FUNCTIONS for name in NEW)


@pytest.mark.parametrize("case", EXACT, ids=[c[0] for c in EXACT])
def test_gradcheck(case):
    _, _, fn, _, make, _ = case
    assert gradcheck(fn, make(F64))


@pytest.mark.parametrize("case", EXACT, ids=[c[0] for c in EXACT])
def test_gradgradcheck(case):
    """Second derivatives: batch / layer norm's statistics are outputs of the Function, so the
    second derivative through them comes back into the same hand-written backward."""
    _, _, fn, _, make, _ = case
    assert gradgradcheck(fn, make(F64))


@pytest.mark.parametrize("case", EXACT, ids=[c[0] for c in EXACT])
def test_jvp_gradcheck(case):
    """Each Function's jvp against finite differences."""
    _, _, fn, _, make, _ = case
    assert gradcheck(fn, make(F64), check_forward_ad=True, check_backward_ad=False)


def _compare(fn, twin, args, dtype) -> torch.Tensor:
    atol, rtol = TOL[dtype]
    ours = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]
    theirs = [a.detach().clone().requires_grad_(a.requires_grad) for a in args]
    out, ref = fn(*ours), twin(*theirs)
    assert out.shape == ref.shape and out.dtype == ref.dtype == dtype
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    upstream = torch.randn(ref.shape, generator=_gen(7), dtype=dtype)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    for a, b in zip(ours, theirs, strict=True):
        if b.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, atol=atol, rtol=rtol)
    return out


@DTYPES
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_torch(case, dtype):
    _, name, fn, twin, make, _ = case
    out = _compare(fn, twin, make(dtype), dtype)
    assert function_of(out.grad_fn) is FUNCTIONS[name]


# --------------------------------------------------------------------------------------------
# Forward-mode AD and torch.func, through the Functions' own rules
# --------------------------------------------------------------------------------------------
# vmap: torch's own batch_norm cannot update running statistics under vmap either
VMAP = [c for c in CASES if "train-running" not in c[0]]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jvp_matches_torch(case):
    """The hand-written jvp against torch's forward mode: every tangent at once, each alone,
    and as dual numbers."""
    _, _, fn, twin, make, _ = case
    primals = tuple(a.detach() for a in make(F64))
    tangents = tuple(torch.randn(p.shape, generator=_gen(3), dtype=F64) for p in primals)
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
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip(primals, tangents, strict=True)]
        tangent = fwAD.unpack_dual(fn(*duals)).tangent
    torch.testing.assert_close(tangent, torch.func.jvp(twin, primals, tangents)[1])


@pytest.mark.parametrize("case", VMAP, ids=[c[0] for c in VMAP])
def test_vmap_jacrev_jacfwd_match_torch(case):
    _, _, fn, twin, make, _ = case
    primals = [a.detach() for a in make(F64)]
    batch = torch.stack([primals[0], primals[0] * 0.5 + 0.1, primals[0].flip(-1)])
    dims = (0, *([None] * (len(primals) - 1)))
    torch.testing.assert_close(
        torch.func.vmap(fn, in_dims=dims)(batch, *primals[1:]),
        torch.func.vmap(twin, in_dims=dims)(batch, *primals[1:]),
    )
    argnums = tuple(range(len(primals)))
    for transform in (torch.func.jacrev, torch.func.jacfwd):
        torch.testing.assert_close(
            transform(fn, argnums=argnums)(*primals), transform(twin, argnums=argnums)(*primals)
        )


def test_vmap_over_the_embedding_indices():
    """A batch of index tensors (the token ids of several sequences) against one table."""
    w = randn(10, 3).detach()
    batch = torch.stack([IDX, IDX.flip(-1), IDX % 3])
    for kwargs in ({}, {"padding_idx": 1}):
        torch.testing.assert_close(
            torch.func.vmap(lambda i, kw=kwargs: F.embedding(i, w, **kw))(batch),
            torch.func.vmap(lambda i, kw=kwargs: TF.embedding(i, w, **kw))(batch),
        )


def test_the_hand_written_rules_run_under_the_transforms(monkeypatch):
    """Under vmap(grad), jacrev and jacfwd torch runs each Function's own backward and jvp
    (counted), not a derivative of its own."""
    calls: dict[str, int] = {}

    def count(cls, name):
        rule = getattr(cls, name)

        def counted(*args):
            calls[f"{cls.__name__}.{name}"] = calls.get(f"{cls.__name__}.{name}", 0) + 1
            return rule(*args)

        monkeypatch.setattr(cls, name, staticmethod(counted))

    functions = (
        BatchNormFunction,
        LayerNormFunction,
        EmbeddingFunction,
        GELUFunction,
        AdaptiveAvgPool2dFunction,
    )
    for cls in functions:
        count(cls, "backward")
        count(cls, "jvp")
    count(GELUFunction, "vmap")
    w, b, table = positive(3).detach(), randn(3, seed=2).detach(), randn(10, 3).detach()

    def net(x, table):  # (4, 3) and the table → a scalar through every Function
        h = F.batch_norm(x, None, None, w, b, True)
        h = F.gelu(F.layer_norm(h, (3,), w, b), "tanh")
        h = h + F.embedding(IDX[0], table)
        return F.adaptive_avg_pool2d(h.reshape(1, 1, 4, 3), 1).sum()

    x = randn(4, 3).detach()
    both = (0, 1)
    torch.func.vmap(torch.func.grad(net, both), in_dims=(0, None))(torch.stack([x, 2 * x]), table)
    torch.func.jacfwd(net, both)(x, table)
    torch.func.jacrev(net, both)(x, table)
    for cls in functions:
        assert calls.get(f"{cls.__name__}.backward") and calls.get(f"{cls.__name__}.jvp"), calls
    assert calls.get("GELUFunction.vmap"), calls


# --------------------------------------------------------------------------------------------
# Running statistics, the embedding's special rows, bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.1, 0.0, 1.0, 0.5])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (3, 3, 2, 4)], ids=["2d", "3d", "4d"])
def test_batch_norm_running_statistics_as_torch(shape, momentum):
    """Training updates the running mean and the unbiased running variance in place, as
    torch; evaluation then normalises with them."""
    x = randn(*shape, grad=False)
    ours, theirs = _running(3), _running(3)
    for _ in range(2):
        F.batch_norm(x, *ours, training=True, momentum=momentum)
        TF.batch_norm(x, *theirs, training=True, momentum=momentum)
    torch.testing.assert_close(ours, theirs)
    assert not torch.equal(ours[0], _running(3)[0]) or momentum == 0.0
    torch.testing.assert_close(F.batch_norm(x, *ours), TF.batch_norm(x, *theirs))
    # an empty batch: an empty output and the running statistics unchanged, as torch
    empty = torch.zeros(0, *shape[1:], dtype=F64)
    before = [t.clone() for t in ours]
    assert F.batch_norm(empty, *ours, training=True).shape == empty.shape
    torch.testing.assert_close(ours, before)


def test_embedding_padding_row_gets_no_gradient():
    """The padding row's gradient is exactly zero (the other rows get the sum of their δ), so
    training leaves it where it was; the module starts it at zero."""
    w = randn(5, 3)
    index = torch.tensor([[0, 2, 2], [4, 2, 1]])
    F.embedding(index, w, padding_idx=2).square().sum().backward()
    assert torch.equal(w.grad[2], torch.zeros(3, dtype=F64))
    assert w.grad[[0, 1, 4]].abs().min() > 0
    assert torch.equal(w.grad[3], torch.zeros(3, dtype=F64))  # not looked up
    torch.manual_seed(0)
    layer = hnn.Embedding(5, 3, padding_idx=-3)
    assert layer.padding_idx == 2 and torch.equal(layer.weight[2], torch.zeros(3))
    opt = torch.optim.SGD(layer.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        layer(index).square().sum().backward()
        opt.step()
    assert torch.equal(layer.weight[2], torch.zeros(3))


def test_embedding_sparse_gradient_as_torch():
    index = torch.tensor([[0, 2, 2], [4, 2, 1]])
    grads = []
    for fns, kwargs in ((F, {}), (TF, {})):
        w = randn(5, 3)
        fns.embedding(index, w, padding_idx=1, sparse=True, **kwargs).square().sum().backward()
        assert w.grad.is_sparse
        grads.append(w.grad.to_dense())
    torch.testing.assert_close(grads[0], grads[1])
    assert torch.equal(grads[0][1], torch.zeros(3, dtype=F64))


def test_embedding_max_norm_renormalises_the_table_as_torch():
    index = torch.tensor([[0, 2, 2], [4, 2, 1]])
    tables = [randn(5, 3, grad=False) * 3 for _ in range(2)]
    out = F.embedding(index, tables[0], max_norm=1.5, norm_type=3.0)
    ref = TF.embedding(index, tables[1], max_norm=1.5, norm_type=3.0)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(tables[0], tables[1])  # rows looked up scaled in place
    assert torch.linalg.vector_norm(tables[0][[0, 1, 2, 4]], 3.0, dim=1).max() <= 1.5 + 1e-6


BAD = {
    "bn-eval-without-stats": lambda f: f.batch_norm(torch.randn(4, 3), None, None),
    "bn-one-value-per-channel": lambda f: f.batch_norm(
        torch.randn(1, 3), None, None, training=True
    ),
    "bn-stats-size": lambda f: f.batch_norm(torch.randn(4, 3), torch.zeros(4), torch.ones(4)),
    "bn-one-stat-only": lambda f: f.batch_norm(
        torch.randn(4, 3), torch.zeros(3), None, training=True
    ),
    "bn-weight-size": lambda f: f.batch_norm(
        torch.randn(4, 3), None, None, torch.ones(4), training=True
    ),
    "bn-1d-input": lambda f: f.batch_norm(torch.randn(4), None, None, training=True),
    "ln-shape": lambda f: f.layer_norm(torch.randn(4, 3), (4,)),
    "ln-empty-shape": lambda f: f.layer_norm(torch.randn(4, 3), ()),
    "ln-weight-shape": lambda f: f.layer_norm(torch.randn(4, 3), (3,), torch.ones(4)),
    "emb-out-of-range": lambda f: f.embedding(torch.tensor([5]), torch.randn(4, 3)),
    "emb-float-index": lambda f: f.embedding(torch.tensor([1.0]), torch.randn(4, 3)),
    "emb-padding": lambda f: f.embedding(torch.tensor([1]), torch.randn(4, 3), padding_idx=4),
    "emb-padding-negative": lambda f: f.embedding(
        torch.tensor([1]), torch.randn(4, 3), padding_idx=-5
    ),
    "gelu-approximate": lambda f: f.gelu(torch.randn(3), approximate="exact"),
    "aap-2d-input": lambda f: f.adaptive_avg_pool2d(torch.randn(3, 4), 2),
    "aap-three-sizes": lambda f: f.adaptive_avg_pool2d(torch.randn(1, 3, 4, 4), (2, 2, 2)),
    "BatchNorm1d-4d": lambda m: m.BatchNorm1d(3)(torch.randn(3, 3, 4, 4)),
    "BatchNorm2d-3d": lambda m: m.BatchNorm2d(3)(torch.randn(3, 4, 4)),
    "Embedding-padding": lambda m: m.Embedding(3, 2, padding_idx=3),
    "Embedding-weight-shape": lambda m: m.Embedding(3, 2, _weight=torch.zeros(2, 2)),
    "Embedding-pretrained-3d": lambda m: m.Embedding.from_pretrained(torch.zeros(2, 2, 2)),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_what_torch_raises(case):
    """The exception type torch raises, with torch's message, one line."""
    call = BAD[case]
    ours, theirs = (F, TF) if case[0].islower() else (hnn, nn)
    with pytest.raises(Exception) as expected:  # noqa: PT011 — torch's type, compared below
        call(theirs)
    with pytest.raises(expected.type) as got:
        call(ours)
    assert type(got.value) is type(expected.value)
    assert str(got.value) == str(expected.value) and "\n" not in str(got.value)


# --------------------------------------------------------------------------------------------
# handprop.nn drop-ins: PyTorch's ModuleInfo samples, train / eval, state dicts
# --------------------------------------------------------------------------------------------
def _torch_testing(name: str):
    """A module of torch's private test utilities. Importing it sets process-wide state for
    torch's own suite (frozen ``torch.backends`` flags, an environment variable, warning
    filters): undone here, for the tests after these (as tests/test_convolution.py)."""
    pytest.importorskip("expecttest")  # what torch.testing._internal needs (the dev extra)
    env, filters, frozen = dict(os.environ), list(warnings.filters), torch.backends.flags_frozen()
    import importlib

    module = importlib.import_module(f"torch.testing._internal.{name}")
    os.environ.clear()
    os.environ.update(env)
    warnings.filters[:] = filters
    if not frozen:
        torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    return module


MODULES = {
    nn.BatchNorm1d: hnn.BatchNorm1d,
    nn.BatchNorm2d: hnn.BatchNorm2d,
    nn.LayerNorm: hnn.LayerNorm,
    nn.Embedding: hnn.Embedding,
    nn.GELU: hnn.GELU,
    nn.AdaptiveAvgPool2d: hnn.AdaptiveAvgPool2d,
}


def _run_twice(module, inputs, kwargs, seed):
    """Two calls (running statistics move between them); the outputs, the gradients of the
    floating inputs and parameters for a random upstream gradient, and the buffers."""
    results = []
    for step in range(2):
        xs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
        out = module(*xs, **kwargs)
        wrt = [t for t in xs if t.requires_grad] + list(module.parameters())
        upstream = torch.randn(out.shape, generator=_gen(seed + step), dtype=out.dtype)
        grads = torch.autograd.grad(out, wrt, upstream, allow_unused=True) if wrt else ()
        results.append((out, grads, [b.clone() for b in module.buffers()]))
    return results, out


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("torch_class", list(MODULES), ids=lambda c: c.__name__)
def test_moduleinfo_samples_match_torch(torch_class, training):
    """Every ModuleInfo sample of torch's module_db for the class, in train and eval mode:
    the same initial state from one seed, outputs, gradients and buffers over two calls."""
    common = _torch_testing("common_modules")
    (info,) = [m for m in common.module_db if m.module_cls is torch_class]
    samples = info.module_inputs_func(
        info, device="cpu", dtype=F64, requires_grad=True, training=training
    )
    assert samples
    for i, sample in enumerate(samples):
        args, kwargs = sample.constructor_input.args, sample.constructor_input.kwargs
        built = []
        for cls in (MODULES[torch_class], torch_class):
            torch.manual_seed(0)
            built.append(cls(*args, **kwargs).to(F64).train(training))
        ours, theirs = built
        assert list(ours.state_dict()) == list(theirs.state_dict()), i
        for key, value in theirs.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value), (i, key)
        inputs = sample.forward_input.args
        fwd_kwargs = sample.forward_input.kwargs
        got, out = _run_twice(ours, inputs, fwd_kwargs, seed=i)
        expected, _ = _run_twice(theirs, inputs, fwd_kwargs, seed=i)
        torch.testing.assert_close(got, expected, msg=lambda m, i=i: f"sample {i}: {m}")
        if out.numel():
            assert function_of(out.grad_fn) in FUNCTIONS.values(), i


BN_CONFIGS = {
    "default": {},
    "cumulative": {"momentum": None},
    "no-running-stats": {"track_running_stats": False},
    "not-affine": {"affine": False, "momentum": 0.3},
    "no-bias": {"bias": False},
    "eps": {"eps": 0.5},
}


@pytest.mark.parametrize("config", sorted(BN_CONFIGS))
@pytest.mark.parametrize(
    "dims", [(hnn.BatchNorm1d, (6, 3)), (hnn.BatchNorm1d, (4, 3, 5)), (hnn.BatchNorm2d, (3, 3, 2, 4))],
    ids=["1d-2d", "1d-3d", "2d"],
)  # fmt: skip
def test_batch_norm_trains_and_evaluates_as_torch(dims, config):
    """Three SGD steps in train() (outputs, gradients, every buffer — num_batches_tracked
    and momentum=None's cumulative average included), then eval(): the same outputs."""
    cls, shape = dims
    kwargs = BN_CONFIGS[config]
    models = [cls(3, **kwargs).to(F64), getattr(nn, cls.__name__)(3, **kwargs).to(F64)]
    models[0].load_state_dict(models[1].state_dict())
    seen: list[list] = [[], []]
    for model, log in zip(models, seen, strict=True):
        opt = torch.optim.SGD(model.parameters(), lr=0.1) if kwargs.get("affine", True) else None
        for step in range(3):
            x = torch.randn(*shape, generator=_gen(step), dtype=F64) * (step + 1) + step
            out = model(x)
            loss = (out * torch.randn(out.shape, generator=_gen(9), dtype=F64)).sum()
            if opt is not None:
                opt.zero_grad()
                loss.backward()
                opt.step()
            log.append([out.detach(), *(b.clone() for b in model.buffers())])
        model.eval()
        log.append(model(torch.randn(*shape, generator=_gen(5), dtype=F64)).detach())
        log.append({k: v.clone() for k, v in model.state_dict().items()})
    torch.testing.assert_close(seen[0], seen[1])
    if kwargs.get("momentum", 0.1) is None:  # the cumulative average of the three batches
        batches = [
            torch.randn(*shape, generator=_gen(s), dtype=F64) * (s + 1) + s for s in range(3)
        ]
        per = [b.transpose(0, 1).reshape(3, -1).mean(1) for b in batches]
        torch.testing.assert_close(models[0].running_mean, sum(per) / 3)
        assert int(models[0].num_batches_tracked) == 3


def test_state_dicts_load_both_ways_and_reprs_match():
    builds = [
        lambda m: m.BatchNorm2d(4, momentum=None),
        lambda m: m.BatchNorm1d(3, affine=False, track_running_stats=False),
        lambda m: m.LayerNorm((2, 3), elementwise_affine=True, bias=False),
        lambda m: m.Embedding(7, 3, padding_idx=-2, max_norm=2.0, sparse=True),
        lambda m: m.GELU("tanh"),
        lambda m: m.AdaptiveAvgPool2d((None, 3)),
    ]
    for build in builds:
        torch.manual_seed(0)
        ours = build(hnn)
        torch.manual_seed(0)
        theirs = build(nn)
        assert repr(ours) == repr(theirs) + " [handprop]"
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        for k, v in theirs.state_dict().items():  # the same initial draws
            assert torch.equal(ours.state_dict()[k], v), k
        ours.load_state_dict(theirs.state_dict())
        theirs.load_state_dict(ours.state_dict())


def test_embedding_from_pretrained_as_torch():
    table = randn(4, 3, grad=False)
    for freeze in (True, False):
        ours = hnn.Embedding.from_pretrained(table, freeze=freeze, padding_idx=0)
        theirs = nn.Embedding.from_pretrained(table, freeze=freeze, padding_idx=0)
        assert type(ours) is hnn.Embedding and repr(ours) == repr(theirs) + " [handprop]"
        assert ours.weight.requires_grad is theirs.weight.requires_grad is (not freeze)
        torch.testing.assert_close(ours(IDX % 4), theirs(IDX % 4))


# --------------------------------------------------------------------------------------------
# PyTorch's OpInfo samples of batch_norm: the running statistics too (tests/test_opinfo.py
# checks outputs, gradients and tangents; it runs both on the same buffers)
# --------------------------------------------------------------------------------------------
def test_opinfo_batch_norm_running_statistics_match_torch():
    methods = _torch_testing("common_methods_invocations")
    ops = [o for o in methods.op_db if o.name == "nn.functional.batch_norm"]
    assert ops
    checked = 0
    for op in ops:
        for sample in op.sample_inputs_func(op, "cpu", F64, False):
            stats = sample.args[:2]
            if stats[0] is None:
                continue
            copies = [[t.clone() for t in stats] for _ in range(2)]
            outs = [
                fn(sample.input, *copy, *sample.args[2:], **sample.kwargs)
                for fn, copy in zip((F.batch_norm, TF.batch_norm), copies, strict=True)
            ]
            torch.testing.assert_close(outs[0], outs[1], equal_nan=True)
            torch.testing.assert_close(copies[0], copies[1], equal_nan=True)
            checked += 1
    assert checked >= 10
