"""One run per run directory, and the run's files from Hydra written so that a failure is one line.

* **A lock.** A run holds an exclusive ``fcntl.flock`` on ``<run dir>/.handprop.lock`` while it
  lives, its PID written in the file for the message a second run gets. The OS drops the lock
  when the process ends, however it ends, so a run killed with SIGKILL leaves no live lock.
* **No mixing.** A directory that already holds a run's outputs (``metrics.json``, checkpoints,
  TensorBoard or CSV logs) is refused unless the new run resumes it (``ckpt_path``) or replaces
  it (``overwrite=true``, which first removes the old run's files).

Both are :class:`RunDirGuard`'s ``on_run_start``, a Hydra callback that runs before Hydra
creates its job log or writes anything else into the directory. ``.hydra/`` (the composed
config, Hydra's config, the overrides) is written by :func:`write_hydra_files` from the task
(``hydra.output_subdir`` is null in ``train.yaml``), so a failed write there is reported in one
line like any other. DDP ranks other than 0 share rank 0's directory and do neither. Sweep jobs
(``-m``) each have a directory of their own and are not checked.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from handprop.trainer.cli import report, verbose_errors
from handprop.trainer.errors import ConfigError, UserError, exit_status, is_known
from handprop.trainer.files import write_text_atomic, writing

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are then not locked
    fcntl = None  # type: ignore[assignment]

LOCK = ".handprop.lock"
HYDRA_FILES = ".hydra"
#: What a run writes into its directory: what ``overwrite=true`` removes (and nothing else).
RUN_DIRS = (HYDRA_FILES, "checkpoints", "tb", "csv")
RUN_FILES = ("metrics.json", "error.json", "eval_metrics.json", "lr_find.png", "lr_find.json")


class RunDirInUse(UserError):
    """Another live run holds the run directory's lock."""


def is_rank_zero() -> bool:
    """False in a DDP rank other than 0 (started by Lightning, torchrun or SLURM): it shares
    rank 0's run directory and writes nothing of the run's there."""
    ranks = (os.environ.get(k, "0") for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))
    return all(r in ("", "0") for r in ranks)


class RunLock:
    """An exclusive lock on a run directory, held until :meth:`release` or the process ends."""

    _held: RunLock | None = None  # this process's lock: one run at a time per process

    def __init__(self, run_dir: Path) -> None:
        self.run_dir, self.path = run_dir, run_dir / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunDirInUse` naming the live run's PID."""
        RunLock.release_held()  # an earlier run of this process (called in-process)
        if fcntl is None:
            return self
        with writing(self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirInUse(
                f"{self.run_dir} is in use by another run (pid {pid}); wait for it to end or "
                "choose another hydra.run.dir"
            ) from None
        except OSError as e:  # a file system without locks: run, unguarded, and say so
            os.close(fd)
            print(
                f"warning: cannot lock {self.path} ({os.strerror(e.errno)}); a second run into "
                "this directory would not be stopped",
                file=sys.stderr,
            )
            return self
        try:
            with writing(self.path):  # the PID, for the message a second run gets
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd, RunLock._held = fd, self
        return self

    @classmethod
    def release_held(cls) -> None:
        """Drop this process's lock, if it holds one."""
        if cls._held is not None:
            cls._held.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        if RunLock._held is self:
            RunLock._held = None


def previous_run(run_dir: Path) -> str | None:
    """What in ``run_dir`` shows that a run used it already: a phrase for the message, or None."""
    if (run_dir / "metrics.json").is_file():
        return "a finished run (metrics.json)"
    if any((run_dir / "checkpoints").glob("*.ckpt")):
        return "an interrupted run (checkpoints, no metrics.json)"
    logs = [d for d in ("tb", "csv") if (run_dir / d).is_dir() and any((run_dir / d).iterdir())]
    if logs:
        return f"another run's logs ({', '.join(d + '/' for d in logs)})"
    return None


def clear_run(run_dir: Path) -> None:
    """Remove what a run wrote into ``run_dir`` (:data:`RUN_DIRS`, :data:`RUN_FILES`, the job
    logs ``*.log``); other files stay."""
    for name in RUN_DIRS:
        path = run_dir / name
        if path.is_dir():
            with writing(path, doing="removing"):
                shutil.rmtree(path)
    for path in [*(run_dir / n for n in RUN_FILES), *run_dir.glob("*.log")]:
        with writing(path, doing="removing"):
            path.unlink(missing_ok=True)


def _inside(path: str, run_dir: Path) -> bool:
    return Path(path).expanduser().resolve().is_relative_to(run_dir.resolve())


def claim(run_dir: Path, ckpt_path: str | None, overwrite: bool, job_log: str) -> RunLock:
    """Lock ``run_dir`` for this run and check that the run may use it; with ``overwrite``,
    remove an earlier run's files. Creates the (empty) job log Hydra opens next, so that a
    directory that takes no new file fails here, in one line."""
    if overwrite and ckpt_path is not None and (ckpt_path == "last" or _inside(ckpt_path, run_dir)):
        raise ConfigError(
            f"overwrite=true would delete the checkpoint ckpt_path={ckpt_path} resumes from; "
            "drop one of them"
        )
    with writing(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).acquire()
    try:
        found = previous_run(run_dir)
        if found and overwrite:
            clear_run(run_dir)
        elif found and ckpt_path is None:
            resume = "" if found.startswith("another") else "add ckpt_path=last to continue it, "
            raise ConfigError(
                f"{run_dir} holds {found}: {resume}overwrite=true to replace it, or choose "
                "another hydra.run.dir"
            )
        with writing(run_dir / job_log):
            (run_dir / job_log).touch()
    except BaseException:
        lock.release()
        raise
    return lock


class RunDirGuard(Callback):
    """Hydra callback (``conf/train.yaml``): :func:`claim` the run directory of a single run
    before Hydra writes into it; release it when the run ends."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_rank_zero():
            return
        # The same config object run_job reads next: ${now:...} resolves to the same time.
        run_dir = Path(os.path.abspath(str(config.hydra.run.dir)))
        try:
            claim(
                run_dir,
                config.get("ckpt_path"),
                bool(config.get("overwrite", False)),
                f"{config.hydra.job.name}.log",
            )
        except Exception as e:
            if not is_known(e):
                raise
            report(e, verbose_errors(config))
            raise SystemExit(exit_status(e)) from None

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        RunLock.release_held()


def write_hydra_files(run_dir: Path, cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """``.hydra/overrides.yaml``, ``config.yaml`` and ``hydra.yaml``, as Hydra writes them, each
    atomically; a failed write raises a :class:`MachineError` naming the file."""
    folder = run_dir / HYDRA_FILES
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    files = {  # the overrides first: a sweep's summary names a job by them
        "overrides.yaml": hydra_cfg.overrides.task,
        "config.yaml": cfg,
        "hydra.yaml": OmegaConf.create({"hydra": hydra_cfg}),
    }
    for name, node in files.items():
        write_text_atomic(folder / name, OmegaConf.to_yaml(node))
