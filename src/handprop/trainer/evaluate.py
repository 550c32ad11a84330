"""``handprop-eval ckpt_path=PATH [split=test]``: a checkpoint's metrics on one split.

The data set, split and preprocessing are rebuilt from the checkpoint's own config (same
seed, same rows), so the test metrics equal those the training run reported.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from handprop.trainer.cli import call_reporting, format_table, run_cli
from handprop.trainer.errors import ConfigError
from handprop.trainer.files import write_json_atomic


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
    from handprop.trainer.build import data_of
    from handprop.trainer.checkpoints import load_module

    model = load_module(ckpt_path)
    cfg = OmegaConf.create(model.hparams["config"])
    dm = data_of(cfg, model.task.name)
    if not dm.has(split):
        raise ConfigError(f"split={split} has no rows in this run (fraction 0)")
    x, y = dm.split(split)
    values = model.evaluate(x, y)
    metrics = {f"{split}/{k}": v for k, v in values.items()}
    print(format_table({split: values}))
    out = Path(output) if output else default_output(ckpt_path)
    write_json_atomic(out, metrics)
    print(f"written: {out}")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    call_reporting(lambda: evaluate(cfg.ckpt_path, cfg.split, cfg.output), cfg)


def main() -> None:
    run_cli(_hydra_main, "eval")


if __name__ == "__main__":
    sys.exit(main())
