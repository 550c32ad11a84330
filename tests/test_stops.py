"""A run stopped by Ctrl-C (SIGINT) or SIGTERM writes last.ckpt, prints one line with the
command that resumes it, and exits with 128 + the signal's number; resumed, it ends as an
uninterrupted run does, bit for bit. A stopped sweep says so in summary.json."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runs import run, sweep

from handprop.trainer import stops
from handprop.trainer.errors import Stopped
from handprop.trainer.model import HandpropModule

pytestmark = pytest.mark.usefixtures("restore_process_state")

PY = sys.executable
LINE = re.compile(r"stopped by (SIG\w+) at update (\d+); resume with: (handprop-train .*)")


def stop_after(monkeypatch: pytest.MonkeyPatch, update: int) -> None:
    """A stop request (as the first SIGTERM makes) once update number ``update`` is made: at
    the end of the Lightning step (the chunk of updates) that made it."""
    original = HandpropModule.training_step

    def asks(self, batch, i):  # noqa: ANN001, ANN202
        original(self, batch, i)
        if self.updates >= update:
            stops.request_stop(signal.SIGTERM)

    monkeypatch.setattr(HandpropModule, "training_step", asks)


def record_epochs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, dict[str, float]]]:
    """Every epoch's end as it happens, appended to the returned list: the updates so far and
    the epoch's metrics (training loss, validation metrics)."""
    seen: list[tuple[int, dict[str, float]]] = []
    original = HandpropModule.on_train_epoch_end

    def recording(self) -> None:  # noqa: ANN001
        original(self)
        seen.append((self.updates, dict(self.epoch_metrics)))

    monkeypatch.setattr(HandpropModule, "on_train_epoch_end", recording)
    return seen


# property_prices, 300 rows: 210 training rows in batches of 32, 7 updates an epoch, which
# steps_per_call=2 makes the Lightning steps [1, 2] [3, 4] [5, 6] [7], [8, 9] ... [14], ...
TWO = ("data.n_samples=300", "trainer.max_epochs=4", "logger=none", "steps_per_call=2")


@pytest.mark.parametrize(
    ("extra", "asked_at", "stops_at"),
    [
        ([], 3, 4),  # in the first epoch, before any checkpoint
        ([], 9, 9),  # mid-epoch: at the end of the step [8, 9]
        ([], 10, 11),  # mid-step: at its end
        ([], 14, 14),  # in the epoch's last step: after the epoch's end (validation included)
        (["backprop=autograd", "scheduler=step", "scheduler.interval=step"], 9, 9),
        # No validation split: the monitored metric is the epoch's training loss, whose running
        # sum the mid-epoch checkpoint carries (255 training rows: 8 updates an epoch); and no
        # Checkpoints callback: the stop writes last.ckpt itself.
        (
            ["data.val_fraction=0", "callbacks.checkpoint.enabled=false"]
            + ["scheduler=plateau", "scheduler.fn.patience=0"],
            11,
            12,
        ),
        # The GAN (280 training rows: 9 updates an epoch): its noise generator is saved too
        (["model=gan", "data=ring", "data.n_samples=400", "model.hidden=[16]"], 12, 13),
    ],
    ids=["first-epoch", "mid-epoch", "mid-step", "epoch-end", "autograd", "no-val", "gan"],
)
def test_a_stop_resumes_exactly(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    asked_at: int,
    stops_at: int,
) -> None:
    overrides = (*TWO, *extra)
    epochs = record_epochs(monkeypatch)  # the stopped run's epochs, then the resumed run's
    step = HandpropModule.training_step
    stop_after(monkeypatch, asked_at)
    stopped = tmp_path / "stopped"
    with stops.stopping_on_signals(), pytest.raises(Stopped) as info:
        run(stopped, *overrides)
    assert info.value.signum == signal.SIGTERM
    assert info.value.updates == stops_at
    last = stopped / "checkpoints" / "last.ckpt"
    assert info.value.checkpoint == last
    assert torch.load(last, weights_only=True)["global_step"] == info.value.updates
    assert not (stopped / "metrics.json").exists()
    monkeypatch.setattr(HandpropModule, "training_step", step)  # no more stop requests

    resumed = run(stopped, *overrides, "ckpt_path=last")
    interrupted = list(epochs)
    epochs.clear()
    full = run(tmp_path / "full", *overrides)
    assert len(epochs) == 4 and info.value.updates < epochs[-1][0]
    # Every epoch ends with the same updates, losses and validation metrics, bit for bit ...
    assert interrupted == epochs
    # ... and so does the run.
    for m in (resumed, full):
        m.pop("train_seconds")
    assert resumed == full


# --------------------------------------------------------------------------------------------
# The command line: a real process and a real signal
# --------------------------------------------------------------------------------------------
# 700 training rows in batches of 8: 88 updates an epoch, in Lightning steps of 16; long
# enough (60 epochs) to be stopped after its first checkpoint, short enough to rerun whole.
# Checkpoints at every epoch's end (every_seconds=0): with the default interval a fast machine
# writes the first one only at the end, after which there is nothing left to stop.
LONG = [
    "data.n_samples=1000",
    "gd.batch_size=8",
    "steps_per_call=16",
    "trainer.max_epochs=60",
    "callbacks.early_stopping.patience=100",
    "callbacks.checkpoint.every_seconds=0",
    "logger=none",
    "progress=false",
]


def command(*args: str) -> list[str]:
    return [PY, "-m", "handprop.trainer.train", *args]


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "HYDRA_FULL"))}


def stopped_by(signum: int, run_dir: Path) -> tuple[re.Match, str]:
    """Start a run into ``run_dir``, send it ``signum`` once its first checkpoint is on disk,
    and return its stop line (parsed) and its stderr."""
    proc = subprocess.Popen(
        command(*LONG, f"hydra.run.dir={run_dir}"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped; make it longer"
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "error:" not in err, err
    lines = [ln for ln in err.splitlines() if "stopped by" in ln or "resume" in ln]
    assert len(lines) == 1, err
    found = LINE.fullmatch(lines[0])
    assert found and found.group(1) == signal.Signals(signum).name, lines[0]
    assert not (run_dir / "metrics.json").exists()
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == int(found.group(2)) < 60 * 88
    return found, err


def test_sigterm_stops_with_a_checkpoint_and_the_printed_command_resumes(tmp_path: Path) -> None:
    stopped = tmp_path / "stopped"
    found, _ = stopped_by(signal.SIGTERM, stopped)
    error = json.loads((stopped / "error.json").read_text())
    assert error["status"] == "stopped" and error["error"] == found.group(0)
    argv = shlex.split(found.group(3))
    assert argv[0] == "handprop-train"
    assert argv[-2:] == [f"hydra.run.dir={stopped}", "ckpt_path=last"]
    r = subprocess.run(
        command(*argv[1:]), capture_output=True, text=True, timeout=240, env=environment()
    )
    assert r.returncode == 0, r.stderr
    resumed = json.loads((stopped / "metrics.json").read_text())
    full = run(tmp_path / "full", *LONG)  # uninterrupted (in-process: the same arithmetic)
    resumed.pop("train_seconds"), full.pop("train_seconds")
    assert resumed == full and full["global_step"] == 60 * 88


def test_ctrl_c_stops_with_a_checkpoint_too(tmp_path: Path) -> None:
    found, _ = stopped_by(signal.SIGINT, tmp_path / "run")
    assert f"hydra.run.dir={tmp_path / 'run'} ckpt_path=last" in found.group(3)


# --------------------------------------------------------------------------------------------
# A sweep
# --------------------------------------------------------------------------------------------
def test_a_stopped_sweep_lists_the_stopped_job_and_those_not_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    stop_after(monkeypatch, 9)  # job 0, in its second epoch
    with pytest.raises(SystemExit) as info:
        sweep(tmp_path / "sweep", "seed=1,2,3", *TWO)
    assert info.value.code == 128 + signal.SIGTERM
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert summary["stopped"] == "SIGTERM"
    jobs = summary["jobs"]
    assert [j["status"] for j in jobs] == ["stopped", "not run", "not run"]
    assert [j["overrides"][0] for j in jobs] == ["seed=1", "seed=2", "seed=3"]
    job = tmp_path / "sweep" / jobs[0]["dir"]
    assert (job / "checkpoints" / "last.ckpt").is_file() and not (job / "metrics.json").exists()
    line = LINE.fullmatch(jobs[0]["error"])
    assert line and line.group(2) == "9" and f"hydra.run.dir={job} ckpt_path=last" in line.group(3)
    assert "seed=1" in line.group(3)
    err = capsys.readouterr().err
    assert err.count("stopped by SIGTERM") == 1 and "Traceback" not in err
    assert stops.stop_requested() is None  # the request ends with the command


def test_the_resume_command_is_the_run_continued() -> None:
    """The run's own overrides, quoted for the shell; not a search's, a fresh start's or an
    earlier checkpoint's."""
    overrides = ["model.hidden=[16, 16]", "overwrite=true", "ckpt_path=old.ckpt", "seed=3"]
    assert stops.resume_command([*overrides, "hparams_search=optuna"], "/runs/a b") == (
        "handprop-train 'model.hidden=[16, 16]' seed=3 'hydra.run.dir=/runs/a b' ckpt_path=last"
    )
