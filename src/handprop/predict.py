"""``handprop-predict ckpt_path=PATH input=in.csv output=out.csv``.

``input`` is a CSV with a header row. It must hold every feature column the model was trained
on (``model.columns["features"]``), found by name, so their order does not matter; other
columns (an id, the target, notes) are not read and may hold anything. Feature values are in
the data's own units: the preprocessing stored in the checkpoint is applied here.

``output`` gets every input row, all its columns in the input's order, followed by the
prediction in original units: ``predicted_<target>`` for regression; ``predicted_class`` and
one ``prob_<class>`` column per class for classification.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from handprop.cli import ConfigError, call_reporting, run_cli, writing


def predict(ckpt_path: str, input: str, output: str) -> Path:
    """Write predictions for ``input`` to ``output`` (atomically); return its path."""
    import torch

    from handprop.checkpoint import load_module
    from handprop.datasets import read_features

    out = Path(output)
    if not out.parent.is_dir():  # before any work, not after it
        raise ConfigError(f"output: folder {out.parent} does not exist")
    model = load_module(ckpt_path)
    features = list(model.columns["features"])
    X, header, body = read_features(input, features)
    yhat = model.predict_raw(torch.as_tensor(X, dtype=torch.float32))  # under no_grad
    if model.task.name == "regression":
        extra = [f"predicted_{model.columns['target']}"]
        cols = [[f"{v:.6g}"] for v in yhat.squeeze(-1).tolist()]
    else:
        classes = list(model.columns["classes"])
        probs = torch.cat([1 - yhat, yhat], dim=-1) if model.task.name == "binary" else yhat
        extra = ["predicted_class", *(f"prob_{c}" for c in classes)]
        cols = [[classes[int(torch.argmax(p))], *(f"{v:.6g}" for v in p.tolist())] for p in probs]
    tmp = out.with_name(out.name + ".tmp")
    with writing(out, tmp):  # a failed write: no .tmp left, one line naming the output
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([*header, *extra])
            for row, c in zip(body, cols, strict=True):
                w.writerow([*row, *c])
        os.replace(tmp, out)
    print(f"{len(body)} predictions written to {out}")
    return out


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def _hydra_main(cfg: DictConfig) -> None:
    call_reporting(lambda: predict(cfg.ckpt_path, cfg.input, cfg.output), cfg)


def main() -> None:
    run_cli(_hydra_main, "predict")


if __name__ == "__main__":
    sys.exit(main())
