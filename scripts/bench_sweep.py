"""What a sweep costs beyond its jobs' own training, measured on the real command.

* **per job**: an 8-job sweep of the default run (the default launcher: jobs in turn, one process) and an
  8-trial ``hparams_search=optuna``: the time from the end of one job's ``fit`` to the start of
  the next one's is what a job costs beyond its own fit (Hydra's job set-up, handprop's
  building, evaluation and writing);
* **parallel**: the same 4-job sweep one job after another and with
  ``hydra/launcher=parallel`` (2 worker processes), wall time side by side;
* **slurm** (``--slurm``, on a running cluster, e.g. ``scripts/slurm-local start`` and its
  ``SLURM_CONF``): the same 4-job sweep as a SLURM job array, one job at a time
  (``array_parallelism=1``) and side by side (one CPU each); what a job costs on SLURM beyond
  the in-turn launcher's is (one at a time − one after another) / 4.

    python scripts/bench_sweep.py [--reps 3] [--slurm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

# The child: handprop-train with each Trainer.fit's start and end printed.
CHILD = """
import sys, time
import lightning as L
fit = L.Trainer.fit
def timed(self, *a, **k):
    print("FIT_START", time.time(), flush=True)
    try:
        return fit(self, *a, **k)
    finally:
        print("FIT_END", time.time(), flush=True)
L.Trainer.fit = timed
sys.argv = ["handprop-train", *sys.argv[1:]]
from handprop.trainer.train import main
main()
"""


def between_fits(args: list[str]) -> list[float]:
    """Seconds from each job's fit end to the next job's fit start."""
    r = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True
    )
    marks = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("FIT_")]
    starts = [float(t) for k, t in marks if k == "FIT_START"]
    ends = [float(t) for k, t in marks if k == "FIT_END"]
    return [s - e for s, e in zip(starts[1:], ends[:-1], strict=True)]


def wall(args: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "handprop.trainer.train", *args], capture_output=True, check=True
    )
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions (medians)")
    ap.add_argument("--slurm", action="store_true", help="only the SLURM launcher's walls")
    args = ap.parse_args()
    if args.slurm:
        return slurm(args.reps)
    os.environ["PYTHONWARNINGS"] = "ignore"
    gaps: dict[str, list[float]] = {"8-job sweep": [], "optuna, 8 trials": []}
    walls: dict[str, list[float]] = {"one after another": [], "hydra/launcher=parallel": []}
    four = ["-m", "seed=1,2,3,4", "trainer.max_epochs=30", "num_threads=1", "progress=false"]
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):  # interleaved repetitions
            d = f"{tmp}/{rep}"
            gaps["8-job sweep"] += between_fits(
                ["-m", "seed=1,2,3,4,5,6,7,8", "progress=false", f"hydra.sweep.dir={d}/s"]
            )
            gaps["optuna, 8 trials"] += between_fits(
                [
                    "hparams_search=optuna",
                    "hydra.sweeper.n_trials=8",
                    "progress=false",
                    f"hydra.sweep.dir={d}/o",
                ]
            )
            walls["one after another"].append(wall([*four, f"hydra.sweep.dir={d}/a"]))
            walls["hydra/launcher=parallel"].append(
                wall([*four, "hydra/launcher=parallel", f"hydra.sweep.dir={d}/b"])
            )
    print(f"| a job beyond its own fit (s, {args.reps} sweeps) | median | range |")
    print("|---|---:|---|")
    for k, v in gaps.items():
        print(f"| {k} | {statistics.median(v):.2f} | {min(v):.2f}–{max(v):.2f} |")
    print(f"\n| 4 jobs (30 epochs each), wall s, median of {args.reps} | s |")
    print("|---|---:|")
    for k, v in walls.items():
        print(f"| {k} | {statistics.median(v):.1f} |")


def slurm(reps: int) -> None:
    """4 jobs in turn, and as a SLURM job array one at a time and side by side."""
    os.environ["PYTHONWARNINGS"] = "ignore"
    four = ["-m", "seed=1,2,3,4", "trainer.max_epochs=30", "num_threads=1", "progress=false"]
    on_slurm = [
        "hydra/launcher=slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
    ]
    walls: dict[str, list[float]] = {
        "one after another (in turn)": [],
        "SLURM, one at a time": [],
        "SLURM, side by side (1 CPU each)": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):  # interleaved repetitions
            d = f"{tmp}/{rep}"
            walls["one after another (in turn)"].append(wall([*four, f"hydra.sweep.dir={d}/a"]))
            walls["SLURM, one at a time"].append(
                wall(
                    [
                        *four,
                        *on_slurm,
                        "hydra.launcher.array_parallelism=1",
                        f"hydra.sweep.dir={d}/b",
                    ]
                )
            )
            walls["SLURM, side by side (1 CPU each)"].append(
                wall([*four, *on_slurm, f"hydra.sweep.dir={d}/c"])
            )
    print(f"| 4 jobs (30 epochs each), wall s, median of {reps} | s | range |")
    print("|---|---:|---|")
    for k, v in walls.items():
        print(f"| {k} | {statistics.median(v):.1f} | {min(v):.1f}–{max(v):.1f} |")
    per_job = [
        (b - a) / 4
        for a, b in zip(
            walls["one after another (in turn)"], walls["SLURM, one at a time"], strict=True
        )
    ]
    print(f"\na job on SLURM beyond in turn: {statistics.median(per_job):.1f} s (median)")


if __name__ == "__main__":
    main()
