"""What every demonstration shares: figures, tables, configs and a small training loop.

Figures use matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg), so no
pyplot state or GUI backend is involved. Configs come from the trainer's own Hydra groups
(``handprop/conf``), data and models from :func:`handprop.train.build_datamodule` /
:func:`handprop.train.build_model`; the loop below only replaces Lightning's, which costs
seconds per run that a demonstration with many runs cannot spend.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Resolution of the saved figures (the docs keep them small).
DPI = 80

#: One colour per compared thing, the same order in every demo.
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw: Any):  # noqa: ANN201
    """A ``Figure`` and its axes (as ``fig.subplots`` returns them), no pyplot involved."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, **kw)
    return fig, axes


def save_figure(fig: Any, out: Path, name: str) -> Path:
    """Render ``fig`` with Agg and write it as a 64-colour palette PNG (a fraction of the RGBA size)."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    path = out / name
    img.save(path, format="PNG", optimize=True)
    return path


# --------------------------------------------------------------------------------------------
# Tables and results
# --------------------------------------------------------------------------------------------
def fmt(v: Any, digits: int = 4) -> str:
    """A cell: numbers to ``digits`` significant figures, everything else as text."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        v = float(v)
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.{digits}g}"
    return str(v)


@dataclass
class Table:
    """A small table, printed to the terminal and saved as Markdown."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    note: str = ""

    def add(self, *cells: Any) -> None:
        self.rows.append(list(cells))

    def markdown(self) -> str:
        cells = [[fmt(c) for c in row] for row in self.rows]
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(self.columns)]

        def line(cs: list[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cs, widths, strict=True)) + " |"

        out = [f"### {self.title}", "", line(self.columns)]
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        out += [line(r) for r in cells]
        if self.note:
            out += ["", self.note]
        return "\n".join(out)


class Report:
    """What a demo hands back: its tables, figures and key numbers, written to ``out``."""

    def __init__(self, name: str, out: Path, summary: str) -> None:
        self.name, self.out, self.summary = name, Path(out), summary
        self.tables: list[Table] = []
        self.figures: list[Path] = []
        self.values: dict[str, Any] = {}
        self.out.mkdir(parents=True, exist_ok=True)

    def table(self, title: str, columns: Sequence[str], note: str = "") -> Table:
        t = Table(title, list(columns), note=note)
        self.tables.append(t)
        return t

    def figure(self, fig: Any, name: str) -> Path:
        path = save_figure(fig, self.out, name)
        self.figures.append(path)
        return path

    def finish(self) -> dict[str, Any]:
        """Print the tables, write ``table.md`` and ``results.json``; return the numbers."""
        text = f"## handprop-demo {self.name}\n\n{self.summary}\n\n" + "\n\n".join(
            t.markdown() for t in self.tables
        )
        (self.out / "table.md").write_text(text + "\n")
        self.values["figures"] = [str(p) for p in self.figures]
        (self.out / "results.json").write_text(
            json.dumps(_jsonable(self.values), indent=2, sort_keys=True) + "\n"
        )
        print(text)
        print("\nfigures: " + ", ".join(str(p) for p in self.figures))
        return self.values


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


# --------------------------------------------------------------------------------------------
# The trainer's configs, data and models
# --------------------------------------------------------------------------------------------
def compose(*overrides: str):  # noqa: ANN201
    """The trainer's config (``handprop/conf/train.yaml``) with Hydra overrides applied, as
    ``handprop-train OVERRIDES`` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(version_base="1.3", config_module="handprop.conf"):
        return hydra_compose("train", overrides=list(overrides))


def build(cfg: Any, table: Any = None):  # noqa: ANN201
    """Data module and LightningModule exactly as ``handprop-train`` builds them for ``cfg``
    (seeded the same way, so one seed is one initialisation). ``table`` replaces the config's
    data set by a :class:`~handprop.datasets.Table` (split and scaled by the same module)."""
    import torch

    from handprop.build import build_datamodule, build_module, plan, steps_per_call
    from handprop.data import TabularDataModule

    torch.manual_seed(cfg.seed)
    if table is None:
        dm = build_datamodule(cfg, "regression")
    else:
        dm = TabularDataModule(
            table,
            batch_size=cfg.gd.batch_size,
            preprocessing=cfg.data.preprocessing,
            val_fraction=cfg.data.val_fraction,
            test_fraction=cfg.data.test_fraction,
            shuffle=cfg.gd.shuffle,
            seed=cfg.seed,
            steps_per_call=steps_per_call(cfg),
        )
    model = build_module(cfg, dm, plan(cfg, dm, "regression", cfg.task.loss))
    return dm, model


def loss_function(model: Any) -> Any:
    """The model's cost as a functional (``fn(ŷ, y, reduction=...)``), for per-row costs."""
    from handprop import functional as F

    return {"mse": F.mse_loss, "quadratic": F.quadratic_cost}[model.task.cost_name]


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
    batch_size: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    val: tuple[Any, Any] | None = None,
    scheduler: Any = None,
    track: Callable[[Any], Any] | None = None,
    step_cost: bool = False,
    stop_if_diverged: bool = True,
) -> History:
    """Mini-batch gradient descent the trainer's way: batches from
    :class:`handprop.data.TensorBatches` (a fresh seeded shuffle per epoch), forward, loss,
    backward through handprop's Functions, ``optimizer.step()``; an epoch scheduler steps
    after each epoch (``ReduceLROnPlateau`` on the validation loss, as ``scheduler=plateau``).

    ``track(net)`` returns what to record after every update (e.g. the parameters, for paths
    over a cost surface), in ``History.step_params``; ``step_cost`` also records the full training cost after every update.
    """
    import torch

    from handprop.data import TensorBatches

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
    schedule from the config (``lr_scaling`` applied by ``build_model``); ``dtype`` converts
    the network and the data (e.g. float64). Returns ``(History, data module, module)``."""
    dm, model = build(cfg, table)
    if dtype is not None:
        model.net.to(dtype)
    cast = (
        (lambda t: t.to(dtype) if t.is_floating_point() else t)
        if dtype is not None
        else (lambda t: t)
    )  # noqa: E731
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
        batch_size=cfg.gd.batch_size,
        shuffle=cfg.gd.shuffle,
        seed=cfg.seed,
        val=tuple(map(cast, dm.split("val"))) if has_val else None,
        scheduler=sched,
        **kw,
    )
    h.initial = initial
    return h, dm, model


def log_axis_limits(values: Sequence[float], pad: float = 1.5) -> tuple[float, float]:
    """y-limits for a log axis around the finite, positive values (diverged runs clipped)."""
    v = np.asarray([x for x in values if math.isfinite(x) and x > 0])
    if v.size == 0:
        return 1e-3, 1.0
    return float(v.min() / pad), float(min(v.max(), v.min() * 1e6) * pad)


def plain_log(ax: Any, axis: str = "y") -> None:
    """Tick labels of a log axis as plain numbers (0.3, 1, 2) instead of 3×10⁻¹; minor ticks
    labelled (at 2, 3 and 5 times a power of ten) only when the axis spans few decades."""
    from matplotlib.ticker import FuncFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis

    def minor(v: float, _: Any) -> str:
        lo, hi = sorted(target.get_view_interval())
        if v <= 0 or lo <= 0 or math.log10(hi / lo) > 2.3:
            return ""
        lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9))
        return f"{v:g}" if lead in (2, 3, 5) else ""

    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(FuncFormatter(minor))


def integer_ticks(ax: Any, axis: str = "x") -> None:
    """Whole numbers only on ``axis`` (epochs, updates)."""
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def legend_in_order(ax: Any, labels: Sequence[str], **kw: Any) -> None:
    """A legend listing ``labels`` in this order (whatever order they were drawn in)."""
    handles, names = ax.get_legend_handles_labels()
    by = dict(zip(names, handles, strict=True))
    keep = [n for n in labels if n in by] + [n for n in names if n not in labels]
    ax.legend([by[n] for n in keep], keep, **kw)
