"""Runs are never lost silently: divergence stops cleanly, kills resume exactly, planted
checkpoints are refused, a sweep survives its failed jobs, and a seed fixes the result."""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from handprop.trainer.checkpoints import load_module

PY = sys.executable
TINY = ["data.n_samples=300", "logger=none"]


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [PY, "-m", "handprop.trainer.train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_divergence_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    # lr doubles every epoch: finite for a few epochs, then the loss overflows.
    run = tmp_path / "run"
    r = cli(
        *TINY,
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "scheduler=exponential",
        "scheduler.fn.gamma=2",
        "data.preprocessing=none",
        "trainer.max_epochs=60",
        "callbacks.checkpoint.every_seconds=0",  # a checkpoint at every epoch's end
        f"hydra.run.dir={run}",
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")][0]
    assert "diverged at step" in line and "last finite loss" in line
    assert "learning rate too high" in line and "unscaled inputs" in line
    step = int(line.split("at step ")[1].split(":")[0])
    assert step > 7  # past the first epoch (7 updates), so a checkpoint exists
    assert not (run / "metrics.json").exists()  # not a finished run
    last = run / "checkpoints" / "last.ckpt"
    assert str(last) in line
    model = load_module(last)  # loadable, and its weights are the finite ones
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert json.loads((run / "error.json").read_text())["error"].startswith("Diverged")


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    args = [
        "data.n_samples=3000",
        "gd.batch_size=16",
        "trainer.max_epochs=12",
        "callbacks.early_stopping.patience=100",
        "callbacks.checkpoint.every_seconds=0",  # last.ckpt at every epoch's end: killable mid-run
        "logger=none",
    ]
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert cli(*args, f"hydra.run.dir={full}").returncode == 0
    proc = subprocess.Popen(
        [PY, "-m", "handprop.trainer.train", *args, f"hydra.run.dir={killed}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["epoch"] >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()  # an interrupted run does not look finished
    # A kill during a write may leave a .tmp behind, but every .ckpt on disk is whole.
    ckpts = sorted((killed / "checkpoints").glob("*.ckpt"))
    assert last in ckpts
    for ckpt in ckpts:
        load_module(ckpt)
    r = cli(*args, f"hydra.run.dir={killed}", "ckpt_path=last")
    assert r.returncode == 0, r.stderr
    a = json.loads((full / "metrics.json").read_text())
    b = json.loads((killed / "metrics.json").read_text())
    a.pop("train_seconds"), b.pop("train_seconds")
    # Bit for bit: the epoch order is seeded by (seed, epoch) and the checkpoint holds the
    # weights, optimizer and callback state, so the resumed epochs repeat the same arithmetic.
    assert a == b


def test_planted_checkpoint_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "planted.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": Payload()}, ckpt)
    # The file really would run code if it were unpickled with code allowed.
    with ckpt.open("rb") as fh:
        import zipfile

        data = zipfile.ZipFile(fh).read(
            next(n for n in zipfile.ZipFile(fh).namelist() if n.endswith("data.pkl"))
        )
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(data)]
    assert any(name in ("GLOBAL", "STACK_GLOBAL") for name, _ in ops)
    assert any("system" in str(arg) for _, arg in ops)
    for entry in ("handprop.trainer.evaluate", "handprop.trainer.predict"):
        r = subprocess.run(
            [
                PY,
                "-m",
                entry,
                f"ckpt_path={ckpt}",
                *(
                    [f"input={ckpt}", f"output={tmp_path / 'o.csv'}"]
                    if entry.endswith("predict")
                    else []
                ),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2
        assert "refused without running it" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()
    # and a raw pickle of the same payload, not in torch's zip format
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="refused without running it"):
        load_module(raw)
    assert not marker.exists()


def test_sweep_survives_a_bad_value_and_a_divergence(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    r = cli(
        "-m",
        *TINY,
        "trainer.max_epochs=3",
        "optimizer=sgd",
        "data.preprocessing=none",
        "optimizer.lr=0.0001,-1,1e6",
        f"hydra.sweep.dir={sweep}",
    )
    assert r.returncode == 1  # the sweep ran to the end, then says that jobs failed
    summary = json.loads((sweep / "summary.json").read_text())
    jobs = {" ".join(j["overrides"]): j for j in summary["jobs"]}
    assert len(jobs) == 3
    ok = [j for j in jobs.values() if j["status"] == "ok"]
    failed = {k: j["error"] for k, j in jobs.items() if j["status"] == "failed"}
    assert len(ok) == 1 and "test/r2" in ok[0]["metrics"]
    assert any("optimizer.lr=-1" in k and "optimizer.lr" in e for k, e in failed.items())
    assert any("lr=1000000" in k and "diverged" in e for k, e in failed.items())
    good_dir = sweep / ok[0]["dir"]
    assert (
        json.loads((good_dir / "metrics.json").read_text())["test/r2"]
        == ok[0]["metrics"]["test/r2"]
    )
    assert "FAILED" in r.stdout


@pytest.mark.usefixtures("restore_process_state")  # (trains in-process)
def test_a_sweep_survives_a_job_that_fails_with_any_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Not a bad value, a divergence or a full disk: an error nothing expects (a bug) in job 0
    fails that job alone, with its line (and its traceback); job 1 runs, summary.json is
    written, and the sweep ends with status 1."""
    from runs import sweep

    import handprop.trainer.run

    train = handprop.trainer.run.train

    def breaks_on_seed_1(cfg, run_dir):  # noqa: ANN001, ANN202
        if cfg.seed == 1:
            raise RuntimeError("something nobody planned for")
        return train(cfg, run_dir)

    monkeypatch.setattr(handprop.trainer.run, "train", breaks_on_seed_1)
    with pytest.raises(SystemExit) as info:
        sweep(tmp_path / "sweep", "seed=1,2", "data.n_samples=300", "trainer.max_epochs=1")
    assert info.value.code == 1
    jobs = json.loads((tmp_path / "sweep" / "summary.json").read_text())["jobs"]
    assert [(j["overrides"][0], j["status"]) for j in jobs] == [
        ("seed=1", "failed"),
        ("seed=2", "ok"),
    ]
    assert jobs[0]["error"] == "RuntimeError: something nobody planned for"
    assert (tmp_path / "sweep" / jobs[1]["dir"] / "metrics.json").is_file()
    err = capsys.readouterr().err
    assert "error: something nobody planned for" in err.splitlines()


@pytest.mark.parametrize(
    "args",
    [
        ["data=property_prices", "data.n_samples=300"],
        ["data=breast_cancer"],
        ["data=iris"],
        ["data=students", "gd=stochastic", "data.n_samples=40", "optimizer=sgd"],
    ],
    ids=["regression", "binary", "multiclass", "stochastic"],
)
def test_same_seed_same_metrics(args: list[str], tmp_path: Path) -> None:
    from hydra import compose, initialize_config_module

    from handprop.trainer.run import train

    results = []
    for i in range(2):
        with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
            cfg = compose(
                "train", overrides=[*args, "trainer.max_epochs=3", "logger=none", "seed=7"]
            )
        m = train(cfg, tmp_path / f"run{i}")
        m.pop("train_seconds")
        results.append(m)
    assert results[0] == results[1]
