"""The δ recursion written out (``MLP.backprop``) against autograd through the Functions and
against torch.nn: the same cost and the same gradient for every parameter."""

from __future__ import annotations

import pytest
import torch

import handprop.nn as hnn
from handprop.networks import Autoencoder
from handprop.nn import ACTIVATION_RULES

F64 = torch.float64
COSTS = {
    "mse": (hnn.MSELoss, torch.nn.MSELoss, lambda n, k: torch.randn(n, k, dtype=F64)),
    "quadratic": (hnn.QuadraticCost, None, lambda n, k: torch.randn(n, k, dtype=F64)),
    "bce": (
        hnn.BCEWithLogitsLoss,
        torch.nn.BCEWithLogitsLoss,
        lambda n, k: torch.rand(n, k, dtype=F64),
    ),
    "cross_entropy": (
        hnn.CrossEntropyLoss,
        torch.nn.CrossEntropyLoss,
        lambda n, k: torch.randint(0, k, (n,)),
    ),
}


@pytest.mark.parametrize("hidden", [[], [5], [7, 6]], ids=["no-hidden", "one", "two"])
@pytest.mark.parametrize("cost", list(COSTS))
@pytest.mark.parametrize("activation", list(ACTIVATION_RULES))
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_backprop_equals_autograd_and_torch(activation, cost, hidden, reduction):
    torch.manual_seed(0)
    hand_cost, torch_cost, target = COSTS[cost]
    net = hnn.MLP(4, hidden, 3, activation).double()
    x, y = torch.randn(16, 4, dtype=F64), target(16, 3)
    C = net.backprop(x, y, hand_cost(reduction=reduction))
    by_recursion = [p.grad.clone() for p in net.parameters()]
    assert C.grad_fn is None and not C.requires_grad

    net.zero_grad()
    C_autograd = hand_cost(reduction=reduction)(net(x), y)
    C_autograd.backward()
    torch.testing.assert_close(C, C_autograd.detach(), atol=1e-12, rtol=1e-12)
    for p, g in zip(net.parameters(), by_recursion, strict=True):
        torch.testing.assert_close(g, p.grad, atol=1e-12, rtol=1e-12)

    if torch_cost is not None:  # and torch.nn's network with the same weights
        twin = torch.nn.Sequential(
            *[
                torch.nn.Linear(m.in_features, m.out_features).double()
                if isinstance(m, hnn.Linear)
                else {
                    "sigmoid": torch.nn.Sigmoid,
                    "tanh": torch.nn.Tanh,
                    "relu": torch.nn.ReLU,
                }.get(activation, torch.nn.LeakyReLU)()
                for m in net.layers
            ]
        )
        twin.load_state_dict(net.layers.state_dict())
        torch_cost(reduction=reduction)(twin(x), y).backward()
        for p, g in zip(twin.parameters(), by_recursion, strict=True):
            torch.testing.assert_close(g, p.grad, atol=1e-12, rtol=1e-12)


def test_backprop_overwrites_gradients_and_keeps_float32():
    torch.manual_seed(0)
    net, cost = hnn.MLP(3, [4], 2), hnn.CrossEntropyLoss()
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    net.backprop(x, y, cost)
    first = [p.grad.clone() for p in net.parameters()]
    net.backprop(x, y, cost)  # again: the same gradient, not twice it
    for p, g in zip(net.parameters(), first, strict=True):
        assert p.grad.dtype == torch.float32
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("shape", [(5,), (6, 5), (4, 5, 3)], ids=["one-sample", "N-C", "N-C-d"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_value_and_derivative_is_forward_and_derivative(shape, reduction):
    """The δ recursion's start for class indices (one log-softmax for C and δ) gives what the
    Function's own forward and derivative give."""
    from handprop.functional import CrossEntropyFunction as fn

    torch.manual_seed(0)
    z = torch.randn(shape, dtype=F64) * 30  # large logits: the stable path matters
    target_shape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    y = torch.randint(0, 5, target_shape)
    C, delta = fn.value_and_derivative(z.clone(), y, reduction)
    torch.testing.assert_close(C, fn.forward(z, y, reduction), atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(delta, fn.derivative(z, y), atol=1e-12, rtol=1e-12)


def test_backprop_refuses_a_target_of_another_shape():
    """(N,) against the network's (N, 1) would broadcast to (N, N): a wrong δ, silently."""
    net = hnn.MLP(3, [4], 1)
    for cost in (hnn.MSELoss(), hnn.QuadraticCost(), hnn.BCEWithLogitsLoss()):
        with pytest.raises(ValueError, match="must be the same as input size"):
            net.backprop(torch.randn(8, 3), torch.rand(8), cost)


@pytest.mark.parametrize("hidden", [[5, 5], [5, 5, 5]], ids=["5-5-5-5", "5-5-5-5-5"])
@pytest.mark.parametrize("activation", list(ACTIVATION_RULES))
def test_backprop_equals_autograd_where_every_layer_has_the_same_width(activation, hidden):
    """Every layer 5 wide: a δ recursion that took another layer's σ'(z) (a wrong index into
    what the forward kept) would broadcast without an error; only the values tell. Each
    layer's pre-activations differ, so a wrong layer gives wrong gradients."""
    torch.manual_seed(0)
    for net in (
        hnn.MLP(5, hidden, 5, activation).double(),
        Autoencoder(5, hidden[1:], 5, activation).double(),  # the recursion through two MLPs
    ):
        x, y = torch.randn(16, 5, dtype=F64), torch.randn(16, 5, dtype=F64)
        C = net.backprop(x, y, hnn.MSELoss())
        by_recursion = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        C_autograd = hnn.MSELoss()(net(x), y)
        C_autograd.backward()
        torch.testing.assert_close(C, C_autograd.detach(), atol=1e-12, rtol=1e-12)
        for p, g in zip(net.parameters(), by_recursion, strict=True):
            torch.testing.assert_close(g, p.grad, atol=1e-12, rtol=1e-12)
