"""The config, checked: every constraint on a setting declared once, next to the setting's name
(:data:`CHECKS`, as scikit-learn's ``_parameter_constraints``), and the task a config trains.

A bad value is one :class:`~handprop.trainer.errors.ConfigError` line naming the key and what
is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from handprop.networks import CELLS, POOLS
from handprop.nn import ACTIVATIONS, INITS
from handprop.trainer.data import PREPROCESSING
from handprop.trainer.datasets import DATA_TASKS, TASKS, UNSUPERVISED
from handprop.trainer.errors import ConfigError
from handprop.trainer.model import NETWORKS
from handprop.trainer.task import COSTS, TASK_COSTS, metric_names


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
    "task.cost": _one_of(COSTS),
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
    "task.cost",
}


_ABSENT = object()


def problems(cfg: DictConfig) -> list[str]:
    """Every value of ``cfg`` that training can't use, one phrase each, naming the key."""
    found = []
    for key, (ok, allowed) in CHECKS.items():
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT or (value is None and key in OPTIONAL):
            continue  # not a setting of this config (momentum with Adam), or an optional null
        if not ok(value):
            found.append(f"{key}={value!r} is invalid: {allowed}")
    val, test = cfg.data.val_fraction, cfg.data.test_fraction
    if FRACTION[0](val) and FRACTION[0](test) and val + test >= 1:
        found.append(
            f"data.test_fraction={test!r} is invalid: val_fraction + test_fraction must be "
            f"below 1 (val_fraction={val})"
        )
    return found


def one_line(found: list[str]) -> str:
    """Several problems as one line: each named, ``; `` between them."""
    return "; ".join(found)


def check(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError`, one line naming every bad key (:func:`problems`)."""
    found = problems(cfg)
    if found:
        raise ConfigError(one_line(found))


#: The networks that train one task only, whatever the data: ``task=auto`` picks it.
MODEL_TASKS = {"autoencoder": "reconstruction", "gan": "generation"}


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
        cost = cfg.task.cost
        if cost is not None and cost not in TASK_COSTS[own]:
            raise ConfigError(
                f"task.cost={cost} does not fit task={own}; use {' or '.join(TASK_COSTS[own])}"
            )
        return own, cost
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
    return task, cfg.task.cost


def allowed_metrics(task: str) -> list[str]:
    return [f"{s}/{m}" for s in ("train", "val", "test") for m in metric_names(task)]
