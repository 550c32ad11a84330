"""What a demo hands back besides its figures: tables, a caption, and its numbers.

A demo's ``compute()`` returns plain data (:func:`plain`); ``tables()`` and ``caption()``
turn those numbers into text, so every claim a caption makes is read off the results, and
:func:`write` saves ``table.md``, ``caption.md`` and ``results.json`` beside the figures.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


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


def num(v: float) -> str:
    """A number as people write it: ``1e-07`` → ``1e-7``, ``0.25`` → ``0.25``."""
    return f"{v:g}".replace("e-0", "e-").replace("e+0", "e+")


def at_most(v: float) -> str:
    """``v`` (> 0) rounded up to one significant figure, for "agrees to 2e-10": ``1.4e-10`` →
    ``2e-10``, ``0.25`` → ``0.3``."""
    if v <= 0:
        return "0"
    e = math.floor(math.log10(v))
    return num(math.ceil(round(v / 10.0**e, 9)) * 10.0**e)


def two(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` to 2 significant figures, or more until they read differently (at most
    4): ``0.01609, 0.01633`` → ``("0.0161", "0.0163")``."""
    for digits in (2, 3, 4):
        sa, sb = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if sa != sb or a == b:
            break
    return sa, sb


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


def plain(v: Any) -> Any:
    """Results as plain Python: dicts with string keys, lists, ints, floats (NaN and inf kept
    as floats), strings, bools, None. NumPy arrays and scalars become lists and numbers."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return plain(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    return v


def _json(v: Any) -> Any:
    """As :func:`plain`, with non-finite floats as the strings ``"nan"``, ``"inf"`` (JSON has
    no literal for them)."""
    v = plain(v)
    if isinstance(v, dict):
        return {k: _json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def read(path: Path) -> dict[str, Any]:
    """A ``results.json`` back as the results :func:`write` was given: ``"nan"``, ``"inf"``
    and ``"-inf"`` as floats again (the list of figures included)."""

    def back(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: back(x) for k, x in v.items()}
        if isinstance(v, list):
            return [back(x) for x in v]
        return float(v) if v in ("nan", "inf", "-inf") else v

    return back(json.loads(Path(path).read_text()))


def write(
    name: str,
    summary: str,
    results: dict[str, Any],
    tables: list[Table],
    caption: str,
    figures: list[Path],
    out: Path,
) -> None:
    """Write ``table.md``, ``caption.md`` (the README's caption under the figures) and
    ``results.json`` into ``out``, and print the tables and the caption."""
    out.mkdir(parents=True, exist_ok=True)
    text = f"## handprop-demo {name}\n\n{summary}\n\n" + "\n\n".join(t.markdown() for t in tables)
    (out / "table.md").write_text(text + "\n")
    (out / "caption.md").write_text(caption + "\n")
    values = {**results, "figures": [str(p) for p in figures]}
    (out / "results.json").write_text(json.dumps(_json(values), indent=2, sort_keys=True) + "\n")
    print(text)
    print(f"\n{caption}")
    print("\nfigures: " + ", ".join(str(p) for p in figures))
