"""The tasks' metrics in plain torch: the same arithmetic, in the same order and dtypes, as
torchmetrics' functions of the same names (torchmetrics 1.x, ``validate_args=False``), so the
values are identical (``tests/test_metrics.py`` compares them bit for bit) without loading
torchmetrics (and SciPy) — ``handprop-eval`` answers in a fraction of a second.

Every function returns a 0-dim float32 tensor (the dtype of the inputs for the regression
metrics). Shapes: ``preds`` and ``target`` (N,) unless said otherwise.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _safe_divide(num: Tensor, denom: Tensor) -> Tensor:
    """``num / denom`` in floating point, 0 where ``denom`` is 0."""
    num = num if num.is_floating_point() else num.float()
    denom = denom if denom.is_floating_point() else denom.float()
    zero = torch.full((), 0.0, dtype=num.dtype, device=num.device)
    return torch.where(denom != 0, num / denom, zero)


# ---- regression --------------------------------------------------------------------------------
def mean_squared_error(preds: Tensor, target: Tensor) -> Tensor:
    """``Σ (ŷ − y)² / N`` over every entry."""
    diff = preds.reshape(-1) - target.reshape(-1)
    return torch.sum(diff * diff, dim=0) / target.reshape(-1).shape[0]


def mean_absolute_error(preds: Tensor, target: Tensor) -> Tensor:
    """``Σ |ŷ − y| / N`` over every entry."""
    preds, target = preds.reshape(-1), target.reshape(-1)
    return torch.sum(torch.abs(preds - target), dim=0) / target.shape[0]


def r2_score(preds: Tensor, target: Tensor) -> Tensor:
    """``R² = 1 − RSS / TSS``, ``RSS = Σ (y − ŷ)²``, ``TSS = Σ y² − (Σ y)² / N``; 1 where both
    are ~0 (``|·| ≤ 1e-4``), 0 where only TSS is."""
    n = target.size(0)
    if n < 2:
        raise ValueError("Needs at least two samples to calculate r2 score.")
    sum_obs = torch.sum(target, dim=0)
    sum_squared_obs = torch.sum(target * target, dim=0)
    residual = target - preds
    rss = torch.sum(residual * residual, dim=0)
    tss = sum_squared_obs - sum_obs * (sum_obs / n)
    cond_rss = ~torch.isclose(rss, torch.zeros_like(rss), atol=1e-4)
    cond_tss = ~torch.isclose(tss, torch.zeros_like(tss), atol=1e-4)
    cond = cond_rss & cond_tss
    raw = torch.ones_like(rss)
    raw[cond] = 1 - (rss[cond] / tss[cond])
    raw[cond_rss & ~cond_tss] = 0.0
    return torch.mean(raw)


# ---- binary classification ---------------------------------------------------------------------
def _binary_counts(probs: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """tp, fp, tn, fn of ``probs > 0.5`` (values outside [0, 1] are logits: σ first)."""
    if not torch.all((probs >= 0) * (probs <= 1)):
        probs = probs.sigmoid()
    preds = (probs > 0.5).reshape(-1)
    target = target.reshape(-1)
    tp = ((target == preds) & (target == 1)).sum()
    fn = ((target != preds) & (target == 1)).sum()
    fp = ((target != preds) & (target == 0)).sum()
    tn = ((target == preds) & (target == 0)).sum()
    return tp, fp, tn, fn


def binary_accuracy(probs: Tensor, target: Tensor) -> Tensor:
    """The share of rows whose class ``probs > 0.5`` is ``target`` (0/1)."""
    tp, fp, tn, fn = _binary_counts(probs, target)
    return _safe_divide(tp + tn, tp + tn + fp + fn)


def binary_f1_score(probs: Tensor, target: Tensor) -> Tensor:
    """``F1 = 2 tp / (2 tp + fn + fp)`` of class 1 (0 when there is no tp, fp or fn)."""
    tp, fp, _, fn = _binary_counts(probs, target)
    return _safe_divide(2.0 * tp, 2.0 * tp + 1.0 * fn + fp)


def binary_auroc(probs: Tensor, target: Tensor) -> Tensor:
    """The area under the ROC curve, exact (every distinct score a threshold): the trapezoid
    rule over ``(FPR, TPR)`` from ``(0, 0)``; ties count as one threshold. 0 when a class is
    absent (its rate is then taken as all zeros)."""
    probs, target = probs.reshape(-1), target.reshape(-1)
    if not torch.all((probs >= 0) * (probs <= 1)):
        probs = probs.sigmoid()
    order = torch.argsort(probs, descending=True)
    probs, target = probs[order], target[order]
    distinct = torch.where(probs[1:] - probs[:-1])[0]
    ends = torch.nn.functional.pad(distinct, [0, 1], value=target.size(0) - 1)
    positive = (target == 1).to(torch.long)
    tps = torch.cumsum(positive * 1.0, dim=0)[ends]
    fps = 1 + ends - tps
    tps = torch.cat([torch.zeros(1, dtype=tps.dtype), tps])
    fps = torch.cat([torch.zeros(1, dtype=fps.dtype), fps])
    fpr = torch.zeros_like(fps) if fps[-1] <= 0 else fps / fps[-1]
    tpr = torch.zeros_like(tps) if tps[-1] <= 0 else tps / tps[-1]
    return torch.trapz(tpr, fpr, dim=-1) * 1.0


# ---- multi-class classification ----------------------------------------------------------------
def multiclass_accuracy(preds: Tensor, target: Tensor) -> Tensor:
    """The share of rows whose predicted class index ``preds`` is ``target`` (micro)."""
    preds, target = preds.reshape(-1), target.reshape(-1)
    tp = (preds == target).sum()
    fn = (preds != target).sum()
    return _safe_divide(tp, tp + fn)


def multiclass_f1_score(preds: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Macro F1: ``2 tp / (2 tp + fn + fp)`` per class, averaged over the classes that occur
    in ``preds`` or ``target`` (class indices)."""
    preds, target = preds.reshape(-1), target.reshape(-1)
    k = num_classes
    mapping = target.to(torch.long) * k + preds.to(torch.long)
    confmat = torch.bincount(mapping, minlength=k * k).reshape(k, k)
    tp = confmat.diag()
    fp = confmat.sum(0) - tp
    fn = confmat.sum(1) - tp
    score = _safe_divide(2.0 * tp, 2.0 * tp + 1.0 * fn + fp)
    weights = torch.ones_like(score)
    weights[tp + fp + fn == 0] = 0.0
    return _safe_divide(weights * score, weights.sum(-1, keepdim=True)).sum(-1)
