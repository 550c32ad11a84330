"""A sweep (``handprop-train -m ...``): its jobs, and one summary of every job, failed ones too.

Three launchers, each registered with Hydra in ``src/hydra_plugins/handprop_launcher``:
:class:`JobsInTurn`, the default (``conf/hydra/launcher/in_turn.yaml``), runs the jobs one
after another in this process; :func:`launch_in_parallel` is Hydra's joblib launcher
(``hydra/launcher=parallel``) and :func:`launch_on_slurm` Hydra's submitit launcher
(``hydra/launcher=slurm``: one SLURM job array). In all three a job fails alone: whatever stops
it, the machine refusing its directory included, is one line, the job is listed as failed in
``summary.json`` and the other jobs go on. The summary is a Hydra callback registered in
``conf/train.yaml``, which writes ``summary.json`` into the sweep directory and prints one line
per job.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
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
from omegaconf import DictConfig, OmegaConf, open_dict

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
                ret = failed_alone(self.context, job, list(overrides), err)
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


def failed_alone(
    context: HydraContext,
    config: DictConfig,
    overrides: list[str],
    err: BaseException,
    *,
    started: bool = False,
) -> JobReturn:
    """A job that failed outside handprop's own code (the machine refused its directory; SLURM
    ended it): ``err`` reported in one line, noted for ``summary.json``, and returned as a
    failing job's own return, so that the sweep goes on (a search: a failed trial). ``started``: the
    job's directory may exist (then the summary lists it there, with this error)."""
    report(err, verbose_errors(config))
    for cb in context.callbacks.callbacks:
        if isinstance(cb, SweepSummary):
            cb.failed_job(overrides, err, started=started)
    ret = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
    ret.return_value = None  # a search records a failed trial and goes on
    return ret


class SlurmJobError(Exception):
    """A SLURM job that ended without its job's result: cancelled, out of time or memory,
    its node lost, or an error outside handprop's code."""


class JobRefused(NamedTuple):
    """What a job run in another process (a joblib worker, a SLURM job) returns when the
    machine refused its directory or log: the launching process reports it."""

    overrides: list[str]
    error: str  # the MachineError's message


def run_refusable(
    run: Any, sweep_dir: str, overrides: Sequence[str], *args: Any
) -> JobReturn | JobRefused:
    """``run(*args)`` (Hydra's job runner), in a worker or a SLURM job: a write the machine
    refuses there comes back as a :class:`JobRefused`, not as an exception that would end
    the whole sweep."""
    try:
        return run(*args)
    except OSError as e:
        err = as_machine_error(e, sweep_dir)
        if not isinstance(err, MachineError):
            raise
        return JobRefused(list(overrides), str(err))


def _refusals_reported(
    launcher: Any, runs: Sequence[JobReturn | JobRefused], job_overrides: Sequence[Sequence[str]]
) -> list[JobReturn]:
    """Each :class:`JobRefused` in ``runs`` as a job that failed alone."""
    out = []
    for ret, overrides in zip(runs, job_overrides, strict=True):
        if isinstance(ret, JobRefused):
            job = launcher.hydra_context.config_loader.load_sweep_config(
                launcher.config, list(overrides)
            )
            ret = failed_alone(launcher.hydra_context, job, ret.overrides, MachineError(ret.error))
        out.append(ret)
    return out


# --------------------------------------------------------------------------------------------
# hydra/launcher=parallel: Hydra's joblib launcher, each job in a loky worker process
# --------------------------------------------------------------------------------------------
def _job_in_worker(
    idx: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> JobReturn | JobRefused:
    args = (idx, overrides, hydra_context, config, task_function, singleton_state)
    return run_refusable(_execute_job, str(config.hydra.sweep.dir), overrides, *args)


def _execute_job(
    idx: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> JobReturn:
    """One job in a joblib worker, as the joblib launcher 1.2 runs it, through Hydra's public
    API (its own ``execute_job`` lives in a private module)."""
    setup_globals()
    Singleton.set_state(singleton_state)
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        config=sweep_config,
        task_function=task_function,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def launch_in_parallel(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[JobReturn]:
    """Hydra's joblib launcher (``hydra_joblib_launcher._core.launch``, 1.2), except that a
    job whose directory or log the machine refuses fails alone, as in :class:`JobsInTurn`
    (there the OSError, raised in the worker, ended the whole ``Parallel`` call)."""
    from joblib import Parallel, delayed

    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    joblib_cfg = launcher.joblib
    joblib_cfg["backend"] = "loky"  # the threading backend is incompatible with Hydra
    for k in ("pre_dispatch", "batch_size", "max_nbytes"):  # as the joblib launcher reads them
        with suppress(ValueError):
            if joblib_cfg.get(k):
                joblib_cfg[k] = int(joblib_cfg.get(k))
    print(f"Launching {len(job_overrides)} jobs, {joblib_cfg.get('n_jobs')} at once", flush=True)
    for idx, overrides in enumerate(job_overrides, initial_job_idx):
        print(f"  #{idx}: {' '.join(filter_overrides(overrides))}", flush=True)
    singleton_state = Singleton.get_state()
    runs = Parallel(**joblib_cfg)(
        delayed(_job_in_worker)(
            initial_job_idx + idx,
            overrides,
            launcher.hydra_context,
            launcher.config,
            launcher.task_function,
            singleton_state,
        )
        for idx, overrides in enumerate(job_overrides)
    )
    return _refusals_reported(launcher, runs, job_overrides)


# --------------------------------------------------------------------------------------------
# hydra/launcher=slurm: Hydra's submitit launcher, one SLURM job array
# --------------------------------------------------------------------------------------------
def slurm_job(launcher: Any, run: Any, sweep_overrides: list[str], *args: Any) -> Any:
    """One job, inside its SLURM job: ``run`` is the submitit launcher's own ``__call__``."""
    ret = run_refusable(
        run, str(launcher.config.hydra.sweep.dir), sweep_overrides, sweep_overrides, *args
    )
    if isinstance(ret, JobRefused):
        report(MachineError(ret.error))  # the job's log says it too
    return ret


def _slurm_states(job_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{job id: {"State": ...}}`` from the controller (``squeue``), for clusters without
    accounting (no ``sacct``). A job the controller no longer lists (it forgets finished
    jobs after MinJobAge, 300 s by default) is reported as ``FINISHED``: a state that counts
    as done, so that a waiting sweep never waits for it forever."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    states: dict[str, dict[str, str]] = {}
    r = subprocess.run(
        ["squeue", "--noheader", "--array", "--states=all", "--format=%i|%T", "--jobs"]
        + [",".join(arrays)],
        capture_output=True,
        text=True,
    )
    for line in r.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        states[job_id] = {"JobID": job_id, "State": state}
    if r.returncode == 0 or "Invalid job id" in r.stderr:
        for j in job_ids:
            states.setdefault(j, {"JobID": j, "State": "FINISHED"})
    return states


#: SLURM job states of a job still under way (``squeue``'s long names).
ACTIVE_STATES = frozenset(
    {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
     "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED"}
)  # fmt: skip


def _has_results(job: Any) -> bool:
    """Whether every task of ``job`` (the DDP ranks of one job) left its result."""
    return all(job.task(k).paths.result_pickle.exists() for k in range(job.num_tasks))


def _wait_for(jobs: Sequence[Any]) -> dict[str, str]:
    """Wait until every job has left its results or SLURM no longer runs it (``squeue``:
    submitit's own wait asks ``sacct``, which a cluster without accounting does not answer,
    and waits forever for a job that ended without a result). Returns the last state seen
    of each job without results, by job id."""
    while True:
        pending = [j for j in jobs if not _has_results(j)]
        if not pending:
            return {}
        states = _slurm_states([j.job_id for j in pending])
        seen = {j.job_id: states.get(j.job_id, {}).get("State", "FINISHED") for j in pending}
        if not any(s.split()[0] in ACTIVE_STATES for s in seen.values()):
            time.sleep(1)  # a result written as the job ended
            return {j.job_id: seen[j.job_id] for j in jobs if not _has_results(j)}
        time.sleep(1)


def launch_on_slurm(
    launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
) -> list[JobReturn]:
    """Hydra's submitit launcher (``BaseSubmititLauncher.launch``, 1.2: one job array of the
    sweep's jobs), waiting in a way that a job SLURM ended without a result (cancelled, out of
    time or memory, its node lost) or whose directory the machine refused fails alone: one
    line naming its SLURM job and log, listed as failed in ``summary.json``. submitit's own
    wait raises for such a job (ending the sweep), and on a cluster without accounting
    (``sacct``) never learns that it ended."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    config = launcher.config
    params = dict(launcher.params)
    init_keys = {"submitit_folder", "max_num_timeout"}
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=params["submitit_folder"],
        slurm_max_num_timeout=params["max_num_timeout"],
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{(k if k in base else f"slurm_{k}"): v for k, v in params.items() if k not in init_keys}
    )
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in config.hydra.sweep:
        sweep_dir.chmod(int(str(config.hydra.sweep.mode), 8))
    print(f"Submitting {len(job_overrides)} jobs to SLURM as one job array", flush=True)
    job_params = []
    for idx, overrides in enumerate(job_overrides, initial_job_idx):
        print(f"  #{idx}: {' '.join(filter_overrides(overrides))}", flush=True)
        job_params.append(
            (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
        )
    jobs = executor.map_array(launcher, *zip(*job_params, strict=True))
    logs = Path(str(params["submitit_folder"]).replace("%j", "")).resolve()
    print(
        f"SLURM job array {jobs[0].job_id.split('_')[0]}: waiting for its {len(jobs)} jobs "
        f"(logs in {logs})",
        flush=True,
    )
    ended = _wait_for(jobs)
    runs: list[JobReturn | JobRefused] = []
    for job, (overrides, _, idx, *_rest) in zip(jobs, job_params, strict=True):
        what = f"#{idx} ({' '.join(filter_overrides(overrides)) or 'defaults'})"
        log = job.task(0).paths.stderr
        # Every task's result: the DDP ranks of one job are its tasks (rank 0's is returned).
        try:
            ret = job.results()[0] if job.job_id not in ended else None
        except submitit.core.utils.FailedJobError as e:
            last = [ln for ln in str(e).splitlines() if ln.strip()][-1:] or ["failed"]
            err = SlurmJobError(
                f"SLURM job {job.job_id}, sweep job {what}, failed: {last[0].strip()}; see {log}"
            )
            ret = None
        else:
            err = SlurmJobError(
                f"SLURM job {job.job_id}, sweep job {what}, ended without a result "
                f"(state {ended.get(job.job_id, 'unknown')}); see {log}"
            )
        if ret is None:
            job_cfg = launcher.hydra_context.config_loader.load_sweep_config(config, overrides)
            ret = failed_alone(launcher.hydra_context, job_cfg, overrides, err, started=True)
        runs.append(ret)
    return _refusals_reported(launcher, runs, job_overrides)


def summarize(sweep_dir: Path) -> dict[str, Any]:
    """Collect ``metrics.json`` / ``error.json`` of every job directory under ``sweep_dir``.
    A job's directory is named after its overrides, so a value with a ``/`` in it (e.g.
    ``ckpt_path=/path/last.ckpt``) puts it in sub-folders: ``dir`` is the path from
    ``sweep_dir``."""
    found = (p.parent.relative_to(sweep_dir) for p in sweep_dir.rglob(".hydra") if p.is_dir())
    jobs = []
    for name in sorted((r for r in found if not r.parts[0].startswith(".")), key=_job_num):
        d = sweep_dir / name
        overrides, name = _overrides(d), str(name)
        if (d / "metrics.json").is_file():
            m = json.loads((d / "metrics.json").read_text())
            test = {k: v for k, v in m.items() if k.startswith("test/")}
            jobs.append({"dir": name, "overrides": overrides, "status": "ok", "metrics": test})
        else:
            err, status = "did not finish (no metrics.json)", "failed"
            if (d / "error.json").is_file():
                found = json.loads((d / "error.json").read_text())
                err, status = found.get("error", err), found.get("status", status)
            jobs.append({"dir": name, "overrides": overrides, "status": status, "error": err})
    return {"sweep_dir": str(sweep_dir), "jobs": jobs}


def _job_num(rel: Path) -> int:
    head = rel.parts[0].split("_", 1)[0]
    return int(head) if head.isdigit() else 1 << 30


def _overrides(d: Path) -> list[str]:
    f = d / ".hydra" / "overrides.yaml"
    if not f.is_file():
        return []
    return [ln[2:].strip() for ln in f.read_text().splitlines() if ln.startswith("- ")]


class SweepSummary(Callback):
    """Hydra callback: summarise the sweep when it ends."""

    def __init__(self) -> None:
        # Jobs that failed outside handprop's code (see failed_alone), maybe without a
        # directory on disk, by their overrides.
        self.failed: list[dict[str, Any]] = []

    def failed_job(self, overrides: list[str], err: BaseException, started: bool = False) -> None:
        """A job that failed outside handprop's own code (see :func:`failed_alone`); when it
        ``started``, its directory may be on disk, and is listed there with this error."""
        self.failed.append(
            {
                "dir": None,
                "overrides": overrides,
                "status": "failed",
                "error": f"{type(err).__name__}: {err}",
                "started": started,
            }
        )

    def _with_failed(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``jobs`` (from disk) with the noted failures: a started job's error replaces the
        disk's 'did not finish' (handprop's own error.json, when there is one, stays); a job
        with no directory on disk is added at the end."""
        out = list(jobs)
        for f in self.failed:
            entry = {k: v for k, v in f.items() if k != "started"}
            on_disk = [j for j in jobs if f["started"] and j["overrides"] == f["overrides"]]
            if not on_disk:
                out.append(entry)
            elif on_disk[0]["status"] == "failed" and on_disk[0]["error"].startswith(
                "did not finish"
            ):
                on_disk[0]["error"] = entry["error"]
        return out

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
        summary["jobs"] = self._with_failed(summary["jobs"])
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
