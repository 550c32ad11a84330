"""Tabular data sets as plain numpy tables: the notes' examples, scikit-learn's bundled sets
and the user's own CSV. Nothing here downloads anything.

Each loader returns a :class:`Table`; :mod:`handprop.trainer.data` splits, scales and batches it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handprop.trainer.errors import UserError

__all__ = [
    "Table",
    "DataError",
    "DATASETS",
    "load_table",
    "property_prices",
    "students",
    "sine",
    "ring",
    "read_csv",
]

#: What a network can be trained to do: predict a target (the first three), or model the
#: inputs themselves (reconstruction: an autoencoder; generation: a GAN).
TASKS = ("regression", "binary", "multiclass", "reconstruction", "generation")
#: The tasks that read no target: any data set, or a CSV without one, serves them.
UNSUPERVISED = ("reconstruction", "generation")


class DataError(UserError, ValueError):
    """Bad data or a bad data setting; the message says what to fix, in one line."""


@dataclass
class Table:
    """Features ``X`` (n, f) float64, target ``y`` (n,) — float64 for regression, int64 class
    indices 0…K−1 for classification, zeros when there is no target (``task="unlabelled"``)
    — and their names. ``modes`` and ``mode_std``: the centres (K, f) and the standard deviation
    of a Gaussian mixture the rows were drawn from (the ring), for a GAN's quality metrics.

    How a row's features are laid out, for the networks that read more than a flat row:
    ``image_shape`` (height, width) when each row is an image's pixels, row after row (digits:
    8×8); ``time_steps`` when each row is a sequence of that many steps, each step's values
    together, oldest first (sine: a window of past values)."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    target_name: str
    task: str
    class_names: list[str] = field(default_factory=list)
    image_shape: tuple[int, int] | None = None
    time_steps: int | None = None
    modes: list[list[float]] | None = None
    mode_std: float | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_features(self) -> int:
        """Features per row: a network's inputs."""
        return self.X.shape[1]

    @property
    def out_features(self) -> int:
        """A network's outputs ``z``: one per class (multi-class), else one."""
        return self.num_classes if self.task == "multiclass" else 1


# --------------------------------------------------------------------------------------------
# The notes' examples, generated
# --------------------------------------------------------------------------------------------
def property_prices(n_samples: int = 2000, noise: float = 0.05, seed: int = 0) -> Table:
    """The notes' running example: area, bedrooms, distance to the city, age → price.

    Price (in $1000s) is a base value per square foot and bedroom, less per mile and per year,
    plus the three patterns the notes' hidden neurons find: large homes close to the city,
    large new family homes, and a premium for historic homes past 100 years. ``noise`` is the
    standard deviation of multiplicative noise (0.05 → ±5 %).
    """
    rng = np.random.default_rng(seed)
    n = n_samples
    area = rng.uniform(500, 4000, n)  # sq ft
    bedrooms = np.clip(np.round(area / 800 + rng.normal(0, 0.8, n)), 1, 6)
    distance = rng.exponential(8.0, n).clip(0.2, 50)  # miles to the nearest city
    age = rng.gamma(2.0, 25.0, n).clip(0, 180)  # years
    price = (
        60
        + 0.12 * area
        + 8 * bedrooms
        - 3.0 * distance
        - 0.8 * age
        # large houses close to the city (top neuron)
        + 0.25 * np.maximum(area - 2000, 0) * np.maximum(1 - distance / 10, 0)
        # large, new family homes (middle neuron)
        + 40 * np.maximum(bedrooms - 3, 0) * np.maximum(1 - age / 20, 0)
        # historic premium past 100 years (bottom neuron: a ReLU in age)
        + 4.0 * np.maximum(age - 100, 0)
    )
    price = np.maximum(price, 20) * (1 + noise * rng.standard_normal(n))
    X = np.stack([area, bedrooms, distance, age], axis=1)
    names = ["area_sqft", "bedrooms", "distance_to_city_miles", "age_years"]
    return Table(X, price, names, "price_k", "regression")


def students(n_samples: int = 8, noise: float = 2.0, seed: int = 0) -> Table:
    """The notes' student example: study hours, sleep hours, quiz score → exam score (0-100).

    ``n_samples=8`` is the notes' eight students; more rows come from the same rule.
    """
    rng = np.random.default_rng(seed)
    n = n_samples
    study = rng.uniform(0, 10, n)
    sleep = rng.uniform(4, 9, n)
    quiz = rng.uniform(20, 100, n)
    exam = (
        20 + 4.0 * study + 3.0 * sleep + 0.3 * quiz - 0.15 * study**2 + noise * rng.normal(0, 1, n)
    )
    X = np.stack([study, sleep, quiz], axis=1)
    return Table(
        X,
        np.clip(exam, 0, 100),
        ["study_hours", "sleep_hours", "quiz_score"],
        "exam_score",
        "regression",
    )


def blobs(
    n_samples: int = 60_000, n_features: int = 784, n_classes: int = 10, seed: int = 0
) -> Table:
    """Synthetic classification: ``n_classes`` Gaussian clouds in ``n_features`` dimensions
    (class means ~N(0, 0.3²) per feature, unit noise). For timing wide networks, e.g. the
    MNIST-sized 784-256-256-10, without downloading anything."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n_samples)
    centers = rng.normal(0, 0.3, (n_classes, n_features))
    X = centers[y] + rng.standard_normal((n_samples, n_features))
    names = [f"x{i}" for i in range(n_features)]
    classes = [str(c) for c in range(n_classes)]
    return Table(X, y.astype(np.int64), names, "label", "multiclass", classes)


def sine(n_samples: int = 5000, window: int = 20, noise: float = 0.05, seed: int = 0) -> Table:
    """Noisy sine waves, a sequence per row: ``window`` past values → the next value.

    Each row is its own wave ``x_t = sin(ω t + φ) + ε_t`` with a random angular frequency
    ``ω ~ U(0.2, 1.0)`` radians per step (a period of 6 to 31 steps), a random phase
    ``φ ~ U(0, 2π)`` and noise ``ε_t ~ N(0, noise²)``. The features are ``x_{t−window} …
    x_{t−1}``, oldest first; the target is ``x_t`` (noise included, so the best possible R² is
    about ``1 − 2·noise²``: 0.995 at the default 0.05). To predict it a network has to find the
    wave's frequency and phase in the window: what a recurrent network's state carries.
    """
    rng = np.random.default_rng(seed)
    omega = rng.uniform(0.2, 1.0, (n_samples, 1))
    phase = rng.uniform(0, 2 * np.pi, (n_samples, 1))
    t = np.arange(window + 1)
    x = np.sin(omega * t + phase) + noise * rng.standard_normal((n_samples, window + 1))
    names = [f"x[t-{window - k}]" for k in range(window)]
    return Table(x[:, :window], x[:, window], names, "x[t]", "regression", time_steps=window)


def ring(
    n_samples: int = 5000,
    noise: float = 0.1,
    seed: int = 0,
    radius: float = 2.0,
    n_modes: int = 8,
) -> Table:
    """The standard 2-D benchmark of GANs (Metz et al., 2017): a mixture of ``n_modes``
    Gaussians of standard deviation ``noise`` whose centres are evenly spaced on a circle of
    ``radius``, each drawn with equal probability. ``y`` is the mode a row came from."""
    rng = np.random.default_rng(seed)
    angles = 2 * np.pi * np.arange(n_modes) / n_modes
    modes = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    y = rng.integers(0, n_modes, n_samples)
    X = modes[y] + noise * rng.standard_normal((n_samples, 2))
    return Table(
        X,
        y.astype(np.int64),
        ["x", "y"],
        "mode",
        "multiclass",
        [str(k) for k in range(n_modes)],
        modes=modes.tolist(),
        mode_std=float(noise),
    )


# --------------------------------------------------------------------------------------------
# scikit-learn's bundled data sets (installed with the package, never downloaded)
# --------------------------------------------------------------------------------------------
_SKLEARN = {
    "diabetes": ("load_diabetes", "regression"),
    "breast_cancer": ("load_breast_cancer", "binary"),
    "digits": ("load_digits", "multiclass"),
    "iris": ("load_iris", "multiclass"),
    "wine": ("load_wine", "multiclass"),
}


def _sklearn(name: str) -> Table:
    import sklearn.datasets as skd

    loader, task = _SKLEARN[name]
    bunch = getattr(skd, loader)()
    names = [str(f) for f in getattr(bunch, "feature_names", [])] or [
        f"x{i}" for i in range(bunch.data.shape[1])
    ]
    X = np.asarray(bunch.data, dtype=np.float64)
    if task == "regression":
        return Table(X, np.asarray(bunch.target, np.float64), names, "target", task)
    classes = [str(c) for c in getattr(bunch, "target_names", np.unique(bunch.target))]
    images = getattr(bunch, "images", None)  # digits: each row is an 8×8 image
    shape = tuple(images.shape[1:]) if images is not None else None
    return Table(X, np.asarray(bunch.target, np.int64), names, "target", task, classes, shape)


# --------------------------------------------------------------------------------------------
# The user's own CSV
# --------------------------------------------------------------------------------------------
def where(lines: list[int], i: int) -> str:
    """Data row ``i`` (0-based) of a CSV, as a person finds it: ``line 6 (data row 5)``, the
    file's own line number (1-based, header and blank lines counted, where the row starts) and
    its place among the data rows (1-based)."""
    return f"line {lines[i]} (data row {i + 1})"


def _path_problem(path: str | Path, key: str) -> str | None:
    """What is wrong with the file setting ``key`` (empty, no such file, a folder), or None."""
    if not str(path):
        return f"{key} is empty: give a CSV file, e.g. {key}=prices.csv"
    p = Path(str(path)).expanduser()
    if not p.exists():
        return f"{key}: file not found: {p}"
    if not p.is_file():
        return f"{key}: {p} is not a file"
    return None


def _column_problems(
    p: Path,
    header: list[str],
    target: str | None,
    features: list[str] | None,
    task: str | None,
    target_required: bool = True,
) -> list[str]:
    """What is wrong with ``data.target`` and ``data.features`` given the file's ``header``."""
    found = []
    if features:
        missing = [f for f in features if f not in header]
        if missing:
            found.append(f"data.features: columns {missing} not in {p}; columns are {header}")
    if not target and task in UNSUPERVISED:
        return found
    if not target:
        if target_required:
            found.append(f"data.target is not set; choose one of the columns {header}")
    elif target not in header:
        found.append(f"data.target: column {target!r} not in {p}; columns are {header}")
    elif features and target in features:
        found.append(f"data.features must not include the target column {target!r}")
    return found


def csv_problems(
    path: str | Path,
    target: str | None,
    features: list[str] | None,
    task: str | None,
    target_required: bool = True,
) -> list[str]:
    """The problems of a CSV's settings (``data.path``, ``data.target``, ``data.features``)
    that its header shows, all of them, without reading its rows (:func:`read_csv` reads and
    checks those). ``task`` None: not known yet (a target is then expected)."""
    bad = _path_problem(path, "data.path")
    if bad:
        return [bad]
    p = Path(str(path)).expanduser()
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            header = next((r for r in csv.reader(fh) if any(c.strip() for c in r)), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # read_csv says what is wrong with the file itself
    if header is None:
        return []
    header = [h.strip() for h in header]
    return _column_problems(p, header, target, features, task, target_required)


def _read_rows(path: str | Path, key: str) -> tuple[Path, list[str], list[list[str]], list[int]]:
    """Header and data rows of a CSV, and the file line each data row starts on (blank lines
    skipped); ``key`` names the setting in messages."""
    bad = _path_problem(path, key)
    if bad:
        raise DataError(bad)
    p = Path(str(path)).expanduser()
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows, lines, end = [], [], 0
            for r in reader:  # (a quoted cell may span lines: a row starts after the last one)
                if any(c.strip() for c in r):
                    rows.append(r)
                    lines.append(end + 1)
                end = reader.line_num
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{key}: cannot read {p}: {e}") from None
    if not rows:
        raise DataError(f"{key}: {p} is empty; it needs a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if any(not h for h in header):
        raise DataError(f"{p}: the header has an empty column name (column {header.index('') + 1})")
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{p}: duplicate column names {dupes}; each column needs a unique name")
    if len(rows) < 2:
        raise DataError(f"{p}: has a header but no data rows")
    return p, header, rows[1:], lines[1:]


def _numbers(
    p: Path, header: list[str], body: list[list[str]], lines: list[int], columns: list[str]
) -> np.ndarray:
    """The named columns as a float64 matrix; the first bad cell stops with its line, data row
    and column (see :func:`where`)."""
    cols = [header.index(c) for c in columns]
    values = np.empty((len(body), len(cols)), dtype=np.float64)
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise DataError(
                f"{p}: {where(lines, i)} has {len(row)} cells, the header has {len(header)}"
            )
        for j, c in enumerate(cols):
            cell = row[c].strip()
            try:
                v = float(cell)
            except ValueError:
                raise DataError(
                    f"{p}: {where(lines, i)}, column {header[c]!r}: {cell!r} is not a number"
                ) from None
            if not math.isfinite(v):
                raise DataError(
                    f"{p}: {where(lines, i)}, column {header[c]!r}: {cell!r} is not a finite "
                    "number (NaN/inf); fill or drop the row"
                )
            values[i, j] = v
    return values


def read_csv(
    path: str | Path,
    target: str | None,
    features: list[str] | None = None,
    task: str | None = None,
) -> Table:
    """Read a CSV with a header row. ``target`` names the column to predict; ``features``
    default to every other column. ``task`` (regression / binary / multiclass) says how to read
    the target: class labels must be integers (they are mapped to 0…K−1 in sorted order). The
    unsupervised tasks (reconstruction, generation) need no target: without one every column
    is a feature; with one, it is left out of the features and read as a regression target.

    Every problem stops with one :class:`DataError` line naming the file, column or row.
    """
    p, header, body, lines = _read_rows(path, "data.path")
    found = _column_problems(p, header, target, list(features) if features else None, task)
    if found:
        raise DataError("; ".join(found))
    if not target and task in UNSUPERVISED:
        features = list(features) if features else header
        try:
            X = _numbers(p, header, body, lines, features)
        except DataError as e:
            raise DataError(
                f"{e}; task={task} reads every column as a number: choose the numeric ones "
                "with data.features=[a,b,...]"
            ) from None
        return Table(X, np.zeros(len(X)), features, "", "unlabelled")
    features = list(features) if features else [h for h in header if h != target]
    if not features:
        raise DataError(f"{p}: no feature columns besides the target {target!r}")
    values = _numbers(p, header, body, lines, [*features, target])
    X, y = values[:, :-1], values[:, -1]
    task = task or "regression"
    if task not in TASKS:
        raise DataError(f"task {task!r} is not one of {TASKS}")
    if task in ("regression", *UNSUPERVISED):
        return Table(X, y, features, target, task)
    return _classify(X, y, features, target, task, str(p), lines)


def read_features(
    path: str | Path, features: list[str], key: str = "input"
) -> tuple[np.ndarray, list[str], list[list[str]]]:
    """Rows to predict on: the model's feature columns as floats, plus the header and raw
    rows (so the output can repeat them). Other columns are carried along, not read."""
    p, header, body, lines = _read_rows(path, key)
    missing = [f for f in features if f not in header]
    if missing:
        raise DataError(
            f"{key}: {p} lacks the columns {missing} that the model was trained on "
            f"(it needs {features})"
        )
    return _numbers(p, header, body, lines, features), header, body


def _classify(
    X: np.ndarray,
    y: np.ndarray,
    features: list[str],
    target: str,
    task: str,
    path: str,
    lines: list[int],
) -> Table:
    bad = np.flatnonzero(y != np.round(y))
    if bad.size:
        raise DataError(
            f"{path}: target {target!r} must hold integer class labels for task={task}; "
            f"{where(lines, int(bad[0]))} has {y[bad[0]]:g}"
        )
    labels = np.unique(y).astype(np.int64)
    if labels.size < 2:
        raise DataError(
            f"{path}: target {target!r} has a single class ({labels[0]}); "
            f"task={task} needs at least two"
        )
    if task == "binary" and labels.size != 2:
        raise DataError(
            f"{path}: task=binary needs exactly two classes in {target!r}, found "
            f"{labels.size} ({labels[:10].tolist()}); use task=multiclass"
        )
    index = np.searchsorted(labels, y.astype(np.int64))
    return Table(X, index.astype(np.int64), features, target, task, [str(c) for c in labels])


DATASETS = ("property_prices", "students", "blobs", "ring", "sine", *_SKLEARN, "csv")

#: The task of each bundled data set (a CSV's task is the task the user names).
DATA_TASKS: dict[str, str] = {
    "property_prices": "regression",
    "students": "regression",
    "blobs": "multiclass",
    "ring": "multiclass",  # which mode a point came from
    "sine": "regression",
    **{name: task for name, (_, task) in _SKLEARN.items()},
}


def load_table(
    name: str,
    *,
    n_samples: int | None = None,
    noise: float | None = None,
    seed: int = 0,
    path: str | None = None,
    target: str | None = None,
    features: list[str] | None = None,
    task: str | None = None,
    n_features: int | None = None,
    n_classes: int | None = None,
    window: int | None = None,
    radius: float | None = None,
) -> Table:
    """Load a data set by its config name (see :data:`DATASETS`)."""
    if name == "property_prices":
        return property_prices(n_samples or 2000, 0.05 if noise is None else noise, seed)
    if name == "students":
        return students(n_samples or 8, 2.0 if noise is None else noise, seed)
    if name == "blobs":
        return blobs(n_samples or 60_000, n_features or 784, n_classes or 10, seed)
    if name == "ring":
        return ring(
            n_samples or 5000,
            0.1 if noise is None else noise,
            seed,
            2.0 if radius is None else radius,
            n_classes or 8,
        )
    if name == "sine":
        return sine(n_samples or 5000, window or 20, 0.05 if noise is None else noise, seed)
    if name in _SKLEARN:
        return _sklearn(name)
    if name == "csv":
        table = read_csv(path or "", target, features, task)
        if window is not None:  # the feature columns are a sequence: oldest step first
            if table.X.shape[1] % window:
                raise DataError(
                    f"data.window={window} does not divide the CSV's {table.X.shape[1]} feature "
                    f"columns into time steps; give a window that does (e.g. the column count)"
                )
            table.time_steps = window
        return table
    raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
