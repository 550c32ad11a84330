"""A sweep (``handprop-train -m ...``): its jobs one after another, and one summary of every
job, failed ones too.

:class:`JobsInTurn` is the default launcher (``conf/hydra/launcher/in_turn.yaml``); the summary
is a Hydra callback registered in ``conf/train.yaml``, which writes ``summary.json`` into the
sweep directory and prints one line per job.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from handprop.trainer.cli import report, verbose_errors
from handprop.trainer.errors import MachineError, as_machine_error
from handprop.trainer.files import write_json_atomic
from handprop.trainer.rundir import is_rank_zero
from handprop.trainer.stops import stop_requested


class JobsInTurn(Launcher):
    """Hydra's basic launcher (the jobs one after another, in this process), except for what
    Hydra itself writes for a job before handprop's code runs (the job's directory, its log):
    when the machine refuses that write, the job is reported in one line and listed as failed
    in ``summary.json``, and the sweep goes on with the next job, as for any failing job.

    Ctrl-C or SIGTERM (:func:`handprop.trainer.stops.stop_requested`) stops the job under way (it
    writes its ``last.ckpt`` and prints how to resume it) and the sweep: no further job
    starts, ``summary.json`` lists the stopped job and those not run, and the process ends
    with status 128 + the signal's number."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        assert self.config is not None and self.context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        print(f"Launching {len(job_overrides)} jobs, one after another", flush=True)
        runs = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            if stop_requested() is not None:
                self.stop(job_overrides[idx - initial_job_idx :])
            print(f"  #{idx}: {' '.join(filter_overrides(overrides))}", flush=True)
            job = self.context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(job):
                job.hydra.job.id = job.hydra.job.num = idx
            try:
                ret = run_job(
                    hydra_context=self.context,
                    task_function=self.task_function,
                    config=job,
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
            except OSError as e:
                err = as_machine_error(e, self.config.hydra.sweep.dir)
                if not isinstance(err, MachineError):
                    raise
                report(err, verbose_errors(job))
                for cb in self.context.callbacks.callbacks:
                    if isinstance(cb, SweepSummary):
                        cb.unstarted_job(list(overrides), err)
                # As a failing job's own return: the sweep goes on (a search: a failed trial).
                ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
                ret.return_value = None
            runs.append(ret)
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        if stop_requested() is not None:
            self.stop([])
        # summary.json as the jobs so far left it: a search asks for batch after batch, and may
        # end in an error of its own (Optuna's when every trial failed) before the callback.
        for cb in self.context.callbacks.callbacks:
            if isinstance(cb, SweepSummary):
                cb.write(self.config, quiet=True)
        return runs

    def stop(self, not_run: Any) -> None:
        """End the sweep on a stop request: ``summary.json`` with the jobs ``not_run``, then
        exit with status 128 + the signal's number."""
        assert self.config is not None and self.context is not None
        signum = stop_requested()
        assert signum is not None
        for cb in self.context.callbacks.callbacks:
            if isinstance(cb, SweepSummary):
                cb.write(self.config, [list(o) for o in not_run], signum)
        raise SystemExit(128 + signum)


def summarize(sweep_dir: Path) -> dict[str, Any]:
    """Collect ``metrics.json`` / ``error.json`` of every job directory under ``sweep_dir``."""
    jobs = []
    for d in sorted((p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir()), key=_job_num):
        overrides = _overrides(d)
        if (d / "metrics.json").is_file():
            m = json.loads((d / "metrics.json").read_text())
            test = {k: v for k, v in m.items() if k.startswith("test/")}
            jobs.append({"dir": d.name, "overrides": overrides, "status": "ok", "metrics": test})
        else:
            err, status = "did not finish (no metrics.json)", "failed"
            if (d / "error.json").is_file():
                found = json.loads((d / "error.json").read_text())
                err, status = found.get("error", err), found.get("status", status)
            jobs.append({"dir": d.name, "overrides": overrides, "status": status, "error": err})
    return {"sweep_dir": str(sweep_dir), "jobs": jobs}


def _job_num(d: Path) -> int:
    head = d.name.split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


def _overrides(d: Path) -> list[str]:
    f = d / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return []
    return [ln[2:].strip() for ln in f.read_text().splitlines() if ln.startswith("- ")]


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep when it ends."""

    def __init__(self) -> None:
        # Jobs that failed before Hydra made their directory (see JobsInTurn): not on disk.
        self.unstarted: list[dict[str, Any]] = []

    def unstarted_job(self, overrides: list[str], err: MachineError) -> None:
        """A job that failed before Hydra made its directory (see :class:`JobsInTurn`)."""
        self.unstarted.append(
            {
                "dir": None,
                "overrides": overrides,
                "status": "failed",
                "error": f"MachineError: {err}",
            }
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.write(config):
            # The sweep ran to its end; its exit status says that jobs failed.
            raise SystemExit(1)

    def write(
        self,
        config: DictConfig,
        not_run: list[list[str]] | None = None,
        signum: int | None = None,
        quiet: bool = False,
    ) -> int:
        """Write ``summary.json`` and print one line per job (``quiet``: none); return the
        number of jobs that did not succeed. A sweep stopped by signal ``signum`` lists the
        jobs ``not_run`` too, and says so (``"stopped": "SIGTERM"``)."""
        if not is_rank_zero():
            return 0  # a DDP worker re-running the command: rank 0 writes the summary
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return 0
        summary = summarize(sweep_dir)
        summary["jobs"] += self.unstarted
        for overrides in not_run or []:
            summary["jobs"].append({"dir": None, "overrides": overrides, "status": "not run"})
        if signum is not None:
            summary["stopped"] = signal.Signals(signum).name
        failed = sum(job["status"] != "ok" for job in summary["jobs"])
        try:
            write_json_atomic(sweep_dir / "summary.json", summary)
        except MachineError as e:
            if quiet:  # the sweep goes on; its last summary reports a failed write
                return failed
            report(e, verbose_errors(config))
            raise SystemExit(1) from None
        if quiet:
            return failed
        print(f"\nsweep summary ({sweep_dir}/summary.json):")
        for job in summary["jobs"]:
            what = " ".join(job["overrides"]) or "(defaults)"
            if job["status"] == "ok":
                ms = ", ".join(
                    f"{k}={v:.4g}" for k, v in job["metrics"].items() if k != "test/loss"
                )
                print(f"  ok      {what}: {ms}")
            elif job["status"] == "not run":
                print(f"  NOT RUN {what}")
            else:
                print(f"  {job['status'].upper():<7} {what}: {job['error']}")
        if signum is not None:
            print(f"sweep stopped by {summary['stopped']}: no job started after it")
        print(f"tensorboard --logdir {sweep_dir}")
        return failed
