"""handprop wherever torch.nn works: each row of the README's "Works with" table is a test here
(autocast: tests/test_scale.py; PyTorch's own OpInfo samples: tests/test_opinfo.py).

Every check runs the same model twice, built from handprop and from torch.nn with the same
weights, and compares values and gradients, float64 and small shapes unless the row is about a
dtype.
"""

from __future__ import annotations

import copy
import gc
import os
import weakref

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, vmap
from torch.nn.utils import prune

import handprop.functional as F
import handprop.nn as hnn
from handprop.functional import activations, losses, neuron

F64 = torch.float64
N, IN, HID, OUT = 5, 4, 6, 3


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _weights(n: int, seed: int = 11) -> torch.Tensor:
    return torch.rand(n, generator=_gen(seed), dtype=F64) + 0.5


#: name → (handprop activation, torch twin)
ACTS = {
    "sigmoid": (hnn.Sigmoid, nn.Sigmoid),
    "tanh": (hnn.Tanh, nn.Tanh),
    "relu": (hnn.ReLU, nn.ReLU),
    "leaky_relu": (lambda: hnn.LeakyReLU(0.1), lambda: nn.LeakyReLU(0.1)),
    "softmax": (lambda: hnn.Softmax(-1), lambda: nn.Softmax(-1)),
    "log_softmax": (lambda: hnn.LogSoftmax(-1), lambda: nn.LogSoftmax(-1)),
}


def _targets(kind: str, n: int = N) -> torch.Tensor:
    g = _gen(3)
    if kind in ("mse", "quadratic"):
        return torch.randn(n, OUT, generator=g, dtype=F64)
    if kind == "bce":
        return torch.rand(n, OUT, generator=g, dtype=F64)
    if kind == "ce-probs":
        return torch.randn(n, OUT, generator=g, dtype=F64).softmax(1)
    y = torch.randint(0, OUT, (n,), generator=g)
    if n > 2:
        y[1] = -100 if kind == "ce" else 0  # one padded sample (ignore_index), none for nll
    return y


#: name → (handprop loss, torch twin); every extra argument switched on somewhere
LOSSES = {
    "mse": (hnn.MSELoss, nn.MSELoss),
    "quadratic": (hnn.QuadraticCost, lambda: lambda a, b: 0.5 * nn.MSELoss()(a, b)),
    "bce": (
        lambda: hnn.BCEWithLogitsLoss(pos_weight=_weights(OUT)),
        lambda: nn.BCEWithLogitsLoss(pos_weight=_weights(OUT)),
    ),
    "ce": (
        lambda: hnn.CrossEntropyLoss(weight=_weights(OUT), label_smoothing=0.1),
        lambda: nn.CrossEntropyLoss(weight=_weights(OUT), label_smoothing=0.1),
    ),
    "ce-probs": (hnn.CrossEntropyLoss, nn.CrossEntropyLoss),
    "nll": (
        lambda: hnn.NLLLoss(weight=_weights(OUT), reduction="sum"),
        lambda: nn.NLLLoss(weight=_weights(OUT), reduction="sum"),
    ),
}


def twin_models(act: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """IN → HID → OUT with ``act`` between, from handprop and from torch.nn, with the same
    weights (``seed`` picks them)."""
    ours_act, theirs_act = ACTS[act]
    torch.manual_seed(seed)
    ours = nn.Sequential(hnn.Linear(IN, HID), ours_act(), hnn.Linear(HID, OUT)).to(F64)
    theirs = nn.Sequential(nn.Linear(IN, HID), theirs_act(), nn.Linear(HID, OUT)).to(F64)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _loss_fns(act: str, loss: str):
    """The two models and losses as cost functions of (parameters, x, y), and the parameters;
    ``nll`` takes log-probabilities, so its models end in a log-softmax."""
    ours_m, theirs_m = twin_models(act)
    ours_l, theirs_l = (make() for make in LOSSES[loss])
    head = (hnn.LogSoftmax(1), nn.LogSoftmax(1)) if loss == "nll" else (None, None)

    def cost(model, loss_fn, last):
        def f(params, x, y):
            z = functional_call(model, params, (x,))
            return loss_fn(last(z) if last is not None else z, y)

        return f

    params = {k: v.detach() for k, v in ours_m.named_parameters()}
    return cost(ours_m, ours_l, head[0]), cost(theirs_m, theirs_l, head[1]), params


def _close(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _close(a[k], b[k])
    elif isinstance(a, list | tuple):
        for u, v in zip(a, b, strict=True):
            _close(u, v)
    else:
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------------------------
# torch.func: grad, vmap (per-sample gradients), jacrev, jacfwd, hessian; forward-mode AD
# --------------------------------------------------------------------------------------------
CASES = [(act, "ce") for act in ACTS] + [("tanh", loss) for loss in LOSSES if loss != "ce"]


@pytest.mark.parametrize("act,loss", CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_torch_func_transforms_match_torch(act, loss):
    """Every activation and every loss (extra arguments included) under the torch.func
    transforms, against the same model in torch.nn."""
    ours, theirs, params = _loss_fns(act, loss)
    x = torch.randn(N, IN, generator=_gen(1), dtype=F64)
    y = _targets(loss)

    # the per-sample-gradient recipe of the torch.func documentation: vmap(grad(...))
    def per_sample(f):
        one = grad(lambda p, xi, yi: f(p, xi.unsqueeze(0), yi.unsqueeze(0)))
        return vmap(one, in_dims=(None, 0, 0))(params, x, y)

    _close(per_sample(ours), per_sample(theirs))  # ce: sample 1 ignored, its gradient 0

    _close(grad(ours)(params, x, y), grad(theirs)(params, x, y))
    for transform in (jacrev, jacfwd, hessian):  # with respect to the input
        _close(transform(ours, argnums=1)(params, x, y), transform(theirs, argnums=1)(params, x, y))
    _close(jacfwd(ours)(params, x, y), jacfwd(theirs)(params, x, y))  # and the parameters

    # forward-mode AD with dual numbers: the tangent of the loss along random directions
    tangents = {k: torch.randn(v.shape, generator=_gen(5), dtype=F64) for k, v in params.items()}
    dx = torch.randn(x.shape, generator=_gen(6), dtype=F64)
    results = []
    for f in (ours, theirs):
        with fwAD.dual_level():
            dual = {k: fwAD.make_dual(v, tangents[k]) for k, v in params.items()}
            results.append(fwAD.unpack_dual(f(dual, fwAD.make_dual(x, dx), y)).tangent)
    _close(results[0], results[1])


def test_the_hand_written_rules_run_under_the_transforms(monkeypatch):
    """Under vmap, grad and jacfwd torch runs handprop's own backward, jvp and vmap rules
    (counted), not a derivative of its own."""
    calls: dict[str, int] = {}

    def count(cls, name):
        rule = getattr(cls, name)

        def counted(*args):
            calls[f"{cls.__name__}.{name}"] = calls.get(f"{cls.__name__}.{name}", 0) + 1
            return rule(*args)

        monkeypatch.setattr(cls, name, staticmethod(counted))

    for cls in (neuron.LinearFunction, activations.TanhFunction, losses.CrossEntropyFunction):
        count(cls, "backward")
        count(cls, "jvp")
    count(activations.TanhFunction, "vmap")
    ours, _, params = _loss_fns("tanh", "ce")
    x, y = torch.randn(N, IN, generator=_gen(1), dtype=F64), _targets("ce")
    vmap(grad(lambda p, xi, yi: ours(p, xi[None], yi[None])), in_dims=(None, 0, 0))(params, x, y)
    jacfwd(ours, argnums=1)(params, x, y)
    for cls in ("LinearFunction", "TanhFunction", "CrossEntropyFunction"):
        assert calls.get(f"{cls}.backward") and calls.get(f"{cls}.jvp"), calls
    assert calls.get("TanhFunction.vmap"), calls


def test_vmap_over_a_batch_of_models():
    """Ensembles: vmap over stacked weights (a batch of weight matrices, generated rule)."""
    pairs = [twin_models("relu", seed=s) for s in range(3)]
    x = torch.randn(N, IN, generator=_gen(1), dtype=F64)
    outs = []
    for i in (0, 1):  # handprop, torch.nn
        members = [pair[i] for pair in pairs]
        params, _ = torch.func.stack_module_state(members)
        base = copy.deepcopy(members[0]).to("meta")
        outs.append(vmap(lambda p, b=base: functional_call(b, p, (x,)))(params))
    _close(outs[0], outs[1])


# --------------------------------------------------------------------------------------------
# torch.compile, torch.export, ONNX, TorchScript
# --------------------------------------------------------------------------------------------
def _trajectory(model: nn.Module, loss_of) -> list[torch.Tensor]:
    """Three SGD steps on ``loss_of(x, y)``: the losses and the final weights."""
    x, y = torch.randn(N, IN, generator=_gen(1), dtype=F64), _targets("ce")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = []
    for _ in range(3):
        opt.zero_grad()
        loss = loss_of(x, y)
        loss.backward()
        opt.step()
        seen.append(loss.detach())
    return seen + [p.detach().clone() for p in model.parameters()]


def _compiled_training_matches(backend: str) -> None:
    ours, theirs = twin_models("relu")
    loss_ours, loss_theirs = (make() for make in LOSSES["ce"])
    compiled = torch.compile(lambda x, y: loss_ours(ours(x), y), fullgraph=True, backend=backend)
    got = _trajectory(ours, compiled)
    _close(got, _trajectory(theirs, lambda x, y: loss_theirs(theirs(x), y)))


def test_torch_compile_fullgraph():
    """One graph, no breaks (fullgraph=True): Dynamo and AOTAutograd trace the Functions and
    the hand-written backward; training matches torch.nn step for step."""
    torch.compiler.reset()
    _compiled_training_matches("aot_eager")


@pytest.mark.skipif(
    not os.environ.get("HANDPROP_TEST_INDUCTOR"),
    reason="inductor compiles C++ (~30 s cold); set HANDPROP_TEST_INDUCTOR=1 to run",
)
def test_torch_compile_inductor():
    torch.compiler.reset()
    _compiled_training_matches("inductor")


@pytest.mark.parametrize("strict", [False, True], ids=["non-strict", "strict"])
def test_torch_export(strict):
    ours, theirs = twin_models("tanh")
    x = torch.randn(N, IN, generator=_gen(1), dtype=F64)
    program = torch.export.export(ours, (x,), strict=strict)
    _close(program.module()(x), theirs(x))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo-exporter"])
def test_onnx_export(tmp_path, dynamo):
    """Both ONNX exporters; the file runs in onnx's reference evaluator and gives torch's
    outputs (onnx / onnxscript are test-only dependencies: skipped without them)."""
    onnx = pytest.importorskip("onnx")
    if dynamo:
        pytest.importorskip("onnxscript")
    from onnx.reference import ReferenceEvaluator

    ours, theirs = twin_models("sigmoid")
    ours, theirs = ours.float().eval(), theirs.float()
    x = torch.randn(N, IN, generator=_gen(1))
    path = tmp_path / "model.onnx"
    torch.onnx.export(ours, (x,), str(path), input_names=["x"], dynamo=dynamo)
    (out,) = ReferenceEvaluator(onnx.load(str(path))).run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(out), theirs(x), atol=1e-5, rtol=1e-5)


def test_torch_jit_trace():
    """A traced model runs the Functions (forward and hand-written backward)."""
    ours, theirs = twin_models("leaky_relu")
    x = torch.randn(N, IN, generator=_gen(1), dtype=F64)
    traced = torch.jit.trace(ours, (x,))
    out = traced(x)
    assert F.function_of(out.grad_fn) is neuron.LinearFunction
    out.square().sum().backward()
    theirs(x).square().sum().backward()
    for p, q in zip(ours.parameters(), theirs.parameters(), strict=True):
        _close(p.grad, q.grad)


def test_torch_jit_script_is_the_documented_limitation():
    """TorchScript cannot compile Python autograd Functions: scripting fails (trace instead)."""
    with pytest.raises(Exception):  # noqa: B017 — torch's own error; its type varies
        torch.jit.script(hnn.Linear(3, 2))


# --------------------------------------------------------------------------------------------
# Hooks, parametrizations, LBFGS, dtypes
# --------------------------------------------------------------------------------------------
def test_hooks_see_what_torch_hooks_see():
    """Forward pre-hooks, forward hooks, full backward hooks and tensor hooks."""
    seen: dict[str, list] = {"ours": [], "theirs": []}
    x = torch.randn(N, IN, generator=_gen(1), dtype=F64)
    for name, model in zip(("ours", "theirs"), twin_models("relu"), strict=True):
        log = seen[name]
        lin = model[2]
        lin.register_forward_pre_hook(lambda m, args, log=log: log.append(args[0].clone()))
        lin.register_forward_hook(lambda m, args, out, log=log: log.append(out.clone()))
        lin.register_full_backward_hook(lambda m, gi, go, log=log: log.extend([gi[0], go[0]]))
        lin.weight.register_hook(lambda g, log=log: log.append(g.clone()))
        model(x).square().sum().backward()
    assert len(seen["ours"]) == len(seen["theirs"]) == 5
    for a, b in zip(seen["ours"], seen["theirs"], strict=True):
        _close(a, b)


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "orthogonal"])
def test_parametrizations(kind):
    """torch.nn.utils.parametrizations on a handprop Linear: the weight is computed, the
    gradient reaches the underlying parameters through the hand-written backward."""
    P = torch.nn.utils.parametrizations
    x = torch.randn(N, IN, generator=_gen(1), dtype=F64)
    grads = []
    for model in twin_models("tanh"):
        torch.manual_seed(3)  # spectral_norm's power iteration starts from a random vector
        getattr(P, kind)(model[0])
        model(x).square().sum().backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    _close(grads[0], grads[1])


def test_lbfgs_trajectory():
    """LBFGS re-evaluates the closure; the same iterates as torch.nn."""
    finals = []
    x, y = torch.randn(N, IN, generator=_gen(1), dtype=F64), _targets("mse")
    for model, loss_fn in zip(twin_models("sigmoid"), (hnn.MSELoss(), nn.MSELoss()), strict=True):
        opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=5)

        def closure(model=model, loss_fn=loss_fn, opt=opt):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        finals.append([p.detach() for p in model.parameters()])
    _close(finals[0], finals[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_half_precision_models(dtype):
    """A model in float16 / bfloat16: outputs and gradients in that dtype, within its rounding
    of torch.nn's (autocast itself: tests/test_scale.py)."""
    x = torch.randn(N, IN, generator=_gen(1), dtype=F64)
    y = _targets("ce")
    res = []
    for model, loss_fn in zip(
        twin_models("sigmoid"), (F.cross_entropy, nn.functional.cross_entropy), strict=True
    ):
        model = model.to(dtype)
        loss = loss_fn(model(x.to(dtype)), y)
        loss.backward()
        assert loss.dtype == model[0].weight.grad.dtype == dtype
        res.append([loss.float(), *(p.grad.float() for p in model.parameters())])
    for a, b in zip(*res, strict=True):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=2e-2)


def test_no_reference_cycles():
    """What jvp needs is saved with the graph, not in a cycle: outputs are freed at once."""
    gc.collect()
    gc.disable()
    try:
        x = torch.randn(N, IN, dtype=F64, requires_grad=True)
        refs = []
        for fn in (F.sigmoid, F.relu, lambda t: F.softmax(t, 1), lambda t: F.linear(t, x)):
            out = fn(x)
            refs.append(weakref.ref(out))
            del out
        assert all(r() is None for r in refs)
    finally:
        gc.enable()


# --------------------------------------------------------------------------------------------
# Edge cases as torch: empty batches, size-0 dims, a batch of one, every sample ignored
# --------------------------------------------------------------------------------------------
EDGE = {
    "mse-empty": (lambda: (torch.randn(0, 3), torch.randn(0, 3)), "mse_loss", {}),
    "bce-empty": (
        lambda: (torch.randn(0, 3), torch.rand(0, 3)),
        "binary_cross_entropy_with_logits",
        {},
    ),
    "ce-empty": (
        lambda: (torch.randn(0, 3), torch.zeros(0, dtype=torch.long)),
        "cross_entropy",
        {},
    ),
    "ce-empty-sum": (
        lambda: (torch.randn(0, 3), torch.zeros(0, dtype=torch.long)),
        "cross_entropy",
        {"reduction": "sum"},
    ),
    "ce-probs-empty": (lambda: (torch.randn(0, 3), torch.rand(0, 3)), "cross_entropy", {}),
    "ce-all-ignored": (
        lambda: (torch.randn(2, 3), torch.tensor([-100, -100])),
        "cross_entropy",
        {"label_smoothing": 0.2},
    ),
    "nll-all-ignored-sum": (
        lambda: (torch.randn(2, 3), torch.tensor([1, 1])),
        "nll_loss",
        {"ignore_index": 1, "reduction": "sum"},
    ),
    "ce-batch-of-one": (lambda: (torch.randn(1, 3), torch.tensor([2])), "cross_entropy", {}),
    "ce-unbatched": (lambda: (torch.randn(3), torch.tensor(2)), "cross_entropy", {}),
    "nll-size0-spatial": (
        lambda: (torch.randn(2, 3, 0), torch.zeros(2, 0, dtype=torch.long)),
        "nll_loss",
        {"reduction": "none"},
    ),
    "softmax-size0-dim": (lambda: (torch.randn(2, 0),), "softmax", {"dim": 1}),
    "log_softmax-size0-batch": (lambda: (torch.randn(0, 4),), "log_softmax", {"dim": 1}),
    "linear-empty": (lambda: (torch.randn(0, 3), torch.randn(2, 3)), "linear", {}),
}


@pytest.mark.parametrize("case", sorted(EDGE))
def test_edge_cases_as_torch(case):
    make, name, kwargs = EDGE[case]
    args = [a.double().requires_grad_() if a.is_floating_point() else a for a in make()]
    twin = getattr(nn.functional, name)
    outs, grads = [], []
    for fn in (getattr(F, name), twin):
        inputs = [a.detach().requires_grad_(a.requires_grad) for a in args]
        out = fn(*inputs, **kwargs)
        outs.append(out)
        diff = [a for a in inputs if a.requires_grad]
        grads.append(torch.autograd.grad(out.sum(), diff, allow_unused=True))
    torch.testing.assert_close(outs[0], outs[1], equal_nan=True)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)


# --------------------------------------------------------------------------------------------
# Whole-model conversion
# --------------------------------------------------------------------------------------------
class _Net(nn.Module):
    """An arbitrary model: layers at several depths, in containers, next to unsupported ones."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(IN, HID), nn.SiLU(), nn.ReLU())
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(HID, HID), nn.Tanh())])
        self.heads = nn.ModuleDict({"out": nn.Linear(HID, OUT), "act": nn.LeakyReLU(0.2)})
        self.loss = nn.CrossEntropyLoss(weight=_weights(OUT), label_smoothing=0.1)

    def forward(self, x, y):
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.loss(self.heads["out"](self.heads["act"](h)), y)


def test_to_handprop_and_back():
    torch.manual_seed(0)
    net = _Net().to(F64)
    reference = copy.deepcopy(net)
    params = dict(net.named_parameters())
    state = {k: v.clone() for k, v in net.state_dict().items()}

    converted = hnn.to_handprop(net)
    assert converted is net  # in place
    kinds = {name: type(m) for name, m in net.named_modules()}
    assert kinds["stem.0"] is hnn.Linear and kinds["stem.2"] is hnn.ReLU
    assert kinds["stem.1"] is nn.SiLU  # no twin: left alone
    assert kinds["blocks.0.0"] is hnn.Linear and kinds["blocks.0.1"] is hnn.Tanh
    assert kinds["heads.out"] is hnn.Linear and kinds["heads.act"] is hnn.LeakyReLU
    assert kinds["loss"] is hnn.CrossEntropyLoss and net.loss.label_smoothing == 0.1
    assert all(p is params[k] for k, p in net.named_parameters())  # the same Parameters
    _close(net.state_dict(), state)

    x, y = torch.randn(N, IN, generator=_gen(1), dtype=F64), _targets("ce")
    for model in (net, reference):
        model(x, y).backward()
    assert F.function_of(net(x, y).grad_fn) is losses.CrossEntropyFunction
    _close(
        {k: p.grad for k, p in net.named_parameters()},
        {k: p.grad for k, p in reference.named_parameters()},
    )

    back = hnn.to_torch(net)
    assert {name: type(m) for name, m in back.named_modules()} == {
        name: type(m) for name, m in reference.named_modules()
    }
    assert hnn.to_torch(hnn.Linear(2, 3)).__class__ is nn.Linear  # a bare layer: its twin
    assert hnn.to_handprop(nn.ReLU()).__class__ is hnn.ReLU


def test_to_handprop_convolutional_and_recurrent_layers():
    """A small CNN and an LSTM model, converted and back: the same outputs and gradients."""
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AvgPool2d(1),
        nn.Dropout(0.0),
        nn.Flatten(),
        nn.Linear(8, OUT),
    ).to(F64)
    rnn = nn.ModuleList([nn.RNN(3, 4, batch_first=True), nn.LSTM(4, 4)]).to(F64)
    images = torch.randn(N, 1, 4, 4, generator=_gen(1), dtype=F64)
    seq = torch.randn(N, 6, 3, generator=_gen(2), dtype=F64)

    def run_rnn(m):
        return m[1](m[0](seq)[0].transpose(0, 1))[0]

    for model, run in ((cnn, lambda m: m(images)), (rnn, run_rnn)):
        reference = copy.deepcopy(model)
        hnn.to_handprop(model)
        assert all(type(m).__module__ != "torch.nn.modules.rnn" for m in model.modules())
        out, ref = run(model), run(reference)
        _close(out, ref)
        out.square().sum().backward()
        ref.square().sum().backward()
        _close([p.grad for p in model.parameters()], [p.grad for p in reference.parameters()])
        back = hnn.to_torch(model)
        assert [type(m) for m in back.modules()] == [type(m) for m in reference.modules()]


def test_mlp_to_torch_keeps_its_parameter_names():
    mlp = hnn.MLP(IN, [HID], OUT).to(F64)
    keys = list(mlp.state_dict())
    x = torch.randn(N, IN, generator=_gen(1), dtype=F64)
    expected = mlp(x)
    hnn.to_torch(mlp)
    assert [type(m) for m in mlp.layers] == [nn.Linear, nn.ReLU, nn.Linear]
    assert list(mlp.state_dict()) == keys  # layers.0.weight, …
    _close(mlp(x), expected)
    seq = nn.Sequential(nn.Linear(IN, HID), nn.ReLU(), nn.Linear(HID, OUT)).to(F64)
    seq.load_state_dict(mlp.layers.state_dict())  # the Sequential's own keys: no prefix
    _close(seq(x), expected)


def test_mlp_backprop_after_to_torch_says_to_convert_back():
    mlp = hnn.MLP(IN, [HID], OUT).to(F64)
    x, y = torch.randn(N, IN, generator=_gen(1), dtype=F64), _targets("mse")
    hnn.to_torch(mlp)
    with pytest.raises(ValueError, match=r"^MLP.backprop needs handprop layers .*to_handprop\)$"):
        mlp.backprop(x, y, hnn.MSELoss())
    hnn.to_handprop(mlp)
    mlp.backprop(x, y, hnn.MSELoss())


def _seq(batch_first: bool = False) -> torch.Tensor:
    shape = (N, 6, 3) if batch_first else (6, N, 3)
    return torch.randn(*shape, generator=_gen(2), dtype=F64)


def _images() -> torch.Tensor:
    return torch.randn(N, 2, 5, 5, generator=_gen(1), dtype=F64)


def _logits() -> torch.Tensor:
    return torch.randn(N, OUT, generator=_gen(1), dtype=F64)


#: every pair in TWINS → (constructor arguments, keyword arguments, the inputs of a call), with
#: settings off their defaults where the layer has any
NATIVE = {
    nn.Linear: ((IN, OUT), {}, lambda: (torch.randn(N, IN, generator=_gen(1), dtype=F64),)),
    nn.Sigmoid: ((), {}, lambda: (_logits(),)),
    nn.Tanh: ((), {}, lambda: (_logits(),)),
    nn.ReLU: ((), {}, lambda: (_logits(),)),
    nn.LeakyReLU: ((0.2,), {}, lambda: (_logits(),)),
    nn.Softmax: ((), {"dim": 1}, lambda: (_logits(),)),
    nn.LogSoftmax: ((), {"dim": 0}, lambda: (_logits(),)),
    nn.MSELoss: ((), {"reduction": "sum"}, lambda: (_logits(), _targets("mse"))),
    nn.BCEWithLogitsLoss: (
        (),
        {"weight": _weights(OUT), "pos_weight": _weights(OUT, 12)},
        lambda: (_logits(), _targets("bce")),
    ),
    nn.CrossEntropyLoss: (
        (),
        {"weight": _weights(OUT), "label_smoothing": 0.1},
        lambda: (_logits(), _targets("ce")),
    ),
    nn.NLLLoss: (
        (),
        {"weight": _weights(OUT), "ignore_index": 1, "reduction": "sum"},
        lambda: (_logits().log_softmax(1), _targets("nll")),
    ),
    nn.Conv2d: (
        (2, 4, 3),
        {"stride": 2, "padding": 1, "groups": 2, "bias": False},
        lambda: (_images(),),
    ),
    nn.MaxPool2d: ((3,), {"stride": 2, "padding": 1}, lambda: (_images(),)),
    nn.AvgPool2d: ((2,), {"padding": 1, "count_include_pad": False}, lambda: (_images(),)),
    nn.Flatten: ((), {"start_dim": 0, "end_dim": 1}, lambda: (_images(),)),
    nn.Dropout: ((0.5,), {}, lambda: (_logits(),)),
    nn.RNN: (
        (3, 4),
        {"num_layers": 2, "nonlinearity": "relu", "batch_first": True},
        lambda: (_seq(batch_first=True),),
    ),
    nn.LSTM: ((3, 4), {"bidirectional": True, "bias": False}, lambda: (_seq(),)),
    nn.BatchNorm1d: ((2,), {"momentum": None, "eps": 1e-3}, lambda: (_images()[:, :, 0],)),
    nn.BatchNorm2d: ((2,), {"momentum": 0.3, "bias": False}, lambda: (_images(),)),
    nn.LayerNorm: (((5, 5),), {"eps": 1e-3, "bias": False}, lambda: (_images(),)),
    nn.Embedding: (
        (6, 3),
        {"padding_idx": 1, "scale_grad_by_freq": True},
        lambda: (torch.tensor([[0, 1, 5], [1, 2, 2]]),),
    ),
    nn.GELU: (("tanh",), {}, lambda: (_logits(),)),
    nn.AdaptiveAvgPool2d: (((None, 2),), {}, lambda: (_images(),)),
}


def _first(out):
    while isinstance(out, tuple):  # an RNN's (output, h_n), an LSTM's (output, (h_n, c_n))
        out = out[0]
    return out


def test_native_covers_every_twin():
    assert NATIVE.keys() == hnn.TWINS.keys()


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("side", ["torch.nn", "handprop"])
@pytest.mark.parametrize("torch_class", list(NATIVE), ids=lambda c: c.__name__)
def test_every_twin_converts_a_natively_built_layer(torch_class, side, mode):
    """A layer built by its own class's constructor, not converted from its twin: the twin has
    its settings, the same Parameter and buffer objects (an optimizer built before steps it),
    state dict keys, train/eval mode, outputs and gradients; converting draws no random
    numbers."""
    args, kwargs, inputs = NATIVE[torch_class]
    handprop_class = hnn.TWINS[torch_class]
    source, target, convert = (
        (torch_class, handprop_class, hnn.to_handprop)
        if side == "torch.nn"
        else (handprop_class, torch_class, hnn.to_torch)
    )
    torch.manual_seed(0)
    layer = source(*args, **kwargs).to(F64).train(mode == "train")
    params, buffers = dict(layer.named_parameters()), dict(layer.named_buffers())
    optimizer = torch.optim.SGD(params.values(), lr=0.5) if params else None

    rng = torch.get_rng_state()
    twin = convert(layer)
    assert torch.equal(torch.get_rng_state(), rng)
    assert type(twin) is target and twin.training is layer.training
    assert repr(twin).startswith(f"{torch_class.__name__}(")
    assert list(twin.state_dict()) == list(layer.state_dict())
    for have, had in ((twin.named_parameters(), params), (twin.named_buffers(), buffers)):
        have = dict(have)
        assert have.keys() == had.keys() and all(have[k] is had[k] for k in had)

    results = []
    for module in (layer, twin):
        xs = [x.requires_grad_() if x.is_floating_point() else x for x in inputs()]
        torch.manual_seed(1)  # the same dropout draws for both
        out = _first(module(*xs))
        wrt = [x for x in xs if x.requires_grad] + list(params.values())
        results.append((out, torch.autograd.grad(out.square().sum(), wrt)))
    _close(results[1], results[0])

    if optimizer is not None:  # steps the twin's weights: they are the same objects
        before = {k: p.detach().clone() for k, p in twin.named_parameters()}
        for p, g in zip(params.values(), results[1][1][-len(params) :], strict=True):
            p.grad = g
        optimizer.step()
        _close(
            {k: p.detach() for k, p in twin.named_parameters()},
            {k: before[k] - 0.5 * p.grad for k, p in twin.named_parameters()},
        )


def test_conversion_keeps_parameter_and_container_hooks():
    """Hooks on the Parameters and on the containers stay; those on a swapped layer itself do
    not (torch has no public API to read them), as the docstring says."""
    net = nn.Sequential(nn.Linear(IN, OUT)).to(F64)
    log = []
    net.register_forward_hook(lambda m, args, out: log.append("container"))
    net[0].weight.register_hook(lambda g: log.append("weight"))
    net[0].register_forward_hook(lambda m, args, out: log.append("layer"))
    hnn.to_handprop(net)
    net(torch.randn(N, IN, generator=_gen(1), dtype=F64)).sum().backward()
    assert log == ["container", "weight"]


def test_layers_the_twins_cannot_take_over_are_errors():
    pruned = nn.Linear(IN, OUT)
    prune.l1_unstructured(pruned, "weight", amount=0.5)
    with pytest.raises(ValueError, match=r"to_handprop: cannot swap the Linear at '0': .*pruning"):
        hnn.to_handprop(nn.Sequential(pruned))
    reflect = nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match=r"Conv2d at the top: .*padding_mode='zeros' only"):
        hnn.to_handprop(reflect)
    with pytest.raises(ValueError, match=r"LSTM at 'rnn.1': .*proj_size=0 only"):
        hnn.to_handprop(
            nn.ModuleDict({"rnn": nn.ModuleList([nn.RNN(3, 4), nn.LSTM(4, 4, proj_size=2)])})
        )


@pytest.mark.parametrize(
    "cost",
    [
        lambda: hnn.CrossEntropyLoss(weight=_weights(OUT)),
        lambda: hnn.CrossEntropyLoss(label_smoothing=0.1),
        lambda: hnn.CrossEntropyLoss(ignore_index=1),
        lambda: hnn.BCEWithLogitsLoss(pos_weight=_weights(OUT)),
    ],
)
def test_backprop_refuses_the_settings_it_does_not_apply(cost):
    """MLP.backprop starts the δ recursion from the plain cost: a weighted, smoothed or
    ignoring one stops with one line instead of giving the plain cost's gradients."""
    mlp = hnn.MLP(IN, [HID], OUT).to(F64)
    x = torch.randn(N, IN, generator=_gen(1), dtype=F64)
    y = torch.rand(N, OUT, dtype=F64) if "BCE" in type(cost()).__name__ else _targets("nll")
    with pytest.raises(ValueError, match="loss.backward"):
        mlp.backprop(x, y, cost())
