"""Functional calls too: ``handprop.functional.everywhere()``, ``to_handprop(functional=True)``,
the conversion report ``hnn.coverage`` and the ``[handprop]`` mark in a model's ``repr``.

Every check runs torch's own call once inside the mode and once outside it, and compares values
and every gradient, float64 and small shapes.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as TF
from torch import Tensor, nn

import handprop.functional as F
import handprop.nn as hnn
from handprop.functional import base, dispatch
from handprop.nn.report import graph_nodes

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _x(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=F64).requires_grad_()


def _probs(*shape: int) -> Tensor:
    return torch.rand(*shape, generator=_gen(7), dtype=F64)


def _idx(*shape: int) -> Tensor:
    return torch.randint(0, 3, shape, generator=_gen(8))


def _rnn_params(gates: int) -> list[Tensor]:
    shapes = [(gates * 4, 3), (gates * 4, 4), (gates * 4,), (gates * 4,)]
    return [_x(*s, seed=20 + k) for k, s in enumerate(shapes)]


#: torch callable → calls of it, each (arguments, keyword arguments), built afresh per run.
#: Together they cover every entry of OVERRIDES (checked below), extra arguments switched on.
CALLS = {
    TF.linear: [lambda: ((_x(4, 3), _x(2, 3, seed=1), _x(2, seed=2)), {})],
    TF.relu: [lambda: ((_x(4, 3),), {})],
    torch.relu: [lambda: ((_x(4, 3),), {})],
    Tensor.relu: [lambda: ((_x(4, 3),), {})],
    TF.leaky_relu: [lambda: ((_x(4, 3), 0.2), {})],
    TF.sigmoid: [lambda: ((_x(4, 3),), {})],
    torch.sigmoid: [lambda: ((_x(4, 3),), {})],
    Tensor.sigmoid: [lambda: ((_x(4, 3),), {})],
    TF.tanh: [lambda: ((_x(4, 3),), {})],
    torch.tanh: [lambda: ((_x(4, 3),), {})],
    Tensor.tanh: [lambda: ((_x(4, 3),), {})],
    TF.softmax: [lambda: ((_x(4, 3),), {"dim": 1}), lambda: ((_x(4, 3), 0), {"dtype": F64})],
    torch.softmax: [lambda: ((_x(4, 3), -1), {})],
    Tensor.softmax: [lambda: ((_x(4, 3), 1), {})],
    TF.log_softmax: [lambda: ((_x(4, 3),), {"dim": 1})],
    torch.log_softmax: [lambda: ((_x(4, 3), 0), {})],
    Tensor.log_softmax: [lambda: ((_x(2, 3, 4), 1), {})],
    TF.mse_loss: [lambda: ((_x(4, 3), _x(4, 3, seed=1)), {"reduction": "sum"})],
    TF.binary_cross_entropy_with_logits: [
        lambda: ((_x(4, 3), _probs(4, 3)), {"pos_weight": _probs(3) + 0.5})
    ],
    TF.cross_entropy: [
        lambda: ((_x(4, 3), _idx(4)), {"weight": _probs(3) + 0.5, "label_smoothing": 0.1}),
        lambda: ((_x(4, 3), _probs(4, 3).softmax(1)), {}),
    ],
    TF.nll_loss: [lambda: ((_x(4, 3).log_softmax(1), _idx(4)), {"ignore_index": 1})],
    TF.conv2d: [
        lambda: ((_x(2, 2, 5, 5), _x(4, 1, 3, 3, seed=1), _x(4, seed=2)), {"groups": 2}),
        lambda: ((_x(1, 2, 5, 5), _x(3, 2, 2, 2, seed=1)), {"padding": "same"}),
    ],
    TF.max_pool2d: [
        lambda: ((_x(2, 2, 5, 5), 3), {"stride": 2, "padding": 1}),
        lambda: ((_x(2, 2, 4, 4), 2), {"return_indices": True}),
    ],
    TF.max_pool2d_with_indices: [lambda: ((_x(2, 2, 4, 4), 2), {})],
    torch.max_pool2d: [lambda: ((_x(2, 2, 4, 4), 2), {})],
    TF.avg_pool2d: [lambda: ((_x(2, 2, 5, 5), 2), {"padding": 1, "count_include_pad": False})],
    torch.flatten: [lambda: ((_x(2, 3, 4), 1), {})],
    Tensor.flatten: [lambda: ((_x(2, 3, 4),), {"start_dim": 0, "end_dim": 1})],
    TF.dropout: [lambda: ((_x(4, 3), 0.4), {})],
    TF.batch_norm: [
        lambda: ((_x(4, 3), torch.zeros(3, dtype=F64), torch.ones(3, dtype=F64), _x(3, seed=1),
                  _x(3, seed=2)), {"training": True, "momentum": 0.2}),
        lambda: ((_x(2, 3, 4, 4), None, None), {"training": True}),
    ],
    TF.layer_norm: [lambda: ((_x(2, 3, 4), [3, 4], _x(3, 4, seed=1), _x(3, 4, seed=2)), {})],
    TF.embedding: [lambda: ((_idx(2, 4), _x(5, 3)), {"padding_idx": 1})],
    TF.gelu: [lambda: ((_x(4, 3),), {}), lambda: ((_x(4, 3),), {"approximate": "tanh"})],
    TF.adaptive_avg_pool2d: [lambda: ((_x(2, 2, 5, 7), (2, 3)), {})],
    torch.dropout: [lambda: ((_x(4, 3), 0.4, True), {})],
    torch.rnn_tanh: [
        lambda: ((_x(5, 2, 3), _x(1, 2, 4), _rnn_params(1), True, 1, 0.0, False, False, False), {})
    ],
    torch.rnn_relu: [
        lambda: ((_x(5, 2, 3), _x(1, 2, 4), _rnn_params(1), True, 1, 0.0, False, False, False), {})
    ],
    torch.lstm: [
        lambda: (
            (_x(5, 2, 3), (_x(1, 2, 4), _x(1, 2, 4, seed=3)), _rnn_params(4), True, 1, 0.0,
             False, False, False),
            {},
        )
    ],
}  # fmt: skip

CASES = [(fn, k) for fn, calls in CALLS.items() for k in range(len(calls))]


def _name(fn) -> str:  # noqa: ANN001
    return f"{getattr(fn, '__module__', None) or 'Tensor'}.{fn.__name__}".replace("torch.nn.", "")


def _tensors(value) -> list[Tensor]:  # noqa: ANN001
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _run(fn, make, mode: bool):  # noqa: ANN001
    args, kwargs = make()
    inputs = [t for t in _tensors(list(args) + list(kwargs.values())) if t.requires_grad]
    torch.manual_seed(5)  # dropout: the same draws
    if mode:
        with F.everywhere():
            out = fn(*args, **kwargs)
    else:
        out = fn(*args, **kwargs)
    outs = [t for t in _tensors(out) if t.is_floating_point()]
    cotangents = [torch.randn(t.shape, generator=_gen(9), dtype=t.dtype) for t in outs]
    grads = torch.autograd.grad(outs, inputs, cotangents, allow_unused=True)
    return out, outs, grads


def test_calls_cover_every_override():
    assert set(CALLS) == set(dispatch.OVERRIDES)


@pytest.mark.parametrize("fn,k", CASES, ids=[f"{_name(fn)}-{k}" for fn, k in CASES])
def test_torch_calls_run_handprop_functions(fn, k):
    """Inside the mode: torch's values and gradients, from handprop's Functions."""
    make = CALLS[fn][k]
    ours, ours_outs, ours_grads = _run(fn, make, mode=True)
    theirs, theirs_outs, theirs_grads = _run(fn, make, mode=False)
    torch.testing.assert_close(_tensors(ours), _tensors(theirs))
    for a, b in zip(ours_grads, theirs_grads, strict=True):
        torch.testing.assert_close(a, b)
    # the output (a recurrent layer's h_n stacks its layers' final states: torch's stack)
    assert F.function_of(ours_outs[0].grad_fn) is not None, ours_outs[0].grad_fn
    assert all(F.function_of(t.grad_fn) is None for t in theirs_outs)


DECLINED = {
    "relu-inplace": lambda x: TF.relu(x.clone(), inplace=True),
    "dropout-inplace": lambda x: TF.dropout(x.clone(), 0.3, inplace=True),
    "leaky-inplace": lambda x: TF.leaky_relu(x.clone(), 0.1, True),
    "sigmoid-out": lambda x: torch.sigmoid(x.detach(), out=torch.empty_like(x)),
    "softmax-no-dim": lambda x: TF.softmax(x),
    "mse-weight": lambda x: TF.mse_loss(x, torch.zeros_like(x), weight=torch.ones_like(x)),
    "mse-broadcast": lambda x: TF.mse_loss(x, torch.zeros(x.shape[1], dtype=F64)),
    "ce-unbatched-one": lambda x: TF.cross_entropy(x[0], torch.tensor([1])),
}


@pytest.mark.parametrize("case", sorted(DECLINED))
def test_what_handprop_does_not_take_stays_torchs(case):
    """In-place calls, ``out=``, arguments handprop lacks, inputs handprop refuses but torch
    takes: torch's own call, with torch's values (and side effects)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(3)
        theirs = DECLINED[case](_x(4, 3))
        torch.manual_seed(3)
        with F.everywhere():
            ours = DECLINED[case](_x(4, 3))
    torch.testing.assert_close(ours, theirs)
    assert F.function_of(ours.grad_fn) is None


def test_inplace_relu_still_writes_in_place():
    x = _x(4, 3).detach()
    with F.everywhere():
        out = TF.relu(x, inplace=True)
    assert out is x and (x >= 0).all()


def test_other_calls_and_packed_sequences_are_torchs():
    """Ops handprop does not implement (and the packed form of torch.rnn_tanh) run as ever."""
    x = _x(4, 3)
    with F.everywhere():
        y = TF.gelu(x) + x.exp()
        rnn = nn.RNN(3, 4).double()
        packed = nn.utils.rnn.pack_sequence([_x(3, 3), _x(2, 3, seed=1)])
        out, _ = rnn(packed)
    torch.testing.assert_close(y, TF.gelu(x) + x.exp())
    assert isinstance(out, nn.utils.rnn.PackedSequence)
    assert F.function_of(out.data.grad_fn) is None


def test_modes_open_is_counted_back_to_zero():
    assert base._modes_open == 0
    with F.everywhere(), F.everywhere():  # nested
        assert base._modes_open == 2
    with pytest.raises(ZeroDivisionError), F.everywhere():
        raise ZeroDivisionError
    assert base._modes_open == 0


# --------------------------------------------------------------------------------------------
# No re-dispatch inside handprop's own calls
# --------------------------------------------------------------------------------------------
@pytest.fixture
def adapter_calls(monkeypatch):
    """Counts every adapter the mode runs, by the torch callable it stands for."""
    calls: dict[str, int] = {}
    for fn, adapter in list(dispatch.OVERRIDES.items()):

        def counted(*args, _fn=fn, _adapter=adapter, **kwargs):
            calls[_name(_fn)] = calls.get(_name(_fn), 0) + 1
            return _adapter(*args, **kwargs)

        monkeypatch.setitem(dispatch.OVERRIDES, fn, counted)
    return calls


def test_handprop_functions_are_not_dispatched_again(adapter_calls):
    """handprop's twins call its Functions, whose forwards call torch's kernels (conv2d,
    max_pool2d, nll_loss, sigmoid / tanh in the LSTM, flatten …): inside the mode none of those
    goes through the mode again. A torch layer's one call goes through it once."""
    torch.manual_seed(0)
    twins = [
        (hnn.Conv2d(2, 3, 3).double(), (_x(1, 2, 5, 5),)),
        (hnn.MaxPool2d(2), (_x(1, 2, 4, 4),)),
        (hnn.AvgPool2d(2), (_x(1, 2, 4, 4),)),
        (hnn.Flatten(), (_x(2, 3, 4),)),
        (hnn.LSTM(3, 4).double(), (_x(5, 2, 3),)),
        (hnn.Softmax(1), (_x(2, 3),)),
        (hnn.CrossEntropyLoss(label_smoothing=0.1), (_x(4, 3), _idx(4))),
        (hnn.NLLLoss(), (_x(4, 3), _idx(4))),
        (hnn.BCEWithLogitsLoss(), (_x(4, 3), _probs(4, 3))),
    ]
    with F.everywhere():
        for module, inputs in twins:
            out = module(*inputs)
            assert F.function_of(_tensors(out)[0].grad_fn) is not None
    assert adapter_calls == {}
    with F.everywhere():
        nn.Conv2d(2, 3, 3).double()(_x(1, 2, 5, 5))
    assert adapter_calls == {"functional.conv2d": 1} or adapter_calls == {"torch.conv2d": 1}


def test_backward_inside_the_mode_runs_no_adapter(adapter_calls):
    """The hand-written backward passes (conv_transpose2d, a softmax in cross-entropy's double
    backward …) are not dispatched either."""
    x, w = _x(1, 2, 5, 5), _x(3, 2, 3, 3, seed=1)
    with F.everywhere():
        loss = TF.cross_entropy(TF.conv2d(x, w).flatten(1), _idx(1))
        adapter_calls.clear()
        (g,) = torch.autograd.grad(loss, x, create_graph=True)
        g.sum().backward()
    assert adapter_calls == {}


# --------------------------------------------------------------------------------------------
# pytorch/examples' MNIST network, as mnist/main.py writes it (BSD-3-Clause, the PyTorch
# examples' authors): torch.nn layers and torch.nn.functional calls
# --------------------------------------------------------------------------------------------
class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()  # noqa: UP008 — as the example writes it
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = TF.relu(x)
        x = self.conv2(x)
        x = TF.relu(x)
        x = TF.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = TF.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = TF.log_softmax(x, dim=1)
        return output


def _mnist() -> tuple[Net, Net, Tensor, Tensor]:
    torch.manual_seed(0)
    net = Net().double()
    images = torch.randn(2, 1, 28, 28, generator=_gen(1), dtype=F64)
    return net, copy.deepcopy(net), images, torch.tensor([3, 7])


def _loss_and_grads(net: nn.Module, images: Tensor, labels: Tensor, mode: bool = False):
    torch.manual_seed(4)  # the dropout draws
    if mode:
        with F.everywhere():
            loss = TF.nll_loss(net(images), labels)
    else:
        loss = TF.nll_loss(net(images), labels)
    nodes = graph_nodes(loss)
    loss.backward()
    return loss, [p.grad for p in net.parameters()], nodes


def _handprop_share(nodes) -> tuple[int, int]:  # noqa: ANN001
    return sum(F.function_of(n) is not None for n in nodes), len(nodes)


def test_mnist_net_under_everywhere():
    """The whole forward + loss inside the mode: all 13 operations are handprop's (2 conv2d,
    3 relu, max_pool2d, 2 dropout, flatten, 2 linear, log_softmax, nll_loss); the loss and
    every gradient are torch's."""
    net, reference, images, labels = _mnist()
    loss, grads, nodes = _loss_and_grads(net, images, labels, mode=True)
    ref_loss, ref_grads, _ = _loss_and_grads(reference, images, labels)
    assert _handprop_share(nodes) == (13, 13)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grads, ref_grads)


def test_mnist_net_to_handprop_functional():
    """``to_handprop(functional=True)``: the forward runs in the mode, so 12 of the 13
    operations are handprop's; the loss, written outside the forward, stays torch's."""
    net, reference, images, labels = _mnist()
    keys = list(net.state_dict())
    hnn.to_handprop(net, functional=True)
    assert list(net.state_dict()) == keys
    loss, grads, nodes = _loss_and_grads(net, images, labels)
    ref_loss, ref_grads, _ = _loss_and_grads(reference, images, labels)
    assert _handprop_share(nodes) == (12, 13)
    assert [type(n).__name__ for n in nodes if F.function_of(n) is None] == ["NllLossBackward0"]
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grads, ref_grads)

    plain, *_ = _mnist()
    hnn.to_handprop(plain)  # layers only: conv2d ×2, dropout ×2, linear ×2
    assert _handprop_share(_loss_and_grads(plain, images, labels)[2]) == (6, 13)


def test_functional_forward_survives_copies_and_goes_back():
    net, reference, images, _ = _mnist()
    hnn.to_handprop(net, functional=True)
    hnn.to_handprop(net, functional=True)  # once is enough: no second wrapper
    for copied in (
        copy.deepcopy(net),
        pickle.loads(pickle.dumps(net)),
        torch.load(io.BytesIO(_saved(net)), weights_only=False),
    ):
        assert copied.forward.module is copied
        out = copied(images)
        assert F.function_of(out.grad_fn) is not None  # log_softmax: handprop's
    hnn.to_torch(net)
    assert "forward" not in vars(net) and type(net.conv1) is nn.Conv2d
    assert F.function_of(net(images).grad_fn) is None
    assert list(net.state_dict()) == list(reference.state_dict())


def _saved(module: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(module, buffer)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------
# torch.compile
# --------------------------------------------------------------------------------------------
def _dynamo_graphs() -> tuple[list, object]:
    """A backend that records Dynamo's graphs and runs them through aot_eager (the hand-written
    backward traced by AOTAutograd)."""
    from torch._dynamo import lookup_backend  # tests only

    graphs: list = []
    aot = lookup_backend("aot_eager")

    def backend(gm, inputs):  # noqa: ANN001
        graphs.append(gm)
        return aot(gm, inputs)

    return graphs, backend


def _handprop_ops(graph) -> int:  # noqa: ANN001
    """Autograd Functions in a Dynamo graph (handprop's are the only ones here)."""
    target = torch.ops.higher_order.autograd_function_apply
    return sum(node.target is target for node in graph.graph.nodes)


@pytest.mark.parametrize("where", ["around", "to_handprop"])
def test_torch_compile_traces_the_mode(where):
    """``torch.compile(fullgraph=True)`` traces the mode — entered around the compiled call, or
    inside it by ``to_handprop(functional=True)`` — into one graph of handprop's Functions,
    and training matches torch step for step."""
    torch.compiler.reset()
    net, reference, images, labels = _mnist()
    if where == "to_handprop":
        hnn.to_handprop(net, functional=True)
    graphs, backend = _dynamo_graphs()
    compiled = torch.compile(net, backend=backend, fullgraph=True)
    losses = []
    for model, mode in ((compiled, where == "around"), (reference, False)):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        seen = []
        for _ in range(2):
            opt.zero_grad()
            loss, _, _ = _loss_and_grads(model, images, labels, mode=mode)
            opt.step()
            seen.append(loss.detach())
        losses.append(seen + [p.detach() for p in model.parameters()])
    torch.testing.assert_close(losses[0], losses[1])
    assert graphs and all(_handprop_ops(g) == 12 for g in graphs)  # the forward's 12 ops


# --------------------------------------------------------------------------------------------
# The conversion report and the repr mark
# --------------------------------------------------------------------------------------------
class _Counter(nn.Module):
    """A layer of the user's own, with a buffer its forward changes."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=F64))

    def forward(self, x):
        self.calls += 1
        return 2 * x


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.GroupNorm(2, 6), nn.ReLU(), nn.Dropout(0.2))
        self.counter = _Counter()
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return TF.log_softmax(self.head(self.counter(self.body(x))), 1)


def test_coverage_report(capsys):
    torch.manual_seed(0)
    model = _Mixed().double()
    x = _x(5, 4)
    hnn.to_handprop(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()

    report = hnn.coverage(model, x)
    printed = capsys.readouterr().out
    assert report.handprop == [
        ("body.0", "Linear"),
        ("body.2", "ReLU"),
        ("body.3", "Dropout"),
        ("head", "Linear"),
    ]
    assert report.torch == [("body.1", "GroupNorm"), ("counter", "_Counter")]
    # linear, group_norm, relu, dropout, 2·x, linear, log_softmax
    assert (report.handprop_nodes, report.nodes) == (4, 7)
    assert report.share == pytest.approx(4 / 7)
    assert report.torch_nodes == {
        "NativeGroupNormBackward0": 1,
        "MulBackward0": 1,
        "LogSoftmaxBackward0": 1,
    }
    assert printed.strip() == str(report)
    assert printed.startswith("_Mixed: 4 of 6 layers are handprop's; 4 of 7 graph nodes")
    assert "\n  torch     counter  _Counter\n" in printed
    assert printed.endswith(
        "torch's graph nodes: LogSoftmaxBackward0 ×1, MulBackward0 ×1, "
        "NativeGroupNormBackward0 ×1\n"
    )
    # the forward changed nothing: the buffer put back, no random numbers drawn
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert torch.equal(torch.get_rng_state(), rng)

    hnn.to_handprop(model, functional=True)
    assert hnn.coverage(model, x, show=False).handprop_nodes == 5  # the log_softmax too
    assert capsys.readouterr().out == ""


def test_coverage_without_inputs_and_of_torch_layers(capsys):
    report = hnn.coverage(nn.Sequential(nn.Linear(2, 3), nn.SiLU()), show=False)
    assert report.nodes is None and report.share is None
    assert report.torch == [("0", "Linear (twin: handprop.nn.Linear)"), ("1", "SiLU")]
    assert str(report) == (
        "Sequential: 0 of 2 layers are handprop's\n"
        "  torch     0  Linear (twin: handprop.nn.Linear)\n"
        "  torch     1  SiLU"
    )


def test_to_handprop_verbose_prints_the_report(capsys):
    net, _, images, _ = _mnist()
    hnn.to_handprop(net, verbose=True)
    out = capsys.readouterr().out
    assert out.startswith("Net: 6 of 6 layers are handprop's\n") and "graph" not in out
    net, _, images, _ = _mnist()
    hnn.to_handprop(net, functional=True, verbose=True, example_inputs=(images,))
    out = capsys.readouterr().out
    assert out.startswith(
        "Net: 6 of 6 layers are handprop's; 12 of 12 graph nodes of a forward pass run "
        "handprop's backward (100%)"
    )


def test_repr_marks_handprop_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.GroupNorm(1, 5), nn.ReLU())
    keys = [k for k, _ in model.named_parameters()]
    hnn.to_handprop(model)
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=4, out_features=5, bias=True) [handprop]\n"
        f"  (1): {model[1]!r}\n"
        "  (2): ReLU() [handprop]\n"
        ")"
    )
    assert [k for k, _ in model.named_parameters()] == keys
    for twin in [*hnn.TWINS.values(), hnn.QuadraticCost]:
        assert issubclass(twin, hnn.HandpropLayer), twin
