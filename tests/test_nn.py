"""handprop.nn: drop-in modules against their torch.nn twins, and the MLP."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import handprop.nn as hnn
from handprop.functional import FUNCTIONS, function_of

F64 = torch.float64
F32 = torch.float32
REDUCTIONS = ("mean", "sum", "none")
TOL = {F64: (1e-10, 1e-10), F32: (1e-5, 1e-5)}
DTYPES = pytest.mark.parametrize("dtype", [F64, F32], ids=["f64", "f32"])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, dtype=F64, seed=0, grad=True):
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype).requires_grad_(grad)


def _close(a, b, dtype):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def _check_module(ours: nn.Module, theirs: nn.Module, inputs: list, dtype):
    """Same outputs, input gradients and parameter gradients; every output from handprop."""
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    inputs = [t.detach().to(dtype).requires_grad_() if t.is_floating_point() else t for t in inputs]
    a = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    b = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    out, ref = ours(*a), theirs(*b)
    assert out.shape == ref.shape and out.dtype == ref.dtype == dtype
    assert function_of(out.grad_fn) in FUNCTIONS.values()
    _close(out, ref, dtype)
    upstream = torch.randn(ref.shape, generator=_gen(9), dtype=dtype)
    (out * upstream).sum().backward()
    (ref * upstream).sum().backward()
    for x, y in zip(a, b, strict=True):
        if y.requires_grad:
            _close(x.grad, y.grad, dtype)
    p_ours, p_theirs = dict(ours.named_parameters()), dict(theirs.named_parameters())
    assert p_ours.keys() == p_theirs.keys()
    for k, p in p_ours.items():
        assert p.grad is not None, k
        _close(p.grad, p_theirs[k].grad, dtype)


SHAPES = [(4, 3), (2, 4, 3), (1, 3), (3,)]
SHAPE_IDS = ["2d", "3d", "batch1", "1d"]


@DTYPES
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_matches_torch(shape, bias, dtype):
    torch.manual_seed(0)
    _check_module(hnn.Linear(3, 5, bias=bias), nn.Linear(3, 5, bias=bias), [randn(*shape)], dtype)


ACTIVATION_PAIRS = {
    "Sigmoid": (hnn.Sigmoid, nn.Sigmoid),
    "Tanh": (hnn.Tanh, nn.Tanh),
    "ReLU": (hnn.ReLU, nn.ReLU),
    "LeakyReLU": (hnn.LeakyReLU, nn.LeakyReLU),
    "LeakyReLU0.2": (lambda: hnn.LeakyReLU(0.2), lambda: nn.LeakyReLU(0.2)),
    "Softmax0": (lambda: hnn.Softmax(0), lambda: nn.Softmax(0)),
    "Softmax1": (lambda: hnn.Softmax(dim=1), lambda: nn.Softmax(dim=1)),
    "Softmax-1": (lambda: hnn.Softmax(dim=-1), lambda: nn.Softmax(dim=-1)),
}


ACTIVATION_CASES = [
    pytest.param(name, shape, id=f"{name}-{sid}")
    for name in sorted(ACTIVATION_PAIRS)
    for shape, sid in zip(SHAPES, SHAPE_IDS, strict=True)
    if not (name == "Softmax1" and len(shape) == 1)  # no dim 1 in a 1-D input
]


@DTYPES
@pytest.mark.parametrize("name,shape", ACTIVATION_CASES)
def test_activation_matches_torch(name, shape, dtype):
    ours, theirs = ACTIVATION_PAIRS[name]
    _check_module(ours(), theirs(), [randn(*shape)], dtype)


def test_softmax_without_dim_raises():
    with pytest.raises(ValueError, match="dim"):
        hnn.Softmax()(randn(2, 3))


def _loss_inputs(kind: str, shape):
    z = randn(*shape)
    if kind == "mse":
        return [z, randn(*shape, seed=1)]
    if kind == "bce":
        return [z, torch.rand(*shape, generator=_gen(1), dtype=F64).requires_grad_()]
    cdim = 0 if len(shape) == 1 else 1
    if kind == "ce-index":
        idx_shape = shape[:cdim] + shape[cdim + 1 :]
        return [z, torch.randint(0, shape[cdim], idx_shape, generator=_gen(1))]
    p = torch.randn(*shape, generator=_gen(1), dtype=F64).softmax(cdim)
    return [z, p.requires_grad_()]


LOSS_PAIRS = {
    "mse": (hnn.MSELoss, nn.MSELoss),
    "bce": (hnn.BCEWithLogitsLoss, nn.BCEWithLogitsLoss),
    "ce-index": (hnn.CrossEntropyLoss, nn.CrossEntropyLoss),
    "ce-probs": (hnn.CrossEntropyLoss, nn.CrossEntropyLoss),
}


@DTYPES
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4), (1, 3), (3,)], ids=SHAPE_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", sorted(LOSS_PAIRS))
def test_loss_matches_torch(kind, reduction, shape, dtype):
    ours, theirs = LOSS_PAIRS[kind]
    inputs = _loss_inputs(kind, shape)
    _check_module(ours(reduction=reduction), theirs(reduction=reduction), inputs, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_quadratic_cost_module_is_half_mse(reduction):
    z, y = randn(2, 3, 4), randn(2, 3, 4, seed=1)
    q = hnn.QuadraticCost(reduction)(z, y)
    torch.testing.assert_close(q, 0.5 * nn.MSELoss(reduction=reduction)(z, y))


@pytest.mark.parametrize(
    "cls", [hnn.MSELoss, hnn.QuadraticCost, hnn.BCEWithLogitsLoss, hnn.CrossEntropyLoss]
)
def test_loss_module_bad_reduction(cls):
    with pytest.raises(ValueError, match="mean"):
        cls(reduction="average")


# --------------------------------------------------------------------------------------------
# Linear: initialisation and state dicts
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sizes", [(1, 1), (3, 5), (4, 5), (5, 1), (784, 256), (7, 10)])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_same_seed_same_weights(sizes, bias):
    torch.manual_seed(1234)
    ours = hnn.Linear(*sizes, bias=bias)
    after_ours = torch.rand(3)
    torch.manual_seed(1234)
    theirs = nn.Linear(*sizes, bias=bias)
    after_theirs = torch.rand(3)
    assert torch.equal(ours.weight, theirs.weight)
    if bias:
        assert torch.equal(ours.bias, theirs.bias)
    else:
        assert ours.bias is None and theirs.bias is None
    # the same number of random draws was consumed
    assert torch.equal(after_ours, after_theirs)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_state_dict_both_ways(bias):
    x = randn(6, 4, dtype=F32, grad=False)
    torch.manual_seed(0)
    ours = hnn.Linear(4, 3, bias=bias)
    torch.manual_seed(1)
    theirs = nn.Linear(4, 3, bias=bias)
    assert not torch.equal(ours(x), theirs(x))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    # handprop -> torch
    theirs.load_state_dict(ours.state_dict(), strict=True)
    assert torch.equal(ours(x), theirs(x))
    # torch -> handprop
    torch.manual_seed(2)
    other = nn.Linear(4, 3, bias=bias)
    ours.load_state_dict(other.state_dict(), strict=True)
    assert torch.equal(ours(x), other(x))


def test_linear_without_bias():
    lin = hnn.Linear(3, 2, bias=False)
    assert lin.bias is None
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    x = randn(4, 3, dtype=F32)
    out = lin(x)
    torch.testing.assert_close(out, x @ lin.weight.t())
    out.sum().backward()
    assert lin.weight.grad is not None
    assert "bias=False" in repr(lin)


@pytest.mark.parametrize("sizes", [(0, 3), (3, 0)])
def test_linear_empty_sizes(sizes):
    """torch builds an empty layer (and warns); handprop refuses it."""
    with pytest.raises(ValueError, match="positive sizes"):
        hnn.Linear(*sizes)


@pytest.mark.parametrize(
    "sizes, error", [((-1, 2), RuntimeError), ((2, -3), RuntimeError), ((2.0, 3), TypeError)]
)
def test_linear_bad_sizes_raise_torchs_error(sizes, error):
    with pytest.raises(error):
        nn.Linear(*sizes)
    with pytest.raises(error, match="negative dimension|should be of type int"):
        hnn.Linear(*sizes)


# --------------------------------------------------------------------------------------------
# MLP
# --------------------------------------------------------------------------------------------
def _count(module: nn.Module, kind: str) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n.endswith(kind))


def test_mlp_451_has_25_weights_and_6_biases():
    mlp = hnn.MLP(4, [5], 1)
    assert _count(mlp, "weight") == 25
    assert _count(mlp, "bias") == 6
    assert sum(p.numel() for p in mlp.parameters()) == 31
    assert len(mlp.linears) == 2


def test_mlp_without_hidden_layer_is_one_linear():
    mlp = hnn.MLP(4, [], 1)
    assert len(mlp.layers) == 1 and isinstance(mlp.layers[0], hnn.Linear)
    assert _count(mlp, "weight") == 4
    assert _count(mlp, "bias") == 1
    x = randn(8, 4, dtype=F32, grad=False)
    lin = mlp.layers[0]
    torch.testing.assert_close(mlp(x), x @ lin.weight.t() + lin.bias)


def test_mlp_without_bias():
    mlp = hnn.MLP(4, [5], 1, bias=False)
    assert _count(mlp, "weight") == 25
    assert _count(mlp, "bias") == 0
    assert mlp(randn(3, 4, dtype=F32)).shape == (3, 1)


TORCH_ACT = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}


def _torch_twin(mlp: hnn.MLP) -> nn.Sequential:
    layers: list[nn.Module] = []
    for m in mlp.layers:
        if isinstance(m, hnn.Linear):
            layers.append(nn.Linear(m.in_features, m.out_features, bias=m.bias is not None))
        else:
            layers.append(TORCH_ACT[mlp.activation]())
    return nn.Sequential(*layers).to(next(mlp.parameters()).dtype)


class _TorchMLP(nn.Module):
    """A torch.nn model with the MLP's parameter names (``layers.0.weight`` …)."""

    def __init__(self, seq: nn.Sequential) -> None:
        super().__init__()
        self.layers = seq

    def forward(self, x):
        return self.layers(x)


@pytest.mark.parametrize("activation", sorted(hnn.ACTIVATIONS))
@pytest.mark.parametrize("hidden", [[], [5], [8, 6]], ids=["0h", "1h", "2h"])
def test_mlp_state_dict_loads_into_torch_sequential(activation, hidden):
    torch.manual_seed(0)
    mlp = hnn.MLP(4, hidden, 3, activation=activation)
    keys = list(mlp.state_dict())
    expected = []
    for i in range(len(hidden) + 1):
        expected += [f"layers.{2 * i}.weight", f"layers.{2 * i}.bias"]
    assert keys == expected
    x = randn(7, 4, dtype=F32, grad=False)
    # same keys: a torch model with a ``layers`` Sequential
    twin = _TorchMLP(_torch_twin(mlp))
    assert list(twin.state_dict()) == keys
    twin.load_state_dict(mlp.state_dict(), strict=True)
    torch.testing.assert_close(mlp(x), twin(x), atol=0, rtol=0)
    # a bare nn.Sequential takes the Sequential's own state dict
    seq = _torch_twin(mlp)
    seq.load_state_dict(mlp.layers.state_dict(), strict=True)
    torch.testing.assert_close(mlp(x), seq(x), atol=0, rtol=0)
    # and back: torch -> handprop
    torch.manual_seed(5)
    other = _TorchMLP(_torch_twin(mlp))
    mlp.load_state_dict(other.state_dict(), strict=True)
    torch.testing.assert_close(mlp(x), other(x), atol=0, rtol=0)


@pytest.mark.parametrize("activation", sorted(hnn.ACTIVATIONS))
@pytest.mark.parametrize("init", hnn.INITS)
def test_every_init_runs(init, activation):
    torch.manual_seed(0)
    mlp = hnn.MLP(6, [32, 16], 2, activation=activation, init=init)
    out = mlp(randn(5, 6, dtype=F32, grad=False))
    assert out.shape == (5, 2) and torch.isfinite(out).all()
    w = mlp.linears[0].weight
    if init == "zeros":
        assert not w.any()
    else:
        assert w.std() > 0
    if init != "torch":
        assert all(not lin.bias.any() for lin in mlp.linears)


def test_init_statistics():
    torch.manual_seed(0)
    fan_in, fan_out = 400, 300
    he = hnn.MLP(fan_in, [], fan_out, init="he").linears[0].weight
    assert he.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    xav = hnn.MLP(fan_in, [], fan_out, init="xavier").linears[0].weight
    r = (6 / (fan_in + fan_out)) ** 0.5
    assert xav.abs().max().item() <= r
    assert xav.std().item() == pytest.approx(r / 3**0.5, rel=0.05)
    small = hnn.MLP(fan_in, [], fan_out, init="normal").linears[0].weight
    assert small.std().item() == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"activation": "softplus"},
        {"activation": "ReLU"},
        {"init": "orthogonal"},
        {"init": "Xavier"},
        {"hidden_features": [0]},
        {"hidden_features": [5, 0]},
        {"hidden_features": [-3]},
        {"hidden_features": [2.5]},
        {"in_features": 0},
        {"out_features": 0},
    ],
    ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()),
)
def test_mlp_bad_arguments_raise(kwargs):
    args = {"in_features": 4, "hidden_features": [5], "out_features": 1, **kwargs}
    with pytest.raises(ValueError):
        hnn.MLP(**args)


# --------------------------------------------------------------------------------------------
# Symmetry: zero init keeps hidden units identical; random init breaks the symmetry
# --------------------------------------------------------------------------------------------
def _train(mlp: nn.Module, loss_fn, x, y, steps: int, lr: float) -> list[float]:
    opt = torch.optim.SGD(mlp.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(mlp(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _regression_data(n=64, d=4, seed=0):
    g = _gen(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = (x @ torch.randn(d, 1, generator=g, dtype=F64)).tanh() + 0.1 * torch.randn(
        n, 1, generator=g, dtype=F64
    )
    return x, y


@pytest.mark.quality
def test_zero_init_keeps_hidden_units_identical():
    x, y = _regression_data()
    mlp = hnn.MLP(4, [6], 1, activation="sigmoid", init="zeros").double()
    _train(mlp, hnn.MSELoss(), x, y, steps=10, lr=0.5)
    w1 = mlp.linears[0].weight
    b1 = mlp.linears[0].bias
    w2 = mlp.linears[1].weight
    # the weights did move ...
    assert w1.abs().max() > 1e-4
    assert w2.abs().max() > 1e-4
    # ... but every hidden unit is still the same unit
    torch.testing.assert_close(w1, w1[:1].expand_as(w1), atol=1e-14, rtol=0)
    torch.testing.assert_close(b1, b1[:1].expand_as(b1), atol=1e-14, rtol=0)
    torch.testing.assert_close(w2, w2[:, :1].expand_as(w2), atol=1e-14, rtol=0)


@pytest.mark.quality
@pytest.mark.parametrize(
    "init,activation", [("xavier", "sigmoid"), ("xavier", "tanh"), ("he", "relu"), ("auto", "relu")]
)
def test_random_init_breaks_symmetry_and_learns(init, activation):
    x, y = _regression_data()
    torch.manual_seed(0)
    mlp = hnn.MLP(4, [6], 1, activation=activation, init=init).double()
    losses = _train(mlp, hnn.MSELoss(), x, y, steps=30, lr=0.1)
    w1 = mlp.linears[0].weight
    row_spread = (w1 - w1[:1]).abs().amax(dim=1)[1:]
    assert (row_spread > 1e-3).all(), "hidden units should differ from each other"
    assert losses[-1] < 0.9 * losses[0]


# --------------------------------------------------------------------------------------------
# Drop-in: the same loop with torch.nn and handprop.nn gives the same weights
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", sorted(hnn.ACTIVATIONS))
@pytest.mark.parametrize("task", ["regression", "classification", "binary"])
def test_drop_in_training_matches_torch(task, activation):
    torch.manual_seed(0)
    ours = hnn.MLP(
        5, [8, 7], 3 if task == "classification" else 1, activation=activation, init="torch"
    ).double()
    theirs = _torch_twin(ours)
    theirs.load_state_dict(ours.layers.state_dict(), strict=True)
    g = _gen(3)
    x = torch.randn(32, 5, generator=g, dtype=F64)
    if task == "regression":
        y = torch.randn(32, 1, generator=g, dtype=F64)
        loss_ours, loss_theirs = hnn.MSELoss(), nn.MSELoss()
    elif task == "binary":
        y = torch.randint(0, 2, (32, 1), generator=g).double()
        loss_ours, loss_theirs = hnn.BCEWithLogitsLoss(), nn.BCEWithLogitsLoss()
    else:
        y = torch.randint(0, 3, (32,), generator=g)
        loss_ours, loss_theirs = hnn.CrossEntropyLoss(), nn.CrossEntropyLoss()
    start = copy.deepcopy(ours.state_dict())
    l_ours = _train(ours, loss_ours, x, y, steps=20, lr=0.2)
    l_theirs = _train(theirs, loss_theirs, x, y, steps=20, lr=0.2)
    assert l_ours == pytest.approx(l_theirs, abs=1e-10, rel=1e-10)
    moved = False
    for k, v in theirs.state_dict().items():
        mine = ours.layers.state_dict()[k]
        torch.testing.assert_close(mine, v, atol=1e-10, rtol=1e-10)
        moved |= not torch.allclose(mine, start[f"layers.{k}"])
    assert moved
    assert l_ours[-1] < l_ours[0]
