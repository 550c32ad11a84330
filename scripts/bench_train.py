"""Training speed, side by side in one run: handprop (through handprop-train's own code path,
in-process, start-up excluded) vs scikit-learn's MLP vs a plain PyTorch loop with torch.nn.

Same architecture, optimiser (Adam), learning rate, batch size, epochs, training rows and
test rows for all three; repetitions are interleaved and medians reported, so the ratios are
fair on a noisy shared machine. Prints a markdown table and writes it to outputs/bench/.

    python scripts/bench_train.py            # every case
    python scripts/bench_train.py --quick    # small cases only, one repetition
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_module
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.neural_network import MLPClassifier, MLPRegressor

from handprop.train import prepare


@dataclass
class Case:
    name: str
    overrides: list[str]  # handprop-train overrides (data, model, gd, epochs)
    hidden: list[int]
    batch: int | None  # None: the whole training set
    epochs: int
    lr: float = 1e-3
    sklearn: bool = True
    matmul_fraction: bool = False


def cases(quick: bool) -> list[Case]:
    c = [
        Case("digits 64-64-10, batch 32", ["data=digits"], [64], 32, 20),
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
        return c[:1]
    for n in (10_000, 100_000, 1_000_000):
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
    for mode, batch in (("batch", None), ("stochastic", 1), ("minibatch", 32)):
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


def handprop_objects(case: Case, extra: list[str], run_dir: Path):  # noqa: ANN201
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
        "trainer.accelerator=cpu",
        *extra,
    ]
    if not any(o.startswith("gd=") for o in overrides):
        overrides.append("gd=minibatch")
    with initialize_config_module(config_module="handprop.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return prepare(cfg, run_dir)


def run_handprop(case: Case, extra: list[str]) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        dm, model, trainer, task = handprop_objects(case, extra, Path(tmp))
        for split in ("train", "val", "test"):  # data preparation is start-up, as for the others
            dm.split(split)
        t = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        secs = time.perf_counter() - t
        x, y = dm.split("test")
        m = model.eval().evaluate(x, y)
    score = m.get("r2", m.get("accuracy"))
    return secs, score, trainer.global_step


def run_torch(case: Case, data: dict, threads: int) -> tuple[float, float, int]:
    """The plain loop a PyTorch user writes: torch.nn, fused Adam, index-slice batches."""
    torch.manual_seed(0)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    Xtr, ytr, Xte, yte, classify = (
        data["Xtr"],
        data["ytr"],
        data["Xte"],
        data["yte"],
        data["classify"],
    )
    sizes = [Xtr.shape[1], *case.hidden, data["out"]]
    layers: list[torch.nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), lr=case.lr, fused=True)
    loss_fn = torch.nn.CrossEntropyLoss() if classify else torch.nn.MSELoss()
    n, bs = len(Xtr), case.batch or len(Xtr)
    g = torch.Generator().manual_seed(0)
    steps = 0
    t = time.perf_counter()
    for _ in range(case.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            loss = loss_fn(net(Xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    secs = time.perf_counter() - t
    torch.set_num_threads(prev)
    with torch.no_grad():
        out = net(Xte)
    if classify:
        score = accuracy_score(yte.numpy(), out.argmax(1).numpy())
    else:
        score = r2_score(yte.numpy().ravel(), out.numpy().ravel())
    return secs, score, steps


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
    model = MLPClassifier(**kw) if data["classify"] else MLPRegressor(**kw)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median)")
    ap.add_argument("--quick", action="store_true", help="small cases, one repetition")
    ap.add_argument("--out", default="outputs/bench", help="folder for the markdown table")
    ap.add_argument("--only", default="", help="run only cases whose name contains this")
    ap.add_argument(
        "extra", nargs="*", help="extra handprop-train overrides, e.g. steps_per_call=1"
    )
    args = ap.parse_args()
    reps = 1 if args.quick else args.reps
    torch.set_num_threads(torch.get_num_threads())
    default_threads = torch.get_num_threads()
    peak = matmul_peak_gflops()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in (c for c in cases(args.quick) if args.only in c.name):
            extra: list[str] = list(args.extra)
            # The same rows for everyone: handprop's own split and scaling.
            dm, model, _, task = handprop_objects(case, extra, Path(tmp) / "probe")
            threads = torch.get_num_threads()  # what handprop chose for this size
            torch.set_num_threads(default_threads)
            Xtr, ytr = dm.split("train")
            Xte, yte = dm.split("test")
            classify = task != "regression"
            data = {
                "Xtr": Xtr, "ytr": ytr.squeeze(-1).long() if task == "binary" else ytr,
                "Xte": Xte, "yte": yte.squeeze(-1).long() if task == "binary" else yte,
                "classify": classify, "out": 2 if task == "binary" else dm.out_features,
            }  # fmt: skip
            runners: dict[str, Callable[[], tuple[float, float, int]]] = {
                "handprop": lambda c=case, e=extra: run_handprop(c, e),
                "torch loop": lambda c=case, d=data, t=threads: run_torch(c, d, t),
            }
            if case.sklearn:
                runners["scikit-learn"] = lambda c=case, d=data: run_sklearn(c, d)
            results: dict[str, list[tuple[float, float, int]]] = {k: [] for k in runners}
            for _ in range(reps):  # interleaved: each repetition runs every trainer once
                for k, fn in runners.items():
                    results[k].append(fn())
                    torch.set_num_threads(default_threads)
            med = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
            score = {k: v[-1][1] for k, v in results.items()}
            steps = {k: v[-1][2] for k, v in results.items()}
            row = {
                "case": case.name,
                "steps": steps["handprop"],
                **{f"{k} s": med[k] for k in runners},
                "handprop / torch": med["handprop"] / med["torch loop"],
                "handprop / sklearn": med["handprop"] / med["scikit-learn"]
                if "scikit-learn" in med
                else float("nan"),
                "metric": "acc" if classify else "R²",
                **{f"{k} score": score[k] for k in runners},
            }
            if case.matmul_fraction:
                params = sum(lin.weight.numel() for lin in model.net.linears)
                flops = 6 * params * len(Xtr) * case.epochs  # 2 forward + 4 backward per weight
                row["handprop % of matmul peak"] = 100 * flops / med["handprop"] / 1e9 / peak
            rows.append(row)
            print(_row_line(row), flush=True)
    table = _markdown(rows, peak, reps)
    print("\n" + table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "bench_train" + ("_" + "_".join(args.extra) if args.extra else "") + ".md"
    (out / name).write_text(table + "\n")
    print(f"\nwritten: {out / name}")


def _row_line(row: dict) -> str:
    return "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def _markdown(rows: list[dict], peak: float, reps: int) -> str:
    head = [
        f"Training wall time (s, median of {reps} interleaved runs; fit only, start-up excluded). "
        f"CPU: {torch.get_num_threads()} threads, float32 matmul peak {peak:.1f} GFLOP/s. "
        f"torch {torch.__version__}.",
        "",
        "| case | updates | handprop s | torch loop s | scikit-learn s | handprop / torch | handprop / sklearn | test score (handprop / torch / sklearn) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        sk = f"{r['scikit-learn s']:.3f}" if "scikit-learn s" in r else "-"
        scores = " / ".join(
            f"{r[k]:.3f}"
            for k in ("handprop score", "torch loop score", "scikit-learn score")
            if k in r
        )
        extra = ""
        if "handprop % of matmul peak" in r:
            extra = f" ({r['handprop % of matmul peak']:.0f}% of matmul peak)"
        head.append(
            f"| {r['case']}{extra} | {r['steps']} | {r['handprop s']:.3f} | {r['torch loop s']:.3f} | {sk} | "
            f"{r['handprop / torch']:.2f} | {r['handprop / sklearn']:.2f} | {r['metric']} {scores} |"
        )
    return "\n".join(head)


if __name__ == "__main__":
    main()
