"""handprop-train end to end: real (tiny) training runs in temporary directories.

Most runs compose the config in-process (``hydra.compose``) and call
:func:`handprop.trainer.run.train`. The command line is tested through the installed commands in
subprocesses (sweeps, eval / predict, ``--help``, a few bad inputs) and, where many cases
share it, through the console entry points called in-process with their argv (bad inputs).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import handprop.trainer.evaluate
import handprop.trainer.predict
import handprop.trainer.train
from handprop.trainer.build import build, data_of, plan_run
from handprop.trainer.datasets import DATA_TASKS
from handprop.trainer.run import train

# Small and fast: property_prices with 300 rows → 210 training rows, 45 val, 45 test.
FAST = ("data.n_samples=300", "trainer.max_epochs=2")

# The metrics each task must report, per split (loss + the task's metrics).
TASK_METRICS = {
    "regression": ("mse", "mae", "r2"),
    "binary": ("accuracy", "f1", "auroc"),
    "multiclass": ("accuracy", "f1_macro"),
}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
# In-process training changes torch's threads, deterministic mode and PL_* variables.
pytestmark = pytest.mark.usefixtures("restore_process_state")


def compose_cfg(*overrides: str):
    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def run_train(run_dir: Path, *overrides: str):
    """Train in-process with the composed config; return (cfg, metrics, metrics.json)."""
    cfg = compose_cfg(*overrides)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = train(cfg, run_dir)
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    return cfg, metrics, on_disk


def untrained_train_loss(cfg) -> float:
    """Training-split loss of the network ``train`` starts from (same seed, same init)."""
    dm, model = build(cfg, *plan_run(cfg))  # seeded as a run is
    return model.eval().evaluate(*dm.split("train"))["loss"]


def n_train_rows(n: int, val: float = 0.15, test: float = 0.15) -> int:
    return n - round(n * val) - round(n * test)


def scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a TensorBoard directory: tag → [(step, value), ...]."""
    ea = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {t: [(e.step, e.value) for e in ea.Scalars(t)] for t in ea.Tags()["scalars"]}


def lr_series(tb_dir: Path) -> list[float]:
    """The logged learning rate (one per epoch, at its start), in step order."""
    s = scalars(tb_dir)
    assert "lr" in s, f"expected an lr tag, got {sorted(s)}"
    return [v for _, v in sorted(s["lr"])]


def last_ckpt(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def cli(module: str) -> list[str]:
    """The console script next to this interpreter, else ``python -m handprop.<module>``."""
    script = {"train": "handprop-train", "evaluate": "handprop-eval", "predict": "handprop-predict"}
    exe = Path(sys.executable).parent / script[module]
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", f"handprop.{module}"]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PL_")}  # seed_everything's
    env.pop("HYDRA_FULL_ERROR", None)  # full tracebacks only when asked for
    return env


def run_cli(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )


def run_main(entry, args: list[str]) -> int:
    """Call a console entry point in-process with ``args`` as its command line; its status."""
    old = sys.argv
    sys.argv = ["handprop", *args]
    try:
        entry()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    return 0


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# --------------------------------------------------------------------------------------------
# 1 + 4. Each task trains and lowers its loss; TensorBoard tags and metrics.json names
# --------------------------------------------------------------------------------------------
TASK_RUNS = {
    "regression": ("data=property_prices", *FAST),
    "binary": ("data=breast_cancer", "trainer.max_epochs=2"),
    "multiclass": ("data=iris", "trainer.max_epochs=5"),
}


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory):
    """One short run per task, shared by the tests below: name → (cfg, run_dir, metrics)."""
    root = tmp_path_factory.mktemp("tasks")
    out = {}
    for task, overrides in TASK_RUNS.items():
        cfg, metrics, on_disk = run_train(root / task, *overrides)
        out[task] = (cfg, root / task, metrics, on_disk)
    return out


@pytest.mark.quality
@pytest.mark.parametrize("task", list(TASK_RUNS))
def test_each_task_lowers_its_training_loss(task_runs, task):
    cfg, _, metrics, _ = task_runs[task]
    assert cfg.task.name == "auto"
    before = untrained_train_loss(cfg)
    after = metrics["train/loss"]
    assert math.isfinite(before) and math.isfinite(after)
    assert after < 0.7 * before, f"{task}: train loss {before:.4g} → {after:.4g}"


@pytest.mark.parametrize("task", list(TASK_RUNS))
def test_metrics_json_has_exactly_the_task_metrics(task_runs, task):
    _, _, metrics, on_disk = task_runs[task]
    names = ("loss", *TASK_METRICS[task])
    expected = {f"{s}/{m}" for s in ("train", "val", "test") for m in names}
    expected |= {"epochs", "global_step", "train_seconds"}
    assert set(on_disk) == expected
    assert {k for k in on_disk if k.startswith("test/")} == {f"test/{m}" for m in names}
    assert on_disk == pytest.approx(metrics)
    assert all(math.isfinite(v) for v in on_disk.values())
    if task != "regression":
        assert 0 <= on_disk["test/accuracy"] <= 1


@pytest.mark.parametrize("task", list(TASK_RUNS))
def test_tensorboard_has_train_val_and_test_scalars(task_runs, task):
    _, run_dir, metrics, _ = task_runs[task]
    tb = run_dir / "tb"
    assert list(tb.glob("events.out.tfevents.*")), f"no event files in {tb}"
    s = scalars(tb)
    for tag in ("train/loss", "val/loss", "test/loss", *(f"test/{m}" for m in TASK_METRICS[task])):
        assert tag in s and s[tag], f"{task}: no {tag!r} in {sorted(s)}"
    assert len(s["val/loss"]) == metrics["epochs"]  # one validation per epoch
    # The logged test metrics are those of metrics.json (float32 in the event file).
    for m in TASK_METRICS[task]:
        assert s[f"test/{m}"][-1][1] == pytest.approx(metrics[f"test/{m}"], rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------------------------
# 2. Every optimizer and scheduler option
# --------------------------------------------------------------------------------------------
OPTIMIZERS = {
    # option (+ overrides) → (torch class, param-group entries the checkpoint must hold)
    "sgd": (["optimizer=sgd"], "torch.optim.SGD", {"momentum": 0, "nesterov": False}),
    "momentum": (
        ["optimizer=momentum"],
        "torch.optim.SGD",
        {"momentum": 0.9, "nesterov": False},
    ),
    "nesterov": (
        ["optimizer=momentum", "optimizer.nesterov=true"],
        "torch.optim.SGD",
        {"momentum": 0.9, "nesterov": True},
    ),
    "rmsprop": (["optimizer=rmsprop"], "torch.optim.RMSprop", {"alpha": 0.99}),
    "adam": (["optimizer=adam"], "torch.optim.Adam", {"weight_decay": 0.0}),
    "adamw": (
        ["optimizer=adamw"],
        "torch.optim.AdamW",
        {"weight_decay": 0.01, "decoupled_weight_decay": True},
    ),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_trains(tmp_path, name):
    overrides, target, group = OPTIMIZERS[name]
    cfg, metrics, _ = run_train(tmp_path / "run", *FAST, *overrides)
    assert metrics["global_step"] == 2 * math.ceil(n_train_rows(300) / 32)
    assert all(math.isfinite(v) for v in metrics.values())
    assert metrics["train/loss"] < untrained_train_loss(cfg)
    ck = last_ckpt(tmp_path / "run")
    assert ck["hyper_parameters"]["config"]["optimizer"]["_target_"] == target
    pg = ck["optimizer_states"][0]["param_groups"][0]
    for key, value in group.items():
        assert pg.get(key) == value, f"{name}: param group {key}={pg.get(key)!r}, want {value!r}"
    assert pg["lr"] == pytest.approx(cfg.optimizer.lr)


SCHEDULERS = {
    # id → (overrides, lr at the start of epochs 0, 1, 2 as multiples of the initial lr)
    "none": (["scheduler=none"], [1, 1, 1]),
    "step": (["scheduler=step"], [1, 1, 1]),  # step_size=10: no step within 3 epochs
    "step_size1": (["scheduler=step", "scheduler.fn.step_size=1"], [1, 0.5, 0.25]),
    "exponential": (["scheduler=exponential"], [1, 0.95, 0.95**2]),
    "cosine": (["scheduler=cosine"], [1, 0.75, 0.25]),  # T_max = max_epochs = 3
    "inverse_sqrt": (["scheduler=inverse_sqrt"], [1, 1 / math.sqrt(2), 1 / math.sqrt(3)]),
    "plateau": (["scheduler=plateau"], [1, 1, 1]),  # patience 5
    # A learning rate too small to improve val/loss by the plateau threshold, patience 0:
    # epoch 0 sets the best value, epoch 1 does not improve → halve.
    "plateau_reduces": (
        ["scheduler=plateau", "scheduler.fn.patience=0", "optimizer=sgd", "optimizer.lr=1e-6"],
        [1, 1, 0.5],
    ),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_sets_the_learning_rate(tmp_path, name):
    overrides, factors = SCHEDULERS[name]
    cfg, metrics, _ = run_train(
        tmp_path / "run", "data.n_samples=200", "trainer.max_epochs=3", *overrides
    )
    assert metrics["epochs"] == 3
    assert all(math.isfinite(v) for v in metrics.values())
    lr0 = cfg.optimizer.lr
    lrs = lr_series(tmp_path / "run" / "tb")
    assert lrs == pytest.approx([lr0 * f for f in factors], rel=1e-6), f"{name}: lr {lrs}"


@pytest.mark.parametrize("steps_per_call", [1, "auto"])
def test_a_step_interval_schedule_steps_once_per_update(tmp_path, steps_per_call):
    """scheduler.interval=step: after n updates the rate is the schedule's value at n updates,
    η₀ γⁿ, whether the updates come one per Lightning step or in chunks (not η₀ γ^epochs)."""
    cfg, metrics, _ = run_train(
        tmp_path / "run",
        "data.n_samples=200",
        "trainer.max_epochs=3",
        "scheduler=exponential",
        "scheduler.interval=step",
        "scheduler.fn.gamma=0.9",
        f"steps_per_call={steps_per_call}",
    )
    per_epoch = math.ceil(n_train_rows(200) / 32)  # 5 updates an epoch
    assert metrics["global_step"] == 3 * per_epoch
    lr0 = cfg.optimizer.lr
    # logged at each epoch's start: after 0, 5 and 10 updates
    want = [lr0 * 0.9 ** (e * per_epoch) for e in range(3)]
    assert lr_series(tmp_path / "run" / "tb") == pytest.approx(want, rel=1e-6)
    pg = last_ckpt(tmp_path / "run")["optimizer_states"][0]["param_groups"][0]
    assert pg["lr"] == pytest.approx(lr0 * 0.9 ** (3 * per_epoch), rel=1e-9)


@pytest.mark.parametrize("backprop", ["recursion", "autograd"])
def test_the_gradient_is_clipped_before_the_step(tmp_path, backprop):
    """trainer.gradient_clip_val=c: the first update is W − η·clip(g), clip(g) = g·min(1,
    c/‖g‖) over every weight and bias together, with g = ∂C/∂W computed here by autograd
    through the Functions; without the clip it is W − η·g. (Clipping after the step would
    leave the first update unclipped.)"""
    from handprop.trainer.build import prepare

    common = ("gd=batch", "optimizer=sgd", "optimizer.lr=0.5", "trainer.max_steps=1")
    common += ("logger=none", "progress=false", f"backprop={backprop}")
    after = {}
    for clip in (None, 0.05):
        extra = [f"trainer.gradient_clip_val={clip}"] if clip else []
        run = prepare(compose_cfg(*common, *extra), tmp_path / f"clip{clip}")
        net = run.module.net
        w0 = [p.detach().clone() for p in net.parameters()]
        x, y = run.datamodule.split("train")
        g = torch.autograd.grad(run.module.task.cost(net(x), y), list(net.parameters()))
        run.trainer.fit(run.module, datamodule=run.datamodule)
        assert run.module.updates == 1 and run.module.by_recursion == (backprop == "recursion")
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in g]))
        scale = 1.0 if clip is None else min(1.0, clip / (float(norm) + 1e-6))
        if clip is not None:
            assert scale < 0.2  # the clip is in force: ‖g‖ is well above c
        for p, w, gi in zip(net.parameters(), w0, g, strict=True):
            torch.testing.assert_close(p.detach(), w - 0.5 * scale * gi, rtol=1e-5, atol=1e-6)
        after[clip] = [p.detach().clone() for p in net.parameters()]
    assert any((a - b).abs().max() > 1e-3 for a, b in zip(after[None], after[0.05], strict=True))


# --------------------------------------------------------------------------------------------
# 3. Gradient-descent modes: updates per epoch, and the linear scaling rule
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "n", "epochs", "per_epoch"),
    [
        (["gd=batch"], 300, 3, lambda n_train: 1),
        (["gd=stochastic"], 100, 2, lambda n_train: n_train),
        (["gd=minibatch"], 300, 2, lambda n_train: math.ceil(n_train / 32)),
        (["gd=minibatch", "gd.batch_size=50"], 300, 2, lambda n_train: math.ceil(n_train / 50)),
    ],
    ids=["batch", "stochastic", "minibatch32", "minibatch50"],
)
def test_updates_per_epoch(tmp_path, overrides, n, epochs, per_epoch):
    cfg, metrics, on_disk = run_train(
        tmp_path / "run", f"data.n_samples={n}", f"trainer.max_epochs={epochs}", *overrides
    )
    n_train = n_train_rows(n)
    assert len(data_of(cfg, "regression").indices["train"]) == n_train
    assert on_disk["epochs"] == epochs
    assert on_disk["global_step"] == epochs * per_epoch(n_train)


@pytest.mark.parametrize(
    ("overrides", "batch"),
    [
        (["gd=minibatch", "gd.batch_size=64", "gd.lr_scaling=true"], 64),
        (["gd=minibatch", "gd.batch_size=64", "gd.lr_scaling=false"], 32),  # unscaled
        (["gd=batch", "gd.lr_scaling=true"], n_train_rows(200)),
    ],
    ids=["minibatch64", "off", "batch"],
)
def test_lr_scaling_multiplies_lr_by_batch_over_base(tmp_path, overrides, batch):
    cfg, _, _ = run_train(
        tmp_path / "run", "data.n_samples=200", "trainer.max_epochs=1", *overrides
    )
    want = cfg.optimizer.lr * batch / cfg.gd.base_batch_size
    pg = last_ckpt(tmp_path / "run")["optimizer_states"][0]["param_groups"][0]
    assert pg["lr"] == pytest.approx(want, rel=1e-9)
    assert lr_series(tmp_path / "run" / "tb") == pytest.approx([want], rel=1e-6)


# --------------------------------------------------------------------------------------------
# 5. Sweeps through the real command line
# --------------------------------------------------------------------------------------------
def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(
        (d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()),
        key=lambda d: int(d.name.split("_", 1)[0]),
    )


def test_sweep_two_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        [
            *cli("train"),
            "-m",
            "optimizer=sgd,adam",
            "trainer.max_epochs=1",
            "data.n_samples=200",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    jobs = job_dirs(sweep)
    assert len(jobs) == 2
    for d in jobs:
        m = json.loads((d / "metrics.json").read_text())
        assert m["epochs"] == 1 and math.isfinite(m["test/mse"])
    tbs = [d / "tb" for d in jobs]
    assert tbs[0].resolve() != tbs[1].resolve()
    assert all(list(tb.glob("events.out.tfevents.*")) for tb in tbs)
    assert "optimizer=sgd" in jobs[0].name and "optimizer=adam" in jobs[1].name
    summary = json.loads((sweep / "summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["ok", "ok"]
    assert ["optimizer=sgd" in j["overrides"] for j in summary["jobs"]] == [True, False]
    assert ["optimizer=adam" in j["overrides"] for j in summary["jobs"]] == [False, True]
    assert {j["dir"] for j in summary["jobs"]} == {d.name for d in jobs}
    for j, d in zip(summary["jobs"], jobs, strict=True):
        m = json.loads((d / "metrics.json").read_text())
        assert j["metrics"] == {k: v for k, v in m.items() if k.startswith("test/")}


def test_sweep_with_a_failing_job(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        [
            *cli("train"),
            "-m",
            "optimizer.lr=0.01,-1",
            "trainer.max_epochs=1",
            "data.n_samples=200",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert "optimizer.lr=-1" in r.stderr
    good, bad = job_dirs(sweep)
    assert json.loads((good / "metrics.json").read_text())["epochs"] == 1
    assert not (bad / "metrics.json").exists()
    assert "optimizer.lr" in json.loads((bad / "error.json").read_text())["error"]
    summary = json.loads((sweep / "summary.json").read_text())
    ok, failed = summary["jobs"]
    assert ok["status"] == "ok" and "optimizer.lr=0.01" in ok["overrides"]
    assert failed["status"] == "failed" and "optimizer.lr=-1" in failed["overrides"]
    assert "optimizer.lr" in failed["error"]
    assert "FAILED" in r.stdout


# --------------------------------------------------------------------------------------------
# 6. handprop-eval and handprop-predict reproduce the run's test metrics
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "real_process"),
    [
        (("data=property_prices", *FAST), True),
        (("data=breast_cancer", "trainer.max_epochs=2"), False),
    ],
    ids=["regression-commands", "binary-in-process"],
)
def test_eval_and_predict_reproduce_test_metrics(tmp_path, capfd, overrides, real_process):
    """handprop-eval / handprop-predict on the best checkpoint: the installed commands in
    subprocesses for one task, their entry points in-process for the other (faster)."""
    run = tmp_path / "run"
    cfg, metrics, on_disk = run_train(run, *overrides)
    best = run / "checkpoints" / "best.ckpt"
    assert best.is_file()

    # The test split's raw rows, as a user's CSV (with an extra column carried through).
    dm = data_of(cfg, DATA_TASKS[cfg.data.name])
    rows = dm.indices["test"]
    X, y = dm.table.X[rows], dm.table.y[rows]
    names = dm.table.feature_names
    inp = write_csv(
        tmp_path / "in.csv",
        ["row_id", *names],
        [[f"r{i}", *(repr(float(v)) for v in x)] for i, x in enumerate(X)],
    )
    out = tmp_path / "pred.csv"
    eval_json = tmp_path / "eval.json"
    calls = [
        ("evaluate", [f"ckpt_path={best}", f"output={eval_json}"]),
        ("predict", [f"ckpt_path={best}", f"input={inp}", f"output={out}"]),
    ]
    if real_process:
        with ThreadPoolExecutor(2) as pool:
            done = pool.map(lambda c: run_cli([*cli(c[0]), *c[1]], cwd=tmp_path), calls)
            results = [(r.returncode, r.stderr) for r in done]
    else:
        entry = {
            "evaluate": handprop.trainer.evaluate.main,
            "predict": handprop.trainer.predict.main,
        }
        results = []
        for module, args in calls:
            capfd.readouterr()
            code = run_main(entry[module], args)
            results.append((code, capfd.readouterr().err))
    for code, err in results:
        assert code == 0, err
        assert "Traceback" not in err

    evaluated = json.loads(eval_json.read_text())
    test_keys = {k for k in on_disk if k.startswith("test/")}
    assert set(evaluated) == test_keys
    for k in test_keys:
        assert evaluated[k] == pytest.approx(on_disk[k], rel=1e-6, abs=1e-6), k

    pred = read_csv_rows(out)
    assert len(pred) == len(rows)
    assert [p["row_id"] for p in pred] == [f"r{i}" for i in range(len(rows))]
    if dm.table.task == "regression":
        col = f"predicted_{dm.table.target_name}"
        yhat = [float(p[col]) for p in pred]
        mse = sum((a - b) ** 2 for a, b in zip(yhat, y, strict=True)) / len(y)
        mae = sum(abs(a - b) for a, b in zip(yhat, y, strict=True)) / len(y)
        assert mse == pytest.approx(metrics["test/mse"], rel=1e-3)
        assert mae == pytest.approx(metrics["test/mae"], rel=1e-3)
    else:
        classes = dm.table.class_names
        prob_cols = [f"prob_{c}" for c in classes]
        assert set(pred[0]) == {"row_id", *names, "predicted_class", *prob_cols}
        hits = 0
        for p, label in zip(pred, y, strict=True):
            probs = [float(p[c]) for c in prob_cols]
            assert all(0 <= q <= 1 for q in probs)
            assert sum(probs) == pytest.approx(1, abs=2e-6)
            assert p["predicted_class"] == classes[max(range(len(probs)), key=probs.__getitem__)]
            hits += p["predicted_class"] == classes[int(label)]
        assert hits / len(y) == pytest.approx(metrics["test/accuracy"], abs=1e-6)


# --------------------------------------------------------------------------------------------
# 7. Bad configs and bad CSVs: one line naming the key / column / row, exit status 2
# --------------------------------------------------------------------------------------------
def _csv_cases(d: Path) -> dict[str, tuple[list[str], list[str]]]:
    """id → (command-line overrides, fragments the error line must contain)."""
    header = ["x1", "x2", "y"]

    def good(n: int = 40, label=lambda i: float(i % 2)) -> list[list]:
        return [[f"{i * 0.5:g}", f"{(i * 7) % 5:g}", label(i)] for i in range(n)]

    def csv_file(name: str, rows: list[list] | None = None, text: str | None = None) -> str:
        p = d / name
        if text is not None:
            p.write_text(text)
        else:
            write_csv(p, header, rows)
        return str(p)

    nonnum = good()
    nonnum[3][1] = "abc"  # body row 3 → file line 5
    nan = good()
    nan[6][0] = "NaN"  # → line 8
    floats = good(label=lambda i: i % 3)
    floats[2][2] = "0.5"  # → line 4
    csv_args = lambda path, target="y", task="regression": [  # noqa: E731
        "data=csv",
        f"data.path={path}",
        f"data.target={target}",
        f"task={task}",
    ]
    missing = str(d / "nope.csv")
    return {
        "unknown_option": (["optimizer=foo"], ["optimizer=foo", "adam", "sgd"]),
        "negative_lr": (["optimizer.lr=-1"], ["optimizer.lr", "-1"]),
        "batch_size_0": (["gd.batch_size=0"], ["gd.batch_size", "0"]),
        "hidden_0": (["model.hidden=[0]"], ["model.hidden", "[0]"]),
        "missing_file": (csv_args(missing), ["data.path", "not found", "nope.csv"]),
        "missing_target": (
            csv_args(csv_file("t.csv", good()), target="price"),
            ["data.target", "'price'", "t.csv"],
        ),
        "non_numeric": (
            csv_args(csv_file("nonnum.csv", nonnum)),
            ["nonnum.csv", "line 5 (data row 4)", "'x2'", "'abc'", "not a number"],
        ),
        "nan_cell": (
            csv_args(csv_file("nan.csv", nan)),
            ["nan.csv", "line 8 (data row 7)", "'x1'", "NaN"],
        ),
        "blank_and_multiline": (  # the file's line is not the data row + 1 here
            csv_args(csv_file("blank.csv", text='x1,x2,y\n1,2,0\n\n"3\n",4,1\n5,zz,0\n')),
            ["blank.csv", "line 6 (data row 3)", "'x2'", "'zz'", "not a number"],
        ),
        "empty_file": (csv_args(csv_file("empty.csv", text="")), ["empty.csv", "empty"]),
        "header_only": (
            csv_args(csv_file("header.csv", text="x1,x2,y\n")),
            ["header.csv", "no data rows"],
        ),
        "too_few_rows": (
            csv_args(csv_file("few.csv", good(3))),
            ["too few rows (3)", "val=0.15", "test=0.15"],
        ),
        "float_labels": (
            csv_args(csv_file("floats.csv", floats), task="multiclass"),
            [
                "floats.csv",
                "'y'",
                "integer class labels",
                "task=multiclass",
                "line 4 (data row 3)",
                "0.5",
            ],
        ),
        "task_does_not_fit": (
            ["data=digits", "task=regression"],
            ["task=regression", "data=digits", "task=multiclass"],
        ),
        "single_class_binary": (
            csv_args(csv_file("one.csv", good(label=lambda i: 1)), task="binary"),
            ["one.csv", "'y'", "single class", "task=binary"],
        ),
    }


BAD_CASES = [
    "unknown_option",
    "negative_lr",
    "batch_size_0",
    "hidden_0",
    "missing_file",
    "missing_target",
    "non_numeric",
    "nan_cell",
    "empty_file",
    "header_only",
    "blank_and_multiline",
    "too_few_rows",
    "float_labels",
    "task_does_not_fit",
    "single_class_binary",
]


@pytest.fixture(scope="module")
def bad_cases(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    cases = _csv_cases(d)
    assert sorted(cases) == sorted(BAD_CASES)
    return d, cases


def check_error_line(err: str, fragments: list[str]) -> None:
    """No traceback, and exactly one ``error:`` line that holds every fragment."""
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, err
    for f in fragments:
        assert f in errors[0], f"{f!r} not in {errors[0]!r}"


@pytest.mark.parametrize("name", BAD_CASES)
def test_bad_input_gives_one_line_and_status_2(bad_cases, name, capfd, monkeypatch):
    """The console entry point, in-process with the case's command line (fast)."""
    d, cases = bad_cases
    args, fragments = cases[name]
    run_dir = d / f"run_{name}"
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    capfd.readouterr()
    code = run_main(
        handprop.trainer.train.main, [*args, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"]
    )
    err = capfd.readouterr().err
    check_error_line(err, fragments)
    assert code == 2, err
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("name", ["negative_lr", "nan_cell", "task_does_not_fit"])
def test_bad_input_in_a_real_process(bad_cases, name):
    """The same through the installed command: the process's own exit status and stderr."""
    d, cases = bad_cases
    args, fragments = cases[name]
    run_dir = d / f"proc_{name}"
    r = run_cli([*cli("train"), *args, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}"], cwd=d)
    check_error_line(r.stderr, fragments)
    assert r.returncode == 2, r.stderr
    assert not (run_dir / "metrics.json").exists()


# --------------------------------------------------------------------------------------------
# 8. The quality bar with the presets' full settings
# --------------------------------------------------------------------------------------------
@pytest.mark.quality
@pytest.mark.parametrize(
    ("overrides", "metric", "bar"),
    [
        pytest.param(
            ["experiment=digits"],
            "test/accuracy",
            0.97,
            id="digits",
        ),
        pytest.param(["experiment=cancer"], "test/accuracy", 0.96, id="cancer"),
        pytest.param([], "test/r2", 0.95, id="property_prices"),
    ],
)
def test_quality_bar(tmp_path, overrides, metric, bar):
    cfg, metrics, _ = run_train(tmp_path / "run", *overrides)
    if overrides == ["experiment=digits"]:
        assert cfg.data.name == "digits" and len(cfg.model.hidden) == 1  # one hidden layer
    assert metrics[metric] >= bar, f"{overrides or 'defaults'}: {metric}={metrics[metric]:.4f}"


# --------------------------------------------------------------------------------------------
# 9. Determinism on the CPU
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [FAST, ("data.n_samples=60", "trainer.max_epochs=2", "gd=stochastic")],
    ids=["minibatch", "stochastic"],
)
def test_same_seed_same_metrics(tmp_path, overrides):
    _, _, a = run_train(tmp_path / "a", *overrides)
    _, _, b = run_train(tmp_path / "b", *overrides)
    a.pop("train_seconds"), b.pop("train_seconds")
    assert a == b  # exactly equal, not approximately
    _, _, c = run_train(tmp_path / "c", *overrides, "seed=7")
    assert c["test/loss"] != a["test/loss"]  # the seed matters


# --------------------------------------------------------------------------------------------
# 10. --help
# --------------------------------------------------------------------------------------------
def test_help_lists_the_config_groups(tmp_path):
    r = run_cli(
        [sys.executable, "-m", "handprop.trainer.train", "--help"], cwd=tmp_path, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    out = r.stdout
    assert "== Configuration groups ==" in out
    groups = out.split("== Configuration groups ==", 1)[1].split("==", 1)[0]
    listed = dict(
        (k.strip(), [v.strip() for v in vals.split(",")])
        for k, vals in (ln.split(":", 1) for ln in groups.strip().splitlines() if ":" in ln)
    )
    for g in (
        "task",
        "data",
        "model",
        "optimizer",
        "scheduler",
        "gd",
        "trainer",
        "logger",
        "callbacks",
        "debug",
        "experiment",
    ):
        assert g in listed, f"group {g!r} not in --help"
    assert listed["optimizer"] == ["adam", "adamw", "momentum", "rmsprop", "sgd"]
    assert set(listed["scheduler"]) == {
        "none",
        "step",
        "exponential",
        "cosine",
        "inverse_sqrt",
        "plateau",
    }
    assert set(listed["gd"]) == {"batch", "minibatch", "stochastic"}
    assert {"regression", "binary", "multiclass", "auto"} <= set(listed["task"])
    assert not list(tmp_path.iterdir()), "--help must not create a run directory"


# --------------------------------------------------------------------------------------------
# 11. The training path: one x axis, chunking changes nothing, the promises the README makes
# --------------------------------------------------------------------------------------------
def test_every_scalar_is_on_the_update_axis(task_runs):
    """train/loss every log_every_n_steps updates; epoch, train/epoch_loss, val/* at the updates done when the
    epoch ended; lr at the updates done when it started; test/* and final/* at the last."""
    cfg, run_dir, metrics, _ = task_runs["regression"]
    s = scalars(run_dir / "tb")
    n = metrics["global_step"]
    per_epoch = math.ceil(n_train_rows(300) / 32)
    assert n == metrics["epochs"] * per_epoch
    every = cfg.trainer.log_every_n_steps
    assert [step for step, _ in s["train/loss"]] == list(range(0, n, every))
    ends = [per_epoch * (e + 1) for e in range(metrics["epochs"])]
    for tag in ("epoch", "train/epoch_loss", "val/loss", "val/r2"):
        assert [step for step, _ in s[tag]] == ends, tag
    assert [v for _, v in s["epoch"]] == list(range(metrics["epochs"]))
    assert [step for step, _ in s["lr"]] == [e - per_epoch for e in ends]
    assert [step for step, _ in s["test/loss"]] == [n]
    # final/* sit in a run of their own (tb/hparams), the HParams view's only metric columns
    assert not [tag for tag in s if tag.startswith("final/")]
    final = scalars(run_dir / "tb" / "hparams")
    for tag in ("final/train/loss", "final/val/r2", "final/test/r2"):
        assert [step for step, _ in final[tag]] == [n], tag
    assert final["final/val/r2"][0][1] == pytest.approx(metrics["val/r2"], rel=1e-6)


def test_steps_per_call_changes_no_result(tmp_path):
    """Chunks of updates per Lightning step keep every update's semantics: a step-interval
    schedule stepped per update, gradient clipping, and an early stop in mid-run give the same
    metrics.json with one update per Lightning step, with chunks of 5 (an epoch's 7 updates
    split 5 + 2) and with the default (one chunk per epoch)."""
    common = (
        "data.n_samples=300",
        "trainer.max_epochs=40",
        "optimizer=sgd",
        "optimizer.lr=0.3",
        "scheduler=step",
        "scheduler.interval=step",
        "scheduler.fn.step_size=3",
        "scheduler.fn.gamma=0.97",
        "trainer.gradient_clip_val=0.5",
        "callbacks.early_stopping.patience=2",
        "logger=none",
    )
    results = []
    for k in (1, 5, "auto"):
        _, _, m = run_train(tmp_path / f"k{k}", *common, f"steps_per_call={k}")
        m.pop("train_seconds")
        results.append(m)
    assert results[0]["epochs"] < 40, "early stopping must fire for this test to mean anything"
    assert results[0] == results[1] == results[2]


def test_recursion_and_autograd_train_alike(tmp_path):
    """backprop=recursion (MLP.backprop) and backprop=autograd (C.backward() through the
    Functions) compute the same gradients: the runs agree to float32 rounding."""
    out = {}
    for how in ("recursion", "autograd"):
        _, _, m = run_train(tmp_path / how, *FAST, "trainer.max_epochs=4", f"backprop={how}")
        out[how] = m
    for k, v in out["recursion"].items():
        if "/" in k:
            assert out["autograd"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


def test_preprocessing_is_fitted_on_the_training_rows_only(tmp_path):
    """The validation and test rows of this CSV are 1000x larger than the training rows: a
    scaler fitted on all rows would have a mean and a spread set by them."""
    from handprop.trainer.data import TabularDataModule
    from handprop.trainer.datasets import read_csv

    rows = [[float(i % 7), float(i % 5), float(i % 3)] for i in range(100)]
    path = write_csv(tmp_path / "d.csv", ["a", "b", "y"], rows)
    dm = TabularDataModule(read_csv(str(path), "y", task="regression"), seed=3)
    dm.table.X[dm.indices["val"]] *= 1000
    dm.table.X[dm.indices["test"]] *= 1000
    train_x = dm.table.X[dm.indices["train"]]
    dm = TabularDataModule(dm.table, seed=3)  # fitted again, now on the planted table
    assert dm.x_scaler.shift == pytest.approx(train_x.mean(0))
    assert dm.x_scaler.scale == pytest.approx(train_x.std(0))
    x, _ = dm.split("train")
    assert x.mean(0).abs().max() < 1e-5 and (x.std(0, unbiased=False) - 1).abs().max() < 1e-4
    # and what a trained checkpoint keeps is that same scaler
    _, _, _ = run_train(tmp_path / "run", *FAST, "trainer.max_epochs=1")
    ck = last_ckpt(tmp_path / "run")
    table_dm = data_of(compose_cfg(*FAST), "regression")
    train_rows = table_dm.table.X[table_dm.indices["train"]]
    assert ck["state_dict"]["task.x_shift"].numpy() == pytest.approx(train_rows.mean(0), rel=1e-6)


def test_metrics_are_those_of_the_best_weights(tmp_path):
    """With momentum at a rate that overshoots, val/loss wanders; metrics.json must be the
    evaluation of the best epoch's weights (those in best.ckpt), not of the last ones."""
    run = tmp_path / "run"
    _, metrics, _ = run_train(
        run,
        "data.n_samples=300",
        "trainer.max_epochs=25",
        "optimizer=momentum",
        "optimizer.lr=0.2",
        "callbacks.early_stopping.patience=100",
    )
    val = [v for _, v in scalars(run / "tb")["val/loss"]]
    assert min(val) < val[-1], "the last epoch must not be the best for this test to bite"
    assert metrics["val/loss"] == pytest.approx(min(val), rel=1e-6)
    cfg = compose_cfg("data.n_samples=300")
    dm = data_of(cfg, "regression")
    from handprop.trainer.checkpoints import load_module

    best, last = (
        load_module(run / "checkpoints" / "best.ckpt"),
        load_module(run / "checkpoints" / "last.ckpt"),
    )
    assert best.evaluate(*dm.split("test"))["loss"] == pytest.approx(metrics["test/loss"], rel=1e-6)
    assert last.evaluate(*dm.split("val"))["loss"] == pytest.approx(val[-1], rel=1e-5)
    assert last.evaluate(*dm.split("val"))["loss"] != pytest.approx(metrics["val/loss"], rel=1e-3)


def test_hparams_columns_are_every_setting_made_and_the_final_metrics(tmp_path):
    """The HParams session (tb/hparams): a column for every setting of the network, the
    optimizer, gradient descent and the schedule, the data's preprocessing, and each setting
    the command line or a preset makes; the metric columns are final/<split>/<metric> alone."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run_dir = tmp_path / "run"
    args = [
        "trainer.max_epochs=2",
        "experiment=cancer",  # a preset: sets data, model.hidden, optimizer.lr, ...
        "optimizer=momentum",
        "optimizer.nesterov=true",
        "gd.lr_scaling=true",
        "data.preprocessing=normalize",
        "callbacks.early_stopping.patience=3",
        "progress=false",
        f"hydra.run.dir={run_dir}",
    ]
    assert run_main(handprop.trainer.train.main, args) == 0
    events = EventAccumulator(str(run_dir / "tb" / "hparams"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hp = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    value = {k: getattr(v, v.WhichOneof("kind")) for k, v in hp.items()}
    assert value["optimizer.momentum"] == 0.9 and value["optimizer.nesterov"] == "true"
    assert value["gd.lr_scaling"] == "true" and value["data.preprocessing"] == "normalize"
    assert value["callbacks.early_stopping.patience"] == 3
    assert value["model.hidden"] == "[16]" and value["data"] == "breast_cancer"  # the preset's
    assert value["optimizer"] == "SGD+momentum" and value["task"] == "binary"
    assert not any(k.startswith(("progress", "hydra", "logger")) for k in value)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    finals = {f"final/{k}" for k in metrics if "/" in k}
    assert set(events.Tags()["scalars"]) == finals


@pytest.mark.parametrize(("every", "saves"), [(3600, 1), (0, 5)], ids=["interval", "every-epoch"])
def test_checkpoints_on_the_interval_and_at_the_end(tmp_path, monkeypatch, every, saves):
    """best.ckpt and last.ckpt: once every_seconds have passed (checked at epoch ends), and
    when training ends; nothing at an epoch's end before the interval has passed."""
    from handprop.trainer.checkpoints import Checkpoints

    calls = []
    save = Checkpoints.save
    monkeypatch.setattr(
        Checkpoints, "save", lambda self, t, m: calls.append(t.current_epoch) or save(self, t, m)
    )
    run_train(
        tmp_path / "run",
        *FAST,
        "trainer.max_epochs=4",
        f"callbacks.checkpoint.every_seconds={every}",
    )
    assert len(calls) == saves, calls
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


def test_checkpoint_writes_are_bounded_by_the_interval(tmp_path, monkeypatch):
    """A 100-epoch run whose validation loss improves in most epochs writes each of best.ckpt
    and last.ckpt at most 1 + (its training seconds) / every_seconds times: improving weights
    are kept in memory, not written."""
    from handprop.trainer.checkpoints import AtomicCheckpointIO, Checkpoints

    writes: list[str] = []
    write = AtomicCheckpointIO.save_checkpoint
    monkeypatch.setattr(
        AtomicCheckpointIO,
        "save_checkpoint",
        lambda self, c, path, *a, **k: (
            writes.append(Path(path).name) or write(self, c, path, *a, **k)
        ),
    )
    improved = []
    epoch_end = Checkpoints.on_train_epoch_end

    def counted(self, trainer, module):  # noqa: ANN001, ANN202
        before = self.best_score
        epoch_end(self, trainer, module)
        improved.append(self.best_score < before)

    monkeypatch.setattr(Checkpoints, "on_train_epoch_end", counted)
    every = 1.0
    t = time.perf_counter()
    _, metrics, _ = run_train(
        tmp_path / "run",
        *FAST,
        "trainer.max_epochs=100",
        "callbacks.early_stopping.enabled=false",
        "optimizer.lr=0.001",
        f"callbacks.checkpoint.every_seconds={every}",
    )
    seconds = time.perf_counter() - t  # the whole call: an upper bound of the training time
    assert metrics["epochs"] == 100
    assert sum(improved) >= 50, sum(improved)  # the case the policy is for
    bound = 1 + seconds / every
    for name in ("best.ckpt", "last.ckpt"):
        assert 1 <= writes.count(name) <= bound, (name, writes.count(name), bound)


def test_callbacks_none_writes_no_checkpoint(tmp_path):
    run_train(tmp_path / "run", *FAST, "callbacks=none")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_max_steps_counts_updates(tmp_path):
    _, metrics, _ = run_train(
        tmp_path / "run", *FAST, "trainer.max_epochs=5", "trainer.max_steps=10"
    )
    assert metrics["global_step"] == 10 and metrics["epochs"] == 2


def test_progress_lines_without_a_terminal(tmp_path, capsys, monkeypatch):
    """Without a terminal: plain lines with the epoch, the update count, updates per second,
    the latest losses and the time left."""
    import functools

    import handprop.trainer.build
    from handprop.trainer.progress import Progress

    monkeypatch.setattr(
        handprop.trainer.build, "Progress", functools.partial(Progress, every_seconds=0)
    )
    run_train(tmp_path / "run", *FAST, "progress=true", "steps_per_call=auto")
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("epoch ")]
    # It advances per update, not per chunk of updates (one chunk holds an epoch's 7 here).
    assert [ln.split("update ")[1].split("/")[0] for ln in lines] == [str(k) for k in range(1, 15)]
    assert "epoch 2/2" in lines[-1] and "update 14/14" in lines[-1]
    for word in ("upd/s", "loss", "val_loss", "elapsed", "left"):
        assert word in lines[-1]


def test_tensorboard_hparams_show_every_task_metrics(task_runs, tmp_path):
    """A real TensorBoard over runs of all three tasks in one log directory: the HParams view
    lists every task's train, val and test metrics as columns and each run's values, and the
    scalars come back through its HTTP API."""
    import re
    import time
    import urllib.request

    logdir = tmp_path / "logs"
    logdir.mkdir()
    for task, (_, run_dir, _, _) in task_runs.items():
        (logdir / task).symlink_to(run_dir / "tb")
    tb = Path(sys.executable).parent / "tensorboard"
    proc = subprocess.Popen(
        [str(tb), "--logdir", str(logdir), "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url, deadline = None, time.time() + 90
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            url = found.group(1) if found else None
        assert url, "TensorBoard did not start"

        def post(route: str, body: dict) -> dict:
            req = urllib.request.Request(
                f"{url}/data/plugin/hparams/{route}",
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "X-TensorBoard-Feature-Flags": "{}"},
            )
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())

        deadline = time.time() + 60
        while True:  # TensorBoard loads the event files in the background
            try:
                exp = post("experiment", {"experimentName": ""})
                names = {m["name"]["tag"] for m in exp.get("metricInfos", [])}
                if all(f"final/test/{m}" in names for t in TASK_METRICS.values() for m in t):
                    break
            except OSError:
                pass
            assert time.time() < deadline, "HParams never listed every task's metrics"
            time.sleep(0.5)
        for task, metric_names in TASK_METRICS.items():
            for split in ("train", "val", "test"):
                for m in ("loss", *metric_names):
                    assert f"final/{split}/{m}" in names, (task, split, m)
        # The metric columns are the runs' results, nothing per update, epoch or monitor.
        assert all(n.startswith(("final/train/", "final/val/", "final/test/")) for n in names)
        hp_names = {h["name"] for h in exp["hparamInfos"]}
        assert {"task", "lr", "batch_size", "train_rows", "optimizer"} <= hp_names
        cols = [{"metric": {"tag": "final/test/loss"}, "order": "ORDER_ASC"}]
        groups = post(
            "session_groups",
            {
                "experimentName": "",
                "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN"],
                "colParams": cols,
                "startIndex": 0,
                "sliceSize": 10,
            },
        )["sessionGroups"]
        assert len(groups) == 3
        for task, (_, _, metrics, _) in task_runs.items():
            group = next(g for g in groups if g["hparams"]["task"] == task)
            values = {v["name"]["tag"]: v["value"] for v in group["metricValues"]}
            for split in ("train", "val", "test"):
                for m in ("loss", *TASK_METRICS[task]):
                    want = metrics[f"{split}/{m}"]
                    assert values[f"final/{split}/{m}"] == pytest.approx(want, rel=1e-5, abs=1e-6)
        # the scalars plugin serves the same final values
        key = next(iter(TASK_METRICS["multiclass"]))
        with urllib.request.urlopen(
            f"{url}/data/plugin/scalars/scalars?run=multiclass/hparams&tag=final/test/{key}",
            timeout=30,
        ) as r:
            series = json.loads(r.read())
        want = task_runs["multiclass"][2][f"test/{key}"]
        assert series[-1][2] == pytest.approx(want, rel=1e-5)
    finally:
        proc.kill()
        proc.wait()


def test_resume_past_max_epochs_is_one_line(tmp_path):
    from handprop.trainer.errors import ConfigError

    run_train(tmp_path / "run", *FAST)
    with pytest.raises(ConfigError, match=r"has trained 2 epochs.*trainer.max_epochs=2 or more"):
        run_train(tmp_path / "run", *FAST, "trainer.max_epochs=1", "ckpt_path=last")


def test_a_checkpoint_counts_the_epochs_it_has_trained(tmp_path, monkeypatch):
    """Written at an epoch's end, Lightning's "epoch" is that epoch's index; the module's own
    count (what the resume check reports) is the number finished, mid-run and at the end."""
    import shutil

    from handprop.trainer.checkpoints import Checkpoints

    counts = []
    save = Checkpoints.save

    def save_and_read(self, trainer, module):  # noqa: ANN001, ANN202
        save(self, trainer, module)
        kept = tmp_path / f"copy{len(counts)}.ckpt"
        shutil.copy(self.last_path, kept)
        counts.append(torch.load(kept, weights_only=True)["epochs_done"])

    monkeypatch.setattr(Checkpoints, "save", save_and_read)
    run_train(
        tmp_path / "run", *FAST, "trainer.max_epochs=3", "callbacks.checkpoint.every_seconds=0"
    )
    assert counts == [1, 2, 3, 3]  # after each epoch, then at the end


def test_tensorboard_checksums_are_computed_in_c_and_unchanged(tmp_path, monkeypatch):
    """The record writer's checksum is handprop's C one once a TensorBoard logger is built,
    and equals TensorBoard's own pure-Python one byte for byte (events stay readable)."""
    import random

    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as slow
    from tensorboard.summary.writer import record_writer

    from handprop.trainer.build import prepare
    from handprop.trainer.startup import masked_crc32c

    monkeypatch.setattr(record_writer, "masked_crc32c", slow)  # as a fresh process has it
    prepare(compose_cfg(*FAST, "logger=csv"), tmp_path / "csv")
    assert record_writer.masked_crc32c is slow  # only a TensorBoard logger needs it
    prepare(compose_cfg(*FAST, "logger=tensorboard"), tmp_path / "tb")
    assert record_writer.masked_crc32c is masked_crc32c
    rng = random.Random(0)
    for n in (0, 1, 7, 8, 100, 1500):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert masked_crc32c(data) == slow(data), n
