"""The task: what the network's output ``z`` means.

One small object per run holds the four things that depend on the task and nothing else:
the cost ``C(z, y)`` (a handprop loss module), the prediction rule ``ŷ(z)``, the metrics
(:mod:`handprop.trainer.metrics`: plain torch, no Lightning or torchmetrics), and
the preprocessing fitted on the training split (``x' = (x − shift) / scale``, and the same for a
regression target), kept as buffers so that a checkpoint alone predicts in original units.

Besides the three supervised tasks, two model the inputs themselves: ``reconstruction`` (an
autoencoder's output is its input rebuilt; the target is the input) and ``generation`` (a
GAN's generator output is a sample; :meth:`Task.generation_metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

import handprop.nn as hnn
from handprop import functional as F
from handprop.trainer.datasets import TASKS
from handprop.trainer.metrics import (
    binary_accuracy,
    binary_auroc,
    binary_f1_score,
    mean_absolute_error,
    mean_squared_error,
    multiclass_accuracy,
    multiclass_f1_score,
    r2_score,
)

#: The costs by the name a config gives them (``task.cost``).
COSTS: dict[str, type[nn.Module]] = {
    "mse": hnn.MSELoss,
    "quadratic": hnn.QuadraticCost,  # the notes' ½(y − ŷ)²
    "bce": hnn.BCEWithLogitsLoss,
    "cross_entropy": hnn.CrossEntropyLoss,
}
DEFAULT_COST = {
    "regression": "mse",
    "binary": "bce",
    "multiclass": "cross_entropy",
    "reconstruction": "mse",
    "generation": "bce",
}
#: The costs that fit each task (``task.cost``).
TASK_COSTS = {
    "regression": ("mse", "quadratic"),
    "binary": ("bce",),
    "multiclass": ("cross_entropy",),
    "reconstruction": ("mse", "quadratic"),
    "generation": ("bce",),
}

#: The metrics each task reports on every split, besides the loss (a GAN has two losses, the
#: discriminator's and the generator's, and no other; ``modes_covered`` and ``high_quality``
#: only on a mixture with known modes, the ring).
METRICS = {
    "regression": ("mse", "mae", "r2"),
    "binary": ("accuracy", "f1", "auroc"),
    "multiclass": ("accuracy", "f1_macro"),
    "reconstruction": ("mse", "pca_mse"),
    "generation": (
        "d_loss",
        "g_loss",
        "d_real_accuracy",
        "d_fake_accuracy",
        "energy_distance",
        "modes_covered",
        "high_quality",
    ),
}
#: The validation metric that picks the best weights and stops early, where it is not the loss.
MONITOR = {"generation": "energy_distance"}

#: A mode counts as covered when at least this many of the generated samples are high quality
#: (within 3 standard deviations) and nearest to it (of 2500 samples; Metz et al., 2017).
MODE_MIN_SAMPLES = 20


def metric_names(task: str) -> tuple[str, ...]:
    """Every metric ``task`` can report on a split."""
    return METRICS[task] if task == "generation" else ("loss", *METRICS[task])


#: Rows of each sample the energy distance compares (its cost grows with their square).
ENERGY_ROWS = 1000


def energy_distance(a: Tensor, b: Tensor) -> Tensor:
    """Székely's energy distance between two samples, rows of ``a`` (N, f) and ``b`` (M, f):
    ``2 E‖a − b‖ − E‖a − a'‖ − E‖b − b'‖``, zero when the two distributions are the same and
    positive otherwise (the V-statistic over the first :data:`ENERGY_ROWS` rows of each; a
    0-dim tensor)."""
    a, b = a[:ENERGY_ROWS], b[:ENERGY_ROWS]
    return (
        2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean()
    ).clamp_min(0)


class Task(nn.Module):
    """Cost, prediction rule, metrics and preprocessing of one task.

    Args:
        name: ``regression`` | ``binary`` | ``multiclass`` | ``reconstruction`` |
            ``generation``.
        cost: a key of :data:`COSTS`; None takes the task's default (MSE, BCE, cross-entropy).
        num_classes: classes of a classification task (2 for binary).
        x_shift, x_scale: the input preprocessing fitted on the training split.
        y_shift, y_scale: the same for a regression target (0 and 1 otherwise).
        pca_components: reconstruction: the components of the PCA it is compared with (the
            autoencoder's code size), fitted by :meth:`fit_pca` on the training split.
        modes, mode_std: generation: the centres (K, f) and standard deviation of the mixture
            the data came from (the ring), for ``modes_covered`` and ``high_quality``.

    Shape:
        ``z``: (N, 1) for regression and binary, (N, K) for multiclass, (N, f) for
        reconstruction (the rebuilt inputs) and generation (samples).
        ``y``: (N, 1) scaled values, (N, 1) float labels 0/1, (N,) class indices, or the
        scaled inputs (N, f) themselves (reconstruction).
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
        pca_components: int = 0,
        modes: Sequence[Sequence[float]] | None = None,
        mode_std: float | None = None,
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
        if name == "reconstruction":  # filled by fit_pca, then saved with the weights
            f = len(self.x_shift)
            self.register_buffer("pca_mean", torch.zeros(f))
            self.register_buffer("pca_basis", torch.zeros(pca_components, f))
        self.modes = torch.tensor(modes, dtype=torch.float32) if modes else None
        self.mode_std = mode_std

    @property
    def metric_names(self) -> tuple[str, ...]:
        names = metric_names(self.name)
        if self.name == "generation" and self.modes is None:
            names = tuple(n for n in names if n not in ("modes_covered", "high_quality"))
        return names

    # ---- reconstruction: the PCA it is measured against ---------------------------------------
    @torch.no_grad()
    def fit_pca(self, x: Tensor) -> None:
        """PCA of the scaled training inputs ``x`` (N, f): their mean and the
        ``pca_components`` directions of largest variance (the top right-singular vectors of
        the centred rows; float64, so the basis does not depend on float32 rounding)."""
        mean = x.double().mean(0)
        _, _, vh = torch.linalg.svd(x.double() - mean, full_matrices=False)
        k = self.pca_basis.shape[0]
        self.pca_mean.copy_(mean)
        self.pca_basis.copy_(vh[:k])

    def pca_reconstruction(self, x: Tensor) -> Tensor:
        """``x̂ = μ + (x − μ) Vₖᵀ Vₖ``: scaled rows projected on the PCA subspace."""
        return (x - self.pca_mean) @ self.pca_basis.t() @ self.pca_basis + self.pca_mean

    def unscale_inputs(self, x: Tensor) -> Tensor:
        """Scaled rows (N, f) back in the data's own units (a reconstruction, a sample)."""
        return x * self.x_scale + self.x_shift

    def prediction(self, z: Tensor) -> Tensor:
        """``ŷ`` from ``z``: the value in original units (regression), P(class 1) = σ(z)
        (binary), class probabilities softmax(z) (multiclass), the rebuilt row or the sample
        in the data's units (reconstruction, generation)."""
        if self.name == "regression":
            return z * self.y_scale + self.y_shift
        if self.name == "binary":
            return F.sigmoid(z)
        if self.name in ("reconstruction", "generation"):
            return self.unscale_inputs(z)
        return F.softmax(z, dim=-1)

    def scale_inputs(self, x_raw: Tensor) -> Tensor:
        """Raw feature rows (N, in_features) → the network's inputs."""
        return (x_raw.to(self.x_shift) - self.x_shift) / self.x_scale

    @torch.no_grad()
    def metrics(self, z: Tensor, y: Tensor) -> dict[str, float]:
        """The loss and the task's metrics of outputs ``z`` against targets ``y``, over all
        rows at once (regression metrics in the target's original units)."""
        out = {"loss": float(self.cost(z, y))}
        if self.name == "reconstruction":
            # MSE over every entry, in the data's units; PCA's with as many components beside
            true = self.unscale_inputs(y)
            out |= {
                "mse": float(mean_squared_error(self.unscale_inputs(z), true)),
                "pca_mse": float(
                    mean_squared_error(self.unscale_inputs(self.pca_reconstruction(y)), true)
                ),
            }
        elif self.name == "regression":
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
                "accuracy": float(binary_accuracy(p, labels)),
                "f1": float(binary_f1_score(p, labels)),
                "auroc": float(binary_auroc(p, labels)),
            }
        else:
            # The class of the largest logit: softmax keeps the order, so no probabilities.
            p, k = z.argmax(-1), self.num_classes
            out |= {
                "accuracy": float(multiclass_accuracy(p, y)),
                "f1_macro": float(multiclass_f1_score(p, y, k)),
            }
        return out

    @torch.no_grad()
    def generation_metrics(
        self, real_logits: Tensor, fake_logits: Tensor, real: Tensor, fake: Tensor
    ) -> dict[str, float]:
        """A GAN's metrics on one split: the discriminator's logits ``D(x)`` on the split's
        real rows ``real`` (N, f) and on generated samples ``fake`` (M, f) (both scaled).

        * ``d_loss``: the discriminator's cost, ``½ [BCE(D(x), 1) + BCE(D(G(z)), 0)]``, and
          ``g_loss``: the generator's, ``BCE(D(G(z)), 1)`` (both ``log 2`` at equilibrium);
        * ``d_real_accuracy``, ``d_fake_accuracy``: the share of real rows it calls real
          (``D(x) > 0``) and of samples it calls fake;
        * ``energy_distance`` between the samples and the real rows, in the data's units;
        * with known modes (the ring): ``high_quality``, the share of samples within 3
          standard deviations of their nearest mode, and ``modes_covered``, the modes nearest
          to at least :data:`MODE_MIN_SAMPLES` high-quality samples.
        """
        ones, zeros = torch.ones_like(real_logits), torch.zeros_like(fake_logits)
        fake_as_real = float(self.cost(fake_logits, torch.ones_like(fake_logits)))
        d_loss = 0.5 * (float(self.cost(real_logits, ones)) + float(self.cost(fake_logits, zeros)))
        real_u, fake_u = self.unscale_inputs(real), self.unscale_inputs(fake)
        out = {
            "d_loss": d_loss,
            "g_loss": fake_as_real,
            "d_real_accuracy": float((real_logits > 0).float().mean()),
            "d_fake_accuracy": float((fake_logits < 0).float().mean()),
            "energy_distance": float(energy_distance(fake_u, real_u)),
        }
        if self.modes is not None:
            out |= mode_coverage(fake_u, self.modes.to(fake_u), float(self.mode_std))
        return out


def mode_coverage(samples: Tensor, modes: Tensor, std: float) -> dict[str, float]:
    """``high_quality``: the share of ``samples`` (N, f) within ``3 std`` of their nearest
    mode (rows of ``modes``, (K, f)); ``modes_covered``: how many modes are nearest to at least
    :data:`MODE_MIN_SAMPLES` high-quality samples (Metz et al. 2017's ring benchmark)."""
    distance, nearest = torch.cdist(samples, modes).min(1)
    good = distance < 3 * std
    counts = torch.bincount(nearest[good], minlength=len(modes))
    return {
        "modes_covered": float((counts >= MODE_MIN_SAMPLES).sum()),
        "high_quality": float(good.float().mean()),
    }
