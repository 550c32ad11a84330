"""From a Hydra config to the objects of a run, in one straight line:

:func:`~handprop.trainer.config.check` (every constraint on a setting, declared once) →
:func:`load_data` → :func:`~handprop.trainer.plan.make_plan` (every derived value, computed
once) → :func:`build_datamodule`, :func:`build_module`, :func:`build_trainer`, each given the
plan. :func:`prepare` does all of it; the run itself (fit, evaluate, write) is
:func:`handprop.trainer.run.train`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import callbacks as cb
from lightning.pytorch import loggers
from omegaconf import DictConfig, OmegaConf

from handprop.networks import POOLS, block_pools, conv_output_size
from handprop.trainer.checkpoints import (
    AtomicCheckpointIO,
    Checkpoints,
    StopOnSignal,
    module_class,
)
from handprop.trainer.cli import verbose_errors
from handprop.trainer.config import (
    MODEL_TASKS,
    _integer,
    allowed_metrics,
    one_line,
    problems,
    resolve_task,
)
from handprop.trainer.data import TabularDataModule
from handprop.trainer.datasets import UNSUPERVISED, Table, csv_problems
from handprop.trainer.errors import ConfigError
from handprop.trainer.model import WRITTEN_OUT, HandpropModule
from handprop.trainer.pictures import PICTURED, Pictures
from handprop.trainer.plan import Plan, make_plan, world_size
from handprop.trainer.progress import Progress
from handprop.trainer.splits import pooled_scaling
from handprop.trainer.startup import fast_tensorboard_checksums, quiet_lightning, set_threads
from handprop.trainer.trained import table_of

# --------------------------------------------------------------------------------------------
# The pieces
# --------------------------------------------------------------------------------------------


def data_problems(cfg: DictConfig, task: str | None) -> list[str]:
    """Every problem of the data settings that shows before the rows are read: a CSV's
    missing ``data.path`` or ``data.target``, a path that is no file, a target or features
    its header lacks (``task`` None: not known, because the task setting is wrong itself)."""
    d, found = cfg.data, []
    unsupervised = task in UNSUPERVISED or (task is None and cfg.model.name in MODEL_TASKS)
    if d.name == "csv":
        needed = ("path",) if unsupervised else ("path", "target")
        missing = [f"data.{k}" for k in needed if OmegaConf.is_missing(d, k)]
        if missing:
            found.append(
                f"data=csv needs {' and '.join(missing)} (e.g. data.path=my.csv data.target=price)"
            )
        if not OmegaConf.is_missing(d, "path"):
            target = None if OmegaConf.is_missing(d, "target") else d.get("target")
            found += csv_problems(
                d.get("path") or "",
                target,
                list(d.features) if d.get("features") else None,
                MODEL_TASKS.get(cfg.model.name) if unsupervised else task,
                target_required="data.target" not in missing,
            )
    if task == "generation" and not d.val_fraction:
        found.append(
            "data.val_fraction=0 is invalid for model=gan: the best generator is the one whose "
            "samples are closest (energy distance) to the validation rows; use e.g. 0.15"
        )
    return found


def load_data(cfg: DictConfig, task: str) -> Table:
    """The data set of ``cfg.data`` as a table (``task`` says how to read a CSV)."""
    d = cfg.data
    found = data_problems(cfg, task)
    if found:
        raise ConfigError(one_line(found))
    table = table_of(OmegaConf.to_container(d, resolve=True), cfg.seed, task)
    if task == "binary" and table.num_classes != 2:
        raise ConfigError(
            f"task=binary needs two classes; data={d.name} has {table.num_classes}: use "
            "task=multiclass"
        )
    return table


def build_datamodule(cfg: DictConfig, table: Table, p: Plan) -> TabularDataModule:
    """The data module over ``table``: split and scaled as ``cfg.data`` says, batched as the
    plan says."""
    d = cfg.data
    return TabularDataModule(
        table,
        batch_size=p.rows_per_step,
        preprocessing=d.preprocessing,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        shuffle=cfg.gd.shuffle and not cfg.debug.overfit_batches,
        seed=cfg.seed,
        steps_per_call=p.steps_per_call,
        reconstruct=p.task == "reconstruction",
        pooled_scaling=pooled_scaling(cfg.model.name, table),
    )


def data_of(cfg: DictConfig, task: str) -> TabularDataModule:
    """The data module a run of ``cfg`` trained on (same seed, same rows, same scaling), for
    ``handprop-eval`` and the demos that rebuild a finished run's splits."""
    table = load_data(cfg, task)
    return build_datamodule(cfg, table, make_plan(cfg, len(table.y), task, cfg.task.cost))


def mlp_network(cfg: DictConfig, table: Table) -> dict[str, Any]:
    m = cfg.model
    return {
        "in_features": table.in_features,
        "out_features": table.out_features,
        **_hidden_layers(m),
    }


def cnn_network(cfg: DictConfig, table: Table) -> dict[str, Any]:
    """A :class:`~handprop.nn.ConvNet` over the data set's images (one channel)."""
    m, image = cfg.model, table.image_shape
    if image is None:
        raise ConfigError(
            f"model=cnn needs rows that are images, as data=digits (8×8 pixels); "
            f"data={cfg.data.name}'s rows are {table.in_features} separate features: use model=mlp"
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
        "out_features": table.out_features,
        "kernel_sizes": sizes,
        "pool": pool,
        "pool_size": m.pool_size,
        "dropout": m.dropout,
        **_hidden_layers(m),
    }


def rnn_network(cfg: DictConfig, table: Table) -> dict[str, Any]:
    """A :class:`~handprop.nn.RecurrentNet` over the data set's sequences: a time series'
    window (``time_steps``), or an image read row by row, top to bottom (digits: 8 steps of 8
    pixels)."""
    m = cfg.model
    steps = table.time_steps or (table.image_shape[0] if table.image_shape else None)
    if steps is None:
        raise ConfigError(
            f"model=rnn needs rows that are sequences, as data=sine (a window of past values), "
            f"data=digits (8 rows of 8 pixels) or data=csv with data.window=N; "
            f"data={cfg.data.name}'s rows are {table.in_features} separate features: use model=mlp"
        )
    return {
        "in_shape": [steps, table.in_features // steps],
        "out_features": table.out_features,
        "hidden_size": m.hidden_size,
        "num_layers": m.num_layers,
        "cell": m.cell,
        "nonlinearity": m.nonlinearity,
    }


def _hidden_layers(m: DictConfig) -> dict[str, Any]:
    return {"hidden_features": list(m.hidden), "activation": m.activation, "init": m.init}


def autoencoder_network(cfg: DictConfig, table: Table) -> dict[str, Any]:
    m = cfg.model
    return {"in_features": table.in_features, "code_size": m.code_size, **_hidden_layers(m)}


def gan_network(cfg: DictConfig, table: Table) -> dict[str, Any]:
    m = cfg.model
    return {
        "sample_features": table.in_features,
        "noise_size": m.noise_size,
        "output": m.output,
        **_hidden_layers(m),
    }


#: model.name → the network's keyword arguments, from the config and the data's shapes.
NETWORK_ARGS: dict[str, Callable[[DictConfig, Table], dict[str, Any]]] = {
    "mlp": mlp_network,
    "cnn": cnn_network,
    "rnn": rnn_network,
    "autoencoder": autoencoder_network,
    "gan": gan_network,
}


def build_module(cfg: DictConfig, dm: TabularDataModule, p: Plan) -> HandpropModule:
    opt_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
    opt_cfg["lr"] = p.lr
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
        network={"name": name, **NETWORK_ARGS[name](cfg, table)},
        task=task,
        columns={
            "features": table.feature_names,
            "target": table.target_name,
            "classes": table.class_names,
        },
        config=OmegaConf.to_container(cfg, resolve=True),
        optimizer=instantiate(opt_cfg),
        scheduler=p.scheduler,
        scheduler_interval=p.scheduler_interval,
        monitor=p.monitor,
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        max_steps=p.max_steps,
        backprop=cfg.backprop,
        log_lr=p.log_lr,
        monitors=p.monitors,
        **extra,
    )
    if p.task == "reconstruction":  # the PCA the autoencoder is measured against
        module.task.fit_pca(dm.split("train")[0])
    return module


def build_trainer(cfg: DictConfig, run_dir: Path, p: Plan) -> L.Trainer:
    callbacks: list[L.Callback] = []
    ck, es = cfg.callbacks.checkpoint, cfg.callbacks.early_stopping
    checkpoints = None
    if ck.enabled:
        checkpoints = Checkpoints(run_dir / "checkpoints", p.monitor, ck.every_seconds)
        callbacks.append(checkpoints)
    if es.enabled:
        # Checked at the end of each training epoch: the module validates there.
        callbacks.append(
            cb.EarlyStopping(p.monitor, patience=es.patience, check_on_train_epoch_end=True)
        )
    if cfg.progress:
        callbacks.append(Progress())
    if cfg.logger.name == "tensorboard" and cfg.model.name in PICTURED:
        callbacks.append(Pictures())
    # Ctrl-C or SIGTERM: last.ckpt, then a stop (with callbacks.checkpoint.enabled=false too;
    # the path is the one ckpt_path=last reads).
    callbacks.append(StopOnSignal(run_dir / "checkpoints" / "last.ckpt", checkpoints))
    callbacks += user_callbacks(cfg.callbacks.extra)
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
            enable_checkpointing=True,  # StopOnSignal is one, so Lightning adds none of its own
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,  # the module validates the whole split at each epoch's end
            fast_dev_run=cfg.debug.fast_dev_run,
            overfit_batches=cfg.debug.overfit_batches,
        )
    except (MisconfigurationException, ValueError, TypeError) as e:
        # Lightning's own check of a trainer.* value (precision, devices, strategy, …).
        raise ConfigError(f"trainer: {' '.join(str(e).split())}") from None


def user_callbacks(extra: DictConfig) -> list[L.Callback]:
    """``callbacks.extra``: the user's own Lightning callbacks, each ``name: {_target_: ...,
    ...}`` built by Hydra's ``instantiate``; a bad entry is one line naming it."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    built = []
    for name, spec in (extra or {}).items():
        where = f"callbacks.extra.{name}"
        if not isinstance(spec, DictConfig) or "_target_" not in spec:
            raise ConfigError(
                f"{where} needs a _target_: the callback's class, e.g. "
                "lightning.pytorch.callbacks.LearningRateMonitor"
            )
        try:
            callback = instantiate(spec)
        except InstantiationException as e:
            raise ConfigError(f"{where}: {' '.join(str(e).split())}") from None
        if not isinstance(callback, L.Callback):
            raise ConfigError(f"{where}: {spec._target_} is not a Lightning Callback")
        built.append(callback)
    return built


class Run(NamedTuple):
    """The built pieces of one training run."""

    datamodule: TabularDataModule
    module: HandpropModule
    trainer: L.Trainer
    plan: Plan


def plan_run(cfg: DictConfig) -> tuple[Table, Plan]:
    """Check ``cfg``, load its data and plan the run: everything decided before a piece is
    built. The process-wide start-up settings are applied here, once."""
    # Every problem a setting has, in one line: the values, the task, the data settings.
    found = problems(cfg)
    quiet_lightning(verbose_errors(cfg))
    task, cost = None, None
    try:
        task, cost = resolve_task(cfg)
    except ConfigError as e:
        found.append(str(e))
    target = cfg.get("optimized_metric")
    if task and target and target not in allowed_metrics(task):
        found.append(
            f"optimized_metric={target} is not a metric of task={task}; choose one of "
            f"{', '.join(allowed_metrics(task))}"
        )
    if task == "generation" and world_size(cfg) > 1:
        found.append(
            f"trainer.strategy={cfg.trainer.strategy} is not supported by model=gan: its two "
            "networks' alternating updates run in one process; use trainer=default"
        )
    if task == "generation" and cfg.monitors.enabled:
        found.append(
            "monitors=on is not supported by model=gan: its monitors follow one network's δ "
            "recursion; use monitors=off"
        )
    found += data_problems(cfg, task)
    if found:
        raise ConfigError(one_line(found))
    table = load_data(cfg, task)
    return table, make_plan(cfg, len(table.y), task, cost)


def build(cfg: DictConfig, table: Table, p: Plan) -> tuple[TabularDataModule, HandpropModule]:
    """The data module and the module of plan ``p``, the weights drawn from ``cfg.seed``."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg, table, p)
    module = build_module(cfg, dm, p)
    if cfg.backprop == "recursion" and not module.has_recursion():
        written = ", ".join(f"model={n}" for n in WRITTEN_OUT)
        raise ConfigError(
            f"backprop=recursion is invalid for model={cfg.model.name}: its gradients come from "
            f"autograd calling its Functions' hand-written backward (the δ recursion is written "
            f"out for {written}); use backprop=auto"
        )
    return dm, module


def prepare(cfg: DictConfig, run_dir: Path) -> Run:
    """Config → plan → data module, module, trainer: everything a run needs before ``fit``
    (the benchmark times ``fit`` alone on exactly these objects)."""
    table, p = plan_run(cfg)
    dm, module = build(cfg, table, p)
    set_threads(cfg.num_threads, p.batch_size, module.net)
    return Run(dm, module, build_trainer(cfg, run_dir, p), p)
