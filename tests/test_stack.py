"""A stack of MLPs (``handprop.networks.MLPStack``) and the per-model update rules
(``handprop.optim``): each model's slice computes what an ordinary MLP with its weights computes,
gets its own gradient from the δ recursion, and follows ``torch.optim``'s update with its own
hyperparameters, to float rounding."""

from __future__ import annotations

import pytest
import torch

import handprop.nn as hnn
from handprop.networks import MLP, MLPStack, to_stack, unstack
from handprop.networks.stack import contiguous_stack, per_model_cost
from handprop.optim import StackedAdam, StackedAdamW, StackedRMSprop, StackedSGD

F64 = torch.float64
COSTS = {
    "mse": (hnn.MSELoss, lambda J, n, k: torch.randn(J, n, k, dtype=F64)),
    "quadratic": (hnn.QuadraticCost, lambda J, n, k: torch.randn(J, n, k, dtype=F64)),
    "bce": (hnn.BCEWithLogitsLoss, lambda J, n, k: torch.rand(J, n, k, dtype=F64)),
    "cross_entropy": (hnn.CrossEntropyLoss, lambda J, n, k: torch.randint(0, k, (J, n))),
}


def test_a_stack_draws_the_weights_of_mlps_built_one_after_another():
    torch.manual_seed(3)
    stack = MLPStack(4, 4, [5, 3], 2, "tanh", "xavier")
    torch.manual_seed(3)
    mlps = [MLP(4, [5, 3], 2, "tanh", "xavier") for _ in range(4)]
    for j, mlp in enumerate(mlps):
        for k, v in mlp.state_dict().items():
            assert torch.equal(stack.model_state_dict(j)[k], v), (j, k)


@pytest.mark.parametrize("hidden", [[], [5], [7, 6]], ids=["no-hidden", "one", "two"])
@pytest.mark.parametrize("cost", list(COSTS))
@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "leaky_relu"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_each_models_cost_and_gradient_are_its_own_mlps(activation, cost, hidden, reduction):
    torch.manual_seed(0)
    J, n, k = 3, 16, 3
    mlps = [MLP(4, hidden, k, activation).double() for _ in range(J)]
    stack = to_stack(mlps)
    make_cost, target = COSTS[cost]
    x, y = torch.randn(J, n, 4, dtype=F64), target(J, n, k)
    C = stack.backprop(x, y, make_cost(reduction=reduction))
    assert C.shape == (J,) and C.grad_fn is None
    for j, mlp in enumerate(mlps):
        Cj = mlp.backprop(x[j], y[j], make_cost(reduction=reduction))
        torch.testing.assert_close(C[j], Cj, rtol=1e-12, atol=1e-12)
        stacked = [p.grad[j] for p in stack.parameters()]
        for g, p in zip(stacked, mlp.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-12, atol=1e-12)


def test_outputs_round_trip_and_a_shared_input():
    torch.manual_seed(1)
    mlps = [MLP(4, [5], 2) for _ in range(3)]
    stack = to_stack(mlps)
    x = torch.randn(10, 4)
    out = stack(x)  # (B, in) shared by every model
    assert out.shape == (3, 10, 2)
    for j, (mlp, back) in enumerate(zip(mlps, unstack(stack), strict=True)):
        torch.testing.assert_close(out[j], mlp(x))
        for a, b in zip(mlp.parameters(), back.parameters(), strict=True):
            assert torch.equal(a, b)
    state = torch.random.get_rng_state()
    stack.model(0)
    assert torch.equal(state, torch.random.get_rng_state())  # unstack draws nothing
    with pytest.raises(ValueError, match="does not fit"):
        stack.load_model_(0, MLP(4, [6], 2))
    with pytest.raises(ValueError, match="MSELoss"):
        per_model_cost(torch.nn.L1Loss(), out, out)


def test_a_flat_row_is_one_mlps_parameters_in_order():
    torch.manual_seed(2)
    mlps = [MLP(3, [4], 2) for _ in range(2)]
    stack = to_stack(mlps)
    flat = contiguous_stack(list(stack.parameters()))
    for j, mlp in enumerate(mlps):
        assert torch.equal(flat[j], torch.cat([p.reshape(-1) for p in mlp.parameters()]))
    x, y = torch.randn(2, 8, 3), torch.randn(2, 8, 2)
    stack.backprop(x, y, hnn.MSELoss())
    assert flat.grad.abs().sum() > 0  # the recursion wrote into the flat gradient
    g = torch.cat([p.grad.reshape(2, -1) for p in stack.parameters()], 1)
    assert torch.equal(flat.grad, g)


# --------------------------------------------------------------------------------------------
# Per-model update rules against torch.optim
# --------------------------------------------------------------------------------------------
#: (stacked class, torch class, per-model hyperparameters for 3 models, torch's spelling)
RULES = {
    "sgd": (StackedSGD, torch.optim.SGD, {"lr": [0.1, 0.03, 0.01], "weight_decay": [0, 0.1, 0]}),
    "momentum": (
        StackedSGD,
        torch.optim.SGD,
        {"lr": [0.05, 0.02, 0.1], "momentum": [0.9, 0.5, 0.0], "dampening": [0, 0.1, 0]},
    ),
    "nesterov": (
        StackedSGD,
        torch.optim.SGD,
        {"lr": [0.05, 0.02, 0.1], "momentum": [0.9, 0.8, 0.7], "nesterov": [True, False, True]},
    ),
    "nesterov_all": (
        StackedSGD,
        torch.optim.SGD,
        {"lr": [0.05, 0.02, 0.1], "momentum": [0.9, 0.8, 0.7], "nesterov": [True, True, True]},
    ),
    "rmsprop": (
        StackedRMSprop,
        torch.optim.RMSprop,
        {"lr": [0.01, 0.003, 0.001], "alpha": [0.99, 0.9, 0.95], "weight_decay": [0, 0, 0.01]},
    ),
    "rmsprop_centered_momentum": (
        StackedRMSprop,
        torch.optim.RMSprop,
        {"lr": [0.01, 0.003, 0.001], "momentum": [0.9, 0, 0.5], "centered": [True, False, True]},
    ),
    "adam": (
        StackedAdam,
        torch.optim.Adam,
        {
            "lr": [0.01, 0.001, 0.1],
            "betas": ([0.9, 0.8, 0.95], [0.999, 0.99, 0.9]),
            "weight_decay": [0, 0.01, 0],
            "eps": [1e-8, 1e-6, 1e-8],
        },
    ),
    "adamw": (
        StackedAdamW,
        torch.optim.AdamW,
        {"lr": [0.01, 0.001, 0.1], "weight_decay": [0.05, 0.0, 0.01]},
    ),
}


def _model_hyper(hyper: dict, j: int) -> dict:
    out = {}
    for k, v in hyper.items():
        out[k] = tuple(b[j] for b in v) if k == "betas" else v[j]
    return out


@pytest.mark.parametrize("rule", list(RULES))
def test_each_models_slice_follows_torch_optim(rule):
    stacked_cls, torch_cls, hyper = RULES[rule]
    torch.manual_seed(0)
    J, shape = 3, (5, 4)
    w0 = torch.randn(J, *shape)
    stacked_w = w0.clone()
    torch_ws = [torch.nn.Parameter(w0[j].clone()) for j in range(J)]
    opt = stacked_cls([stacked_w], **hyper)
    twins = [torch_cls([torch_ws[j]], foreach=False, **_model_hyper(hyper, j)) for j in range(J)]
    for _ in range(25):
        g = torch.randn(J, *shape)
        stacked_w.grad = g.clone()
        opt.step()
        for j in range(J):
            torch_ws[j].grad = g[j].clone()
            twins[j].step()
    for j in range(J):
        torch.testing.assert_close(stacked_w[j], torch_ws[j].detach(), rtol=2e-6, atol=1e-7)
        # the model's state, as its torch twin keeps it
        mine, theirs = opt.model_state(j), twins[j].state[torch_ws[j]]
        assert set(mine) == {k for k, v in theirs.items() if v is not None}, (mine, theirs)
        for k, v in mine.items():
            torch.testing.assert_close(v, theirs[k], rtol=2e-6, atol=1e-7)


def test_a_models_state_continues_alone_in_torch_optim():
    torch.manual_seed(1)
    w = torch.randn(2, 6)
    opt = StackedAdam([w], lr=[0.01, 0.1], betas=([0.9, 0.8], 0.999))
    for _ in range(5):
        w.grad = torch.randn(2, 6)
        opt.step()
    p = torch.nn.Parameter(w[1].clone())
    alone = torch.optim.Adam([p], lr=0.1, betas=(0.8, 0.999), foreach=False)
    alone.state[p] = opt.model_state(1)
    g = torch.randn(2, 6)
    w.grad, p.grad = g, g[1].clone()
    opt.step()
    alone.step()
    torch.testing.assert_close(w[1], p.detach(), rtol=2e-6, atol=1e-7)


def test_select_keeps_the_chosen_models():
    torch.manual_seed(2)
    w = torch.randn(3, 4)
    opt = StackedSGD([w], lr=[0.1, 0.2, 0.3], momentum=0.9)
    w.grad = torch.randn(3, 4)
    opt.step()
    keep = torch.tensor([2, 0])
    w2 = w[keep].clone()
    buf = opt.state[0]["momentum_buffer"][keep].clone()
    opt.select_(keep, [w2])
    assert opt.hyper["lr"].tolist() == [0.3, 0.1]
    assert torch.equal(opt.state[0]["momentum_buffer"], buf)
    w2.grad = torch.randn(2, 4)
    opt.step()
    with pytest.raises(ValueError, match="shape"):
        StackedSGD([w2], lr=[0.1, 0.2, 0.3])
    with pytest.raises(TypeError, match="unknown hyperparameters"):
        StackedSGD([w2], lr=0.1, betas=0.9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_stack_trains_on_cuda_as_on_the_cpu():
    torch.manual_seed(0)
    mlps = [MLP(4, [8], 1) for _ in range(4)]
    x, y = torch.randn(4, 32, 4), torch.randn(4, 32, 1)
    runs = []
    for device in ("cpu", "cuda"):
        stack = to_stack(mlps).to(device)
        flat = contiguous_stack(list(stack.parameters()))
        opt = StackedAdam([flat], lr=[0.01, 0.02, 0.03, 0.04])
        for _ in range(20):
            stack.backprop(x.to(device), y.to(device), hnn.MSELoss())
            opt.step()
        runs.append(flat.detach().cpu())
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-4, atol=1e-5)
