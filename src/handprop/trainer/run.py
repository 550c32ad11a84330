"""One training run: build, fit, evaluate the split metrics, write ``metrics.json``.

``metrics.json`` appears only when the run has finished, so a run directory says whether its
run did. The metrics are those of the best weights (by the monitored metric: ``val/loss``, a
GAN's ``val/energy_distance``, or ``train/epoch_loss`` without a validation split) unless
``callbacks.checkpoint.restore_best=false``.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams

from handprop.trainer import lr_find
from handprop.trainer.build import prepare
from handprop.trainer.checkpoints import Checkpoints, read_checkpoint
from handprop.trainer.cli import format_table
from handprop.trainer.errors import ConfigError, Diverged
from handprop.trainer.files import write_json_atomic
from handprop.trainer.plan import Plan


def train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Train, evaluate and write ``metrics.json`` into ``run_dir``; return the metrics."""
    t0 = time.perf_counter()
    if cfg.lr_find:  # the learning-rate range test first; then train with its suggestion
        lr = lr_find.find(cfg, run_dir)
        if cfg.lr_find == "only":
            return {"suggested_lr": lr}
        cfg = copy.deepcopy(cfg)
        cfg.optimizer.lr = lr
    run = prepare(cfg, run_dir)
    dm, module, trainer = run.datamodule, run.module, run.trainer
    ckpt_path = cfg.ckpt_path
    if ckpt_path == "last":
        ckpt_path = str(run_dir / "checkpoints" / "last.ckpt")
    if ckpt_path is not None:
        # a missing, foreign or unsafe file: one line, before fit
        ckpt = read_checkpoint(ckpt_path)
        done = ckpt.get("epochs_done", ckpt.get("epoch", 0))
        if done > cfg.trainer.max_epochs:
            raise ConfigError(
                f"ckpt_path: {ckpt_path} has trained {done} epochs, more than "
                f"trainer.max_epochs={cfg.trainer.max_epochs}; set trainer.max_epochs={done} or "
                "more to resume it"
            )
    if trainer.is_global_zero:  # under DDP the other ranks write nothing here
        for stale in ("metrics.json", "error.json"):
            (run_dir / stale).unlink(missing_ok=True)
    checkpoints = next((c for c in trainer.callbacks if isinstance(c, Checkpoints)), None)
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    except Diverged as e:
        last = checkpoints.last_path if checkpoints else None
        kept = (
            f" The last good checkpoint: {last}"
            if last and last.is_file()
            else " No checkpoint was saved before it."
        )
        raise Diverged(e.step, e.loss, e.last_finite, e.lr, kept) from None

    if cfg.callbacks.checkpoint.restore_best and checkpoints:
        checkpoints.restore_best(module)
    module.eval()
    rows = {s: module.evaluate(*dm.split(s)) for s in ("train", "val", "test") if dm.has(s)}
    metrics: dict[str, float] = {f"{s}/{k}": v for s, r in rows.items() for k, v in r.items()}
    metrics["epochs"] = trainer.current_epoch
    metrics["global_step"] = module.updates
    metrics["train_seconds"] = round(time.perf_counter() - t0, 3)
    if not trainer.is_global_zero:
        return metrics  # under DDP only rank 0 writes logs, checkpoints and metrics.json
    final = {k: v for k, v in metrics.items() if "/" in k}
    module.log_scalars({k: v for k, v in final.items() if k.startswith("test/")})
    params = hparams_summary(cfg, run.plan, dm.num_train, keys_set_by_user())
    log_hparams(trainer, params, final, module.updates)
    write_json_atomic(run_dir / "metrics.json", metrics)
    print_summary(cfg, run, rows, run_dir, checkpoints)
    return metrics


#: The sub-run of ``tb/`` that holds the HParams session: TensorBoard makes a metric column of
#: every scalar in a session's run and below it, so the per-update and per-epoch scalars (in
#: ``tb/`` itself) stay out of the HParams view.
HPARAMS_RUN = "hparams"


def log_hparams(trainer, params: dict, final: dict[str, float], step: int) -> None:  # noqa: ANN001
    """The run's settings and final metrics in TensorBoard's HParams view.

    The session (its settings, ``params``) and the final metrics (``metrics.json``'s, as
    scalars ``final/<split>/<metric>``) go into ``tb/hparams``, a run of their own: the
    view's metric columns are then the final metrics alone, not ``train/loss``, ``val/*`` or
    the monitors. Only the session summaries are written, no experiment summary: TensorBoard
    takes the columns of a log directory from one run's experiment summary when there is one
    (so runs of other tasks lose theirs), and otherwise from every session's settings and
    scalars.
    """
    from torch.utils.tensorboard import SummaryWriter

    for logger in trainer.loggers:
        if not isinstance(logger, TensorBoardLogger):
            continue
        logger.log_hyperparams(params)  # hparams.yaml
        writer = SummaryWriter(log_dir=str(Path(logger.log_dir) / HPARAMS_RUN))
        try:
            for k, v in final.items():
                writer.add_scalar(f"final/{k}", v, step)
            _, session_start, session_end = hparams(params, {})
            for summary in (session_start, session_end):
                writer.file_writer.add_summary(summary)
            writer.flush()
        finally:
            writer.close()


def print_summary(cfg, run, rows, run_dir: Path, checkpoints) -> None:  # noqa: ANN001
    """The end-of-run summary on stdout: the metrics, and the commands that use the run."""
    trainer = run.trainer
    print(
        f"\nhandprop: {run.plan.task} on {cfg.data.name}, {describe(run.module.net)}, "
        f"{trainer.current_epoch} epochs, {run.module.updates} updates"
    )
    print(format_table(rows))
    print(f"\nrun directory: {run_dir}")
    if any(isinstance(lg, TensorBoardLogger) for lg in trainer.loggers):  # not logger=csv
        print(f"tensorboard:   tensorboard --logdir {run_dir}")
    if checkpoints and checkpoints.best_path.is_file():
        best = checkpoints.best_path
        features = ",".join(run.module.columns["features"])
        if run.plan.task == "generation":
            print(
                f"generate:      handprop-predict ckpt_path={best} n_samples=1000 output=samples.csv"
            )
        else:
            print(
                f"predict:       handprop-predict ckpt_path={best} input=your.csv "
                "output=predictions.csv"
            )
            print(f"               (your.csv: a header row with the columns {features})")
        print(f"evaluate:      handprop-eval ckpt_path={best}")


def describe(net) -> str:  # noqa: ANN001
    """A network in a few characters: ``MLP 4-5-1``, its own ``describe()``, else its class
    name."""
    if hasattr(net, "describe"):
        return net.describe()
    if hasattr(net, "hidden_features"):
        sizes = [net.in_features, *net.hidden_features, net.out_features]
        return f"{type(net).__name__} {'-'.join(map(str, sizes))}"
    return type(net).__name__


#: Settings about how a run goes, not what it learns: never an HParams column.
NOT_HPARAMS = (
    "hydra",
    "progress",
    "verbose",
    "overwrite",
    "ckpt_path",
    "logger",
    "num_threads",
    "steps_per_call",
    "optimized_metric",
    "callbacks.extra",
)
#: The groups each of whose settings is a column: what a network learns from and how.
HPARAM_GROUPS = ("task", "model", "optimizer", "gd", "scheduler")
#: Settings shown by a column of another name (:func:`hparams_summary`'s first columns).
SHOWN_AS = {
    "task.name": "task",
    "trainer.max_epochs": "max_epochs",
    "gd.mode": "gd",
    "scheduler.name": "scheduler",
    "optimizer.weight_decay": "weight_decay",
}


def keys_set_by_user() -> list[str]:
    """The settings this run's command line sets (``key=value``, and every setting of a
    ``group=option`` it chooses) and those its presets set (an option that sets keys of other
    groups too, ``# @package _global_``: ``experiment=digits``, ``model=cnn``); none outside a
    Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    from handprop.trainer.cli import CONF_DIR, GROUPS, _leaves

    if not HydraConfig.initialized():
        return []
    hc = HydraConfig.get()
    keys: list[str] = []

    def option_keys(group: str, option: str | None) -> list[str]:
        path = CONF_DIR / group / f"{option}.yaml"
        if option is None or not path.is_file():
            return []
        node = OmegaConf.to_container(OmegaConf.load(path))
        node.pop("defaults", None)
        if path.read_text().startswith("# @package _global_"):
            return _leaves(node)
        return [f"{group}.{k}" for k in _leaves(node)]

    for override in hc.overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        keys += option_keys(key, value) if key in GROUPS else [key]
    for group, option in hc.runtime.choices.items():
        if group in GROUPS and (CONF_DIR / group / f"{option}.yaml").is_file():
            path = CONF_DIR / group / f"{option}.yaml"
            if path.read_text().startswith("# @package _global_"):
                keys += option_keys(group, option)
    return keys


def _column(value: Any) -> int | float | str | bool:
    """A setting as an HParams value: numbers, strings and booleans as they are, anything
    else (a list, null) as its text."""
    if isinstance(value, bool):  # (torch's hparams would write it as the number 1 or 0)
        return str(value).lower()
    if isinstance(value, int | float | str):
        return value
    return "null" if value is None else str(value).replace(" ", "")


def hparams_summary(
    cfg: DictConfig, p: Plan, num_train: int, user_keys: list[str] | None = None
) -> dict[str, Any]:
    """The run's settings as flat scalars, for TensorBoard's HParams view: a few derived
    columns (``lr`` as scaled, ``batch_size`` over all processes, ``train_rows``), every
    setting of :data:`HPARAM_GROUPS`, the data's split and preprocessing, and every further
    setting in ``user_keys`` (:func:`keys_set_by_user`) but those of :data:`NOT_HPARAMS`."""
    opt = cfg.optimizer
    out: dict[str, Any] = {
        "task": p.task,
        "data": cfg.data.name,
        "optimizer": str(opt._target_).rsplit(".", 1)[-1]
        + ("+momentum" if opt.get("momentum") else ""),
        "lr": p.lr,  # optimizer.lr × the batch-size scaling (gd.lr_scaling)
        "weight_decay": float(opt.get("weight_decay") or 0.0),
        "scheduler": cfg.scheduler.name,
        "gd": cfg.gd.mode,
        "batch_size": p.global_batch,  # rows per update; batch descent: the training rows
        "train_rows": num_train,
        "max_epochs": int(cfg.trainer.max_epochs),
        "seed": int(cfg.seed),
    }
    from handprop.trainer.cli import _leaves

    node = OmegaConf.to_container(cfg, resolve=True)
    keys = [f"{g}.{k}" for g in HPARAM_GROUPS for k in _leaves(node.get(g) or {})]
    keys += ["data.preprocessing", "data.val_fraction", "data.test_fraction"]
    keys += user_keys or []
    for key in keys:
        if any(key == n or key.startswith(n + ".") for n in NOT_HPARAMS):
            continue
        if key in out or key in SHOWN_AS:
            continue
        value = OmegaConf.select(cfg, key, default=None)
        if not isinstance(value, DictConfig):
            out[key] = _column(
                OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            )
    return out
