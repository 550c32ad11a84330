"""Training speed, side by side in one run, with the costs separated.

For each case, four fits of the same network on the same rows, with the same Adam, learning
rate, batch size and epochs, repetitions interleaved, medians reported:

* **handprop**: ``handprop-train``'s own code path, in-process (``handprop.trainer.build.prepare`` then
  ``trainer.fit``), start-up and data preparation excluded;
* **loop handprop.nn**: a plain PyTorch loop doing the same updates and the same per-epoch
  validation (loss and the task's metrics) with ``handprop.nn`` modules and autograd;
* **loop torch.nn**: the same loop with ``torch.nn``;
* **scikit-learn**: ``MLPClassifier`` / ``MLPRegressor`` (no validation).

trainer / loop(handprop.nn) is the trainer's own overhead; loop(handprop.nn) / loop(torch.nn)
is the cost of the Functions' Python backward. Then start-up: time to the first update of
``handprop-train`` against ``python -c "import lightning"``, and ``handprop-train --help``.

    python scripts/bench_train.py            # every case
    python scripts/bench_train.py --quick    # the small cases, one repetition
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_module
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor

import handprop.nn as hnn
from handprop.trainer.build import prepare


@dataclass
class Case:
    name: str
    overrides: list[str]  # handprop-train overrides (data, gd, ...)
    hidden: list[int]
    batch: int | None  # None: the whole training set
    epochs: int
    lr: float = 1e-3
    shipped: bool = False  # the default run as shipped: validation, checkpoints, TensorBoard
    matmul_fraction: bool = False


def cases(quick: bool) -> list[Case]:
    c = [
        Case("digits 64-64-10, batch 32", ["data=digits"], [64], 32, 20),
        Case("default run as shipped (4-5-1, 60 epochs)", [], [5], 32, 60, 1e-2, shipped=True),
        Case("digits 64-64-10, batch 256", ["data=digits"], [64], 256, 20),
        Case(
            "regression 10,000 x 4, batch 32",
            ["data=property_prices", "data.n_samples=10000"],
            [5],
            32,
            5,
            lr=1e-2,
        ),
    ]
    if quick:
        return c[:2]
    for n in (100_000, 1_000_000):
        c.append(
            Case(
                f"property_prices {n:,} rows, batch 1024",
                ["data=property_prices", f"data.n_samples={n}"],
                [5],
                1024,
                3,
                lr=1e-2,
            )
        )
    c.append(
        Case(
            "784-256-256-10, 60,000 rows, batch 256",
            ["data=blobs", "data.n_samples=60000"],
            [256, 256],
            256,
            1,
            matmul_fraction=True,
        )
    )
    for mode, batch in (("stochastic", 1), ("minibatch", 32)):
        c.append(
            Case(
                f"gd={mode}, property_prices 2,000",
                ["data=property_prices", f"gd={mode}"],
                [5],
                batch,
                5,
                lr=1e-2,
            )
        )
    return c


def compose_case(case: Case, extra: list[str]):  # noqa: ANN201
    if case.shipped:
        overrides = [*case.overrides, "progress=false", *extra]  # the bar is for terminals
    else:
        batch = "null" if case.batch is None else str(case.batch)
        overrides = [
            *case.overrides,
            f"model.hidden=[{','.join(map(str, case.hidden))}]",
            "optimizer=adam",
            f"optimizer.lr={case.lr}",
            f"gd.batch_size={batch}",
            f"trainer.max_epochs={case.epochs}",
            "callbacks=none",
            "logger=none",
            "progress=false",
            "trainer.accelerator=cpu",
            *extra,
        ]
        if not any(o.startswith("gd=") for o in overrides):
            overrides.append("gd=minibatch")
    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        return compose("train", overrides=overrides)


class EpochGaps(L.Callback):
    """The fixed cost of an epoch: the time from an epoch's last training step to the next
    epoch's first (validation, checkpoints, logging, schedules, Lightning's bookkeeping)."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.last_end: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        if batch_idx == 0 and self.last_end is not None:
            self.gaps.append(time.perf_counter() - self.last_end)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.last_end = time.perf_counter()


EPOCH_GAPS: dict[str, list[float]] = {}


def run_handprop(case: Case, extra: list[str]) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare(compose_case(case, extra), Path(tmp))
        dm = run.datamodule
        for split in ("train", "val", "test"):  # data preparation is start-up, as for the others
            dm.split(split)
        gaps = EpochGaps()
        run.trainer.callbacks.append(gaps)
        t = time.perf_counter()
        run.trainer.fit(run.module, datamodule=dm)
        secs = time.perf_counter() - t
        EPOCH_GAPS.setdefault(case.name, []).extend(gaps.gaps)
        m = run.module.eval().evaluate(*dm.split("test"))
    return secs, m.get("r2", m.get("accuracy")), run.module.updates


def run_loop(case: Case, data: dict, nn, threads: int) -> tuple[float, float, int]:  # noqa: ANN001
    """The loop a PyTorch user writes: the same updates and per-epoch validation (the loss and
    the task's metrics on the whole validation split) as the trainer; ``nn`` is torch.nn or
    handprop.nn."""
    torch.manual_seed(0)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    task = data["task"]
    Xtr, ytr, Xva, yva = data["Xtr"], data["ytr"], data["Xva"], data["yva"]
    sizes = [Xtr.shape[1], *case.hidden, data["out"]]
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), lr=case.lr, fused=True)
    cost = {
        "regression": nn.MSELoss,
        "binary": nn.BCEWithLogitsLoss,
        "multiclass": nn.CrossEntropyLoss,
    }[task.name]()
    n, bs = len(Xtr), case.batch or len(Xtr)
    g = torch.Generator().manual_seed(0)
    steps = 0
    t = time.perf_counter()
    for _ in range(case.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            loss = cost(net(Xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        if len(Xva):
            with torch.no_grad():
                task.metrics(net(Xva), yva)
    secs = time.perf_counter() - t
    torch.set_num_threads(prev)
    with torch.no_grad():
        m = task.metrics(net(data["Xte"]), data["yte"])
    return secs, m.get("r2", m.get("accuracy")), steps


def run_sklearn(case: Case, data: dict) -> tuple[float, float, int]:
    kw = dict(
        hidden_layer_sizes=tuple(case.hidden),
        solver="adam",
        learning_rate_init=case.lr,
        batch_size=case.batch or len(data["Xtr"]),
        max_iter=case.epochs,
        tol=0.0,
        n_iter_no_change=10**9,
        shuffle=True,
        random_state=0,
    )
    Xtr, Xte = data["Xtr"].numpy(), data["Xte"].numpy()
    regression = data["task"].name == "regression"
    model = MLPRegressor(**kw) if regression else MLPClassifier(**kw)
    ytr = data["ytr"].numpy().ravel()
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(Xtr, ytr)
    secs = time.perf_counter() - t
    score = model.score(Xte, data["yte"].numpy().ravel())
    return secs, score, int(np.ceil(len(Xtr) / kw["batch_size"])) * case.epochs


def matmul_peak_gflops(reps: int = 20) -> float:
    """float32 matmul throughput of this CPU with torch's default threads (2048³)."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * 2048**3 / min(times) / 1e9


def matrix_products_seconds(sizes: list[int], batch: int, updates: int) -> float:
    """The matrix products alone of ``updates`` updates of an MLP with layer ``sizes`` at
    ``batch`` rows: ``z = a Wᵀ`` forward, ``δᵀ a`` and ``δ W`` backward (no ``δ W`` for the
    first layer, as the δ recursion skips it), nothing else. The ceiling for any trainer."""
    a = [torch.randn(batch, n) for n in sizes]
    W = [torch.randn(m, n) for n, m in zip(sizes[:-1], sizes[1:], strict=True)]
    g = [torch.empty_like(w) for w in W]

    def update() -> None:
        for l, w in enumerate(W):
            torch.mm(a[l], w.t())
        for l in range(len(W) - 1, -1, -1):
            torch.mm(a[l + 1].t(), a[l], out=g[l])
            if l:
                torch.mm(a[l + 1], W[l])

    for _ in range(5):
        update()
    t = time.perf_counter()
    for _ in range(updates):
        update()
    return time.perf_counter() - t


# The child process of the start-up measurement: the wall-clock time of the first update.
FIRST_UPDATE = """
import os, sys, time
from handprop.trainer.model import HandpropModule
def first(self, x, y):
    print("FIRST_UPDATE", time.time(), flush=True)
    os._exit(0)
HandpropModule.update = first
sys.argv = ["handprop-train", "logger=none", "callbacks=none", "hydra.run.dir=" + sys.argv[1]]
from handprop.trainer.train import main
main()
"""


def startup(reps: int) -> dict[str, float]:
    """Median wall seconds, interleaved: `import lightning`, handprop-train to its first
    update, and handprop-train --help (each a fresh process)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    times: dict[str, list[float]] = {"import lightning": [], "first update": [], "--help": []}
    for _ in range(reps):
        t = time.time()
        subprocess.run([sys.executable, "-c", "import lightning"], check=True, env=env)
        times["import lightning"].append(time.time() - t)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.time()
            r = subprocess.run(
                [sys.executable, "-c", FIRST_UPDATE, tmp],
                capture_output=True,
                text=True,
                env=env,
            )
            line = [ln for ln in r.stdout.splitlines() if ln.startswith("FIRST_UPDATE")]
            assert line, r.stderr
            times["first update"].append(float(line[0].split()[1]) - t)
        t = time.time()
        subprocess.run(
            [sys.executable, "-m", "handprop.trainer.train", "--help"],
            check=True,
            capture_output=True,
            env=env,
        )
        times["--help"].append(time.time() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median)")
    ap.add_argument("--quick", action="store_true", help="small cases, one repetition")
    ap.add_argument("--out", default="outputs/bench", help="folder for the markdown table")
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    ap.add_argument("--no-startup", action="store_true", help="skip the start-up measurement")
    ap.add_argument(
        "extra", nargs="*", help="extra handprop-train overrides, e.g. steps_per_call=1"
    )
    args = ap.parse_args()
    reps = 1 if args.quick else args.reps
    default_threads = torch.get_num_threads()
    peak = matmul_peak_gflops()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in (c for c in cases(args.quick) if args.only in c.name):
            extra: list[str] = list(args.extra)
            # The same rows for everyone: handprop's own split and scaling.
            run = prepare(compose_case(case, extra), Path(tmp) / "probe")
            threads = torch.get_num_threads()  # what handprop chose for this size
            torch.set_num_threads(default_threads)
            dm, task = run.datamodule, run.module.task
            (Xtr, ytr), (Xva, yva), (Xte, yte) = (dm.split(s) for s in ("train", "val", "test"))
            data = {
                "Xtr": Xtr, "ytr": ytr, "Xva": Xva, "yva": yva, "Xte": Xte, "yte": yte,
                "task": task, "out": dm.out_features,
            }  # fmt: skip
            runners: dict[str, Callable[[], tuple[float, float, int]]] = {
                "handprop": lambda c=case, e=extra: run_handprop(c, e),
                "loop handprop.nn": lambda c=case, d=data, t=threads: run_loop(c, d, hnn, t),
                "loop torch.nn": lambda c=case, d=data, t=threads: run_loop(c, d, torch.nn, t),
                "scikit-learn": lambda c=case, d=data: run_sklearn(c, d),
            }
            results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in runners}
            for _ in range(reps):  # interleaved: each repetition runs every trainer once
                for k, fn in runners.items():
                    results[k].append(fn())
                    torch.set_num_threads(default_threads)
            med = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
            row = {
                "case": case.name,
                "updates": results["handprop"][-1][2],
                **{f"{k} s": med[k] for k in runners},
                "/ loop hnn": med["handprop"] / med["loop handprop.nn"],
                "/ loop torch": med["handprop"] / med["loop torch.nn"],
                "/ sklearn": med["handprop"] / med["scikit-learn"],
                "epoch ms": 1e3 * statistics.median(EPOCH_GAPS.get(case.name) or [float("nan")]),
                "metric": "R²" if task.name == "regression" else "acc",
                **{f"{k} score": v[-1][1] for k, v in results.items()},
            }
            if case.matmul_fraction:
                params = sum(p.numel() for p in run.module.net.parameters())
                flops = 6 * params * len(Xtr) * case.epochs  # 2 forward + 4 backward per weight
                sizes = [Xtr.shape[1], *case.hidden, dm.out_features]
                products = statistics.median(
                    matrix_products_seconds(sizes, case.batch, row["updates"]) for _ in range(reps)
                )
                for k, secs in (*((k, med[k]) for k in runners), ("matrix products", products)):
                    row[f"% of matmul peak {k}"] = 100 * flops / secs / 1e9 / peak
            rows.append(row)
            print(_row_line(row), flush=True)
    start = None if args.no_startup or args.only else startup(reps)
    table = _markdown(rows, peak, reps, start)
    print("\n" + table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "bench_train" + ("_" + "_".join(args.extra) if args.extra else "") + ".md"
    (out / name).write_text(table + "\n")
    print(f"\nwritten: {out / name}")


def _row_line(row: dict) -> str:
    return "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def _markdown(rows: list[dict], peak: float, reps: int, start: dict | None) -> str:
    head = [
        f"Fit wall time (s, median of {reps} interleaved runs; start-up excluded). "
        f"CPU: {torch.get_num_threads()} threads, float32 matmul peak {peak:.1f} GFLOP/s. "
        f"torch {torch.__version__}.",
        "",
        "| case | updates | handprop | loop handprop.nn | loop torch.nn | scikit-learn "
        "| handprop / loop hnn | handprop / loop torch | handprop / sklearn "
        "| epoch overhead ms | test score (handprop / hnn / torch / sklearn) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        scores = " / ".join(
            f"{r[f'{k} score']:.3f}"
            for k in ("handprop", "loop handprop.nn", "loop torch.nn", "scikit-learn")
        )
        pct = {k[len("% of matmul peak ") :]: v for k, v in r.items() if "matmul peak" in k}
        peak_note = (
            " (% of matmul peak: " + ", ".join(f"{k} {v:.0f}" for k, v in pct.items()) + ")"
            if pct
            else ""
        )
        head.append(
            f"| {r['case']}{peak_note} | {r['updates']} | {r['handprop s']:.3f} "
            f"| {r['loop handprop.nn s']:.3f} | {r['loop torch.nn s']:.3f} "
            f"| {r['scikit-learn s']:.3f} | {r['/ loop hnn']:.2f} | {r['/ loop torch']:.2f} "
            f"| {r['/ sklearn']:.2f} | {r['epoch ms']:.2f} | {r['metric']} {scores} |"
        )
    if start:
        head += [
            "",
            "| start-up (fresh process) | s |",
            "|---|---:|",
            *(f"| {k} | {v:.2f} |" for k, v in start.items()),
            f"| first update − import lightning | {start['first update'] - start['import lightning']:.2f} |",
        ]
    return "\n".join(head)


if __name__ == "__main__":
    main()
