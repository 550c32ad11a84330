"""From a Hydra config to the objects of a run: data module, model, trainer.

Flow: :func:`check` (every constraint on a setting, declared once in :data:`CHECKS`) →
:func:`plan` (every value derived from the config, computed once) → :func:`build_datamodule`,
:func:`build_module`, :func:`build_trainer`. :func:`prepare` does all of it; the run itself
(fit, evaluate, write) is :func:`handprop.run.train`.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import crc32c
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import callbacks as cb
from lightning.pytorch import loggers
from omegaconf import DictConfig, OmegaConf

from handprop.cli import ConfigError, verbose_errors
from handprop.data import PREPROCESSING, TabularDataModule
from handprop.datasets import DATA_TASKS, TASKS, UNSUPERVISED, load_table
from handprop.gan import GANModule
from handprop.guards import AtomicCheckpointIO, Checkpoints
from handprop.model import NETWORKS, HandpropModule
from handprop.nn import ACTIVATIONS, CELLS, INITS, POOLS, block_pools, conv_output_size
from handprop.pictures import PICTURED, Pictures
from handprop.progress import Progress
from handprop.task import COSTS, MONITOR, TASK_COSTS, metric_names

# --------------------------------------------------------------------------------------------
# Every constraint on a setting, declared once (as scikit-learn's _parameter_constraints)
# --------------------------------------------------------------------------------------------


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _one_of(options: Any) -> tuple[Callable[[Any], bool], str]:
    names = list(options)
    return (lambda v: v in names), f"one of {', '.join(map(str, names))}"


POSITIVE = (lambda v: _number(v) and v > 0, "must be a number > 0")
NON_NEGATIVE = (lambda v: _number(v) and v >= 0, "must be a number >= 0")
POSITIVE_INT = (lambda v: _integer(v) and v > 0, "a positive integer")
FRACTION = (lambda v: _number(v) and 0 <= v < 1, "a fraction in [0, 1)")

#: setting → (test, what is allowed). ``None`` values pass for the settings in OPTIONAL.
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "optimizer.lr": POSITIVE,
    "optimizer.weight_decay": NON_NEGATIVE,
    "optimizer.momentum": (lambda v: _number(v) and 0 <= v < 1, "must be in [0, 1)"),
    "model.name": _one_of(NETWORKS),
    "model.hidden": (
        lambda v: OmegaConf.is_list(v) and all(_integer(h) and h > 0 for h in v),
        "must be a list of positive integers, e.g. [5] or [64,64] or []",
    ),
    "model.activation": _one_of(ACTIVATIONS),
    "model.output": _one_of(("linear", *ACTIVATIONS)),
    "model.init": _one_of(INITS),
    "model.channels": (
        lambda v: OmegaConf.is_list(v) and len(v) > 0 and all(_integer(c) and c > 0 for c in v),
        "must be a non-empty list of positive integers (filters per block), e.g. [8,16]",
    ),
    "model.kernel_sizes": (
        lambda v: (
            (_integer(v) and v > 0)
            or (OmegaConf.is_list(v) and len(v) > 0 and all(_integer(k) and k > 0 for k in v))
        ),
        "must be a positive integer or a list of them (one per block), e.g. 3 or [5,3]",
    ),
    "model.pool": (
        lambda v: (
            v in POOLS or (OmegaConf.is_list(v) and len(v) > 0 and all(p in POOLS for p in v))
        ),
        f"one of {', '.join(POOLS)}, or a list of them with one per block, e.g. [none,max]",
    ),
    "model.pool_size": POSITIVE_INT,
    "model.dropout": (lambda v: _number(v) and 0 <= v < 1, "a probability in [0, 1)"),
    "model.cell": _one_of(CELLS),
    "model.hidden_size": POSITIVE_INT,
    "model.num_layers": POSITIVE_INT,
    "model.nonlinearity": _one_of(("tanh", "relu")),
    "gd.batch_size": (POSITIVE_INT[0], "a positive integer (null = whole training set)"),
    "gd.base_batch_size": POSITIVE_INT,
    "data.val_fraction": FRACTION,
    "data.test_fraction": FRACTION,
    "data.preprocessing": _one_of(PREPROCESSING),
    "data.n_samples": POSITIVE_INT,
    "data.n_features": POSITIVE_INT,
    "data.n_classes": POSITIVE_INT,
    "data.noise": NON_NEGATIVE,
    "data.window": POSITIVE_INT,
    "data.radius": POSITIVE,
    "model.code_size": POSITIVE_INT,
    "model.noise_size": POSITIVE_INT,
    "model.d_steps": POSITIVE_INT,
    "model.ema": FRACTION,
    "trainer.max_epochs": POSITIVE_INT,
    "trainer.max_steps": (lambda v: _integer(v) and (v > 0 or v == -1), "-1 or a positive integer"),
    "trainer.gradient_clip_val": (POSITIVE[0], "null or a number > 0"),
    "seed": (lambda v: _integer(v) and v >= 0, "a non-negative integer"),
    "logger.name": _one_of(("tensorboard", "csv", "none")),
    "steps_per_call": (
        lambda v: v == "auto" or (_integer(v) and v > 0),
        "auto or a positive integer",
    ),
    "num_threads": (
        lambda v: v in ("auto", "default") or (_integer(v) and v > 0),
        "auto, default or a positive integer",
    ),
    "backprop": _one_of(("auto", "recursion", "autograd")),
    "progress": (lambda v: isinstance(v, bool), "true or false"),
    "callbacks.checkpoint.every_seconds": NON_NEGATIVE,
    "callbacks.early_stopping.patience": (lambda v: _integer(v) and v >= 0, "an integer >= 0"),
    "task.loss": _one_of(COSTS),
    "lr_find": (lambda v: v is True or v is False or v == "only", "true, false or only"),
    "lr_finder.min_lr": POSITIVE,
    "lr_finder.max_lr": POSITIVE,
    "lr_finder.updates": (lambda v: _integer(v) and v >= 20, "an integer >= 20"),
    "lr_finder.stop_factor": (lambda v: _number(v) and v > 1, "a number > 1"),
    "monitors.enabled": (lambda v: isinstance(v, bool), "true or false (or monitors=on / off)"),
    "monitors.every_n": POSITIVE_INT,
    "monitors.histograms": (lambda v: isinstance(v, bool), "true or false"),
}
OPTIONAL = {
    "optimizer.weight_decay",
    "optimizer.momentum",
    "gd.batch_size",
    "data.n_samples",
    "data.n_features",
    "data.n_classes",
    "data.noise",
    "data.window",
    "trainer.gradient_clip_val",
    "num_threads",
    "task.loss",
}


_ABSENT = object()


def check(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (one line, naming the key) for a value training can't use."""
    for key, (ok, allowed) in CHECKS.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT or (value is None and key in OPTIONAL):
            continue  # not a setting of this config (momentum with Adam), or an optional null
        if not ok(value):
            raise ConfigError(f"{key}={value!r} is invalid: {allowed}")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1:
        raise ConfigError(
            f"data.test_fraction={cfg.data.test_fraction!r} is invalid: val_fraction + "
            f"test_fraction must be below 1 (val_fraction={cfg.data.val_fraction})"
        )


# --------------------------------------------------------------------------------------------
# Every value derived from the config, computed once
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What a run derives from its config and data, decided in one place and passed down."""

    task: str  # regression | binary | multiclass | reconstruction | generation
    cost: str | None  # a key of task.COSTS; None = the task's default
    batch_size: int  # rows per update on each process (gd.batch_size, else the whole split)
    global_batch: int  # rows per update over all processes: the linear scaling rule's B
    lr: float  # optimizer.lr, scaled by B / gd.base_batch_size when gd.lr_scaling
    monitor: str  # val/loss, or train/epoch_loss when there is no validation split
    steps_per_call: int  # updates per Lightning step
    world_size: int  # processes (DDP) taking part in each update


#: Updates per Lightning step on the fast path, chosen by measurement (see the README).
DEFAULT_STEPS_PER_CALL = 64


def world_size(cfg: DictConfig) -> int:
    """Processes that share each update: devices × nodes under a DDP strategy, else 1."""
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    if "ddp" in str(cfg.trainer.strategy) and isinstance(devices, int):
        return devices * nodes
    return 1


#: The networks that train one task only, whatever the data: ``task=auto`` picks it.
MODEL_TASKS = {"autoencoder": "reconstruction", "gan": "generation"}
#: The networks trained by a module of their own (the default: HandpropModule).
MODULES: dict[str, type[HandpropModule]] = {"gan": GANModule}


def module_class(network: str) -> type[HandpropModule]:
    """The LightningModule that trains network ``network`` (a key of ``NETWORKS``)."""
    return MODULES.get(network, HandpropModule)


def resolve_task(cfg: DictConfig) -> tuple[str, str | None]:
    """The task to train and its cost: the config's, or for ``task=auto`` the network's own
    (an autoencoder reconstructs, a GAN generates) or else the data set's."""
    task, data, model = cfg.task.name, cfg.data.name, cfg.model.name
    own = MODEL_TASKS.get(model)
    if own is not None and task not in ("auto", own):
        raise ConfigError(
            f"task={task} does not fit model={model}, which trains task={own}; use "
            f"task={own} (or task=auto)"
        )
    if own is None and task in UNSUPERVISED:
        needs = next(m for m, t in MODEL_TASKS.items() if t == task)
        raise ConfigError(f"task={task} needs model={needs} (model={model} predicts a target)")
    if own is not None:
        loss = cfg.task.loss
        if loss is not None and loss not in TASK_COSTS[own]:
            raise ConfigError(
                f"task.loss={loss} does not fit task={own}; use {' or '.join(TASK_COSTS[own])}"
            )
        return own, loss
    if task == "auto":
        if data == "csv":
            raise ConfigError(
                "task=auto needs a known data set; with data=csv set task=regression, binary "
                "or multiclass"
            )
        return DATA_TASKS[data], None
    if task not in TASKS:
        raise ConfigError(f"task={task} is not one of {', '.join(TASKS)}")
    if data != "csv" and task != DATA_TASKS[data]:
        raise ConfigError(
            f"task={task} does not fit data={data}, a {DATA_TASKS[data]} data set; use "
            f"task={DATA_TASKS[data]} (or task=auto)"
        )
    return task, cfg.task.loss


def steps_per_call(cfg: DictConfig) -> int:
    """Updates per Lightning step: ``steps_per_call``, where ``auto`` is 64, or 1 where
    Lightning must see each batch: DDP (its gradient sync runs in each backward) and the debug
    modes (one batch per step)."""
    if cfg.steps_per_call != "auto":
        return int(cfg.steps_per_call)
    if world_size(cfg) > 1 or cfg.debug.fast_dev_run or cfg.debug.overfit_batches:
        return 1
    return DEFAULT_STEPS_PER_CALL


def plan(cfg: DictConfig, dm: TabularDataModule, task: str, cost: str | None) -> Plan:
    world = world_size(cfg)
    batch = cfg.gd.batch_size or dm.num_train // world
    lr = float(cfg.optimizer.lr)
    if cfg.gd.lr_scaling:  # a B-times larger batch takes a B-times larger step
        lr *= batch * world / cfg.gd.base_batch_size
    return Plan(
        task=task,
        cost=cost,
        batch_size=batch,
        global_batch=batch * world,
        lr=lr,
        monitor=f"val/{MONITOR.get(task, 'loss')}" if dm.has("val") else "train/epoch_loss",
        steps_per_call=dm.steps_per_call,
        world_size=world,
    )


# --------------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------------
#: The networks whose weights are shared over an image's pixels (a filter slides over all of
#: them; a recurrent layer reads every row with the same weights): their pixels are scaled
#: together. Per pixel, a near-constant border pixel standardised on its own turns a rare stroke
#: into a value of ~50.
SHARED_WEIGHTS = ("cnn", "rnn")


def build_datamodule(cfg: DictConfig, task: str) -> TabularDataModule:
    """The data module of ``cfg.data`` and ``cfg.gd`` (``task`` says how to read a CSV)."""
    d = cfg.data
    if d.name == "csv":
        needed = ("path",) if task in UNSUPERVISED else ("path", "target")
        missing = [f"data.{k}" for k in needed if OmegaConf.is_missing(d, k)]
        if missing:
            raise ConfigError(
                f"data=csv needs {' and '.join(missing)} (e.g. data.path=my.csv data.target=price)"
            )
    if task == "generation" and not d.val_fraction:
        raise ConfigError(
            "data.val_fraction=0 is invalid for model=gan: the best generator is the one whose "
            "samples are closest (energy distance) to the validation rows; use e.g. 0.15"
        )
    table = load_table(
        d.name,
        n_samples=d.get("n_samples"),
        noise=d.get("noise"),
        seed=cfg.seed,
        path=d.get("path"),
        target=d.get("target") if not OmegaConf.is_missing(d, "target") else None,
        features=list(d.features) if d.get("features") else None,
        task=task if d.name == "csv" else None,
        n_features=d.get("n_features"),
        n_classes=d.get("n_classes"),
        window=d.get("window"),
        radius=d.get("radius"),
    )
    if task == "binary" and table.num_classes != 2:
        raise ConfigError(
            f"task=binary needs two classes; data={d.name} has {table.num_classes}: use "
            "task=multiclass"
        )
    batch = cfg.gd.batch_size
    if cfg.model.name == "gan" and batch:  # one update: d_steps batches of real rows
        batch *= cfg.model.d_steps
    return TabularDataModule(
        table,
        batch_size=batch,
        preprocessing=d.preprocessing,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        shuffle=cfg.gd.shuffle and not cfg.debug.overfit_batches,
        seed=cfg.seed,
        steps_per_call=steps_per_call(cfg),
        reconstruct=task == "reconstruction",
        pooled_scaling=cfg.model.name in SHARED_WEIGHTS and table.image_shape is not None,
    )


def mlp_network(cfg: DictConfig, dm: TabularDataModule) -> dict[str, Any]:
    m = cfg.model
    return {"in_features": dm.in_features, "out_features": dm.out_features, **_hidden_layers(m)}


def cnn_network(cfg: DictConfig, dm: TabularDataModule) -> dict[str, Any]:
    """A :class:`~handprop.nn.ConvNet` over the data set's images (one channel)."""
    m, image = cfg.model, dm.table.image_shape
    if image is None:
        raise ConfigError(
            f"model=cnn needs rows that are images, as data=digits (8×8 pixels); "
            f"data={cfg.data.name}'s rows are {dm.in_features} separate features: use model=mlp"
        )
    channels = list(m.channels)
    sizes = m.kernel_sizes if _integer(m.kernel_sizes) else list(m.kernel_sizes)
    if not _integer(sizes) and len(sizes) != len(channels):
        raise ConfigError(
            f"model.kernel_sizes={sizes} is invalid: one size for every block, or one per entry "
            f"of model.channels={channels} ({len(channels)})"
        )
    pool = m.pool if isinstance(m.pool, str) else list(m.pool)
    try:
        pools = block_pools(pool, len(channels))
    except ValueError:
        raise ConfigError(
            f"model.pool={pool} is invalid: one of {', '.join(POOLS)} for every block, or a list "
            f"with one per entry of model.channels={channels} ({len(channels)})"
        ) from None
    h, w = conv_output_size(image, pools, m.pool_size)
    if h < 1 or w < 1:
        n = sum(p != "none" for p in pools)
        raise ConfigError(
            f"model.pool={pool} is invalid for data={cfg.data.name}: {n} poolings of "
            f"{m.pool_size} shrink its {image[0]}×{image[1]} images to nothing; pool fewer "
            f"blocks (e.g. model.pool=[none,max,none]) or use a smaller model.pool_size"
        )
    return {
        "in_shape": [1, *image],
        "channels": channels,
        "out_features": dm.out_features,
        "kernel_sizes": sizes,
        "pool": pool,
        "pool_size": m.pool_size,
        "dropout": m.dropout,
        **_hidden_layers(m),
    }


def rnn_network(cfg: DictConfig, dm: TabularDataModule) -> dict[str, Any]:
    """A :class:`~handprop.nn.RecurrentNet` over the data set's sequences: a time series'
    window (``time_steps``), or an image read row by row, top to bottom (digits: 8 steps of 8
    pixels)."""
    m, table = cfg.model, dm.table
    steps = table.time_steps or (table.image_shape[0] if table.image_shape else None)
    if steps is None:
        raise ConfigError(
            f"model=rnn needs rows that are sequences, as data=sine (a window of past values), "
            f"data=digits (8 rows of 8 pixels) or data=csv with data.window=N; "
            f"data={cfg.data.name}'s rows are {dm.in_features} separate features: use model=mlp"
        )
    return {
        "in_shape": [steps, dm.in_features // steps],
        "out_features": dm.out_features,
        "hidden_size": m.hidden_size,
        "num_layers": m.num_layers,
        "cell": m.cell,
        "nonlinearity": m.nonlinearity,
    }


def _hidden_layers(m: DictConfig) -> dict[str, Any]:
    return {"hidden_features": list(m.hidden), "activation": m.activation, "init": m.init}


def autoencoder_network(cfg: DictConfig, dm: TabularDataModule) -> dict[str, Any]:
    m = cfg.model
    return {"in_features": dm.in_features, "code_size": m.code_size, **_hidden_layers(m)}


def gan_network(cfg: DictConfig, dm: TabularDataModule) -> dict[str, Any]:
    m = cfg.model
    return {
        "sample_features": dm.in_features,
        "noise_size": m.noise_size,
        "output": m.output,
        **_hidden_layers(m),
    }


#: model.name → the network's keyword arguments, from the config and the data's shapes.
NETWORK_ARGS: dict[str, Callable[[DictConfig, TabularDataModule], dict[str, Any]]] = {
    "mlp": mlp_network,
    "cnn": cnn_network,
    "rnn": rnn_network,
    "autoencoder": autoencoder_network,
    "gan": gan_network,
}


def build_module(cfg: DictConfig, dm: TabularDataModule, p: Plan) -> HandpropModule:
    opt_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
    opt_cfg["lr"] = p.lr
    sched = cfg.scheduler
    table = dm.table
    name = cfg.model.name
    task: dict[str, Any] = {
        "name": p.task,
        "cost": p.cost,
        "num_classes": table.num_classes,
        "x_shift": dm.x_scaler.shift.tolist(),
        "x_scale": dm.x_scaler.scale.tolist(),
        "y_shift": float(dm.y_scaler.shift[0]),
        "y_scale": float(dm.y_scaler.scale[0]),
    }
    extra: dict[str, Any] = {}
    if p.task == "reconstruction":
        task["pca_components"] = int(cfg.model.code_size)
    if p.task == "generation":
        task |= {"modes": table.modes, "mode_std": table.mode_std}
        extra |= {"d_steps": int(cfg.model.d_steps), "ema": float(cfg.model.ema or 0)}
    module = module_class(name)(
        network={"name": name, **NETWORK_ARGS[name](cfg, dm)},
        task=task,
        columns={
            "features": table.feature_names,
            "target": table.target_name,
            "classes": table.class_names,
        },
        config=OmegaConf.to_container(cfg, resolve=True),
        optimizer=instantiate(opt_cfg),
        scheduler=instantiate(sched.fn) if sched.fn is not None else None,
        scheduler_interval=sched.interval,
        monitor=p.monitor,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        max_steps=cfg.trainer.max_steps,
        backprop=cfg.backprop,
        log_lr=bool(cfg.callbacks.lr_monitor),
        monitors=(
            {"every_n": cfg.monitors.every_n, "histograms": cfg.monitors.histograms}
            if cfg.monitors.enabled
            else None
        ),
        **extra,
    )
    if p.task == "reconstruction":  # the PCA the autoencoder is measured against
        module.task.fit_pca(dm.split("train")[0])
    return module


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum of an event: CRC-32C of ``data``, rotated right by 15 bits plus
    0xA282EAD8 (mod 2³²), computed in C by the ``crc32c`` package."""
    x = crc32c.crc32c(data)
    return (((x >> 15) | ((x << 17) & 0xFFFFFFFF)) + 0xA282EAD8) & 0xFFFFFFFF


def fast_tensorboard_checksums() -> None:
    """TensorBoard without TensorFlow checksums each event it writes in pure Python (~0.1 µs
    a byte, in its writer thread, holding the interpreter): ~40 % of a monitors event's cost.
    Its record writer gets the same checksum computed in C; where a TensorBoard version has
    no such writer, nothing changes (tests/test_train.py checks that it took)."""
    try:
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return
    if hasattr(record_writer, "masked_crc32c"):
        record_writer.masked_crc32c = masked_crc32c


def build_trainer(cfg: DictConfig, run_dir: Path, p: Plan) -> L.Trainer:
    callbacks: list[L.Callback] = []
    ck, es = cfg.callbacks.checkpoint, cfg.callbacks.early_stopping
    if ck.enabled:
        callbacks.append(Checkpoints(run_dir / "checkpoints", p.monitor, ck.every_seconds))
    if es.enabled:
        # Checked at the end of each training epoch: the module validates there.
        callbacks.append(
            cb.EarlyStopping(p.monitor, patience=es.patience, check_on_train_epoch_end=True)
        )
    if cfg.progress:
        callbacks.append(Progress())
    if cfg.logger.name == "tensorboard" and cfg.model.name in PICTURED:
        callbacks.append(Pictures())
    logger: Any = False
    if cfg.logger.name == "tensorboard":
        fast_tensorboard_checksums()
        # max_queue: events wait in memory instead of blocking every 10th call on the writer
        logger = loggers.TensorBoardLogger(
            save_dir=str(run_dir), name="tb", version="", default_hp_metric=False, max_queue=1000
        )
    elif cfg.logger.name == "csv":
        logger = loggers.CSVLogger(save_dir=str(run_dir), name="csv", version="")
    t = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in ("gradient_clip_val", "max_steps"):
        t.pop(key)  # applied by the module, which runs the updates
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
            limit_val_batches=0,  # the module validates the whole split at each epoch's end
            fast_dev_run=cfg.debug.fast_dev_run,
            overfit_batches=cfg.debug.overfit_batches,
        )
    except (MisconfigurationException, ValueError, TypeError) as e:
        # Lightning's own check of a trainer.* value (precision, devices, strategy, …).
        raise ConfigError(f"trainer: {' '.join(str(e).split())}") from None


def set_threads(num_threads: int | str | None, batch_size: int, net: torch.nn.Module) -> None:
    """``auto``: one intra-op thread for small networks. Their matrix products take
    microseconds, and waking a second OpenMP thread (which then competes with the logger's
    writer thread on a 2-core machine) costs more than it saves. Larger products keep
    torch's default thread count."""
    if num_threads in (None, "default"):
        return
    if num_threads == "auto":
        if batch_size * sum(p.numel() for p in net.parameters()) < 5_000_000:
            torch.set_num_threads(1)
        return
    torch.set_num_threads(int(num_threads))


def hparams_summary(cfg: DictConfig, p: Plan, num_train: int) -> dict[str, Any]:
    """The run's settings as flat scalars, for TensorBoard's HParams view."""
    opt = cfg.optimizer
    model = {
        f"model.{k}": v if isinstance(v, int | float | str | bool) else str(v)
        for k, v in OmegaConf.to_container(cfg.model, resolve=True).items()
    }
    return {
        "task": p.task,
        "data": cfg.data.name,
        **model,
        "optimizer": str(opt._target_).rsplit(".", 1)[-1]
        + ("+momentum" if opt.get("momentum") else ""),
        "lr": p.lr,
        "weight_decay": float(opt.get("weight_decay") or 0.0),
        "scheduler": cfg.scheduler.name,
        "gd": cfg.gd.mode,
        "batch_size": p.global_batch,  # rows per update; batch descent: the training rows
        "train_rows": num_train,
        "max_epochs": int(cfg.trainer.max_epochs),
        "seed": int(cfg.seed),
    }


def allowed_metrics(task: str) -> list[str]:
    return [f"{s}/{m}" for s in ("train", "val", "test") for m in metric_names(task)]


class Run(NamedTuple):
    """The built pieces of one training run."""

    datamodule: TabularDataModule
    module: HandpropModule
    trainer: L.Trainer
    plan: Plan


def quiet_lightning(verbose: bool) -> None:
    """Lightning's banner lines (GPU available, tips) and known deprecation noise off,
    unless ``verbose``; its warnings still show."""
    if verbose:
        return
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # counts Lightning steps (chunks); handprop logs train/loss by update count itself
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    if "SLURM_JOB_ID" not in os.environ:
        # Outside any SLURM job, Lightning's hint that `srun` is installed but unused says
        # nothing: a run there is not meant for SLURM (hydra/launcher=slurm runs jobs under
        # srun). Inside a job (an sbatch script without srun) the hint stays.
        warnings.filterwarnings("ignore", message="The `srun` command is available")


def prepare(cfg: DictConfig, run_dir: Path) -> Run:
    """Check the config and build everything a run needs before ``fit`` (the benchmark times
    ``fit`` alone on exactly these objects)."""
    check(cfg)
    quiet_lightning(verbose_errors(cfg))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    task, cost = resolve_task(cfg)
    target = cfg.get("optimized_metric")
    if target and target not in allowed_metrics(task):
        raise ConfigError(
            f"optimized_metric={target} is not a metric of task={task}; choose one of "
            f"{', '.join(allowed_metrics(task))}"
        )
    if task == "generation" and world_size(cfg) > 1:
        raise ConfigError(
            f"trainer.strategy={cfg.trainer.strategy} is not supported by model=gan: its two "
            "networks' alternating updates run in one process; use trainer=default"
        )
    if task == "generation" and cfg.monitors.enabled:
        raise ConfigError(
            "monitors=on is not supported by model=gan: its monitors follow one network's δ "
            "recursion; use monitors=off"
        )
    dm = build_datamodule(cfg, task)
    p = plan(cfg, dm, task, cost)
    module = build_module(cfg, dm, p)
    if cfg.backprop == "recursion" and not module.has_recursion():
        written = ", ".join(f"model={n}" for n, c in NETWORKS.items() if hasattr(c, "backprop"))
        raise ConfigError(
            f"backprop=recursion is invalid for model={cfg.model.name}: its gradients come from "
            f"autograd calling its Functions' hand-written backward (the δ recursion is written "
            f"out for {written}); use backprop=auto"
        )
    set_threads(cfg.num_threads, p.batch_size, module.net)
    trainer = build_trainer(cfg, run_dir, p)
    return Run(dm, module, trainer, p)
