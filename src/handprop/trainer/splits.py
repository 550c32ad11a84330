"""A data set's splits, scaled, as tensors: the seeded train / val / test split, the scaling
fitted on the training rows (:class:`Scaler`), and each split's ``(X, y)``. Plain numpy and torch:
``handprop-eval`` rebuilds a run's splits with it, without Lightning;
:class:`handprop.trainer.data.TabularDataModule` is these splits plus batching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from handprop.trainer.datasets import DataError, Table

PREPROCESSING = ("standardize", "normalize", "none")


@dataclass
class Scaler:
    """``x' = (x − shift) / scale`` per column: the notes' standardisation
    (shift = μ, scale = σ) or min-max normalisation (shift = min, scale = max − min).

    ``pooled``: one shift and scale for all the columns, from all their values: for an image's
    pixels, which must keep their brightness relative to each other (a filter slides over
    all of them; a near-constant border pixel standardised on its own turns a rare stroke into
    a value of ~50)."""

    shift: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, method: str, pooled: bool = False) -> Scaler:
        if method not in PREPROCESSING:
            raise DataError(
                f"data.preprocessing={method!r} is not one of {', '.join(PREPROCESSING)}"
            )
        if method == "none":
            return cls(np.zeros(x.shape[1]), np.ones(x.shape[1]))
        if pooled:  # the statistics of all the values, in every column
            one = cls.fit(x.reshape(-1, 1), method)
            return cls(np.full(x.shape[1], one.shift[0]), np.full(x.shape[1], one.scale[0]))
        if method == "standardize":
            shift, scale = x.mean(0), x.std(0)
        else:
            shift, scale = x.min(0), x.max(0) - x.min(0)
        const = np.flatnonzero(scale == 0)
        if const.size:
            # A constant column carries no information; scale 1 keeps it finite (all zeros).
            scale = scale.copy()
            scale[const] = 1.0
        return cls(shift, scale)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.shift) / self.scale


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Rows in the train, val and test splits of ``n`` rows."""
    for key, f in (("data.val_fraction", val_fraction), ("data.test_fraction", test_fraction)):
        if not 0 <= f < 1:
            raise DataError(f"{key}={f} must be in [0, 1)")
    if val_fraction + test_fraction >= 1:
        raise DataError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:g} leaves "
            "no training rows; their sum must be below 1"
        )
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    n_train = n - n_val - n_test
    if n_train < 1 or (val_fraction > 0 and n_val < 1) or (test_fraction > 0 and n_test < 1):
        raise DataError(
            f"too few rows ({n}) for the splits val={val_fraction:g}, test={test_fraction:g}: "
            "each split needs at least one row; add rows or change the fractions"
        )
    return n_train, n_val, n_test


def split_indices(
    n: int, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / val / test row indices (:func:`split_sizes` of them)."""
    n_train, n_val, _ = split_sizes(n, val_fraction, test_fraction)
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]


#: The networks whose weights are shared over an image's pixels (a filter slides over all of
#: them; a recurrent layer reads every row with the same weights): their pixels are scaled
#: together. Per pixel, a near-constant border pixel standardised on its own turns a rare stroke
#: into a value of ~50.
SHARED_WEIGHTS = ("cnn", "rnn")


def pooled_scaling(network: str, table: Table) -> bool:
    """Whether ``network`` scales ``table``'s columns together (:data:`SHARED_WEIGHTS`, on
    rows that are images)."""
    return network in SHARED_WEIGHTS and table.image_shape is not None


class Splits:
    """A :class:`~handprop.trainer.datasets.Table` split into train / val / test rows (seeded),
    with the scaler fitted on the training rows only.

    ``pooled_scaling``: one shift and scale for all the columns (:class:`Scaler`'s ``pooled``),
    for the networks that slide the same weights over every pixel (as image pipelines normalise
    per channel, not per pixel). Regression targets are standardised too (``y_scaler``).
    ``reconstruct``: the target of each row is the row itself (an autoencoder's), ``y is X``.
    """

    def __init__(
        self,
        table: Table,
        preprocessing: str = "standardize",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        reconstruct: bool = False,
        pooled_scaling: bool = False,
    ) -> None:
        self.reconstruct = reconstruct
        self.table = table
        self.seed = seed
        idx = split_indices(len(table.y), val_fraction, test_fraction, seed)
        self.indices = dict(zip(("train", "val", "test"), idx, strict=True))
        train_x = table.X[self.indices["train"]]
        self.x_scaler = Scaler.fit(train_x, preprocessing, pooled=pooled_scaling)
        if table.task == "regression":
            ty = table.y[self.indices["train"]]
            self.y_scaler = Scaler(np.array([ty.mean()]), np.array([ty.std() or 1.0]))
        else:
            self.y_scaler = Scaler(np.zeros(1), np.ones(1))
        self._tensors: dict[str, tuple[Tensor, Tensor]] = {}
        self._device = torch.device("cpu")

    # ---- shapes the model needs -------------------------------------------------------------
    @property
    def in_features(self) -> int:
        return self.table.in_features

    @property
    def out_features(self) -> int:
        return self.table.out_features

    @property
    def num_train(self) -> int:
        return len(self.indices["train"])

    def has(self, name: str) -> bool:
        """Whether split ``name`` has any rows (a fraction of 0 leaves it empty)."""
        return self.indices[name].size > 0

    # ---- tensors ------------------------------------------------------------------------------
    def split(self, name: str, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """Scaled ``(X, y)`` of one split as float32 tensors (y long for multiclass)."""
        device = torch.device(device) if device is not None else self._device
        key = name
        if key not in self._tensors or self._tensors[key][0].device != device:
            rows = self.indices[name]
            X = torch.as_tensor(self.x_scaler(self.table.X[rows]), dtype=torch.float32)
            X = X.to(device)
            y_np = self.table.y[rows]
            if self.reconstruct:
                y = X  # an autoencoder's target is its input: the same tensor
            elif self.table.task == "multiclass":
                y = torch.as_tensor(y_np, dtype=torch.long)
            elif self.table.task == "binary":
                y = torch.as_tensor(y_np, dtype=torch.float32).unsqueeze(1)
            else:
                y = torch.as_tensor(self.y_scaler(y_np[:, None]), dtype=torch.float32)
            self._tensors[key] = (X, y.to(device))
        return self._tensors[key]
