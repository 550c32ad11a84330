"""What the monitors cost: the default run's fit with ``monitors=off`` and ``monitors=on``.

In one process, the two fits alternate (off, on, then on, off, …) so that both see the same
machine load; each fit is ``handprop-train``'s own code path as shipped (validation,
checkpoints, TensorBoard; ``progress=false``), start-up and data preparation excluded. Reported:
the median fit time of each, and the median of the per-pair ratios on / off, in wall-clock and
in CPU time (all threads of the process: the TensorBoard writer's included).

    python scripts/bench_monitors.py                 # 21 pairs, monitors.every_n=50
    python scripts/bench_monitors.py --reps 9 monitors.every_n=10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from hydra import compose, initialize_config_module

from handprop.trainer.build import prepare


def fit(cfg, tmp: Path) -> tuple[float, float, int]:  # noqa: ANN001
    """Wall and CPU seconds of ``trainer.fit`` on ``cfg``, and the updates it made."""
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        run = prepare(cfg, Path(d))
        for split in ("train", "val", "test"):
            run.datamodule.split(split)
        t, c = time.perf_counter(), time.process_time()
        run.trainer.fit(run.module, datamodule=run.datamodule)
        return time.perf_counter() - t, time.process_time() - c, run.module.updates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=21, help="interleaved pairs (median)")
    ap.add_argument("extra", nargs="*", help="overrides for the monitors=on run")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        cfgs = {
            "off": compose("train", overrides=["progress=false"]),
            "on": compose("train", overrides=["progress=false", "monitors=on", *args.extra]),
        }
    times: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        fit(cfgs["off"], Path(tmp))  # warm-up: imports, first allocations
        for r in range(args.reps):
            for kind in ("off", "on") if r % 2 == 0 else ("on", "off"):
                wall, cpu, updates = fit(cfgs[kind], Path(tmp))
                times[kind].append((wall, cpu))
            print(f"pair {r + 1}: off {times['off'][-1][0]:.3f} s, on {times['on'][-1][0]:.3f} s")
    every = cfgs["on"].monitors.every_n
    print(f"\nthe default run, {updates} updates; monitors on: every {every} updates")
    for i, name in enumerate(("wall", "CPU")):
        off = [t[i] for t in times["off"]]
        on = [t[i] for t in times["on"]]
        ratios = [a / b for a, b in zip(on, off, strict=True)]
        print(
            f"{name:>4}: off {statistics.median(off):.3f} s, on {statistics.median(on):.3f} s; "
            f"on / off median {statistics.median(ratios):.3f} "
            f"(pairs {min(ratios):.2f}–{max(ratios):.2f})"
        )


if __name__ == "__main__":
    main()
