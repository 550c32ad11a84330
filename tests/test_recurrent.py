"""The recurrent Functions (Elman RNN, LSTM; backpropagation through time by hand) and the
handprop.nn.RNN / LSTM drop-ins: finite differences (gradcheck / gradgradcheck), equality with
torch.nn.RNN / LSTM (outputs, final states and every gradient, float64 and float32, over layer
counts, directions, batch_first, biases and initial states), forward-mode AD and torch.func."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import handprop.functional as F
import handprop.nn as hnn
from handprop.functional import FUNCTIONS, function_of
from handprop.functional.recurrent import LSTMFunction, RNNFunction

F64, F32 = torch.float64, torch.float32
TOL = {F64: (1e-10, 1e-10), F32: (2e-5, 2e-5)}
DTYPES = pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, dtype=F64, seed: int = 0, grad: bool = True) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype).requires_grad_(grad)


def _layer_args(gates: int, T=3, N=2, I=3, H=2, bias=True, seed=0):  # noqa: E741
    """One layer's inputs: x (T, N, I), h_0 [, c_0] (N, H), W_ih, W_hh [, b_ih, b_hh]."""
    args = [randn(T, N, I, seed=seed), randn(N, H, seed=seed + 1)]
    if gates == 4:
        args.append(randn(N, H, seed=seed + 2))
    args += [randn(gates * H, I, seed=seed + 3) * 0.7, randn(gates * H, H, seed=seed + 4) * 0.7]
    args = [a.detach().requires_grad_() for a in args]
    if bias:
        args += [randn(gates * H, seed=seed + 5), randn(gates * H, seed=seed + 6)]
    else:
        args += [None, None]
    return args


# --------------------------------------------------------------------------------------------
# Finite differences, one layer: every output, every input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "relu, reverse, bias",
    [(False, False, True), (False, True, False), (True, False, False), (True, True, True)],
    ids=["tanh-forward-bias", "tanh-reverse-nobias", "relu-forward-nobias", "relu-reverse-bias"],
)
def test_rnn_function_gradcheck(relu, reverse, bias):
    args = _layer_args(1, bias=bias)
    if relu:  # keep every pre-activation away from the kink
        args[0] = (args[0].detach().abs() + 0.5).requires_grad_()
        args[2] = args[2].detach().abs().requires_grad_()
        args[3] = args[3].detach().abs().requires_grad_()
        if bias:
            args[4] = args[4].detach().abs().requires_grad_()

    def fn(*a):
        return RNNFunction.apply(*a, relu, reverse)

    assert gradcheck(fn, args)
    assert gradgradcheck(fn, args)


@pytest.mark.parametrize(
    "reverse, bias", [(False, True), (True, False)], ids=["forward-bias", "reverse-nobias"]
)
def test_lstm_function_gradcheck(reverse, bias):
    """All five outputs (states, h_T, c_T, cells, gates) are checked: double backward runs
    through the cells' and gates' gradients."""
    args = _layer_args(4, bias=bias)

    def fn(*a):
        return LSTMFunction.apply(*a, reverse)

    assert gradcheck(fn, args)
    assert gradgradcheck(fn, args)


def test_one_step_sequence():
    for gates, fn in ((1, lambda *a: RNNFunction.apply(*a, False, False)),
                      (4, lambda *a: LSTMFunction.apply(*a, False))):  # fmt: skip
        assert gradcheck(fn, _layer_args(gates, T=1))


def test_long_sequence_spans_several_blocks(monkeypatch):
    """The backward prepares factors a block of steps at a time: here one step per block."""
    import handprop.functional.recurrent as R

    monkeypatch.setattr(R, "_BLOCK_BYTES", 1)
    for reverse in (False, True):
        args = _layer_args(4, T=4, N=1, H=2)
        assert gradcheck(lambda *a, r=reverse: LSTMFunction.apply(*a, r)[0], args)
    args = _layer_args(1, T=4, N=1)
    assert gradcheck(lambda *a: RNNFunction.apply(*a, False, True)[0], args)


# --------------------------------------------------------------------------------------------
# The drop-ins against torch.nn.RNN / LSTM
# --------------------------------------------------------------------------------------------
GRID = [
    # (cell, num_layers, bidirectional, batch_first, bias, with initial state)
    *[("tanh", L, bi, bf, True, h0) for L, bi, bf, h0 in
      itertools.product([1, 2], [False, True], [False, True], [True, False])],
    ("relu", 2, True, False, True, True),
    ("relu", 1, False, True, False, False),
    ("tanh", 3, False, False, False, True),
    *[("lstm", L, bi, bf, True, h0) for L, bi, bf, h0 in
      itertools.product([1, 2], [False, True], [False, True], [True, False])],
    ("lstm", 3, True, True, False, True),
    ("lstm", 1, False, False, False, False),
]  # fmt: skip
GRID_IDS = [
    f"{c}-L{L}-{'bi' if bi else 'uni'}-{'bf' if bf else 'tf'}-{'b' if b else 'nob'}-{'h0' if h else 'noh0'}"
    for c, L, bi, bf, b, h in GRID
]


def _pair(cell: str, L: int, bi: bool, bf: bool, bias: bool, dtype, I=3, H=4):  # noqa: E741
    kw = {"num_layers": L, "bias": bias, "batch_first": bf, "bidirectional": bi}
    torch.manual_seed(0)
    if cell == "lstm":
        ours = hnn.LSTM(I, H, **kw)
        torch.manual_seed(0)
        theirs = nn.LSTM(I, H, **kw)
    else:
        ours = hnn.RNN(I, H, nonlinearity=cell, **kw)
        torch.manual_seed(0)
        theirs = nn.RNN(I, H, nonlinearity=cell, **kw)
    return ours.to(dtype), theirs.to(dtype)


def _flat(out):
    """(output, h_n) or (output, (h_n, c_n)) as a flat list."""
    output, state = out
    return [output, *(state if isinstance(state, tuple) else (state,))]


def _run_both(ours, theirs, x, hx, dtype):
    """Outputs and gradients (input, initial states, every parameter) of both modules."""
    results = []
    for m in (ours, theirs):
        xi = x.detach().clone().requires_grad_()
        hi = None
        if hx is not None:
            hi = tuple(h.detach().clone().requires_grad_() for h in hx)
        outs = _flat(m(xi, None if hi is None else (hi if len(hi) == 2 else hi[0])))
        loss = sum(
            (o * torch.randn(o.shape, generator=_gen(11 + k), dtype=dtype)).sum()
            for k, o in enumerate(outs)
        )
        inputs = [xi, *(hi or ()), *m.parameters()]
        results.append((outs, torch.autograd.grad(loss, inputs)))
    return results


@DTYPES
@pytest.mark.parametrize("case", GRID, ids=GRID_IDS)
def test_module_matches_torch(case, dtype):
    cell, L, bi, bf, bias, with_h0 = case
    ours, theirs = _pair(cell, L, bi, bf, bias, dtype)
    # one seed, the same initial draws; torch's parameter names; state dicts both ways
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(v, theirs.state_dict()[k]), k
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    D, T, N = (2 if bi else 1), 5, 3
    x = randn(*((N, T, 3) if bf else (T, N, 3)), dtype=dtype)
    hx = None
    if with_h0:
        hx = tuple(
            randn(L * D, N, 4, dtype=dtype, seed=1 + k) for k in range(2 if cell == "lstm" else 1)
        )
    (out_o, grads_o), (out_t, grads_t) = _run_both(ours, theirs, x, hx, dtype)
    atol, rtol = TOL[dtype]
    for a, b in zip(out_o, out_t, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)
    for a, b in zip(grads_o, grads_t, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


@DTYPES
@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_unbatched_input(cell, dtype):
    ours, theirs = _pair(cell, 2, True, False, True, dtype)
    x = randn(4, 3, dtype=dtype)
    hx = tuple(randn(4, 4, dtype=dtype, seed=1 + k) for k in range(2 if cell == "lstm" else 1))
    for with_h0 in (False, True):
        (out_o, grads_o), (out_t, grads_t) = _run_both(
            ours, theirs, x, hx if with_h0 else None, dtype
        )
        for a, b in zip(out_o + list(grads_o), out_t + list(grads_t), strict=True):
            torch.testing.assert_close(a, b, atol=TOL[dtype][0], rtol=TOL[dtype][1])


def test_last_layer_output_is_the_functions():
    """No silent fallback: the graph's nodes are handprop's Functions."""
    for cell in ("tanh", "relu", "lstm"):
        ours, _ = _pair(cell, 1, False, False, True, F64)
        output, state = ours(randn(3, 2, 3))
        expected = FUNCTIONS["lstm" if cell == "lstm" else f"rnn_{cell}"]
        assert function_of(output.grad_fn) is expected
        h_n = state[0] if cell == "lstm" else state
        assert function_of(h_n.grad_fn.next_functions[0][0]) is expected  # stack of h_T's


@pytest.mark.parametrize("which", ["h_n", "c_n", "output"])
def test_lstm_gradient_through_one_output(which):
    """Only one of the outputs reaches the cost: the others' gradients are absent (None)."""
    ours, theirs = _pair("lstm", 2, False, False, True, F64)
    x = randn(4, 2, 3)
    grads = []
    for m in (ours, theirs):
        xi = x.detach().clone().requires_grad_()
        output, (h_n, c_n) = m(xi)
        picked = {"h_n": h_n, "c_n": c_n, "output": output}[which]
        grads.append(torch.autograd.grad(picked.square().sum(), [xi, *m.parameters()]))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_dropout_between_layers_same_draws_as_torch(cell):
    """Training with dropout: the same masks as torch from the same seed (the same draws in
    the same order), so outputs and gradients agree; in eval() no dropout."""
    ours, theirs = _pair(cell, 3, True, False, True, F64)
    ours.dropout = theirs.dropout = 0.4
    x = randn(4, 2, 3)
    results = []
    for m in (ours, theirs):
        torch.manual_seed(5)
        xi = x.detach().clone().requires_grad_()
        out = _flat(m(xi))
        results.append((out, torch.autograd.grad(sum(o.sum() for o in out), [xi, *m.parameters()])))
    for a, b in zip(
        results[0][0] + list(results[0][1]), results[1][0] + list(results[1][1]), strict=True
    ):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    ours.eval()
    theirs.eval()
    torch.testing.assert_close(_flat(ours(x))[0], _flat(theirs(x))[0], atol=1e-10, rtol=1e-10)


def test_dropout_warns_for_one_layer():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        hnn.LSTM(3, 4, dropout=0.5)


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda m: m(3, 0), ValueError, "hidden_size must be greater than zero"),
        (lambda m: m(3, 4, num_layers=0), ValueError, "num_layers must be greater than zero"),
        (lambda m: m(-1, 4), ValueError, "input_size must be greater than zero"),
        (lambda m: m(3, 4, dropout=1.5), ValueError, "dropout"),
        (lambda m: m(3, 4, batch_first="yes"), TypeError, "batch_first should be of type bool"),
        (lambda m: m(3, 4, bias=1), TypeError, "bias should be of type bool, got: int"),
        (lambda m: m(3.0, 4), TypeError, "input_size should be of type int, got: float"),
        (lambda m: m(3, "4"), TypeError, "hidden_size should be of type int, got: str"),
    ],
)
@pytest.mark.parametrize("cell", ["RNN", "LSTM"])
def test_bad_arguments_raise_torchs_error(cell, build, error, match):
    """torch's exception type and words (tests/test_torch_errors.py runs torch's own list)."""
    with pytest.raises(error, match=match):
        build(getattr(nn, cell))
    with pytest.raises(error, match=match):
        build(getattr(hnn, cell))


def test_unknown_nonlinearity():
    for module in (nn.RNN, hnn.RNN):
        with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'. Select from"):
            module(3, 4, nonlinearity="sigmoid")


def test_proj_size_is_not_supported():
    with pytest.raises(ValueError, match="proj_size"):
        hnn.LSTM(3, 4, proj_size=2)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda m: m(torch.randn(3, 2, 5)), RuntimeError, "input.size\\(-1\\) must be equal"),
        (lambda m: m(torch.randn(3, 2, 3, 1)), ValueError, "Expected input to be 2D or 3D"),
        (lambda m: m(torch.randn(3, 2, 3), (torch.randn(1, 2, 4),) * 3), RuntimeError, "two hidden"),
        (
            lambda m: m(torch.randn(3, 2, 3), (torch.randn(2, 2, 4), torch.randn(1, 2, 4))),
            RuntimeError,
            "Expected hidden\\[0\\] size \\(1, 2, 4\\), got \\[2, 2, 4\\]",
        ),
        (
            lambda m: m(torch.randn(3, 2, 3), (torch.randn(2, 4), torch.randn(2, 4))),
            RuntimeError,
            "For batched 3-D input, hx and cx should also be 3-D",
        ),
        (
            lambda m: m(torch.randn(3, 3), (torch.randn(1, 1, 4), torch.randn(1, 1, 4))),
            RuntimeError,
            "For unbatched 2-D input, hx and cx should also be 2-D",
        ),
        (lambda m: m(torch.randn(3, 2, 3, dtype=F64)), ValueError, "input dtype .* Convert input"),
    ],
)  # fmt: skip
def test_bad_input_raises_torchs_error(call, error, match):
    for module in (nn.LSTM(3, 4), hnn.LSTM(3, 4)):
        with pytest.raises(error, match=match):
            call(module)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m(torch.randn(3, 2, 3), torch.randn(1, 2, 4)), "pair"),
        (lambda m: m(torch.randn(3, 2, 3), (torch.randn(1, 2, 4), None)), "both"),
        (lambda m: m(nn.utils.rnn.pack_sequence([torch.randn(2, 3)])), "PackedSequence"),
    ],
)
def test_bad_input_handprop_refuses(call, match):
    """Where torch fails by accident (an IndexError, an AttributeError) or handprop has no
    support (packed sequences): one clear ValueError."""
    with pytest.raises(ValueError, match=match):
        call(hnn.LSTM(3, 4))


def test_rnn_hidden_state_errors_as_torch():
    for module in (nn.RNN(3, 4), hnn.RNN(3, 4)):
        with pytest.raises(RuntimeError, match="Expected hidden size \\(1, 2, 4\\), got"):
            module(torch.randn(3, 2, 3), torch.randn(2, 2, 4))
        with pytest.raises(RuntimeError, match="For batched 3-D input, hx should also be 3-D"):
            module(torch.randn(3, 2, 3), torch.randn(2, 4))


# --------------------------------------------------------------------------------------------
# Forward-mode AD and torch.func, against torch's modules
# --------------------------------------------------------------------------------------------
def _functional(m, cell):
    """The module as a function of (x, h_0[, c_0], parameters…) → every output, flat."""
    names = [n for n, _ in m.named_parameters()]
    states = 2 if cell == "lstm" else 1

    def fn(x, *rest):
        hx = rest[:states]
        params = dict(zip(names, rest[states:], strict=True))
        out = torch.func.functional_call(m, params, (x, hx if states == 2 else hx[0]))
        return tuple(_flat(out))

    return fn


@pytest.mark.parametrize("cell", ["tanh", "relu", "lstm"])
def test_jvp_matches_torch(cell):
    ours, theirs = _pair(cell, 2, True, True, True, F64)
    fo, ft = _functional(ours, cell), _functional(theirs, cell)
    states = 2 if cell == "lstm" else 1
    primals = (
        randn(2, 4, 3, grad=False),
        *(randn(4, 2, 4, seed=1 + k, grad=False) for k in range(states)),
        *(p.detach() for p in ours.parameters()),
    )
    tangents = tuple(torch.randn_like(p) for p in primals)
    out, jvp = torch.func.jvp(fo, primals, tangents)
    ref, ref_jvp = torch.func.jvp(ft, primals, tangents)
    for a, b in zip(out + jvp, ref + ref_jvp, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    # only the input's tangent (the others are missing, i.e. zero), as dual numbers
    with fwAD.dual_level():
        x = fwAD.make_dual(primals[0], tangents[0])
        tangent = fwAD.unpack_dual(fo(x, *primals[1:])[0]).tangent
    zeros = tuple(torch.zeros_like(t) for t in tangents[1:])
    torch.testing.assert_close(tangent, torch.func.jvp(ft, primals, (tangents[0], *zeros))[1][0])


def _looped(f, dims, args):
    """The reference for vmap (torch's RNN / LSTM have no batching rule): one call per index
    of the vmapped dimension, the results stacked."""
    B = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not None)
    outs = [f(*(a if d is None else a.select(d, k) for a, d in zip(args, dims, strict=True)))
            for k in range(B)]  # fmt: skip
    return [torch.stack(o) for o in zip(*outs, strict=True)]


@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_vmap_matches_torch(cell):
    """vmap over sequences (one call, the vmapped batch folded into the RNN's batch), over
    initial states only, and over weights (one call per network)."""
    ours, theirs = _pair(cell, 1, True, False, True, F64)
    fo, ft = _functional(ours, cell), _functional(theirs, cell)
    states = 2 if cell == "lstm" else 1
    x = randn(5, 3, 2, 3, grad=False)  # 5 batches of (T=3, N=2, I=3)
    hx = tuple(randn(2, 2, 4, seed=1 + k, grad=False) for k in range(states))
    params = tuple(p.detach() for p in ours.parameters())
    hxs = tuple(torch.stack([h, 2 * h]) for h in hx)
    ps = tuple(torch.stack([p, -p]) for p in params)
    for dims, args in [
        ((0, *([None] * states), *([None] * len(params))), (x, *hx, *params)),
        ((None, *([0] * states), *([None] * len(params))), (x[0], *hxs, *params)),
        ((None, *([None] * states), *([0] * len(params))), (x[0], *hx, *ps)),
    ]:
        got = torch.func.vmap(fo, dims)(*args)
        for a, b in zip(got, _looped(ft, dims, args), strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_jacrev_jacfwd_and_per_sample_grads_match_torch(cell):
    ours, theirs = _pair(cell, 1, False, False, True, F64)
    fo, ft = _functional(ours, cell), _functional(theirs, cell)
    states = 2 if cell == "lstm" else 1
    x = randn(3, 2, 3, grad=False)
    hx = tuple(randn(1, 2, 4, seed=1 + k, grad=False) for k in range(states))
    params = tuple(p.detach() for p in ours.parameters())
    for transform in (torch.func.jacrev, torch.func.jacfwd):
        jo = transform(lambda x, *r: fo(x, *r)[0], argnums=(0, 1))(x, *hx, *params)
        jt = torch.func.jacrev(lambda x, *r: ft(x, *r)[0], argnums=(0, 1))(x, *hx, *params)
        for a, b in zip(jo, jt, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)

    # per-sample gradients of the weights: vmap(grad) over sequences of one
    def cost(f):
        def c(params, x):
            h0 = (torch.zeros(1, 1, 4, dtype=F64),) * states
            return f(x.unsqueeze(1), *h0, *params)[0].square().sum()

        return c

    xs = randn(3, 4, 3, grad=False)  # 4 sequences of 3 steps, vmapped over dim 1
    go = torch.func.vmap(torch.func.grad(cost(fo)), in_dims=(None, 1))(params, xs)
    gt = [torch.stack(g) for g in zip(*(torch.func.grad(cost(ft))(params, xs[:, k])
                                         for k in range(4)), strict=True)]  # fmt: skip
    for a, b in zip(go, gt, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_functional_wrappers_match_torch_ops():
    """rnn_tanh / rnn_relu / lstm with the signatures of torch.rnn_tanh / rnn_relu / lstm."""
    x, h = randn(3, 2, 3, grad=False), randn(2, 2, 4, seed=1, grad=False)
    for name, gates in (("rnn_tanh", 1), ("rnn_relu", 1), ("lstm", 4)):
        params = [randn(*s, seed=2 + k, grad=False) for k, s in
                  enumerate([(gates * 4, 3), (gates * 4, 4), (gates * 4,), (gates * 4,)] * 2)]  # fmt: skip
        hx = (h, h * 0.5) if name == "lstm" else h
        ours = getattr(F, name)(x, hx, params, True, 1, 0.0, False, True, False)
        theirs = getattr(torch, name)(x, hx, params, True, 1, 0.0, False, True, False)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    with pytest.raises(RuntimeError, match="incorrect number of RNN parameters.*expected 8"):
        F.rnn_tanh(x, h, params[:4], True, 1, 0.0, False, True, False)


def test_all_weights_and_flatten_parameters():
    """torch's per-layer view of the weights, and its no-op for CPU code written for cuDNN."""
    ours, theirs = _pair("lstm", 2, True, False, True, F64)
    ours.flatten_parameters()
    assert [[tuple(p.shape) for p in layer] for layer in ours.all_weights] == [
        [tuple(p.shape) for p in layer] for layer in theirs.all_weights
    ]
    assert all(
        torch.equal(a, b)
        for a, b in zip(sum(ours.all_weights, []), sum(theirs.all_weights, []), strict=True)
    )


@DTYPES
@pytest.mark.parametrize("cell", ["tanh", "lstm"])
def test_extreme_inputs_match_torch(cell, dtype):
    """Saturated gates (|z| up to ~1e4): finite, and the same values and gradients as torch."""
    ours, theirs = _pair(cell, 2, True, False, True, dtype)
    x = (torch.tensor([-1e4, -50.0, -1.0, 0.0, 1.0, 50.0, 1e4], dtype=dtype)).repeat(2, 1).t()
    x = x.reshape(7, 2, 1).expand(7, 2, 3).contiguous()
    (out_o, grads_o), (out_t, grads_t) = _run_both(ours, theirs, x, None, dtype)
    for a, b in zip(out_o + list(grads_o), out_t + list(grads_t), strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=TOL[dtype][0] * 10, rtol=TOL[dtype][1] * 10)
