"""handprop.trainer.metrics gives torchmetrics' values bit for bit: the same arithmetic in the
same order, without loading torchmetrics (handprop-eval and the per-epoch validation use it)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_f1_score,
    multiclass_accuracy,
    multiclass_f1_score,
)

from handprop.trainer import metrics as M


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, (a, b)
    assert torch.equal(a, b) or (a.isnan() and b.isnan()), (a, b)


def regression_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    cases = []
    for n in (2, 7, 300, 4096):
        y = torch.randn(n, generator=g) * 50 + 300
        cases.append((y + torch.randn(n, generator=g) * 20, y))
    y = torch.full((10,), 3.0)
    cases += [(y.clone(), y), (y + 1, y), (torch.arange(10.0), torch.arange(10.0))]  # R²'s edges
    return cases


@pytest.mark.parametrize("case", range(7))
def test_regression_metrics_equal_torchmetrics(case: int) -> None:
    pred, true = regression_cases()[case]
    same(M.mean_squared_error(pred, true), mean_squared_error(pred, true))
    same(M.mean_absolute_error(pred, true), mean_absolute_error(pred, true))
    same(M.r2_score(pred, true), r2_score(pred, true))
    wide = (pred.reshape(-1, 1).repeat(1, 3), true.reshape(-1, 1).repeat(1, 3))  # reconstruction
    same(M.mean_squared_error(*wide), mean_squared_error(*wide))


def binary_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    cases = []
    for n in (1, 5, 171, 2000):
        labels = torch.randint(0, 2, (n,), generator=g)
        probs = torch.sigmoid(torch.randn(n, generator=g) * 2 + labels)
        cases.append((probs, labels))
    labels = torch.randint(0, 2, (500,), generator=g)
    ties = torch.randint(0, 5, (500,), generator=g).float() / 4  # many equal scores, 0.5 too
    cases += [
        (ties, labels),
        (torch.rand(50, generator=g), torch.ones(50, dtype=torch.long)),  # one class only
        (torch.rand(50, generator=g), torch.zeros(50, dtype=torch.long)),
        (torch.randn(80, generator=g) * 4, torch.randint(0, 2, (80,), generator=g)),  # logits
    ]
    return cases


@pytest.mark.parametrize("case", range(8))
def test_binary_metrics_equal_torchmetrics(case: int) -> None:
    probs, labels = binary_cases()[case]
    kw = {"validate_args": False}
    same(M.binary_accuracy(probs, labels), binary_accuracy(probs, labels, **kw))
    same(M.binary_f1_score(probs, labels), binary_f1_score(probs, labels, **kw))
    with warnings.catch_warnings():  # torchmetrics warns about a missing class
        warnings.simplefilter("ignore")
        same(M.binary_auroc(probs, labels), binary_auroc(probs, labels, **kw))


def multiclass_cases() -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(2)
    cases = []
    for n, k in ((1, 3), (40, 3), (270, 10), (5000, 8)):
        y = torch.randint(0, k, (n,), generator=g)
        noisy = torch.where(
            torch.rand(n, generator=g) < 0.3, torch.randint(0, k, (n,), generator=g), y
        )
        cases.append((noisy, y, k))
    y = torch.randint(0, 4, (60,), generator=g)
    cases += [(y.clone(), y, 10), (torch.zeros(60, dtype=torch.long), y, 4)]  # absent classes
    return cases


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("case", range(6))
def test_multiclass_metrics_equal_torchmetrics(case: int, deterministic: bool) -> None:
    preds, target, k = multiclass_cases()[case]
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic)  # torchmetrics counts another way then
    try:
        acc = multiclass_accuracy(preds, target, k, average="micro", validate_args=False)
        f1 = multiclass_f1_score(preds, target, k, average="macro", validate_args=False)
    finally:
        torch.use_deterministic_algorithms(before)
    same(M.multiclass_accuracy(preds, target), acc)
    same(M.multiclass_f1_score(preds, target, k), f1)


def test_the_task_metrics_need_no_torchmetrics() -> None:
    """The task (its metrics included) loads in a process where torchmetrics cannot."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torchmetrics'] = None\n"
        "import torch\n"
        "from handprop.trainer.task import Task\n"
        "t = Task('multiclass', num_classes=3, x_shift=[0.0], x_scale=[1.0])\n"
        "print(t.metrics(torch.randn(9, 3), torch.arange(9) % 3)['f1_macro'] >= 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr
