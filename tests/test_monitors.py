"""Seeing inside the learning: the per-layer monitors (``monitors=on``) and the learning-rate
range test (``lr_find=true``)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import handprop.nn as hnn
import handprop.trainer.train
from handprop.trainer import run
from handprop.trainer.build import build, plan_run
from handprop.trainer.lr_find import smooth, suggest
from handprop.trainer.monitors import Monitors, histogram

QUANTITIES = ("weight_grad_norm", "bias_grad_norm", "delta_mean_abs", "update_ratio")


# In-process training changes torch's threads, deterministic mode and PL_* variables.
pytestmark = pytest.mark.usefixtures("restore_process_state")


def compose_cfg(*overrides: str):
    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        return compose(config_name="train", overrides=["progress=false", *overrides])


def train(cfg, run_dir: Path) -> dict[str, float]:  # noqa: ANN001
    run_dir.mkdir(parents=True, exist_ok=True)
    return run.train(cfg, run_dir)


# --------------------------------------------------------------------------------------------
# Monitors
# --------------------------------------------------------------------------------------------
def test_monitors_are_off_by_default():
    cfg = compose_cfg("data.n_samples=100")
    assert cfg.monitors.enabled is False
    _, module = build(cfg, *plan_run(cfg))
    assert module.monitors is None


def test_monitors_log_every_layer_every_n_updates(tmp_path):
    """A real run: every quantity of every layer at updates 0, N, 2N, … (the update axis),
    dead units for the ReLU layer only, and the weight, activation and δ histograms."""
    every = 5
    train(
        compose_cfg(
            "data.n_samples=300", "trainer.max_epochs=2", "monitors=on", f"monitors.every_n={every}"
        ),
        tmp_path,
    )
    updates = json.loads((tmp_path / "metrics.json").read_text())["global_step"]
    ea = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "histograms": 0})
    ea.Reload()
    steps = list(range(0, updates, every))
    tags = {t for t in ea.Tags()["scalars"] if t.startswith("monitors/")}
    expected = {f"monitors/layer{k}/{q}" for k in (1, 2) for q in QUANTITIES}
    assert tags == expected | {"monitors/layer1/dead_fraction"}
    for tag in tags:
        events = ea.Scalars(tag)
        assert [e.step for e in events] == steps, tag
        assert all(math.isfinite(e.value) and e.value >= 0 for e in events), tag
    hists = {f"monitors/layer{k}/{q}" for k in (1, 2) for q in ("weight", "delta")}
    assert set(ea.Tags()["histograms"]) == hists | {"monitors/layer1/activation"}
    first = ea.Histograms("monitors/layer1/weight")[0]
    assert first.step == 0 and first.histogram_value.num == 4 * 5


def _watched_update(net, x, y, cost, by_recursion: bool, lr: float = 0.1) -> dict[str, float]:
    """One SGD update of ``net`` watched by the monitors; their values."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    watch = Monitors(every_n=1).watch(net, 0, hooks=not by_recursion)
    if by_recursion:
        net.backprop(x, y, cost, watch)
    else:
        opt.zero_grad()
        cost(net(x), y).backward()
    opt.step()
    return watch.close([])


@pytest.mark.parametrize("by_recursion", [True, False], ids=["recursion", "autograd"])
def test_monitor_values_are_the_definitions(by_recursion):
    """‖∂C/∂W‖, ‖∂C/∂b‖, mean |δ| = mean |∂C/∂z|, ‖ΔW‖/‖W‖ and the dead fraction, against
    torch.nn and autograd; the δ recursion and the autograd hooks report the same."""
    torch.manual_seed(0)
    net = hnn.MLP(4, [6, 5], 2)
    with torch.no_grad():  # unit 3 of the first hidden layer: off for every row
        net.linears[0].weight[3] = 0.0
        net.linears[0].bias[3] = -1.0
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    twin = torch.nn.Sequential(
        torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 5), torch.nn.ReLU(),
        torch.nn.Linear(5, 2),
    )  # fmt: skip
    twin.load_state_dict(net.layers.state_dict())
    before = [lin.weight.detach().clone() for lin in net.linears]
    zs, h = [], x
    for m in twin:
        h = m(h)
        if isinstance(m, torch.nn.Linear):
            h.retain_grad()
            zs.append(h)
    torch.nn.functional.mse_loss(h, y).backward()
    got = _watched_update(net, x, y, hnn.MSELoss(), by_recursion, lr=0.1)
    linears = [m for m in twin if isinstance(m, torch.nn.Linear)]
    for k, (lin, z, w0) in enumerate(zip(linears, zs, before, strict=True), start=1):
        tag = f"monitors/layer{k}/"
        assert got[tag + "weight_grad_norm"] == pytest.approx(float(lin.weight.grad.norm()))
        assert got[tag + "bias_grad_norm"] == pytest.approx(float(lin.bias.grad.norm()))
        assert got[tag + "delta_mean_abs"] == pytest.approx(float(z.grad.abs().mean()))
        # SGD: ΔW = −η ∂C/∂W
        ratio = 0.1 * float(lin.weight.grad.norm()) / float(w0.norm())
        assert got[tag + "update_ratio"] == pytest.approx(ratio, rel=1e-5)
    a1 = torch.relu(zs[0])
    assert got["monitors/layer1/dead_fraction"] == pytest.approx(
        float((a1 <= 0).all(0).float().mean())
    )
    assert got["monitors/layer1/dead_fraction"] >= 1 / 6
    assert "monitors/layer3/dead_fraction" not in got  # the output layer has no ReLU


def test_histogram_counts_every_value_in_equal_bins():
    a = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    h = histogram(a)
    bins = len(h.bucket) - 1  # the first bucket only carries the left edge
    assert bins == 20  # Rice's rule: ⌈2·1000^⅓⌉
    counts, edges = np.histogram(a, bins=bins, range=(a.min(), a.max()))
    assert list(h.bucket[1:]) == counts.tolist()
    assert np.allclose(h.bucket_limit, edges, rtol=1e-6, atol=1e-6)
    assert h.num == 1000 and h.sum == pytest.approx(float(a.sum()), rel=1e-4)
    same = histogram(np.array([2.0, 2.0], dtype=np.float32))  # one value: a bin around it
    assert sum(same.bucket) == 2 and same.bucket_limit[0] < 2 < same.bucket_limit[-1]
    assert histogram(np.array([1.0, np.nan], dtype=np.float32)) is None


# --------------------------------------------------------------------------------------------
# The learning-rate range test
# --------------------------------------------------------------------------------------------
def test_suggest_picks_the_middle_of_the_longest_descent():
    lrs = [10 ** (-6 + 7 * t / 99) for t in range(100)]
    # flat, then falling steadily from update 40 to 80, then blowing up
    loss = [1.0] * 40 + [1.0 - 0.02 * i for i in range(40)] + [0.2 * 1.5**i for i in range(20)]
    s = suggest(lrs, smooth(loss, 0.5))
    assert lrs[50] <= s <= lrs[70]
    assert suggest(lrs, [1.0 + 0.01 * i for i in range(100)]) is None  # never fell
    assert suggest(lrs[:6], [1.0] * 6) is None  # too few points


def test_lr_find_only_writes_the_plot_and_trains_nothing(tmp_path, capsys):
    metrics = train(compose_cfg("lr_find=only", "data.n_samples=300"), tmp_path)
    line = [ln for ln in capsys.readouterr().out.splitlines() if "suggested lr" in ln]
    assert len(line) == 1
    assert f"suggested lr {metrics['suggested_lr']:.3g}" in line[0]
    assert (tmp_path / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    found = json.loads((tmp_path / "lr_find.json").read_text())
    assert len(found["lrs"]) == len(found["losses"]) <= 100
    assert found["lrs"][0] == pytest.approx(1e-6)
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.quality
def test_lr_find_suggestion_is_within_10x_of_the_best_fixed_lr(tmp_path):
    """On the default data and network: the suggestion against a sweep of fixed rates a
    decade apart (20 epochs each, to keep the test short), the best by validation loss."""
    found = train(compose_cfg("lr_find=only"), tmp_path / "find")["suggested_lr"]
    val = {}
    for lr in (1e-3, 1e-2, 1e-1, 1.0):
        sweep = ("trainer.max_epochs=20", "logger=none", "callbacks=none")
        cfg = compose_cfg(f"optimizer.lr={lr}", *sweep)
        val[lr] = train(cfg, tmp_path / f"lr{lr}")["val/loss"]
    best = min(val, key=val.get)
    assert best / 10 <= found <= best * 10, (found, val)


def test_lr_find_true_trains_with_the_suggestion(tmp_path, capsys):
    """lr_find=true is the range test, then the run it would be with optimizer.lr set to the
    suggestion: the same metrics."""
    fast = ("data.n_samples=300", "trainer.max_epochs=3", "logger=none")
    found = train(compose_cfg("lr_find=true", *fast), tmp_path / "find")
    assert "suggested lr" in capsys.readouterr().out
    lr = json.loads((tmp_path / "find" / "lr_find.json").read_text())["suggestion"]
    plain = train(compose_cfg(f"optimizer.lr={lr}", *fast), tmp_path / "plain")
    for k, v in plain.items():
        if "/" in k:
            assert found[k] == pytest.approx(v, rel=1e-6), k


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["monitors=maybe"], ["monitors=maybe", "off, on"]),
        (["monitors=on", "monitors.every_n=0"], ["monitors.every_n=0", "positive integer"]),
        (["lr_find=maybe"], ["lr_find='maybe'", "true, false or only"]),
        (["lr_find=only", "lr_finder.max_lr=1e-7"], ["lr_finder.max_lr", "lr_finder.min_lr"]),
        (["lr_find=true", "ckpt_path=last"], ["lr_find=true", "ckpt_path"]),
    ],
    ids=["monitors_option", "every_n", "lr_find", "lr_range", "lr_find_resume"],
)
def test_bad_settings_give_one_line(args, fragments, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["handprop-train", *args, f"hydra.run.dir={tmp_path}"])
    with pytest.raises(SystemExit) as e:
        handprop.trainer.train.main()
    err = capfd.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert e.value.code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert all(f in lines[0] for f in fragments), lines[0]
