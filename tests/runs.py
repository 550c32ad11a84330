"""Training runs for the tests: ``handprop-train``'s config and run, in-process."""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_module

from handprop.run import train


def cfg_of(*overrides: str):  # noqa: ANN201
    """``handprop-train OVERRIDES``' config."""
    with initialize_config_module(config_module="handprop.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def run(run_dir: Path, *overrides: str) -> dict[str, float]:
    """``handprop-train OVERRIDES`` in-process into ``run_dir``; its metrics.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    train(cfg_of(*overrides, "progress=false"), run_dir)
    return json.loads((run_dir / "metrics.json").read_text())
