"""handprop-demo: every demonstration runs (quick sizes), writes its figures, tables and
caption, and its key claims hold numerically. The claims are checked on what each demo's
``compute()`` returns (the numbers its figures, tables and caption are drawn from)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from handprop.demos import DEMOS, compute, main, write
from handprop.demos._report import read, two

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def computed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    """Every demo's ``compute(quick=True)``, written into DIR/NAME once for the whole file."""
    out = tmp_path_factory.mktemp("demos")
    results = {}
    for name in DEMOS:
        results[name] = compute(name, quick=True)
        write(name, results[name], out / name)
    return out, results


@pytest.fixture(scope="module")
def demo_dir(computed: tuple[Path, dict[str, dict]]) -> Path:
    return computed[0]


def results(computed: tuple[Path, dict[str, dict]], name: str) -> dict:
    return computed[1][name]


def _module(name: str):  # noqa: ANN202
    import importlib

    return importlib.import_module(f"handprop.demos.{DEMOS[name][0]}")


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


def test_one_demo_through_the_command_line(tmp_path: Path, capsys) -> None:
    assert main(["neuron", "--quick", "--out", str(tmp_path)]) == 0
    # Progress: each demo is announced before it runs, then its time and output folder.
    printed = capsys.readouterr().out
    assert printed.startswith("[1/1] neuron: ")
    assert f"output in {tmp_path}]" in printed
    assert {p.name for p in tmp_path.iterdir()} == {
        "activations.png",
        "table.md",
        "caption.md",
        "results.json",
    }


# --------------------------------------------------------------------------------------------
# Every demo: figures, table, numbers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(DEMOS))
def test_demo_writes_figures_and_table(computed, demo_dir: Path, name: str) -> None:
    d = demo_dir / name
    pngs = sorted(d.glob("*.png"))
    assert pngs, f"{name} wrote no figure"
    for p in pngs:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, p
        assert len(data) < 150_000, f"{p} is {len(data)} bytes; keep figures small"
    table = (d / "table.md").read_text()
    assert table.startswith(f"## handprop-demo {name}") and "|" in table
    assert (d / "caption.md").read_text().strip()
    written = json.loads((d / "results.json").read_text())
    assert sorted(written.pop("figures")) == sorted(str(p) for p in pngs)
    assert set(written) == set(results(computed, name)), "results.json is compute()'s results"


@pytest.mark.parametrize("name", list(DEMOS))
def test_text_comes_from_the_results_alone(computed, name: str) -> None:
    """Tables and caption drawn from results.json (keys sorted, NaN written as text) are the
    ones drawn from compute()'s results themselves, and hold no timing."""
    mod = _module(name)
    r = results(computed, name)
    again = read(computed[0] / name / "results.json")
    again.pop("figures")
    assert mod.caption(again) == mod.caption(r)
    assert [t.markdown() for t in mod.tables(again)] == [t.markdown() for t in mod.tables(r)]
    text = mod.caption(r) + "".join(t.markdown() for t in mod.tables(r))
    assert not re.search(r"wall s|ms / epoch|s / update", text), "timings vary from run to run"


@pytest.mark.parametrize("name", ["optimizers", "init"])
def test_figures_are_the_same_bytes_every_time(computed, name: str, tmp_path: Path) -> None:
    """Drawing the same results twice (once from results.json) gives identical files: a
    regenerated figure changes only when its numbers or its code change."""
    out, res = computed
    again = read(out / name / "results.json")
    again.pop("figures")
    write(name, again, tmp_path)
    for p in sorted((out / name).glob("*")):
        if p.name != "results.json":
            assert p.read_bytes() == (tmp_path / p.name).read_bytes(), p.name


def test_init_files_do_not_depend_on_the_cpus_rounding(computed, tmp_path: Path) -> None:
    """The zero start's neurons differ by float rounding only, 0 on some CPUs and about 1e-8 on
    others (a matrix product's kernel may round one neuron's column unlike the next): the
    figure, table and caption are the same bytes either way."""
    import copy

    files = []
    for k, rounding in enumerate((0.0, 5e-7)):  # 0 on some CPUs; anything below 1e-6
        r = copy.deepcopy(results(computed, "init"))
        z = r["zeros"]
        z["spread_end"] = z["spread_max"] = z["output_spread_end"] = rounding
        z["spread_per_update"] = [0.0] + [rounding] * (len(z["spread_per_update"]) - 1)
        write("init", r, tmp_path / str(k))
        files.append({p.name: p.read_bytes() for p in (tmp_path / str(k)).glob("*.*")})
    for f in files:
        del f["results.json"]  # the numbers themselves differ
    assert files[0] == files[1]


def test_readme_captions_are_the_demos_captions() -> None:
    """Under each figure the README says what docs/figures/NAME/caption.md says: the caption
    ``handprop-demo all --out docs/figures`` wrote from that run's results."""
    readme = (ROOT / "README.md").read_text()
    for name in DEMOS:
        caption = (ROOT / "docs" / "figures" / name / "caption.md").read_text().strip()
        assert caption in readme, (
            f"README's caption for {name} is not docs/figures/{name}/caption.md; copy it from "
            "there after `make figures`"
        )


# --------------------------------------------------------------------------------------------
# The claims
# --------------------------------------------------------------------------------------------
@pytest.mark.quality
def test_neuron_derivatives_come_from_the_backward_and_are_right(computed) -> None:
    r = results(computed, "neuron")
    for name in ("sigmoid", "tanh", "relu", "leaky_relu", "softmax"):
        assert r[name]["fd_error"] < 1e-9, name  # the bound the table and caption state
    assert r["sigmoid"]["max_derivative"] == pytest.approx(0.25, abs=1e-4)
    assert r["tanh"]["max_derivative"] == pytest.approx(1.0, abs=1e-4)
    jac = r["softmax"]["jacobian"]
    assert all(abs(sum(row[j] for row in jac)) < 1e-12 for j in range(3))


@pytest.mark.quality
def test_brute_force_gd_lands_on_the_grid_minimum(computed) -> None:
    r = results(computed, "brute-force")
    assert r["grid_evaluations"] == 1000 and r["grid_step"] == pytest.approx(0.01)
    assert abs(r["gd_w"] - r["grid_min_w"]) <= r["grid_step"]
    assert r["gd_steps"] < r["grid_evaluations"]


def test_brute_force_arithmetic_of_the_notes(computed) -> None:
    net = results(computed, "brute-force")["network"]
    assert net["layers"] == "4-5-1" and net["weights"] == 25 and net["biases"] == 6
    assert net["log10_combinations"] == pytest.approx(75)  # 1000^25 = 10^75
    assert math.floor(net["log10_seconds"]) == 58  # ~10^58 s at 93 PFLOP/s
    assert math.floor(net["log10_years"]) == 50  # ~10^50 years
    assert net["log10_universe_ages"] > 40  # vs 1.38e10 years


def test_brute_force_counts_any_network() -> None:
    net = compute("brute-force", quick=True, layers="2-3-3-1")["network"]
    assert net["weights"] == 2 * 3 + 3 * 3 + 3 * 1
    assert net["log10_combinations"] == pytest.approx(3 * 18)


@pytest.mark.quality
def test_gd_modes_updates_per_epoch_and_smoothness(computed) -> None:
    r = results(computed, "gd-modes")
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


@pytest.mark.quality
def test_optimizers_same_start_and_momentum_smooths_the_ravine(computed) -> None:
    r = results(computed, "optimizers")
    assert r["same_initial_weights"] is True
    for name in ("sgd", "momentum", "rmsprop", "adam", "adamw"):
        curve = r["network"][name]["train"]
        assert curve[-1] < curve[0], name
    rav = r["ravine"]
    assert rav["sgd"]["zigzags"] > rav["momentum"]["zigzags"]
    assert rav["curvatures"][1] / rav["curvatures"][0] > 10  # a ravine indeed


@pytest.mark.quality
def test_lr_schedules_follow_their_configs(computed) -> None:
    s = results(computed, "lr-schedules")["schedules"]
    lr0 = s["none"]["lr"][0]
    assert set(s["none"]["lr"]) == {lr0}
    assert s["inverse_sqrt"]["scheduler"] == "InverseSqrtLR"
    for t, lr in enumerate(s["inverse_sqrt"]["lr"]):
        assert lr == pytest.approx(lr0 / math.sqrt(t + 1))
    assert s["step"]["lr"][9] == pytest.approx(lr0) and s["step"]["lr"][10] == pytest.approx(
        lr0 / 2
    )
    assert s["cosine"]["lr"][-1] < 0.05 * lr0
    for b, v in results(computed, "lr-schedules")["scaling"].items():
        assert v["lr_scaled"] == pytest.approx(v["lr_fixed"] * int(b) / 32)


@pytest.mark.quality
def test_standardised_converges_faster_than_raw(computed) -> None:
    r = results(computed, "preprocessing")
    for opt in ("sgd", "adam"):
        raw, std = r[opt]["none"], r[opt]["standardize"]
        assert std["epochs_to_target"] is not None, opt
        assert raw["epochs_to_target"] is None or raw["epochs_to_target"] > std["epochs_to_target"]
        assert std["final_cost"] < raw["final_cost"] and std["val_rmse"] < raw["val_rmse"]


@pytest.mark.quality
def test_zero_init_neurons_stay_identical_random_ones_differ(computed) -> None:
    r = results(computed, "init")
    zeros = r["zeros"]
    assert zeros["spread_start"] == 0 and zeros["spread_max"] < 1e-6  # rounding at most
    assert zeros["distinct_neurons"] == 1
    rows = zeros["hidden_weights"]
    assert all(abs(a - b) < 1e-6 for row in rows for a, b in zip(row, rows[0], strict=True))
    for init in ("normal", "xavier"):
        assert r[init]["spread_end"] > 0.1 and r[init]["distinct_neurons"] == 5
        assert r[init]["cost"][-1] < r[init]["cost"][0]
        assert r[init]["final_cost"] < zeros["final_cost"]
    assert r["zeros-relu"]["spread_end"] == 0  # ReLU'(0) = 0: the hidden layer never moves


@pytest.mark.quality
def test_hidden_layer_beats_linear_on_property_prices(computed) -> None:
    r = results(computed, "hidden-layers")
    assert r["4-5-1"]["rmse"]["test"] < 0.7 * r["linear"]["rmse"]["test"]
    assert r["4-5-1"]["r2"] > r["linear"]["r2"]
    assert r["linear"]["parameters"] == 5 and r["4-5-1"]["parameters"] == 31
    assert len(r["neurons"]) == 5


@pytest.mark.quality
def test_backprop_by_hand_agrees_with_autograd(computed) -> None:
    r = results(computed, "backprop")
    assert r["max_abs_diff"] <= 1e-12
    assert set(r["diffs"]) == {"W1", "b1", "W2", "b2"}
    assert r["cost_after"] < r["cost_before"]
    assert r["backward_nodes"][0] == "SquaredErrorFunctionBackward"


@pytest.mark.quality
def test_autoencoder_code_beats_pca(computed) -> None:
    r = results(computed, "autoencoder")
    assert r["code_sizes"] == ["2", "8"]
    for k in r["code_sizes"]:  # the trainer's own test/mse and test/pca_mse
        assert 0 < r["mse"][k]["autoencoder"] < r["mse"][k]["pca"], k
    assert r["mse"]["8"]["pca"] < r["mse"]["2"]["pca"]  # more components, less error
    assert r["knn"]["autoencoder"] > r["knn"]["pca"]  # the digits separate better in the code
    assert len(r["map"]["autoencoder"]) == len(r["map"]["labels"]) == len(r["map"]["pca"])
    assert len(r["digits"]["original"]) == 10


@pytest.mark.quality
def test_gan_samples_improve_and_both_costs_are_recorded(computed) -> None:
    r = results(computed, "gan")
    per_epoch = r["per_epoch"]
    assert len(per_epoch) == r["epochs"] and set(r["snapshots"]) == {"1", "3", "6", "10"}
    n = r["epochs"] * r["updates_per_epoch"]
    assert len(r["g_loss"]) == len(r["d_loss"]) == -(-n // 10)  # one point per 10 updates
    assert r["test"]["energy_distance"] < per_epoch[0]["energy_distance"]
    assert r["test"]["modes_covered"] >= per_epoch[0]["modes_covered"]
    best = per_epoch[r["best_epoch"] - 1]["energy_distance"]
    assert best == min(v["energy_distance"] for v in per_epoch)


@pytest.mark.quality
def test_epochs_cost_falls_and_matches_the_trainer(computed) -> None:
    r = results(computed, "epochs")
    cost = r["cost"]
    assert len(cost) == r["epochs"] and cost[-1] < 0.5 * cost[0]
    assert all(b <= a * (1 + 1e-6) for a, b in zip(cost, cost[1:], strict=False))  # batch GD
    assert len(r["trainer_cost"]) == r["epochs"]
    assert r["max_rel_diff_vs_trainer"] < 1e-4
    assert len(r["per_student_cost"][0]) == 8


# --------------------------------------------------------------------------------------------
# The captions: every claim read off the results, and the fixed words true of them
# --------------------------------------------------------------------------------------------
def _claims(name: str, r: dict, cap: str) -> None:  # noqa: C901 — one branch per demo
    if name == "neuron":
        assert "within 1e-9 of a finite difference" in cap  # on every CPU: its rounding varies
        assert f"never exceeds {r['sigmoid']['max_derivative']:.3g}" in cap
        assert r["relu"]["derivative_below_zero"] == 0 and r["leaky_relu"]["min_derivative"] > 0
        assert "leaky ReLU 0.01, not 0, below zero" in cap
    elif name == "brute-force":
        assert f"in {r['gd_steps']} steps instead of {r['grid_evaluations']}" in cap
        assert f"w = {r['gd_w']:.2f}" in cap and "25 weights" in cap
    elif name == "gd-modes":
        b, s = r["batch"], r["stochastic"]
        assert ("no update raised the cost" in cap) == (b["fraction_of_updates_raising_cost"] == 0)
        assert f"({s['updates_per_epoch']} updates)" in cap
        # "a jittery random walk ... keeps bouncing around the minimum"
        assert s["fraction_raising_cost_after_epoch_1"] > 0.2
        assert s["way_covered_in_epoch_1"] > b["way_covered_in_epoch_1"]
    elif name == "optimizers":
        rav = r["ravine"]
        sgd, mom = rav["sgd"], rav["momentum"]
        # "SGD zig-zags from wall to wall": nearly every step heads for the other wall
        assert sgd["wall_crossings"] >= 0.8 * rav["steps"]
        # "momentum ... sways in a wide S instead": it changes side, but far less often
        assert 2 <= mom["wall_crossings"] < sgd["wall_crossings"] / 3
        above = {k: rav[k]["cost"][-1] - rav["lowest_cost"] for k in ("sgd", "momentum")}
        word = "below" if above["momentum"] < above["sgd"] else "above"
        assert f"momentum ends {word} SGD" in cap
    elif name == "lr-schedules":
        sch = r["schedules"]
        calm = _module(name).settled(r)
        assert calm, "no decaying schedule settled"  # "the constant rate never settles"
        ratio = sch["none"]["bounce"] / max(sch[s]["bounce"] for s in calm)
        assert ratio > 5 and f"{ratio:.0f}× more" in cap
        sc = r["scaling"]
        ok = [v["cost_scaled"] for v in sc.values() if math.isfinite(v["cost_scaled"])]
        assert max(ok) < 1.5 * min(ok)  # "keeps the cost ... between ... and ..."
        bad = [b for b, v in sc.items() if not math.isfinite(v["cost_scaled"])]
        assert ("diverges" in cap) == bool(bad)
    elif name == "preprocessing":
        std = r["sgd"]["standardize"]
        assert f"in {std['epochs_to_target']} epochs" in cap
        assert all(r["sgd"]["none"]["diverged_by_lr"][1:])  # "every rate from ... up diverges"
    elif name == "init":
        assert r["zeros"]["distinct_neurons"] == 1 and "keep identical weights" in cap
        # learning never separates the clones; float rounding (0 on some CPUs) is all there is
        assert r["zeros"]["spread_max"] < 1e-6
        assert "float rounding only, below 1e-6 after every update" in cap
    elif name == "hidden-layers":
        lin, net = r["linear"]["rmse"]["test"], r["4-5-1"]["rmse"]["test"]
        assert f"from {lin:.0f} to {net:.0f} thousand dollars" in cap and net < lin
        for k, v in enumerate(r["neurons"]):
            assert (f"neuron {k + 1} fires" in cap) == (
                v["pattern"] != "-" and v["lift"].get(v["pattern"], 0) >= 2
            )
    elif name == "backprop":
        assert r["max_abs_diff"] <= 1e-12  # "sit on the diagonal"
        assert ("lowers the cost" in cap) == (r["cost_after"] < r["cost_before"])
    elif name == "autoencoder":
        m2 = r["mse"]["2"]
        assert "MSE of {} against {}".format(*two(m2["autoencoder"], m2["pca"])) in cap
        assert f"code {100 * r['knn']['autoencoder']:.0f} %" in cap
        assert f"off PCA's {100 * r['knn']['pca']:.0f} %" in cap
        every = all(v["autoencoder"] < v["pca"] for v in r["mse"].values())
        assert ("at every code size tried" in cap) == every
    elif name == "gan":
        first, test, last = r["per_epoch"][0], r["test"], r["last_epoch"]
        assert f"cover {int(first['modes_covered'])} of the 8 modes" in cap
        assert f"epoch {r['best_epoch']} (the lowest energy distance" in cap
        assert f"cover {int(test['modes_covered'])} with {100 * test['high_quality']:.0f} %" in cap
        near = all(abs(last[k] - math.log(2)) < 0.15 for k in ("d_loss", "g_loss"))
        assert ("both near log 2" in cap) == near
    elif name == "cnn":
        blocks = r["blocks"]
        assert [b["channels"] for b in blocks] == [32, 64, 128]  # model=cnn as shipped
        assert [b["size"] for b in blocks] == [[8, 8], [4, 4], [2, 2]]  # pooling halves them
        assert "shrink 8×8 → 4×4 → 2×2 while the filters grow 32 → 64 → 128" in cap
        assert len(r["filters"]) == 32 and all(len(f) == 3 and len(f[0]) == 3 for f in r["filters"])
        assert f"test accuracy of {100 * r['test_accuracy']:.1f} %" in cap
        assert r["test_accuracy"] > 0.9  # even after the quick run's few epochs
        d = r["digit"]
        assert ("right)" in cap) == (d["predicted"] == d["label"]) and 0.1 <= d["probability"] <= 1
        for b in blocks:  # the maps shown are the most active ones, strongest first
            means = [sum(map(sum, m)) for m in b["maps"]]
            assert means == sorted(means, reverse=True) and len(means) == 8
            assert 0 < b["active"] <= 1
        assert "ReLUs leave " + ", ".join(f"{100 * b['active']:.0f} %" for b in blocks) in cap
    elif name == "rnn":
        mod = _module(name)
        rnn, lstm = r["rnn"], r["lstm"]
        for when in ("init", "trained"):
            assert len(rnn[when]["h"]) == len(lstm[when]["h"]) == r["T"]
            assert len(lstm[when]["c"]) == len(lstm[when]["forget"]) == r["T"] - 1
        # the point of the demo: through 30 tanh steps the signal fades by orders of magnitude,
        # along the cell state it arrives at about its own size
        assert rnn["orders_h_init"] > 3 and abs(lstm["orders_c_init"]) < 1
        assert f"is {mod._one(mod.ratio(rnn['init']['h']))} of the last step's" in cap
        assert f"‖∂C/∂c_1‖ is {mod.ratio(lstm['init']['c']):.2g} and" in cap
        assert 0.8 < sum(lstm["init"]["forget"]) / (r["T"] - 1) < 0.95  # σ(2) ≈ 0.88
        outcome = {(True, False): "only the LSTM", (False, False): "neither"}
        key = (mod.learned(r, "lstm"), mod.learned(r, "rnn"))
        assert key in outcome and outcome[key] in cap  # the RNN never recalls it
        assert rnn["accuracy"][-1] < 0.6
        assert f"right on {100 * lstm['accuracy'][-1]:.0f} %" in cap
    elif name == "epochs":
        assert r["max_rel_diff_vs_trainer"] < 1e-5  # "the same curve", "within 1e-5 relative"
        assert "(circles), within 1e-5 relative" in cap
        cost = r["cost"]
        assert ("falls epoch by epoch" in cap) == all(
            b <= a for a, b in zip(cost, cost[1:], strict=False)
        )
    elif name == "vanishing":
        acts, say = ("sigmoid", "tanh", "relu"), _module(name).NAME
        for a in acts:
            v = r[a]
            for when in ("init", "trained"):
                d = v[f"delta_{when}"]
                assert len(d) == r["depth"] + 1
                assert v[f"orders_{when}"] == pytest.approx(math.log10(d[-1] / d[0]))
            assert f"{say[a]} {v['orders_init']:.1f} ({v['orders_trained']:.1f})" in cap
        # "through eight sigmoid layers it shrinks by orders of magnitude ... tanh and ReLU
        # pass it on"
        assert r["sigmoid"]["orders_init"] > 4 > 2 > max(r[a]["orders_init"] for a in acts[1:])

        def reached(a: str) -> float:
            return next((e for e, c in enumerate(r[a]["cost"]) if c <= r["target"]), math.inf)

        fastest = min(acts, key=lambda a: (reached(a), r[a]["cost"][-1]))
        assert fastest == "relu" and "ReLU trains fastest" in cap  # "ReLU trains fastest"
        assert f"reaches {r['target']} at epoch {reached('relu')}" in cap
        stuck = r["sigmoid"]["cost"][-1] > 0.9
        assert ("no better than predicting the mean" in cap) == stuck
    elif name == "overfitting":
        tr, val = r["train_loss"], r["val_loss"]
        b, s = r["best_epoch"], r["stop_epoch"]
        assert val[b - 1] == min(val) and val.index(min(val)) == b - 1
        # early stopping fired after `patience` epochs without a lower validation loss
        assert s == r["trainer_epochs"] == b + r["patience"]
        assert f"fires after epoch {s}" in cap and f"weights of epoch {b} are restored" in cap
        # the training loss keeps falling while the validation loss turns up
        falls = sum(y < x for x, y in zip(tr[b - 1 : s - 1], tr[b:s], strict=True))
        assert tr[s - 1] < tr[b - 1] and falls >= 0.8 * (s - b)
        assert val[s - 1] > val[b - 1]
        assert r["restored"]["loss"] < r["last"]["loss"] and "score better than" in cap
        assert r["restored"]["rmse"] < r["last"]["rmse"]


@pytest.mark.quality
@pytest.mark.parametrize("name", list(DEMOS))
def test_caption_states_the_results(computed, name: str) -> None:
    r = results(computed, name)
    _claims(name, r, _module(name).caption(r))
