"""The task: what the network's output ``z`` means.

One small object per run holds the four things that depend on the task and nothing else:
the cost ``C(z, y)`` (a handprop loss module), the prediction rule ``ŷ(z)``, the metrics, and
the preprocessing fitted on the training split (``x' = (x − shift) / scale``, and the same for a
regression target), kept as buffers so that a checkpoint alone predicts in original units.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_f1_score,
    multiclass_accuracy,
    multiclass_f1_score,
)

import handprop.nn as hnn
from handprop import functional as F
from handprop.datasets import TASKS

#: The costs by the name a config gives them (``task.loss``).
COSTS: dict[str, type[nn.Module]] = {
    "mse": hnn.MSELoss,
    "quadratic": hnn.QuadraticCost,  # the notes' ½(y − ŷ)²
    "bce": hnn.BCEWithLogitsLoss,
    "cross_entropy": hnn.CrossEntropyLoss,
}
DEFAULT_COST = {"regression": "mse", "binary": "bce", "multiclass": "cross_entropy"}

#: The metrics each task reports on every split, besides the loss.
METRICS = {
    "regression": ("mse", "mae", "r2"),
    "binary": ("accuracy", "f1", "auroc"),
    "multiclass": ("accuracy", "f1_macro"),
}


class Task(nn.Module):
    """Cost, prediction rule, metrics and preprocessing of one task.

    Args:
        name: ``regression`` | ``binary`` | ``multiclass``.
        cost: a key of :data:`COSTS`; None takes the task's default (MSE, BCE, cross-entropy).
        num_classes: classes of a classification task (2 for binary).
        x_shift, x_scale: the input preprocessing fitted on the training split.
        y_shift, y_scale: the same for a regression target (0 and 1 otherwise).

    Shape:
        ``z``: (N, 1) for regression and binary, (N, K) for multiclass.
        ``y``: (N, 1) scaled values, (N, 1) float labels 0/1, or (N,) class indices.
    """

    def __init__(
        self,
        name: str,
        cost: str | None = None,
        num_classes: int = 0,
        x_shift: Sequence[float] = (),
        x_scale: Sequence[float] = (),
        y_shift: float = 0.0,
        y_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if name not in TASKS:
            raise ValueError(f"task={name!r} is not one of {', '.join(TASKS)}")
        self.name, self.num_classes = name, num_classes
        self.cost_name = cost or DEFAULT_COST[name]
        self.cost = COSTS[self.cost_name]()
        self.register_buffer("x_shift", torch.tensor(list(x_shift), dtype=torch.float32))
        self.register_buffer("x_scale", torch.tensor(list(x_scale), dtype=torch.float32))
        self.register_buffer("y_shift", torch.tensor(float(y_shift)))
        self.register_buffer("y_scale", torch.tensor(float(y_scale)))

    @property
    def metric_names(self) -> tuple[str, ...]:
        return ("loss", *METRICS[self.name])

    def prediction(self, z: Tensor) -> Tensor:
        """``ŷ`` from ``z``: the value in original units (regression), P(class 1) = σ(z)
        (binary), class probabilities softmax(z) (multiclass)."""
        if self.name == "regression":
            return z * self.y_scale + self.y_shift
        if self.name == "binary":
            return F.sigmoid(z)
        return F.softmax(z, dim=-1)

    def scale_inputs(self, x_raw: Tensor) -> Tensor:
        """Raw feature rows (N, in_features) → the network's inputs."""
        return (x_raw.to(self.x_shift) - self.x_shift) / self.x_scale

    @torch.no_grad()
    def metrics(self, z: Tensor, y: Tensor) -> dict[str, float]:
        """The loss and the task's metrics of outputs ``z`` against targets ``y``, over all
        rows at once (regression metrics in the target's original units)."""
        out = {"loss": float(self.cost(z, y))}
        if self.name == "regression":
            pred, true = (
                self.prediction(z).squeeze(-1),
                (y * self.y_scale + self.y_shift).squeeze(-1),
            )
            out |= {
                "mse": float(mean_squared_error(pred, true)),
                "mae": float(mean_absolute_error(pred, true)),
                "r2": float(r2_score(pred, true)),
            }
        elif self.name == "binary":
            p, labels = self.prediction(z).squeeze(-1), y.squeeze(-1).long()
            out |= {
                "accuracy": float(binary_accuracy(p, labels, validate_args=False)),
                "f1": float(binary_f1_score(p, labels, validate_args=False)),
                "auroc": float(binary_auroc(p, labels, validate_args=False)),
            }
        else:
            p, k = self.prediction(z), self.num_classes
            out |= {
                "accuracy": float(
                    multiclass_accuracy(p, y, k, average="micro", validate_args=False)
                ),
                "f1_macro": float(
                    multiclass_f1_score(p, y, k, average="macro", validate_args=False)
                ),
            }
        return out
