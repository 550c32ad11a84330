"""What a sweep costs beyond its jobs' own training, measured on the real command.

* **per job**: an 8-job sweep of the default run (the default launcher: jobs in turn, one process) and an
  8-trial ``hparams_search=optuna``: the time from the end of one job's ``fit`` to the start of
  the next one's is what a job costs beyond its own fit (Hydra's job set-up, handprop's
  building, evaluation and writing);
* **parallel**: the same 4-job sweep one job after another and with
  ``hydra/launcher=parallel`` (2 worker processes), wall time side by side;
* **vectorized** (``--part vectorized``): whole processes, wall time: one default run (and its
  start-up: wall − fit), 64 jobs of the default run (8 lr × 8 seeds) with
  ``hydra/launcher=vectorized`` and in turn, scikit-learn's ``MLPRegressor`` fitting the same
  4-5-1 network (60 epochs, batch 32, Adam), one job of ``experiment=digits`` settings
  (64-64-10, batch 32) and 16 of them (4 lr × 4 seeds) vectorised and in turn; then the
  targets as ratios.

* **slurm** (``--slurm``, on a running cluster, e.g. ``scripts/slurm-local start`` and its
  ``SLURM_CONF``): the same 4-job sweep as a SLURM job array, one job at a time
  (``array_parallelism=1``) and side by side (one CPU each); what a job costs on SLURM beyond
  the in-turn launcher's is (one at a time − one after another) / 4.

    python scripts/bench_sweep.py [--reps 3] [--part all|overhead|vectorized] [--no-in-turn] [--slurm]
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


def fit_and_wall(args: list[str]) -> tuple[float, float]:
    """A whole process's wall time and the time its fit took (s)."""
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True
    )
    total = time.perf_counter() - t
    marks = [ln.split() for ln in r.stdout.splitlines() if ln.startswith("FIT_")]
    starts = [float(x) for k, x in marks if k == "FIT_START"]
    ends = [float(x) for k, x in marks if k == "FIT_END"]
    return total, sum(e - s for s, e in zip(starts, ends, strict=True))


def sklearn_fit() -> float:
    """scikit-learn's fit of the default run's 4-5-1 network on its training rows (s)."""
    import warnings

    import numpy as np
    from hydra import compose, initialize_config_module
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPRegressor

    from handprop.trainer.build import data_of
    from handprop.trainer.datasets import DATA_TASKS

    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        cfg = compose(config_name="train")
    dm = data_of(cfg, DATA_TASKS[cfg.data.name])
    X, y = (t.numpy() for t in dm.split("train"))
    model = MLPRegressor(
        hidden_layer_sizes=(5,),
        solver="adam",
        learning_rate_init=0.01,
        batch_size=32,
        max_iter=60,
        tol=0.0,
        n_iter_no_change=10**9,
        shuffle=True,
        random_state=0,
    )
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, np.ravel(y))
    return time.perf_counter() - t


def vectorized(reps: int, in_turn: bool) -> None:
    """The vectorised launcher against one run, the in-turn launcher and scikit-learn."""
    lrs = "optimizer.lr=0.001,0.002,0.003,0.005,0.01,0.02,0.03,0.05"
    seeds = "seed=1,2,3,4,5,6,7,8"
    digits = ["experiment=digits", "model.hidden=[64]", "trainer.max_epochs=20"]
    quiet = ["progress=false", "num_threads=1"]
    t: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        t.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(reps):  # interleaved repetitions
            d = f"{tmp}/{rep}"
            wall, fit = fit_and_wall([*quiet, f"hydra.run.dir={d}/one"])
            add("one default run", wall)
            add("its fit", fit)
            add("its start-up (wall - fit)", wall - fit)
            add("scikit-learn fit, one job", sklearn_fit())
            vec = ["-m", "hydra/launcher=vectorized", lrs, seeds, *quiet]
            add("64 jobs, vectorized", wall_of([*vec, f"hydra.sweep.dir={d}/v"]))
            if in_turn:
                add(
                    "64 jobs, in turn",
                    wall_of(["-m", lrs, seeds, *quiet, f"hydra.sweep.dir={d}/t"]),
                )
            add("one digits job", fit_and_wall([*digits, *quiet, f"hydra.run.dir={d}/d"])[0])
            four = ["optimizer.lr=0.0003,0.001,0.003,0.01", "seed=1,2,3,4"]
            add(
                "16 digits jobs, vectorized",
                wall_of(
                    [
                        "-m",
                        "hydra/launcher=vectorized",
                        *digits,
                        *four,
                        *quiet,
                        f"hydra.sweep.dir={d}/dv",
                    ]
                ),
            )
            if in_turn:
                add(
                    "16 digits jobs, in turn",
                    wall_of(["-m", *digits, *four, *quiet, f"hydra.sweep.dir={d}/dt"]),
                )
    med = {k: statistics.median(v) for k, v in t.items()}
    print(f"| whole processes, wall s (median of {reps}) | median | range |")
    print("|---|---:|---|")
    for k, v in t.items():
        print(f"| {k} | {med[k]:.2f} | {min(v):.2f}–{max(v):.2f} |")
    per_job = (med["64 jobs, vectorized"] - med["its start-up (wall - fit)"]) / 64
    print("\n| target | measured | bar |")
    print("|---|---:|---:|")
    print(
        f"| 64 jobs vectorized / one run | {med['64 jobs, vectorized'] / med['one default run']:.2f} | ≤ 3 |"
    )
    print(
        f"| (64 jobs − start-up) / 64 / scikit-learn's fit | "
        f"{per_job / med['scikit-learn fit, one job']:.3f} | ≤ 0.1 |"
    )
    print(
        f"| 16 digits jobs vectorized / one digits job | "
        f"{med['16 digits jobs, vectorized'] / med['one digits job']:.2f} | ≤ 4 |"
    )
    if in_turn:
        print(
            f"| 64 jobs in turn / vectorized | {med['64 jobs, in turn'] / med['64 jobs, vectorized']:.2f} | |"
        )
        print(
            f"| 16 digits jobs in turn / vectorized | "
            f"{med['16 digits jobs, in turn'] / med['16 digits jobs, vectorized']:.2f} | |"
        )


def wall_of(args: list[str]) -> float:
    """A whole ``handprop-train`` process's wall time; a job that fails does not stop it."""
    start = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "handprop.trainer.train", *args], capture_output=True, text=True
    )
    if "sweep summary" not in r.stdout:  # the sweep itself failed, not one of its jobs
        raise RuntimeError(f"handprop-train {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions (medians)")
    ap.add_argument("--slurm", action="store_true", help="only the SLURM launcher's walls")
    ap.add_argument("--part", choices=("all", "overhead", "vectorized"), default="all")
    ap.add_argument("--no-in-turn", action="store_true", help="skip the in-turn 64-job sweeps")
    args = ap.parse_args()
    if args.slurm:
        return slurm(args.reps)
    os.environ["PYTHONWARNINGS"] = "ignore"
    if args.part in ("all", "vectorized"):
        vectorized(args.reps, not args.no_in_turn)
    if args.part == "vectorized":
        return
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
