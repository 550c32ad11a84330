"""What a sweep costs beyond its jobs' own training, measured on the real command.

* **per job**: an 8-job sweep of the default run (the default launcher: jobs in turn, one process) and an
  8-trial ``hparams_search=optuna``: the time from the end of one job's ``fit`` to the start of
  the next one's is what a job costs beyond its own fit (Hydra's job set-up, handprop's
  building, evaluation and writing);
* **parallel**: the same 4-job sweep one job after another and with
  ``hydra/launcher=parallel`` (2 worker processes), wall time side by side.

    python scripts/bench_sweep.py [--reps 3]
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
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
