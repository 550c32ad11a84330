"""Users add their own Lightning callbacks from the config (``callbacks.extra``, each built from
its ``_target_``), and stock callbacks work as Lightning documents them, once per epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from runs import cfg_of, run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from handprop.trainer.build import user_callbacks
from handprop.trainer.errors import ConfigError

EPOCHS = 4


def test_stock_lr_monitor_and_model_checkpoint_added_from_the_config(tmp_path: Path) -> None:
    user_dir = tmp_path / "user_ckpts"
    extra = (
        "callbacks.extra={lr: {_target_: lightning.pytorch.callbacks.LearningRateMonitor, "
        "logging_interval: epoch}, best: {_target_: lightning.pytorch.callbacks.ModelCheckpoint, "
        f"monitor: val/loss, mode: min, save_top_k: 1, dirpath: '{user_dir}', "
        "filename: 'user-{epoch}'}}"
    )
    run_dir = tmp_path / "run"
    metrics = run(
        run_dir,
        f"trainer.max_epochs={EPOCHS}",
        "callbacks.early_stopping.enabled=false",
        "scheduler=exponential",
        extra,
    )
    assert metrics["epochs"] == EPOCHS
    # ModelCheckpoint(monitor="val/loss"): one file, the epoch with the lowest val/loss
    events = EventAccumulator(str(run_dir / "tb")).Reload()
    val = [e.value for e in events.Scalars("val/loss")]
    assert len(val) == EPOCHS
    (saved,) = user_dir.glob("user-*.ckpt")
    best_epoch = min(range(EPOCHS), key=val.__getitem__)
    assert saved.name == f"user-epoch={best_epoch}.ckpt"
    ckpt = torch.load(saved, weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["best_model_score"].item() == pytest.approx(min(val), rel=1e-6)
    # LearningRateMonitor(logging_interval="epoch"): one lr per epoch, decaying as scheduled
    (tag,) = [t for t in events.Tags()["scalars"] if t.startswith("lr-")]
    lrs = [e.value for e in events.Scalars(tag)]
    assert len(lrs) == EPOCHS
    assert all(b < a for a, b in zip(lrs, lrs[1:], strict=False))
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics


@pytest.mark.parametrize(
    "extra, says",
    [
        ("{x: {every: 1}}", "callbacks.extra.x needs a _target_"),
        ("{x: {_target_: no.such.Callback}}", "callbacks.extra.x:"),
        ("{x: {_target_: collections.OrderedDict}}", "is not a Lightning Callback"),
    ],
)
def test_a_bad_user_callback_is_one_line(extra: str, says: str) -> None:
    cfg = cfg_of(f"callbacks.extra={extra}")
    with pytest.raises(ConfigError, match=says):
        user_callbacks(cfg.callbacks.extra)
