"""handprop-demo: every demonstration runs (quick sizes), writes its figures and tables, and
its key claims hold numerically."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from handprop.demos import DEMOS, main


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``handprop-demo all --quick --out DIR``, once for the whole file."""
    out = tmp_path_factory.mktemp("demos")
    assert main(["all", "--quick", "--out", str(out)]) == 0
    return out


def results(demo_dir: Path, name: str) -> dict:
    return json.loads((demo_dir / name / "results.json").read_text())


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------
def test_list_names_every_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(DEMOS)


def test_unknown_demo_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-demo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "no-such-demo" in err[0] and all(name in err[0] for name in DEMOS)


def test_bad_layers_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["brute-force", "--layers", "4-x-1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--layers" in err[0]


def test_list_is_light_and_the_module_runs() -> None:
    """``python -m handprop.demos --list`` answers without importing torch."""
    code = (
        "import runpy, sys; sys.argv = ['handprop-demo', '--list']\n"
        "try:\n    runpy.run_module('handprop.demos', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('torch loaded:', 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "brute-force" in out and "torch loaded: False" in out


# --------------------------------------------------------------------------------------------
# Every demo: figures, table, numbers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_writes_figures_and_table(demo_dir: Path, name: str) -> None:
    d = demo_dir / name
    pngs = sorted(d.glob("*.png"))
    assert pngs, f"{name} wrote no figure"
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, p
        assert len(data) < 150_000, f"{p} is {len(data)} bytes; keep figures small"
    table = (d / "table.md").read_text()
    assert table.startswith(f"## handprop-demo {name}") and "|" in table
    assert sorted(results(demo_dir, name)["figures"]) == sorted(str(p) for p in pngs)


# --------------------------------------------------------------------------------------------
# The claims
# --------------------------------------------------------------------------------------------
def test_neuron_derivatives_come_from_the_backward_and_are_right(demo_dir: Path) -> None:
    r = results(demo_dir, "neuron")
    for name in ("sigmoid", "tanh", "relu", "leaky_relu", "softmax"):
        assert r[name]["fd_error"] < 1e-6, name
    assert r["sigmoid"]["max_derivative"] == pytest.approx(0.25, abs=1e-4)
    assert r["tanh"]["max_derivative"] == pytest.approx(1.0, abs=1e-4)
    jac = r["softmax"]["jacobian"]
    assert all(abs(sum(row[j] for row in jac)) < 1e-12 for j in range(3))


def test_brute_force_gd_lands_on_the_grid_minimum(demo_dir: Path) -> None:
    r = results(demo_dir, "brute-force")
    assert r["grid_evaluations"] == 1000 and r["grid_step"] == pytest.approx(0.01)
    assert abs(r["gd_w"] - r["grid_min_w"]) <= r["grid_step"]
    assert r["gd_steps"] < r["grid_evaluations"]


def test_brute_force_arithmetic_of_the_notes(demo_dir: Path) -> None:
    net = results(demo_dir, "brute-force")["network"]
    assert net["layers"] == "4-5-1" and net["weights"] == 25 and net["biases"] == 6
    assert net["log10_combinations"] == pytest.approx(75)  # 1000^25 = 10^75
    assert math.floor(net["log10_seconds"]) == 58  # ~10^58 s at 93 PFLOP/s
    assert math.floor(net["log10_years"]) == 50  # ~10^50 years
    assert net["log10_universe_ages"] > 40  # vs 1.38e10 years


def test_brute_force_counts_any_network(tmp_path: Path) -> None:
    from handprop.demos import run

    net = run("brute-force", tmp_path, quick=True, layers="2-3-3-1")["network"]
    assert net["weights"] == 2 * 3 + 3 * 3 + 3 * 1
    assert net["log10_combinations"] == pytest.approx(3 * 18)


def test_gd_modes_updates_per_epoch_and_smoothness(demo_dir: Path) -> None:
    r = results(demo_dir, "gd-modes")
    assert r["batch"]["updates_per_epoch"] == 1
    assert r["stochastic"]["updates_per_epoch"] > r["minibatch"]["updates_per_epoch"] > 1
    assert r["stochastic"]["updates_per_epoch"] == r["stochastic"]["updates"] // len(
        r["stochastic"]["epoch_cost"]
    )
    assert r["batch"]["start"] == r["stochastic"]["start"] == r["minibatch"]["start"]
    assert r["batch"]["fraction_of_updates_raising_cost"] == 0
    assert r["stochastic"]["fraction_of_updates_raising_cost"] > 0.1
    # per epoch, many small steps get further than one exact step
    assert r["stochastic"]["epoch_cost"][0] < r["batch"]["epoch_cost"][0]


def test_optimizers_same_start_and_momentum_smooths_the_ravine(demo_dir: Path) -> None:
    r = results(demo_dir, "optimizers")
    assert r["same_initial_weights"] is True
    for name in ("sgd", "momentum", "rmsprop", "adam", "adamw"):
        curve = r["network"][name]["train"]
        assert curve[-1] < curve[0], name
    rav = r["ravine"]
    assert rav["sgd"]["zigzags"] > rav["momentum"]["zigzags"]
    assert rav["curvatures"][1] / rav["curvatures"][0] > 10  # a ravine indeed


def test_lr_schedules_follow_their_configs(demo_dir: Path) -> None:
    s = results(demo_dir, "lr-schedules")["schedules"]
    lr0 = s["none"]["lr"][0]
    assert set(s["none"]["lr"]) == {lr0}
    assert s["inverse_sqrt"]["scheduler"] == "InverseSqrtLR"
    for t, lr in enumerate(s["inverse_sqrt"]["lr"]):
        assert lr == pytest.approx(lr0 / math.sqrt(t + 1))
    assert s["step"]["lr"][9] == pytest.approx(lr0) and s["step"]["lr"][10] == pytest.approx(
        lr0 / 2
    )
    assert s["cosine"]["lr"][-1] < 0.05 * lr0
    for b, v in results(demo_dir, "lr-schedules")["scaling"].items():
        assert v["lr_scaled"] == pytest.approx(v["lr_fixed"] * int(b) / 32)


def test_standardised_converges_faster_than_raw(demo_dir: Path) -> None:
    r = results(demo_dir, "preprocessing")
    for opt in ("sgd", "adam"):
        raw, std = r[opt]["none"], r[opt]["standardize"]
        assert std["epochs_to_target"] is not None, opt
        assert raw["epochs_to_target"] is None or raw["epochs_to_target"] > std["epochs_to_target"]
        assert std["final_cost"] < raw["final_cost"] and std["val_rmse"] < raw["val_rmse"]


def test_zero_init_neurons_stay_identical_random_ones_differ(demo_dir: Path) -> None:
    r = results(demo_dir, "init")
    zeros = r["zeros"]
    assert zeros["spread_start"] == 0 and zeros["spread_end"] < 1e-6
    assert zeros["distinct_neurons"] == 1
    rows = zeros["hidden_weights"]
    assert all(abs(a - b) < 1e-6 for row in rows for a, b in zip(row, rows[0], strict=True))
    for init in ("normal", "xavier"):
        assert r[init]["spread_end"] > 0.1 and r[init]["distinct_neurons"] == 5
        assert r[init]["cost"][-1] < r[init]["cost"][0]
        assert r[init]["final_cost"] < zeros["final_cost"]
    assert r["zeros-relu"]["spread_end"] == 0  # ReLU'(0) = 0: the hidden layer never moves


def test_hidden_layer_beats_linear_on_property_prices(demo_dir: Path) -> None:
    r = results(demo_dir, "hidden-layers")
    assert r["4-5-1"]["rmse"]["test"] < 0.7 * r["linear"]["rmse"]["test"]
    assert r["4-5-1"]["r2"] > r["linear"]["r2"]
    assert r["linear"]["parameters"] == 5 and r["4-5-1"]["parameters"] == 31
    assert len(r["neurons"]) == 5


def test_backprop_by_hand_agrees_with_autograd(demo_dir: Path) -> None:
    r = results(demo_dir, "backprop")
    assert r["max_abs_diff"] <= 1e-12
    assert set(r["diffs"]) == {"W1", "b1", "W2", "b2"}
    assert r["cost_after"] < r["cost_before"]
    assert r["backward_nodes"][0] == "SquaredErrorFunctionBackward"


def test_epochs_cost_falls_and_matches_the_trainer(demo_dir: Path) -> None:
    r = results(demo_dir, "epochs")
    cost = r["cost"]
    assert len(cost) == r["epochs"] and cost[-1] < 0.5 * cost[0]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(cost, cost[1:], strict=False))  # batch GD
    assert len(r["trainer_cost"]) == r["epochs"]
    assert r["max_rel_diff_vs_trainer"] < 1e-4
    assert len(r["per_student_cost"][0]) == 8
