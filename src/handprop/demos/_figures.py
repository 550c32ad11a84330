"""Figures: matplotlib's object API (``matplotlib.figure.Figure``, rendered by Agg), so no
pyplot state or GUI backend is involved, and PNG files that are the same bytes on every run.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Resolution of the saved figures (the docs keep them small).
DPI = 80

#: One colour per compared thing, the same order in every demo.
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]


def figure(width: float, height: float, nrows: int = 1, ncols: int = 1, **kw: Any):  # noqa: ANN201
    """A ``Figure`` and its axes (as ``fig.subplots`` returns them), no pyplot involved."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, **kw)
    return fig, axes


def save_figure(fig: Any, out: Path, name: str) -> Path:
    """Render ``fig`` with Agg and write it as a 64-colour palette PNG (a fraction of the RGBA
    size). Deterministic: the palette PNG is re-encoded by Pillow without any metadata (no
    date, no software version), so the same figure gives the same bytes."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    buf.seek(0)
    img = Image.open(buf).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    path = out / name
    img.save(path, format="PNG", optimize=True)
    return path


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


def finite(values: Sequence[float]) -> list[float]:
    """``values`` with every non-finite entry (a diverged run) as NaN, which plots as a gap."""
    return [
        float(v) if isinstance(v, int | float) and math.isfinite(v) else math.nan for v in values
    ]
