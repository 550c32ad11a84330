"""Training runs for the tests: ``handprop-train``'s config and run, in-process."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from handprop.trainer.run import train


def cfg_of(*overrides: str):  # noqa: ANN201
    """``handprop-train OVERRIDES``' config."""
    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def run(run_dir: Path, *overrides: str) -> dict[str, float]:
    """``handprop-train OVERRIDES`` in-process into ``run_dir``; its metrics.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    train(cfg_of(*overrides, "progress=false"), run_dir)
    return json.loads((run_dir / "metrics.json").read_text())


def crash_then_resume(
    monkeypatch: pytest.MonkeyPatch,
    module_class: type,
    run_dir: Path,
    overrides: tuple[str, ...],
    crash_at: int,
    after_crash: Callable[[], None] | None = None,
) -> tuple[dict[str, float], list[int]]:
    """Train into ``run_dir`` until update number ``crash_at`` raises (a crash in the middle of
    an epoch: nothing of the run survives but its files), call ``after_crash``, then resume with
    ``ckpt_path=last``. Returns the resumed run's metrics.json and the numbers of the updates it
    made."""

    class Killed(Exception):
        pass

    update = module_class.update

    def dies(self, x, y):  # noqa: ANN001, ANN202
        if self.updates == crash_at:
            raise Killed
        return update(self, x, y)

    monkeypatch.setattr(module_class, "update", dies)
    with pytest.raises(Killed):
        run(run_dir, *overrides)
    if after_crash is not None:
        after_crash()
    calls: list[int] = []

    def counted(self, x, y):  # noqa: ANN001, ANN202
        calls.append(self.updates)
        return update(self, x, y)

    monkeypatch.setattr(module_class, "update", counted)
    return run(run_dir, *overrides, "ckpt_path=last"), calls


def sweep(sweep_dir: Path, *overrides: str) -> list[dict]:
    """``handprop-train -m OVERRIDES`` in-process into ``sweep_dir`` (no logger, no progress
    bar); the jobs of its summary.json."""
    from handprop.trainer.train import main

    argv = ["handprop-train", "-m", *overrides, "logger=none", "progress=false"]
    old, sys.argv = sys.argv, [*argv, f"hydra.sweep.dir={sweep_dir}"]
    try:
        main()
    finally:
        sys.argv = old
    return json.loads((sweep_dir / "summary.json").read_text())["jobs"]
