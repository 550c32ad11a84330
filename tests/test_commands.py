"""handprop-eval and handprop-predict without Lightning: they rebuild a checkpoint's model from
the library and its task alone (handprop.trainer.trained), load neither Lightning nor Hydra
nor TensorBoard, and answer exactly as the training module (the Lightning path) does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from runs import run

from handprop.trainer.build import data_of
from handprop.trainer.checkpoints import load_module
from handprop.trainer.trained import load_trained, splits_of

pytestmark = pytest.mark.usefixtures("restore_process_state", "one_thread")

#: One short run of each network type (and task): its overrides.
RUNS = {
    "regression": ["data.n_samples=200", "trainer.max_epochs=2"],
    "binary": ["data=breast_cancer", "trainer.max_epochs=2"],
    "multiclass": ["data=digits", "trainer.max_epochs=1"],
    "autoencoder": ["model=autoencoder", "data=digits", "trainer.max_epochs=1"],
    "gan": ["experiment=gan_ring", "data.n_samples=400", "trainer.max_epochs=1"],
    "cnn": [  # with dropout: eval mode must switch it off the same way
        "model=cnn",
        "data=digits",
        "model.channels=[4]",
        "model.pool=[max]",
        "model.hidden=[8]",
        "trainer.max_epochs=1",
    ],
    "rnn": ["model=rnn", "data=sine", "data.n_samples=200", "trainer.max_epochs=1"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("commands")
    for name, overrides in RUNS.items():
        run(root / name, *overrides, "logger=none")
    return {name: root / name / "checkpoints" / "best.ckpt" for name in RUNS}


@pytest.mark.parametrize("name", list(RUNS))
def test_the_same_answers_as_the_training_module(runs: dict[str, Path], name: str) -> None:
    """Metrics on every split, predictions, codes and samples: equal to the Lightning
    module's, bit for bit, and the splits rebuilt equal to the data module's."""
    module, trained = load_module(runs[name]), load_trained(runs[name])
    task = trained.task.name
    dm = data_of(_cfg(module.hparams["config"]), task)
    splits = splits_of(trained.config, task)
    for split in ("train", "val", "test"):
        x, y = splits.split(split)
        want_x, want_y = dm.split(split)
        assert torch.equal(x, want_x) and torch.equal(y, want_y), split
        assert trained.evaluate(x, y) == module.evaluate(want_x, want_y), split
    x = torch.as_tensor(splits.table.X[splits.indices["test"]], dtype=torch.float32)
    if task == "generation":
        assert torch.equal(trained.sample_raw(50, seed=3), module.sample_raw(50, seed=3))
        return
    assert torch.equal(trained.predict_raw(x), module.predict_raw(x))
    if task == "reconstruction":
        with torch.no_grad():
            scaled = trained.task.scale_inputs(x)
            assert torch.equal(trained.net.encode(scaled), module.net.encode(scaled))


def _cfg(config: dict):  # noqa: ANN202
    from omegaconf import OmegaConf

    return OmegaConf.create(config)


#: Loaded by the commands, this child prints the packages of LOADED it loaded.
LOADED = ("lightning", "pytorch_lightning", "lightning_fabric", "hydra", "omegaconf")
LOADED += ("tensorboard", "torchmetrics", "matplotlib")
CHILD = """
import io, json, sys, contextlib
from handprop.trainer import {entry}
sys.argv = ["handprop", *json.loads(sys.argv[1])]
with contextlib.redirect_stdout(io.StringIO()):
    {entry}()
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set({loaded!r}))))
"""


@pytest.mark.parametrize("name", ["regression", "gan"])
def test_eval_and_predict_load_neither_lightning_nor_hydra_nor_tensorboard(
    runs: dict[str, Path], name: str, tmp_path: Path
) -> None:
    ckpt = runs[name]
    if name == "gan":
        predict = [f"ckpt_path={ckpt}", "n_samples=20", f"output={tmp_path / 'out.csv'}"]
    else:
        model = load_trained(ckpt)
        rows = [
            ",".join(model.columns["features"]),
            ",".join("1" for _ in model.columns["features"]),
        ]
        (tmp_path / "in.csv").write_text("\n".join(rows) + "\n")
        predict = [
            f"ckpt_path={ckpt}",
            f"input={tmp_path / 'in.csv'}",
            f"output={tmp_path / 'out.csv'}",
        ]
    calls = {
        "eval_main": [f"ckpt_path={ckpt}", f"output={tmp_path / 'eval.json'}"],
        "predict_main": predict,
    }
    for entry, argv in calls.items():
        code = CHILD.format(entry=entry, loaded=LOADED)
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(argv)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert json.loads(out.stdout.strip().splitlines()[-1]) == [], (entry, out.stdout)
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "out.csv").is_file()
