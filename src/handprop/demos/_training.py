"""The trainer's configs, data and models, and a small training loop for the demos.

Configs come from the trainer's own Hydra groups (``handprop/conf``), data and models from
the trainer's builders; the loop below only replaces Lightning's, which costs seconds per run
that a demonstration with many runs cannot spend.

This is the only module of the demos that imports the trainer (:func:`_builders`,
:func:`train_run`, :func:`fit_trainer`, :func:`pca`), so a move of its builders is a change
here alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _builders() -> Any:
    """The module with the trainer's builders (``load_data``, ``make_plan``, ``build``,
    ``data_of``), imported when a demo first needs it."""
    from handprop.trainer import build

    return build


def compose(*overrides: str):  # noqa: ANN201
    """The trainer's config (``handprop/trainer/conf/train.yaml``) with Hydra overrides applied, as
    ``handprop-train OVERRIDES`` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(version_base="1.3", config_module="handprop.trainer.conf"):
        return hydra_compose("train", overrides=list(overrides))


def build(cfg: Any, table: Any = None):  # noqa: ANN201
    """Data module and LightningModule as ``handprop-train`` builds them for a regression
    ``cfg`` (the demos that build by hand all regress; seeded the same way, so one seed is one
    initialisation). ``table`` replaces the config's data set by a regression
    :class:`~handprop.trainer.datasets.Table` (split and scaled by the same module)."""
    builders = _builders()
    if table is None:
        table = builders.load_data(cfg, "regression")
    p = builders.make_plan(cfg, len(table.y), "regression", cfg.task.cost)
    dm, model = builders.build(cfg, table, p)
    return dm, model, p


def loss_function(model: Any) -> Any:
    """The model's regression cost as a functional (``fn(ŷ, y, reduction=...)``), for per-row
    costs."""
    from handprop import functional as F

    return {"mse": F.mse_loss, "quadratic": F.quadratic_cost}[model.task.cost_name]


def train_run(cfg: Any, run_dir: Path) -> dict[str, float]:
    """``handprop-train`` itself on ``cfg``, writing into ``run_dir``; its final metrics."""
    from handprop.trainer.run import train

    return train(cfg, run_dir)


def train_logged(cfg: Any) -> tuple[dict[str, float], list[dict[str, float]], dict[str, Any]]:
    """``handprop-train`` on ``cfg`` (with ``logger=csv`` and checkpoints) in a scratch
    directory, its report kept off the terminal. Returns its final metrics, one row per epoch
    from its CSV log (``epoch``, ``train/epoch_loss``, ``val/…``) and the metrics of its last
    weights (``checkpoints/last.ckpt``) on each split, by split."""
    import contextlib
    import csv
    import io
    import tempfile
    import warnings

    from omegaconf import OmegaConf

    from handprop.trainer.checkpoints import load_module

    with tempfile.TemporaryDirectory(prefix="handprop-demo-") as tmp:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            metrics = train_run(cfg, Path(tmp))
        with open(Path(tmp) / "csv" / "metrics.csv", newline="") as fh:
            rows = [
                {k: float(v) for k, v in row.items() if v not in (None, "")}
                for row in csv.DictReader(fh)
            ]
        last = load_module(Path(tmp) / "checkpoints" / "last.ckpt")
    dm = _builders().data_of(OmegaConf.create(last.hparams["config"]), last.task.name)
    at_last = {s: last.evaluate(*dm.split(s)) for s in ("train", "val", "test") if dm.has(s)}
    epochs = [row for row in rows if "train/epoch_loss" in row]
    return metrics, epochs, at_last


def fit_trainer(cfg: Any, run_dir: Path, callbacks: tuple = ()) -> Any:
    """``handprop-train``'s own objects for ``cfg`` (:func:`handprop.trainer.build.prepare`), fitted by
    its Lightning trainer with ``callbacks`` added (to watch the training), the best weights
    put back as ``handprop-train`` does; returns the run (``datamodule``, ``module``,
    ``trainer``, ``plan``)."""
    import contextlib
    import io
    import warnings

    from handprop.trainer.build import prepare
    from handprop.trainer.checkpoints import Checkpoints

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        run = prepare(cfg, run_dir)
        run.trainer.callbacks.extend(callbacks)
        run.trainer.fit(run.module, datamodule=run.datamodule)
    for c in run.trainer.callbacks:
        if isinstance(c, Checkpoints) and cfg.callbacks.checkpoint.restore_best:
            c.restore_best(run.module)
    run.module.eval()
    return run


def pca(train: Any, rows: Any, k: int) -> tuple[Any, Any]:
    """The first ``k`` principal components of ``rows`` and their reconstruction, by PCA
    fitted on ``train``: :meth:`handprop.trainer.task.Task.fit_pca`, the one the trainer compares the
    autoencoder with."""
    from handprop.trainer.task import Task

    task = Task("reconstruction", x_shift=[0.0] * train.shape[1], pca_components=k)
    task.fit_pca(train)
    return (rows - task.pca_mean) @ task.pca_basis.t(), task.pca_reconstruction(rows)


@contextmanager
def threads(n: int = 1) -> Iterator[None]:
    """Run with ``n`` intra-op threads (tiny networks are fastest on one), then restore."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class History:
    """One training run, seen per update and per epoch."""

    step_loss: list[float] = field(default_factory=list)  # the loss each update descended
    epoch_train: list[float] = field(default_factory=list)  # full training cost after epoch
    epoch_val: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)  # the rate used during each epoch
    updates_per_epoch: int = 0
    seconds: float = 0.0
    step_params: list[Any] = field(default_factory=list)  # track(net) after each update
    step_train: list[float] = field(default_factory=list)  # full cost after each update
    initial: dict[str, Any] = field(default_factory=dict)  # the weights before training
    scheduler: str = ""  # the LR scheduler's class, if any

    @property
    def final(self) -> float:
        return self.epoch_train[-1] if self.epoch_train else math.nan


def fit(
    net: Any,
    loss_fn: Callable,
    optimizer: Any,
    train: tuple[Any, Any],
    epochs: int,
    *,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    val: tuple[Any, Any] | None = None,
    scheduler: Any = None,
    track: Callable[[Any], Any] | None = None,
    step_cost: bool = False,
    stop_if_diverged: bool = True,
) -> History:
    """Mini-batch gradient descent the trainer's way: batches from
    :class:`handprop.trainer.data.TensorBatches` (a fresh seeded shuffle per epoch), forward, loss,
    backward through handprop's Functions, ``optimizer.step()``; an epoch scheduler steps
    after each epoch (``ReduceLROnPlateau`` on the validation loss, as ``scheduler=plateau``).

    ``track(net)`` returns what to record after every update (e.g. the parameters, for paths
    over a cost surface), in ``History.step_params``; ``step_cost`` also records the full
    training cost after every update.
    """
    import torch

    from handprop.trainer.data import TensorBatches

    X, y = train
    batches = TensorBatches(X, y, batch_size, shuffle=shuffle, seed=seed)
    h = History(scheduler=type(scheduler).__name__ if scheduler is not None else "")
    if track is not None:
        h.step_params.append(track(net))
    t0 = time.perf_counter()
    for _ in range(epochs):
        h.lr.append(float(optimizer.param_groups[0]["lr"]))
        n = 0
        for item in batches:
            for xb, yb in item if isinstance(item, list) else [item]:
                loss = loss_fn(net(xb), yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                h.step_loss.append(float(loss.detach()))
                n += 1
                if track is not None:
                    h.step_params.append(track(net))
                if step_cost:
                    with torch.no_grad():
                        h.step_train.append(float(loss_fn(net(X), y)))
        h.updates_per_epoch = n
        with torch.no_grad():
            h.epoch_train.append(float(loss_fn(net(X), y)))
            if val is not None:
                h.epoch_val.append(float(loss_fn(net(val[0]), val[1])))
        if scheduler is not None:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(h.epoch_val[-1] if val is not None else h.epoch_train[-1])
            else:
                scheduler.step()
        if stop_if_diverged and not math.isfinite(h.epoch_train[-1]):
            break
    h.seconds = time.perf_counter() - t0
    return h


def run_config(
    cfg: Any, epochs: int | None = None, table: Any = None, dtype: Any = None, **kw: Any
):  # noqa: ANN201
    """Build ``cfg``'s data and model and train them with :func:`fit`: the optimizer and
    schedule from the config (``lr_scaling`` applied by the trainer's builder); ``dtype``
    converts the network and the data (e.g. float64). Returns ``(History, data module,
    module)``."""
    dm, model, p = build(cfg, table)
    if dtype is not None:
        model.net.to(dtype)

    def cast(t: Any) -> Any:
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    initial = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    opt = model.optimizer_fn(model.net.parameters())
    sched = model.scheduler_fn(opt) if model.scheduler_fn is not None else None
    has_val = bool(dm.indices["val"].size)
    h = fit(
        model.net,
        loss_function(model),
        opt,
        tuple(map(cast, dm.split("train"))),
        epochs or int(cfg.trainer.max_epochs),
        batch_size=p.batch_size,
        shuffle=cfg.gd.shuffle,
        seed=cfg.seed,
        val=tuple(map(cast, dm.split("val"))) if has_val else None,
        scheduler=sched,
        **kw,
    )
    h.initial = initial
    return h, dm, model
