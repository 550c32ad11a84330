"""``handprop-eval ckpt_path=PATH [split=test]``: a checkpoint's metrics on one split.

The data set, split and preprocessing are rebuilt from the checkpoint's own config (same
seed, same rows), so the test metrics equal those the training run reported. Neither Lightning
nor Hydra nor TensorBoard is loaded (:mod:`handprop.trainer.trained`): the answer comes in
about the time ``import torch`` takes.
"""

from __future__ import annotations

import sys
from pathlib import Path

from handprop.trainer.cli import REQUIRED, format_table, required, run_command
from handprop.trainer.errors import ConfigError
from handprop.trainer.files import write_json_atomic

#: The settings and their defaults (``???``: required).
SETTINGS = {"ckpt_path": REQUIRED, "split": "test", "output": None, "verbose": False}

HELP = """== handprop-eval ==
A trained checkpoint's metrics on one split of its own data. The data set, split and
preprocessing are rebuilt from the checkpoint's config, so the test metrics equal those
the training run reported.

== Keys (key=value) ==
  ckpt_path=PATH   the checkpoint (required), e.g. outputs/runs/<run>/checkpoints/best.ckpt
  split=test       train | val | test
  output=PATH      where to write the metrics as JSON; default: eval_metrics.json in the
                   checkpoint's run directory (the folder above checkpoints/), else beside it
  verbose=true     print the full traceback of an error

== Config (with your overrides) ==
$CONFIG
Example:
  handprop-eval ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt split=val"""


def default_output(ckpt_path: str) -> Path:
    """``eval_metrics.json`` in the run directory: the folder above ``checkpoints/`` when the
    checkpoint sits in one (as ``handprop-train`` saves it), else the checkpoint's own folder."""
    folder = Path(ckpt_path).resolve().parent
    if folder.name == "checkpoints":
        folder = folder.parent
    return folder / "eval_metrics.json"


def evaluate(ckpt_path: str, split: str = "test", output: str | None = None) -> dict[str, float]:
    """Metrics of the checkpoint on ``split``; written as JSON to ``output`` (default:
    ``eval_metrics.json`` in the checkpoint's run directory, see :func:`default_output`) and
    returned."""
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split={split} is not one of train, val, test")
    from handprop.trainer.trained import load_trained, splits_of

    model = load_trained(ckpt_path)
    splits = splits_of(model.config, model.task.name)
    if not splits.has(split):
        raise ConfigError(f"split={split} has no rows in this run (fraction 0)")
    values = model.evaluate(*splits.split(split))
    metrics = {f"{split}/{k}": v for k, v in values.items()}
    print(format_table({split: values}))
    out = Path(output) if output else default_output(ckpt_path)
    write_json_atomic(out, metrics)
    print(f"written: {out}")
    return metrics


def main() -> None:
    """Console entry point: ``handprop-eval ckpt_path=PATH [split=test] [output=PATH]``."""
    run_command(
        "handprop-eval",
        HELP,
        SETTINGS,
        lambda s: evaluate(str(required(s, "ckpt_path")), str(s["split"]), s["output"]),
    )


if __name__ == "__main__":
    sys.exit(main())
