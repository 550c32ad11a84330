"""``handprop-train``: the Hydra app that trains a handprop MLP with Lightning.

Flow: Hydra config → :func:`validate` → data (:mod:`handprop.data`) → model
(:mod:`handprop.model`) → ``lightning.Trainer`` → checkpoint, TensorBoard, ``metrics.json``.
torch and Lightning are imported inside :func:`train`, so ``--help`` and ``--cfg`` are quick.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from handprop.cli import (
    ConfigError,
    format_table,
    is_user_error,
    report,
    run_cli,
    verbose_errors,
    write_json_atomic,
)

log = logging.getLogger("handprop")


# --------------------------------------------------------------------------------------------
# Config checks: before any data is read or any weight is touched
# --------------------------------------------------------------------------------------------
def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (one line, naming the key) for values training can't use."""

    def need(cond: bool, key: str, allowed: str) -> None:
        if not cond:
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} is invalid: {allowed}")

    def is_num(key: str) -> bool:
        v = OmegaConf.select(cfg, key)
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    def is_int(key: str) -> bool:
        v = OmegaConf.select(cfg, key)
        return isinstance(v, int) and not isinstance(v, bool)

    need(is_num("optimizer.lr") and cfg.optimizer.lr > 0, "optimizer.lr", "must be a number > 0")
    for key in ("optimizer.weight_decay", "optimizer.momentum"):
        if OmegaConf.select(cfg, key) is not None:
            need(is_num(key) and OmegaConf.select(cfg, key) >= 0, key, "must be a number >= 0")
    if OmegaConf.select(cfg, "optimizer.momentum") is not None:
        need(cfg.optimizer.momentum < 1, "optimizer.momentum", "must be in [0, 1)")
    hidden = OmegaConf.select(cfg, "model.hidden")
    ok = OmegaConf.is_list(hidden) and all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
    )
    need(ok, "model.hidden", "must be a list of positive integers, e.g. [5] or [64,64] or []")
    from handprop.nn import ACTIVATIONS, INITS  # light: torch only

    need(
        cfg.model.activation in ACTIVATIONS, "model.activation", f"one of {', '.join(ACTIVATIONS)}"
    )
    need(cfg.model.init in INITS, "model.init", f"one of {', '.join(INITS)}")
    bs = cfg.gd.batch_size
    need(
        bs is None or (is_int("gd.batch_size") and bs > 0),
        "gd.batch_size",
        "a positive integer (null = whole training set)",
    )
    need(
        is_int("gd.base_batch_size") and cfg.gd.base_batch_size > 0,
        "gd.base_batch_size",
        "a positive integer",
    )
    for key in ("data.val_fraction", "data.test_fraction"):
        need(is_num(key) and 0 <= OmegaConf.select(cfg, key) < 1, key, "a fraction in [0, 1)")
    need(
        cfg.data.val_fraction + cfg.data.test_fraction < 1,
        "data.test_fraction",
        f"val_fraction + test_fraction must be below 1 (val_fraction={cfg.data.val_fraction})",
    )
    need(
        cfg.data.preprocessing in ("standardize", "normalize", "none"),
        "data.preprocessing",
        "one of standardize, normalize, none",
    )
    for key in ("data.n_samples", "data.n_features", "data.n_classes"):
        if OmegaConf.select(cfg, key) is not None:
            need(is_int(key) and OmegaConf.select(cfg, key) > 0, key, "a positive integer")
    need(
        is_int("trainer.max_epochs") and cfg.trainer.max_epochs > 0,
        "trainer.max_epochs",
        "a positive integer",
    )
    need(is_int("seed") and cfg.seed >= 0, "seed", "a non-negative integer")
    need(
        cfg.logger.name in ("tensorboard", "csv", "none"),
        "logger.name",
        "one of tensorboard, csv, none",
    )
    spc = cfg.get("steps_per_call", "auto")
    need(
        spc == "auto" or (isinstance(spc, int) and spc > 0),
        "steps_per_call",
        "auto or a positive integer",
    )
    clip = cfg.trainer.get("gradient_clip_val")
    need(
        clip is None or (is_num("trainer.gradient_clip_val") and clip > 0),
        "trainer.gradient_clip_val",
        "null or a number > 0",
    )
    nt = cfg.get("num_threads")
    need(
        nt in (None, "auto", "default") or (isinstance(nt, int) and nt > 0),
        "num_threads",
        "auto, default or a positive integer",
    )
    if cfg.callbacks.early_stopping.enabled:
        need(
            is_int("callbacks.early_stopping.patience")
            and cfg.callbacks.early_stopping.patience >= 0,
            "callbacks.early_stopping.patience",
            "an integer >= 0",
        )
    if cfg.task.name != "auto" and cfg.task.loss is not None:
        from handprop.model import LOSSES

        need(cfg.task.loss in LOSSES, "task.loss", f"one of {', '.join(LOSSES)}")


def resolve_task(cfg: DictConfig, data_kind: str) -> tuple[str, str | None]:
    """The task to train: the config's, or the data set's own kind for ``task=auto``."""
    task = cfg.task.name
    if task == "auto":
        if cfg.data.name == "csv":
            raise ConfigError(
                "task=auto needs a known data set; with data=csv set task=regression, binary or multiclass"
            )
        return data_kind, None
    if cfg.data.name != "csv" and task != data_kind:
        raise ConfigError(
            f"task={task} does not fit data={cfg.data.name}, a {data_kind} data set; use task={data_kind} (or task=auto)"
        )
    return task, cfg.task.loss


# --------------------------------------------------------------------------------------------
# Building the pieces
# --------------------------------------------------------------------------------------------
def build_datamodule(cfg: DictConfig, kind: str | None = None):  # noqa: ANN201
    """The data module described by ``cfg.data`` / ``cfg.gd`` (``kind`` for CSV targets)."""
    from handprop.data import TabularDataModule
    from handprop.datasets import load_table

    d = cfg.data
    if d.name == "csv":
        for key in ("path", "target"):
            if OmegaConf.is_missing(d, key):
                raise ConfigError(
                    f"data=csv needs data.{key}=... (e.g. data.path=my.csv data.target=price)"
                )
    table = load_table(
        d.name,
        n_samples=d.get("n_samples"),
        noise=d.get("noise"),
        seed=cfg.seed,
        path=d.get("path"),
        target=d.get("target"),
        features=list(d.features) if d.get("features") else None,
        kind=kind if d.name == "csv" else None,
        n_features=d.get("n_features"),
        n_classes=d.get("n_classes"),
    )
    return TabularDataModule(
        table,
        batch_size=cfg.gd.batch_size,
        preprocessing=d.preprocessing,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        shuffle=cfg.gd.shuffle and not cfg.debug.overfit_batches,
        seed=cfg.seed,
        steps_per_call=steps_per_call(cfg),
    )


#: Optimiser steps per Lightning step on the fast path, chosen by measurement (see README).
DEFAULT_STEPS_PER_CALL = 64


def steps_per_call(cfg: DictConfig) -> int:
    """How many updates one Lightning step makes. 1 where Lightning must see each batch:
    DDP (its gradient sync is tied to one backward per step) and overfitting one batch."""
    k = cfg.get("steps_per_call", "auto")
    if k != "auto":
        return int(k)
    if cfg.debug.overfit_batches or "ddp" in str(cfg.trainer.strategy):
        return 1
    return DEFAULT_STEPS_PER_CALL


def build_model(cfg: DictConfig, dm: Any, task: str, loss: str | None):  # noqa: ANN201
    from hydra.utils import instantiate

    from handprop.model import HandpropModule

    opt_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
    batch = cfg.gd.batch_size or dm.num_train
    if cfg.gd.lr_scaling:  # linear scaling rule: a B-times larger batch takes a B-times larger step
        # B is the global batch: under DDP each of the processes takes gd.batch_size rows.
        devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
        if "ddp" in str(cfg.trainer.strategy) and isinstance(devices, int):
            batch = (cfg.gd.batch_size or dm.num_train // (devices * nodes)) * devices * nodes
        opt_cfg["lr"] = opt_cfg["lr"] * batch / cfg.gd.base_batch_size
    sched = cfg.scheduler
    return HandpropModule(
        task=task,
        in_features=dm.in_features,
        out_features=dm.out_features,
        hidden=list(cfg.model.hidden),
        activation=cfg.model.activation,
        init=cfg.model.init,
        loss=loss,
        optimizer=instantiate(opt_cfg),
        scheduler=instantiate(sched.fn) if sched.fn is not None else None,
        scheduler_interval=sched.interval,
        scheduler_monitor=sched.monitor
        if dm.indices["val"].size
        else ("train/epoch_loss" if sched.monitor else None),
        x_shift=dm.x_scaler.shift.tolist(),
        x_scale=dm.x_scaler.scale.tolist(),
        y_shift=float(dm.y_scaler.shift[0]),
        y_scale=float(dm.y_scaler.scale[0]),
        feature_names=dm.table.feature_names,
        target_name=dm.table.target_name,
        class_names=dm.table.class_names,
        config=OmegaConf.to_container(cfg, resolve=True),
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
    )


def hparams_summary(cfg: DictConfig, task: str) -> dict[str, Any]:
    """The run's settings as flat scalars, for TensorBoard's HParams view."""
    opt = cfg.optimizer
    return {
        "task": task,
        "data": cfg.data.name,
        "hidden": str(list(cfg.model.hidden)),
        "activation": cfg.model.activation,
        "init": cfg.model.init,
        "optimizer": str(opt._target_).rsplit(".", 1)[-1]
        + ("+momentum" if opt.get("momentum") else ""),
        "lr": float(opt.lr),
        "weight_decay": float(opt.get("weight_decay") or 0.0),
        "scheduler": cfg.scheduler.name,
        "gd": cfg.gd.mode,
        "batch_size": int(cfg.gd.batch_size or 0),
        "max_epochs": int(cfg.trainer.max_epochs),
        "seed": int(cfg.seed),
    }


def build_trainer(cfg: DictConfig, run_dir: Path, has_val: bool):  # noqa: ANN201
    import lightning as L
    from lightning.pytorch import callbacks as cb
    from lightning.pytorch import loggers

    monitor_of = lambda m: m if has_val else "train/epoch_loss"  # noqa: E731
    callbacks: list[Any] = []
    ck = cfg.callbacks.checkpoint
    if ck.enabled:
        callbacks.append(
            cb.ModelCheckpoint(
                dirpath=run_dir / "checkpoints",
                filename="best",
                monitor=monitor_of(ck.monitor),
                mode="min",
                save_top_k=1,
                save_last=True,
                auto_insert_metric_name=False,
            )
        )
    es = cfg.callbacks.early_stopping
    if es.enabled:
        callbacks.append(
            cb.EarlyStopping(monitor=monitor_of(es.monitor), patience=es.patience, mode="min")
        )
    if cfg.logger.name == "tensorboard":
        logger: Any = loggers.TensorBoardLogger(
            save_dir=str(run_dir), name="tb", version="", default_hp_metric=False
        )
    elif cfg.logger.name == "csv":
        logger = loggers.CSVLogger(save_dir=str(run_dir), name="csv", version="")
    else:
        logger = False
    if logger and cfg.callbacks.lr_monitor:
        callbacks.append(cb.LearningRateMonitor(logging_interval="epoch"))
    from handprop.guards import AtomicCheckpointIO, DivergenceGuard

    callbacks.append(DivergenceGuard())
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    t.pop("gradient_clip_val", None)  # applied by the module itself (it runs the update loop)
    import torch
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if str(t.get("accelerator")) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={t['accelerator']} needs a CUDA GPU and none is visible; "
            "use trainer=cpu, or trainer.accelerator=auto to take a GPU when there is one"
        )
    try:
        return L.Trainer(
            **t,
            plugins=[AtomicCheckpointIO()],
            default_root_dir=str(run_dir),
            logger=logger,
            callbacks=callbacks,
            enable_checkpointing=bool(ck.enabled),
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=None if has_val else 0,
            fast_dev_run=cfg.debug.fast_dev_run,
            overfit_batches=cfg.debug.overfit_batches,
        )
    except (MisconfigurationException, ValueError, TypeError) as e:
        # Lightning's own check of a trainer.* value (precision, devices, strategy, …).
        raise ConfigError(f"trainer: {' '.join(str(e).split())}") from None


def set_threads(num_threads: int | str | None, batch_size: int, model: Any) -> None:
    """``auto``: one intra-op thread for small networks. Their matrix products take
    microseconds, and waking a second OpenMP thread (which then competes with the logger's
    writer thread on a 2-core machine) costs more than it saves: 5 s against 8-18 s for the
    default run here. Larger products keep torch's default thread count."""
    import torch

    if num_threads in (None, "default"):
        return
    if num_threads == "auto":
        work = batch_size * sum(lin.weight.numel() for lin in model.net.linears)
        if work < 5_000_000:
            torch.set_num_threads(1)
        return
    torch.set_num_threads(int(num_threads))


def quiet_lightning(verbose: bool) -> None:
    """Lightning's banner lines (GPU available, tips) and known deprecation noise off,
    unless ``verbose``; its warnings still show."""
    import warnings

    if verbose:
        return
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def prepare(cfg: DictConfig, run_dir: Path) -> tuple[Any, Any, Any, str]:
    """Check the config and build ``(datamodule, model, trainer, task)``: everything a run
    does before ``fit`` (the benchmark times ``fit`` alone on exactly these objects)."""
    validate(cfg)
    import lightning as L

    from handprop.datasets import DATA_KINDS

    quiet_lightning(verbose_errors(cfg))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task, loss = resolve_task(cfg, DATA_KINDS.get(cfg.data.name, "regression"))
    target = cfg.get("optimized_metric")
    if target:
        from handprop.model import METRICS

        allowed = [f"{s}/{m}" for s in ("train", "val", "test") for m in ("loss", *METRICS[task])]
        if target not in allowed:
            raise ConfigError(
                f"optimized_metric={target} is not a metric of task={task}; choose one of {', '.join(allowed)}"
            )
    dm = build_datamodule(cfg, kind=task)
    if task == "binary" and dm.table.num_classes != 2:
        raise ConfigError(
            f"task=binary needs two classes; data={cfg.data.name} has {dm.table.num_classes}: use task=multiclass"
        )
    model = build_model(cfg, dm, task, loss)
    set_threads(cfg.num_threads, cfg.gd.batch_size or dm.num_train, model)
    trainer = build_trainer(cfg, run_dir, has_val=dm.indices["val"].size > 0)
    return dm, model, trainer, task


def train(cfg: DictConfig, run_dir: Path) -> dict[str, float]:
    """Train, test and write ``metrics.json`` into ``run_dir``; return the final metrics."""
    t0 = time.perf_counter()
    dm, model, trainer, task = prepare(cfg, run_dir)
    import lightning as L
    import torch

    ckpt_path = cfg.ckpt_path
    if ckpt_path == "last":
        ckpt_path = str(run_dir / "checkpoints" / "last.ckpt")
    if ckpt_path is not None:
        from handprop.checkpoint import load_module

        load_module(ckpt_path)  # refuses a missing, foreign or unsafe file in one line
    # A run directory says whether its run finished: no metrics.json until it has.
    if trainer.is_global_zero:  # under DDP the other ranks write nothing here
        for stale in ("metrics.json", "error.json"):
            (run_dir / stale).unlink(missing_ok=True)
    from handprop.guards import Diverged

    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    except Diverged as e:
        last = run_dir / "checkpoints" / "last.ckpt"
        kept = (
            f" The last good checkpoint: {last}"
            if last.is_file()
            else " No checkpoint was saved before it."
        )
        raise Diverged(e.step, e.loss, e.last_finite, e.lr, kept) from None

    # The best weights (early stopping's restore), when there is a best checkpoint.
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.callbacks.early_stopping.restore_best and best and not cfg.debug.fast_dev_run:
        state = torch.load(best, map_location=model.device, weights_only=True)["state_dict"]
        model.load_state_dict(state)
    if dm.indices["test"].size:
        trainer.test(model, datamodule=dm, verbose=False)
    model.eval()
    rows = {}
    for split in ("train", "val", "test"):
        if dm.indices[split].size:
            x, y = dm.split(split, device=model.device)
            rows[split] = model.evaluate(x, y)
    metrics = {f"{s}/{k}": v for s, r in rows.items() for k, v in r.items()}
    metrics["epochs"] = trainer.current_epoch
    metrics["global_step"] = trainer.global_step
    metrics["train_seconds"] = round(time.perf_counter() - t0, 3)
    if not trainer.is_global_zero:
        return metrics  # under DDP only rank 0 writes logs, checkpoints and metrics.json
    if trainer.logger and isinstance(trainer.logger, L.pytorch.loggers.TensorBoardLogger):
        trainer.logger.log_hyperparams(
            hparams_summary(cfg, task), {k: v for k, v in metrics.items() if k.startswith("test/")}
        )
    write_json_atomic(run_dir / "metrics.json", metrics)
    print(
        f"\nhandprop: {task} on {cfg.data.name}, MLP {dm.in_features}-{'-'.join(map(str, cfg.model.hidden))}{'-' if cfg.model.hidden else ''}{dm.out_features}, {trainer.current_epoch} epochs, {trainer.global_step} updates"
    )
    print(format_table(rows))
    print(f"\nrun directory: {run_dir}")
    if trainer.logger:
        print(f"tensorboard:   tensorboard --logdir {run_dir}")
    if best:
        print(
            f"predict:       handprop-predict ckpt_path={best} input=your.csv output=predictions.csv"
        )
        print(f"evaluate:      handprop-eval ckpt_path={best}")
    return metrics


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> dict | float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    target = cfg.get("optimized_metric")  # set by hparams_search: sweepers want one number
    try:
        metrics = train(cfg, run_dir)
        if target:
            if target not in metrics:
                raise ConfigError(
                    f"optimized_metric={target} is not a metric of this run; choose one of {sorted(k for k in metrics if '/' in k)}"
                )
            return float(metrics[target])
        return metrics
    except Exception as e:  # noqa: BLE001 — every failure becomes one line (trace on request)
        known = is_user_error(e)
        report(e, verbose_errors(cfg) or not known)
        write_json_atomic(run_dir / "error.json", {"error": f"{type(e).__name__}: {e}"})
        if hc.mode == RunMode.MULTIRUN:
            # The sweep goes on; the summary lists this job as failed (a search sees NaN).
            return float("nan") if target else None
        raise SystemExit(2 if known else 1) from None


def main() -> None:
    """Console entry point: ``handprop-train [group=option ...] [key=value ...] [-m]``."""
    run_cli(_hydra_main, "train")
    from handprop.sweep import FAILED_JOBS

    if FAILED_JOBS:
        raise SystemExit(1)


if __name__ == "__main__":
    sys.exit(main())
