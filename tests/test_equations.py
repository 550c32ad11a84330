"""docs/equations.md: every name it gives exists, and the equations it states for the parts
handprop takes from torch (the optimizers' steps) and for the preprocessing hold."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "equations.md").read_text()


def _resolve(dotted: str) -> object:
    """``handprop.a.b.C.d`` → the object: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_code_name_in_the_doc_exists() -> None:
    names = set(re.findall(r"`(handprop(?:\.\w+)+)`", DOC))
    assert len(names) > 25
    for name in sorted(names):
        _resolve(name)  # raises if renamed or moved
    for path in set(re.findall(r"`(conf/\w+/\w+\.yaml)`", DOC)):
        assert (ROOT / "src" / "handprop" / "trainer" / path).is_file(), path


def test_every_test_named_in_the_doc_exists() -> None:
    tests = set(re.findall(r"`(tests/\w+\.py)::(\w+)`", DOC))
    assert len(tests) > 20
    for file, name in sorted(tests):
        text = (ROOT / file).read_text()
        assert re.search(rf"^def {name}\(", text, re.M), f"{file}::{name} does not exist"


def test_the_doc_covers_every_function_of_the_package() -> None:
    from handprop.functional import FUNCTIONS

    for cls in FUNCTIONS.values():
        assert cls.__name__ in DOC or cls.__name__.removesuffix("Function").lower() in DOC.lower()


# --------------------------------------------------------------------------------------------
# Section 6: one step of each configured optimizer is the formula in the doc's table
# --------------------------------------------------------------------------------------------
def _optimizer(name: str, **override: object):  # noqa: ANN202
    from hydra import compose, initialize_config_module
    from hydra.utils import instantiate

    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        cfg = compose("train", overrides=[f"optimizer={name}"]).optimizer
    return cfg, instantiate(cfg)


def _expected(name: str, cfg, w: torch.Tensor, grads: list[torch.Tensor]) -> torch.Tensor:  # noqa: ANN001
    """The doc's table, step by step, in plain tensor arithmetic."""
    eta, lam = float(cfg.lr), float(cfg.get("weight_decay") or 0.0)
    w = w.clone()
    v = torch.zeros_like(w)
    m = torch.zeros_like(w)
    s = torch.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        if name != "adamw":
            g = g + lam * w
        if name == "sgd":
            w = w - eta * g
        elif name == "momentum":
            mu = float(cfg.momentum)
            v = mu * v + g
            w = w - eta * ((g + mu * v) if cfg.nesterov else v)
        elif name == "rmsprop":
            alpha, eps = float(cfg.alpha), 1e-8
            s = alpha * s + (1 - alpha) * g * g
            w = w - eta * g / (s.sqrt() + eps)
        else:  # adam, adamw
            if name == "adamw":
                w = w - eta * lam * w
            b1, b2 = map(float, cfg.betas)
            eps = 1e-8
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
            w = w - eta * m_hat / (v_hat.sqrt() + eps)
    return w


@pytest.mark.parametrize(
    ("name", "override"),
    [
        ("sgd", {}),
        ("sgd", {"weight_decay": 0.1}),
        ("momentum", {}),
        ("momentum", {"nesterov": True}),
        ("rmsprop", {}),
        ("adam", {}),
        ("adamw", {}),
    ],
    ids=["sgd", "sgd-decay", "momentum", "nesterov", "rmsprop", "adam", "adamw"],
)
def test_optimizer_step_is_the_documented_rule(name: str, override: dict) -> None:
    from omegaconf import OmegaConf

    cfg, make = _optimizer(name)
    cfg = OmegaConf.merge(cfg, override)
    start = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    grads = [torch.tensor(g, dtype=torch.float64) for g in ([0.3, -0.2, 1.0], [0.1, 0.4, -2.0])]
    w = start.clone().requires_grad_(True)
    opt = make([w], **override)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    want = _expected(name, cfg, start, grads)
    assert torch.allclose(w.detach(), want, rtol=1e-12, atol=1e-12), (w, want)


# --------------------------------------------------------------------------------------------
# Section 8: standardisation and normalisation, fitted on the training rows only
# --------------------------------------------------------------------------------------------
def test_scaler_is_the_documented_formula() -> None:
    from handprop.trainer.data import Scaler, TabularDataModule
    from handprop.trainer.datasets import property_prices

    x = np.array([[1.0, 10.0, 5.0], [2.0, 30.0, 5.0], [6.0, 20.0, 5.0]])
    std = Scaler.fit(x, "standardize")(x)
    assert np.allclose(std[:, :2].mean(0), 0) and np.allclose(std[:, :2].std(0), 1)
    assert np.allclose(std[:, 0], (x[:, 0] - 3.0) / math.sqrt(14 / 3))
    norm = Scaler.fit(x, "normalize")(x)
    assert np.allclose(norm[:, 0], [0, 0.2, 1]) and np.allclose(norm[:, 1], [0, 1, 0.5])
    assert np.all(std[:, 2] == 0) and np.all(norm[:, 2] == 0)  # constant column: scale 1

    table = property_prices(200, seed=0)
    dm = TabularDataModule(
        table, batch_size=32, preprocessing="standardize", val_fraction=0.2, test_fraction=0.2
    )
    train_rows = table.X[dm.indices["train"]]
    assert np.allclose(dm.x_scaler.shift, train_rows.mean(0))
    assert np.allclose(dm.x_scaler.scale, train_rows.std(0))
    assert not np.allclose(dm.x_scaler.shift, table.X.mean(0))  # not the whole table's
