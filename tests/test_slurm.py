"""hydra/launcher=slurm on a real cluster: a one-node SLURM cluster on this machine
(``scripts/slurm-local``: Debian's slurmctld, slurmd and munge, loopback only).

The cluster is started here when it is not running (and stopped again at the end); CI starts
it itself (``.ci/run``). Where it cannot run (not root, no package manager, the packages will
not install, no submitit launcher) the tests are skipped with the reason; with
``HANDPROP_REQUIRE_SLURM=1`` (set in CI) that is a failure instead.

Every command is ``python -m handprop.trainer.train`` in a subprocess, as a user would run it; the SLURM
jobs run the same interpreter (submitit's job script names it) with this process's environment
(``sbatch`` passes it on), so they run this checkout's code.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from runs import run, sweep

pytestmark = pytest.mark.usefixtures("restore_process_state")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local"
# Each job one CPU and 1 GB, so that the one node (the machine's cores) runs jobs side by side.
ON_SLURM = (
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
)
# One thread per job: the same arithmetic in every process, so results compare exactly.
SMALL = ("data.n_samples=300", "num_threads=1")
QUIET = ("logger=none", "progress=false")  # last, in the order tests/runs.py's sweep adds them
TIMING = ("train_seconds",)  # the only metrics.json entry that differs between equal runs


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """The environment for commands that use the cluster (its SLURM_CONF)."""

    def unavailable(reason: str) -> None:
        if os.environ.get("HANDPROP_REQUIRE_SLURM") == "1":
            pytest.fail(f"HANDPROP_REQUIRE_SLURM=1, but {reason}", pytrace=False)
        pytest.skip(reason)

    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        unavailable('hydra-submitit-launcher is not installed (pip install -e ".[scale]")')
    if os.geteuid() != 0:
        unavailable("a one-node SLURM cluster (scripts/slurm-local) runs as root only")
    conf = subprocess.run([SCRIPT, "env"], capture_output=True, text=True, check=True)
    env = cli_env(SLURM_CONF=conf.stdout.strip().split("=", 1)[1])
    started = False
    if subprocess.run([SCRIPT, "status"], capture_output=True, env=env).returncode != 0:
        r = subprocess.run([SCRIPT, "start"], capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            unavailable(f"no SLURM cluster: {r.stderr.strip().splitlines()[-1]}")
        started = True
    yield env
    if started:
        subprocess.run([SCRIPT, "stop"], capture_output=True, timeout=60)


def cli_env(**extra: str) -> dict[str, str]:
    drop = ("PL_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_", "HYDRA_FULL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop + ("SLURM_",))}
    env.update(extra)
    return env


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """``handprop-train ARGS`` started in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "handprop.trainer.train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(p: subprocess.Popen, timeout: float = 240) -> subprocess.CompletedProcess:
    """Wait for ``p``; on timeout it is killed with its process group and the test fails."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(
            f"{' '.join(p.args)} did not finish in {timeout} s:\n{out[-2000:]}{err[-3000:]}"
        )
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    assert "srun` command is available" not in r.stderr, r.stderr[-4000:]


def summary_jobs(sweep_dir: Path) -> list[dict]:
    return json.loads((sweep_dir / "summary.json").read_text())["jobs"]


def files_in(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}


def metrics(d: Path) -> dict[str, float]:
    m = json.loads((d / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in TIMING}


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_a_sweep_is_a_job_array_with_the_in_turn_launchers_results(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """``-m hydra/launcher=slurm seed=1,2,3 trainer.max_epochs=2``: one SLURM job array of 3;
    the command waits for it, then each job's directory holds the same files as with the
    default launcher (jobs in turn, here in this process meanwhile) and the same metrics, and
    summary.json lists the same jobs with the same results."""
    jobs = ("seed=1,2,3", "trainer.max_epochs=2")
    on_slurm = start(
        ["-m", *ON_SLURM, *SMALL, *jobs, *QUIET, f"hydra.sweep.dir={tmp_path / 'slurm'}"],
        slurm_env,
        tmp_path,
    )
    in_turn = sweep(tmp_path / "in_turn", *SMALL, *jobs)
    r = finish(on_slurm)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    no_traceback(r)
    assert "Submitting 3 jobs to SLURM as one job array" in r.stdout
    arrays = {p.name.split("_")[0] for p in (tmp_path / "slurm" / ".submitit").glob("[0-9]*")}
    assert len(arrays) == 1, arrays  # one array, not three jobs
    on_slurm_jobs = summary_jobs(tmp_path / "slurm")
    assert [j["status"] for j in on_slurm_jobs] == ["ok"] * 3, on_slurm_jobs
    assert on_slurm_jobs == in_turn  # dirs, overrides and test metrics, exactly
    for job in in_turn:
        a, b = tmp_path / "slurm" / job["dir"], tmp_path / "in_turn" / job["dir"]
        assert files_in(a) == files_in(b)
        assert metrics(a) == metrics(b)


def test_a_failing_job_fails_alone(slurm_env: dict[str, str], tmp_path: Path) -> None:
    """A job whose CSV is bad fails in its SLURM job with handprop's one line, listed as failed
    in summary.json; the other job of the array finishes; the command exits 1 at the end."""
    rows = [f"{i % 7},{i % 5},{(i % 7) + 2 * (i % 5)}" for i in range(120)]
    (tmp_path / "good.csv").write_text("a,b,y\n" + "\n".join(rows) + "\n")
    rows[5] = "1,seven,3"
    (tmp_path / "bad.csv").write_text("a,b,y\n" + "\n".join(rows) + "\n")
    r = finish(
        start(
            [
                "-m",
                *ON_SLURM,
                "num_threads=1",
                *QUIET,
                "data=csv",
                "task=regression",
                "data.target=y",
                "data.path=good.csv,bad.csv",  # in the command's folder (no / in a job's name)
                "trainer.max_epochs=1",
                f"hydra.sweep.dir={tmp_path / 'sweep'}",
            ],
            slurm_env,
            tmp_path,
        )
    )
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-4000:]  # the sweep says: one failed
    no_traceback(r)
    good, bad = summary_jobs(tmp_path / "sweep")
    assert good["status"] == "ok" and "good.csv" in " ".join(good["overrides"])
    assert bad["status"] == "failed" and "bad.csv" in " ".join(bad["overrides"])
    assert "'seven'" in bad["error"] and "not a number" in bad["error"]
    assert "\n" not in bad["error"]
    assert f"FAILED  {' '.join(bad['overrides'])}: {bad['error']}" in r.stdout


# The 2-process DDP run that tests/test_scale.py checks against one process (property_prices,
# 200 rows, 4 epochs of SGD, batch 8 per rank).
DDP = (
    "data.n_samples=200",
    "trainer.max_epochs=4",
    "optimizer=sgd",
    "gd=minibatch",
    "seed=7",
    "gd.batch_size=8",
    "logger=none",
    "progress=false",
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
)


def test_ddp_started_by_slurm_equals_ddp_started_by_lightning(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """``hydra.launcher.tasks_per_node=2 trainer=ddp trainer.devices=2``: srun starts both
    ranks (``--ntasks-per-node=2``, two submitit tasks) and Lightning takes SLURM's ranks
    instead of starting rank 1 itself (which leaves ``train_ddp_process_1.log``, as in the
    run started without SLURM here). Same data, same all-reduce: the same weights, exactly."""
    on_slurm = start(
        [
            "-m",
            *ON_SLURM,
            "hydra.launcher.tasks_per_node=2",
            *DDP,
            f"hydra.sweep.dir={tmp_path / 'slurm'}",
        ],
        slurm_env,
        tmp_path,
    )
    by_lightning = finish(
        start([*DDP, f"hydra.run.dir={tmp_path / 'lightning'}"], cli_env(), tmp_path)
    )
    assert by_lightning.returncode == 0, by_lightning.stderr[-4000:]
    no_traceback(by_lightning)  # nor Lightning's hint that srun is installed but unused
    r = finish(on_slurm)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    no_traceback(r)
    (job,) = summary_jobs(tmp_path / "slurm")
    run_dir, ref = tmp_path / "slurm" / job["dir"], tmp_path / "lightning"
    (task_dir,) = (tmp_path / "slurm" / ".submitit").glob("[0-9]*")  # one job: no array
    # srun started two tasks (ranks), each with its own result
    assert sorted(p.name.rsplit("_", 2)[-2] for p in task_dir.glob("*_result.pkl")) == ["0", "1"]
    assert (ref / "train_ddp_process_1.log").is_file()  # Lightning's own rank 1 ...
    assert not (run_dir / "train_ddp_process_1.log").exists()  # ... not started under SLURM
    ours, theirs = (
        weights(run_dir / "checkpoints" / "last.ckpt"),
        weights(ref / "checkpoints" / "last.ckpt"),
    )
    assert ours.keys() == theirs.keys()
    for name, w in theirs.items():
        assert torch.equal(ours[name], w), name
    assert metrics(run_dir) == metrics(ref)


def test_a_cancelled_job_leaves_last_ckpt_and_resumes_exactly(
    slurm_env: dict[str, str], tmp_path: Path
) -> None:
    """``scancel`` while the job trains (a checkpoint at every epoch's end): the job ends,
    the sweep reports it in one line naming the SLURM job (state CANCELLED) and its log, and
    lists it as failed; its ``last.ckpt`` is whole. Resubmitted with ``ckpt_path=`` that
    checkpoint, the job finishes with the weights and metrics of a run never interrupted."""
    args = [
        "data.n_samples=4000",
        "gd=minibatch",
        "trainer.max_epochs=60",
        "callbacks.checkpoint.every_seconds=0",
        "logger=none",
        "progress=false",
        "num_threads=1",
    ]
    first = start(
        ["-m", *ON_SLURM, *args, f"hydra.sweep.dir={tmp_path / 'first'}"], slurm_env, tmp_path
    )
    deadline = time.monotonic() + 180
    while not list((tmp_path / "first").glob("0_*/checkpoints/last.ckpt")):
        assert first.poll() is None and time.monotonic() < deadline, finish(first).stderr
        time.sleep(0.05)
    (task_dir,) = (tmp_path / "first" / ".submitit").glob("[0-9]*")  # one job: no array
    subprocess.run(["scancel", task_dir.name], env=slurm_env, check=True)
    r = finish(first)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-4000:]
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert line.startswith(f"error: SLURM job {task_dir.name}, sweep job #0 ")
    assert line.endswith(
        f"ended without a result (state CANCELLED); see {task_dir}/{task_dir.name}_0_log.err"
    )
    (job,) = summary_jobs(tmp_path / "first")
    assert job["status"] == "failed" and job["error"] == f"SlurmJobError: {line[7:]}"
    last = tmp_path / "first" / job["dir"] / "checkpoints" / "last.ckpt"
    stopped_at = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
    assert stopped_at < 59, "the job finished before it was cancelled: cancel sooner"
    assert not (tmp_path / "first" / job["dir"] / "metrics.json").exists()

    resume = [f"ckpt_path='{last}'", "verbose=true"]  # verbose: Lightning's INFO lines logged
    again = start(
        ["-m", *ON_SLURM, *args, *resume, f"hydra.sweep.dir={tmp_path / 'again'}"],
        slurm_env,
        tmp_path,
    )
    whole = run(tmp_path / "whole", *args)  # never interrupted, here meanwhile
    r = finish(again)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    no_traceback(r)
    (job,) = summary_jobs(tmp_path / "again")
    resumed = tmp_path / "again" / job["dir"]
    # it resumed (a run from scratch would end with the same weights too)
    assert (
        f"Restored all states from the checkpoint at {last}" in (resumed / "train.log").read_text()
    )
    assert metrics(resumed) == {k: v for k, v in whole.items() if k not in TIMING}
    ours, theirs = (
        weights(resumed / "checkpoints" / "last.ckpt"),
        weights(tmp_path / "whole" / "checkpoints" / "last.ckpt"),
    )
    for name, w in theirs.items():
        assert torch.equal(ours[name], w), name
