"""Faults from the machine: a full disk, two runs in one directory, Hydra's own writes. Each
ends in one line naming the path and the cause, leaves no ``.tmp`` and no torn checkpoint, and
never mixes two runs in one directory.

The full disks are real: small tmpfs mounts (root only, as in CI; skipped elsewhere). Every
writer is also made to fail with ``OSError(ENOSPC)`` in-process, so each path is covered."""

from __future__ import annotations

import builtins
import errno
import fnmatch
import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import torch

import handprop.trainer.evaluate
import handprop.trainer.predict
import handprop.trainer.train
from handprop.trainer.checkpoints import load_module
from handprop.trainer.rundir import LOCK, RunLock, clear_run, previous_run

PY = sys.executable
TINY = ["data.n_samples=300", "progress=false"]
FULL = "no space left on device while writing"


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "HYDRA_FULL"))}
    return subprocess.run(
        [PY, "-m", "handprop.trainer.train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_main(entry, args: list[str]) -> int:  # noqa: ANN001
    """A console entry point in-process with ``args`` as its command line; its status."""
    old, sys.argv = sys.argv, ["handprop", *args]
    try:
        entry()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = old
    return 0


@pytest.fixture(autouse=True)
def _short_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # tracebacks only when asked for


def one_error_line(err: str) -> str:
    """The one ``error:`` line of ``err``, with no traceback anywhere."""
    assert "Traceback" not in err and "Exception in thread" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def nothing_torn(root: Path) -> None:
    """No temporary file left, and every checkpoint loads."""
    assert not list(root.rglob("*.tmp")), list(root.rglob("*.tmp"))
    for ckpt in root.rglob("*.ckpt"):
        load_module(ckpt)


@contextmanager
def small_disk(path: Path, kib: int, inodes: int | None = None) -> Iterator[Path]:
    """A tmpfs of ``kib`` KiB (and at most ``inodes`` files and folders, itself included)
    mounted at ``path``: a disk that fills for real."""
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root to mount (CI runs as root)")
    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={kib}k{f',nr_inodes={inodes}' if inodes else ''}"]
        + ["tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        # lazily: an in-process run may still hold its job log open there
        subprocess.run(["umount", "-l", str(path)], check=True)


# --------------------------------------------------------------------------------------------
# 1. A full disk, for real: it fills at different points of the default run
# --------------------------------------------------------------------------------------------
# Sizes measured for this run: 8 KiB fills while .hydra/ is written, 40 KiB during the first
# checkpoint, 56 KiB during a later one (68 KiB and more: the run finishes). The last case runs
# as its own process, so that nothing printed as the process ends escapes the check either.
@pytest.mark.parametrize(
    ("kib", "where"), [(8, "hydra"), (40, "first"), (56, "later")], ids=lambda v: str(v)
)
def test_a_full_disk_is_one_line_and_leaves_the_last_checkpoint(
    tmp_path: Path, kib: int, where: str, capsys: pytest.CaptureFixture
) -> None:
    with small_disk(tmp_path / "disk", kib) as disk:
        run = disk / "run"
        args = [
            *TINY,
            "trainer.max_epochs=3",
            "callbacks.checkpoint.every_seconds=0",  # a checkpoint at every epoch's end
            f"hydra.run.dir={run}",
        ]
        if where == "later":
            r = cli(*args)
            code, err = r.returncode, r.stderr
        else:
            code, err = run_main(handprop.trainer.train.main, args), capsys.readouterr().err
        line = one_error_line(err)
        assert code == 1, err
        assert line.startswith(f"error: {FULL} {run}/"), line
        path = line.split(" while writing ")[1]
        nothing_torn(disk)
        assert not (run / "metrics.json").exists()
        last = run / "checkpoints" / "last.ckpt"
        if where == "hydra":
            assert "/.hydra/" in path and not (run / "checkpoints").exists()
        elif where == "first":
            assert path.endswith(".ckpt") and not last.exists()
        else:  # an earlier epoch's last.ckpt: whole (nothing_torn loaded it)
            assert path.endswith(".ckpt") and last.exists()


# A disk that takes no more files: the run's first three are its lock, Hydra's job log (created
# before Hydra opens it) and .hydra/, each refused in one line.
@pytest.mark.parametrize(("inodes", "first_refused"), [(2, LOCK), (3, "train.log"), (4, ".hydra")])
def test_a_disk_out_of_files(
    tmp_path: Path, inodes: int, first_refused: str, capsys: pytest.CaptureFixture
) -> None:
    with small_disk(tmp_path / "disk", 64, inodes=inodes) as disk:
        assert run_main(handprop.trainer.train.main, [*TINY, f"hydra.run.dir={disk / 'run'}"]) == 1
        line = one_error_line(capsys.readouterr().err)
        assert line == f"error: {FULL} {disk / 'run' / first_refused}"


def test_a_sweep_job_that_fills_the_disk_fails_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Job 0's checkpoint (a 4-512-512-1 network, ~1 MB) does not fit; its .tmp goes, and job 1
    (the 4-5-1 network) finishes; summary.json lists both."""
    with small_disk(tmp_path / "disk", 256) as disk:
        sweep = disk / "sweep"
        args = ["-m", *TINY, "logger=none", "trainer.max_epochs=2"]
        code = run_main(
            handprop.trainer.train.main,
            [*args, "model.hidden=[512,512],[5]", f"hydra.sweep.dir={sweep}"],
        )
        out = capsys.readouterr()
        assert code == 1, out.err  # the sweep ran to its end, then says that a job failed
        assert FULL in one_error_line(out.err)
        nothing_torn(disk)
        jobs = json.loads((sweep / "summary.json").read_text())["jobs"]
        assert [j["status"] for j in jobs] == ["failed", "ok"], jobs
        assert FULL in jobs[0]["error"] and "checkpoints/best.ckpt" in jobs[0]["error"]
        assert "model.hidden=[512,512]" in jobs[0]["overrides"]
        assert (sweep / jobs[1]["dir"] / "metrics.json").is_file()


def test_a_sweep_on_a_full_disk_and_a_bad_sweep_override_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """What fails in Hydra's own code, outside any job: the sweeper's multirun.yaml on a disk
    with no room left, and an override that names no setting."""
    with small_disk(tmp_path / "disk", 16) as disk:
        with suppress(OSError):  # fill it to the last block
            (disk / "filler").write_bytes(b"x" * 16 * 1024)
        sweep = disk / "sweep"
        code = run_main(handprop.trainer.train.main, ["-m", *TINY, f"hydra.sweep.dir={sweep}"])
        assert code == 1
        line = one_error_line(capsys.readouterr().err)
        assert line in (f"error: {FULL} into {sweep}", f"error: {FULL} {sweep / 'multirun.yaml'}")
    code = run_main(
        handprop.trainer.train.main, ["-m", "no_such_key=1,2", f"hydra.sweep.dir={tmp_path}"]
    )
    assert code == 1
    assert "no_such_key" in one_error_line(capsys.readouterr().err)
    assert "HYDRA_FULL_ERROR" not in os.environ  # the user's setting is back


def test_a_job_whose_directory_cannot_be_made_fails_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hydra makes each job's directory before handprop's code runs; when the machine refuses
    it (here for job 0), that job is one line and failed in summary.json, and job 1 runs."""
    mkdir = Path.mkdir

    def refuse_job_0(self: Path, *args: object, **kwargs: object) -> None:
        if self.name.startswith("0_"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse_job_0)
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "logger=none", "trainer.max_epochs=1", "seed=1,2"]
    code = run_main(handprop.trainer.train.main, [*args, f"hydra.sweep.dir={sweep}"])
    out = capsys.readouterr()
    assert code == 1, out.err  # the sweep ran to its end, then says that a job failed
    assert one_error_line(out.err).startswith(f"error: {FULL} {sweep}/0_")
    jobs = {
        tuple(j["overrides"]): j for j in json.loads((sweep / "summary.json").read_text())["jobs"]
    }
    failed = [j for j in jobs.values() if j["status"] == "failed"]
    assert len(failed) == 1 and "seed=1" in failed[0]["overrides"] and FULL in failed[0]["error"]
    ok = [j for j in jobs.values() if j["status"] == "ok"]
    assert len(ok) == 1 and "seed=2" in ok[0]["overrides"]


# The same refusal in the worker processes of hydra/launcher=parallel: a sitecustomize (on
# PYTHONPATH, so in every process of the sweep) makes Path.mkdir refuse job 0's directory.
REFUSE_JOB_0 = r"""
import errno, os, pathlib
if os.environ.get("HANDPROP_REFUSE_JOB_0"):
    _mkdir = pathlib.Path.mkdir
    def _refuse_job_0(self, *args, **kwargs):
        if self.name.startswith("0_"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        _mkdir(self, *args, **kwargs)
    pathlib.Path.mkdir = _refuse_job_0
"""


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
    reason='hydra-joblib-launcher is not installed (pip install -e ".[scale]")',
)
def test_a_job_whose_directory_cannot_be_made_fails_alone_in_parallel(tmp_path: Path) -> None:
    """As above with hydra/launcher=parallel: the job runs in a loky worker, where the refusal
    used to end the whole sweep (joblib re-raised it). Now: one line, failed in summary.json,
    and job 1 runs."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(REFUSE_JOB_0)
    sweep = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PL_", "HYDRA_FULL"))}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(tmp_path / "hook"), env.get("PYTHONPATH")])
    )
    env["HANDPROP_REFUSE_JOB_0"] = "1"
    args = ["-m", "hydra/launcher=parallel", *TINY, "logger=none", "trainer.max_epochs=1"]
    r = subprocess.run(
        [PY, "-m", "handprop.trainer.train", *args, "seed=1,2", f"hydra.sweep.dir={sweep}"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert r.returncode == 1, r.stderr  # the sweep ran to its end, then says that a job failed
    assert one_error_line(r.stderr).startswith(f"error: {FULL} {sweep}/0_")
    jobs = {
        tuple(j["overrides"]): j for j in json.loads((sweep / "summary.json").read_text())["jobs"]
    }
    failed = [j for j in jobs.values() if j["status"] == "failed"]
    assert len(failed) == 1 and "seed=1" in failed[0]["overrides"] and FULL in failed[0]["error"]
    ok = [j for j in jobs.values() if j["status"] == "ok"]
    assert len(ok) == 1 and "seed=2" in ok[0]["overrides"]


# --------------------------------------------------------------------------------------------
# 2. Every writer, made to fail with OSError(ENOSPC)
# --------------------------------------------------------------------------------------------
class _FullFile:
    """A file opened for writing on a disk that is full: every write fails."""

    def __init__(self, fh: io.IOBase) -> None:
        self._fh = fh

    def write(self, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> object:
        return getattr(self._fh, name)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


@contextmanager
def full_disk_at(pattern: str) -> Iterator[None]:
    """Inside: writes to files whose path matches ``pattern`` fail with ENOSPC (through ``open``
    and ``io.open``: Python's writers, torch.save's file object, TensorBoard's, fsspec's)."""
    real = builtins.open

    def fake_open(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN202
        fh = real(file, mode, *args, **kwargs)
        name = os.fsdecode(file) if isinstance(file, str | bytes | os.PathLike) else ""
        if any(c in mode for c in "wax+") and fnmatch.fnmatch(name, pattern):
            return _FullFile(fh)
        return fh

    with pytest.MonkeyPatch.context() as m:
        m.setattr(builtins, "open", fake_open)
        m.setattr(io, "open", fake_open)
        yield


# writer → (file pattern, extra overrides, the path the line names: relative to the run dir,
# "." = the run directory itself, for writes whose error carries no file name)
WRITERS = {
    "hydra_config": ("*/.hydra/hydra.yaml.tmp", [], ".hydra/hydra.yaml"),
    "best_ckpt": ("*/checkpoints/best.ckpt.tmp", [], "checkpoints/best.ckpt"),
    "last_ckpt": ("*/checkpoints/last.ckpt.tmp", [], "checkpoints/last.ckpt"),
    "tensorboard_events": ("*/tb/events.out.tfevents.*", [], "."),
    "tensorboard_hparams": ("*/tb/hparams.yaml", [], "."),
    "tensorboard_hparams_session": ("*/tb/hparams/events.out.tfevents.*", [], "."),
    "csv_log": ("*/csv/metrics.csv", ["logger=csv"], "."),
    "metrics_json": ("*/metrics.json.tmp", [], "metrics.json"),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_each_writer_on_a_full_disk_gives_one_line(
    writer: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pattern, extra, named = WRITERS[writer]
    run = tmp_path / "run"
    with full_disk_at(pattern):
        code = run_main(
            handprop.trainer.train.main,
            ["data.n_samples=100", "trainer.max_epochs=2", *extra, f"hydra.run.dir={run}"],
        )
    line = one_error_line(capsys.readouterr().err)
    assert code == 1, line
    where = f"into {run}" if named == "." else str(run / named)
    assert line == f"error: {FULL} {where}"
    nothing_torn(run)
    assert not (run / "metrics.json").exists()
    assert FULL in json.loads((run / "error.json").read_text())["error"]


def test_the_traceback_on_request(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    with full_disk_at("*/.hydra/config.yaml.tmp"):
        code = run_main(handprop.trainer.train.main, ["verbose=true", f"hydra.run.dir={run}"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and f"error: {FULL} {run}/.hydra/config.yaml" in err


def test_error_json_on_a_full_disk_too(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run that fails, on a disk that cannot take its error.json either: still one line,
    the run's own error."""
    run = tmp_path / "run"
    with full_disk_at("*/error.json.tmp"):
        code = run_main(handprop.trainer.train.main, ["optimizer.lr=-1", f"hydra.run.dir={run}"])
    assert code == 2
    assert "optimizer.lr" in one_error_line(capsys.readouterr().err)
    assert not (run / "error.json").exists() and not list(run.rglob("*.tmp"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("faults") / "run"
    args = [*TINY, "trainer.max_epochs=1", "logger=none", f"hydra.run.dir={run}"]
    assert run_main(handprop.trainer.train.main, args) == 0
    return run / "checkpoints" / "best.ckpt"


def test_predictions_and_eval_metrics_on_a_full_disk(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    from handprop.trainer.datasets import property_prices

    t = property_prices(5, seed=1)
    features = tmp_path / "in.csv"
    features.write_text(
        "\n".join([",".join(t.feature_names), *(",".join(map(str, r)) for r in t.X.tolist())])
    )
    out, metrics = tmp_path / "out.csv", tmp_path / "eval.json"
    cases = [
        (handprop.trainer.predict.main, [f"input={features}", f"output={out}"], out),
        (handprop.trainer.evaluate.main, [f"output={metrics}"], metrics),
    ]
    for entry, args, path in cases:
        with full_disk_at(f"{path}.tmp"):
            code = run_main(entry, [f"ckpt_path={checkpoint}", *args])
        assert code == 1
        assert one_error_line(capsys.readouterr().err) == f"error: {FULL} {path}"
        assert not path.exists() and not list(tmp_path.glob("*.tmp"))


def test_a_full_disk_at_the_sweep_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "logger=none", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}"]
    with full_disk_at("*/summary.json.tmp"):
        code = run_main(handprop.trainer.train.main, args)
    assert code == 1
    assert one_error_line(capsys.readouterr().err) == f"error: {FULL} {sweep / 'summary.json'}"
    assert not list(sweep.glob("*.tmp"))


# --------------------------------------------------------------------------------------------
# 3. One run per run directory
# --------------------------------------------------------------------------------------------
def test_a_locked_directory_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """The lock of a live process: a run into its directory says whose, and writes nothing."""
    run = tmp_path / "run"
    run.mkdir()
    lock = RunLock(run).acquire()
    try:
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
        r = cli(*TINY, f"hydra.run.dir={run}", "overwrite=true")
        assert r.returncode == 2
        assert one_error_line(r.stderr) == (
            f"error: {run} is in use by another run (pid {os.getpid()}); wait for it to end or "
            "choose another hydra.run.dir"
        )
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    finally:
        lock.release()


def test_two_runs_one_directory_kill_and_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A live run's directory is refused (its PID named); after kill -9 its lock is gone but
    its checkpoints are not: a new run must resume them or replace them (overwrite=true)."""
    run = tmp_path / "run"
    args = [*TINY, "callbacks.checkpoint.every_seconds=0", f"hydra.run.dir={run}"]
    first = subprocess.Popen(
        [PY, "-m", "handprop.trainer.train", *args, "trainer.max_epochs=100000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "checkpoints" / "last.ckpt").exists():
            assert first.poll() is None, "the first run ended before its first checkpoint"
            time.sleep(0.05)
        assert run_main(handprop.trainer.train.main, [*args, "ckpt_path=last"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert line.startswith(f"error: {run} is in use by another run (pid {first.pid})")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert run_main(handprop.trainer.train.main, args) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: {run} holds an interrupted run (checkpoints, no metrics.json): add "
        "ckpt_path=last to continue it, overwrite=true to replace it, or choose another "
        "hydra.run.dir"
    )
    assert (
        run_main(handprop.trainer.train.main, [*args, "trainer.max_epochs=2", "overwrite=true"])
        == 0
    )
    events = list((run / "tb").glob("events.out.tfevents.*"))
    assert events and all(f".{first.pid}." not in p.name for p in events)  # only the new run's
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == metrics["global_step"]  # the new run's, not the killed one's
    capsys.readouterr()
    assert run_main(handprop.trainer.train.main, args) == 2
    assert "holds a finished run (metrics.json)" in one_error_line(capsys.readouterr().err)


def test_overwrite_cannot_delete_what_it_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    code = run_main(
        handprop.trainer.train.main, ["overwrite=true", "ckpt_path=last", f"hydra.run.dir={run}"]
    )
    assert code == 2
    assert "overwrite=true would delete the checkpoint" in one_error_line(capsys.readouterr().err)
    assert not run.exists()


def test_what_counts_as_an_earlier_run_and_what_overwrite_removes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "train.log").touch()
    (run / "error.json").write_text("{}")
    assert previous_run(run) is None  # a run that failed before training: nothing to mix
    (run / "tb").mkdir()
    (run / "tb" / "events.out.tfevents.1").touch()
    assert previous_run(run) == "another run's logs (tb/)"
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").touch()
    assert previous_run(run).startswith("an interrupted run")
    (run / "metrics.json").write_text("{}")
    assert previous_run(run).startswith("a finished run")
    (run / "notes.txt").write_text("mine")
    (run / "lr_find.json").write_text("{}")  # a learning-rate range test's, too
    (run / "lr_find.png").touch()
    clear_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
