"""The end of a sweep (``handprop-train -m ...``): one summary of every job, failed ones too.

Registered as a Hydra callback in ``conf/train.yaml``; writes ``summary.json`` into the sweep
directory and prints one line per job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from handprop.cli import MachineError, report, verbose_errors, write_json_atomic


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
            err = "did not finish (no metrics.json)"
            if (d / "error.json").is_file():
                err = json.loads((d / "error.json").read_text()).get("error", err)
            jobs.append({"dir": d.name, "overrides": overrides, "status": "failed", "error": err})
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

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if os.environ.get("RANK", "0") != "0" or os.environ.get("LOCAL_RANK", "0") != "0":
            return  # a DDP worker re-running the command: rank 0 writes the summary
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        summary = summarize(sweep_dir)
        try:
            write_json_atomic(sweep_dir / "summary.json", summary)
        except MachineError as e:
            report(e, verbose_errors(config))
            raise SystemExit(1) from None
        failed = 0
        print(f"\nsweep summary ({sweep_dir}/summary.json):")
        for job in summary["jobs"]:
            what = " ".join(job["overrides"]) or "(defaults)"
            if job["status"] == "ok":
                ms = ", ".join(
                    f"{k}={v:.4g}" for k, v in job["metrics"].items() if k != "test/loss"
                )
                print(f"  ok      {what}: {ms}")
            else:
                failed += 1
                print(f"  FAILED  {what}: {job['error']}")
        print(f"tensorboard --logdir {sweep_dir}")
        if failed:
            # The sweep ran to its end; its exit status says that jobs failed.
            raise SystemExit(1)
