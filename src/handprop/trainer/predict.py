"""``handprop-predict ckpt_path=PATH input=in.csv output=out.csv``.

``input`` is a CSV with a header row. It must hold every feature column the model was trained
on (``model.columns["features"]``), found by name, so their order does not matter; other
columns (an id, the target, notes) are not read and may hold anything. Feature values are in
the data's own units: the preprocessing stored in the checkpoint is applied here.

``output`` gets every input row, all its columns in the input's order, followed by the
prediction in original units: ``predicted_<target>`` for regression; ``predicted_class`` and
one ``prob_<class>`` column per class for classification; for an autoencoder the code
(``code_1`` … ``code_k``) and the rebuilt row (``reconstructed_<feature>`` per feature).

A GAN reads no input: ``handprop-predict ckpt_path=PATH n_samples=N output=samples.csv``
writes ``N`` generated rows (one column per feature, in the data's units) from noise seeded
by ``seed`` (default 0).

Neither Lightning nor Hydra nor TensorBoard is loaded (:mod:`handprop.trainer.trained`).
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

from handprop.trainer.cli import REQUIRED, required, run_command
from handprop.trainer.errors import ConfigError
from handprop.trainer.files import writing

#: The settings and their defaults (``???``: required).
SETTINGS = {
    "ckpt_path": REQUIRED,
    "input": None,
    "output": REQUIRED,
    "n_samples": None,
    "seed": 0,
    "verbose": False,
}

HELP = """== handprop-predict ==
Predictions of a trained checkpoint for the rows of a CSV file (or a GAN's samples).

== Keys (key=value) ==
  ckpt_path=PATH   the checkpoint (required), e.g. outputs/runs/<run>/checkpoints/best.ckpt
  input=PATH       a CSV with a header row (required). It needs every feature column the
                   model was trained on, by name, in any order; other columns (an id, the
                   target) are copied to the output unread. Values in the data's own units.
  output=PATH      the CSV to write (required): every input column, then
                   predicted_<target> (regression) or predicted_class and prob_<class>;
                   an autoencoder: code_1..code_k and reconstructed_<feature>
  n_samples=N      a GAN's checkpoint: write N generated rows instead (no input)
  seed=0           a GAN: the seed of the samples' noise
  verbose=true     print the full traceback of an error

== Config (with your overrides) ==
$CONFIG
Examples:
  handprop-predict ckpt_path=outputs/runs/<run>/checkpoints/best.ckpt input=new.csv output=pred.csv
  handprop-predict ckpt_path=outputs/runs/<gan run>/checkpoints/best.ckpt n_samples=1000 output=samples.csv"""


def predict(
    ckpt_path: str,
    input: str | None,
    output: str,
    n_samples: int | None = None,
    seed: int = 0,
) -> Path:
    """Write predictions for ``input`` (or ``n_samples`` samples of a GAN) to ``output``
    (atomically); return its path."""
    import torch

    from handprop.trainer.datasets import read_features
    from handprop.trainer.trained import load_trained

    out = Path(output)
    if not out.parent.is_dir():  # before any work, not after it
        raise ConfigError(f"output: folder {out.parent} does not exist")
    model = load_trained(ckpt_path)
    features = list(model.columns["features"])
    if model.task.name == "generation":
        return _samples(model, features, input, n_samples, seed, out)
    if n_samples is not None:
        raise ConfigError("n_samples is for a GAN's checkpoint; this model predicts input=FILE")
    if input is None:
        raise ConfigError("input is required: add input=... to the command line")
    X, header, body = read_features(input, features)
    x = torch.as_tensor(X, dtype=torch.float32)
    yhat = model.predict_raw(x)  # under no_grad
    if model.task.name == "reconstruction":
        with torch.no_grad():
            code = model.net.encode(model.task.scale_inputs(x))
        extra = [
            *(f"code_{i + 1}" for i in range(code.shape[1])),
            *(f"reconstructed_{f}" for f in features),
        ]
        cols = [[f"{v:.6g}" for v in row] for row in torch.cat([code, yhat], 1).tolist()]
    elif model.task.name == "regression":
        extra = [f"predicted_{model.columns['target']}"]
        cols = [[f"{v:.6g}"] for v in yhat.squeeze(-1).tolist()]
    else:
        classes = list(model.columns["classes"])
        probs = torch.cat([1 - yhat, yhat], dim=-1) if model.task.name == "binary" else yhat
        extra = ["predicted_class", *(f"prob_{c}" for c in classes)]
        cols = [[classes[int(torch.argmax(p))], *(f"{v:.6g}" for v in p.tolist())] for p in probs]
    _write(out, [*header, *extra], [[*row, *c] for row, c in zip(body, cols, strict=True)])
    print(f"{len(body)} predictions written to {out}")
    return out


def _samples(
    model, features: list[str], input: str | None, n: int | None, seed: int, out: Path
) -> Path:  # noqa: ANN001
    """A GAN's ``n`` samples in the data's units, one column per feature."""
    if input is not None:
        raise ConfigError("input: a GAN reads no rows; drop input= and give n_samples=N")
    if n is None or isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n_samples={n} is invalid: a GAN needs a positive integer, e.g. 1000")
    rows = model.sample_raw(n, seed).tolist()
    _write(out, features, [[f"{v:.6g}" for v in row] for row in rows])
    print(f"{n} samples written to {out}")
    return out


def _write(out: Path, header: list[str], rows: list[list[str]]) -> None:
    """``header`` and ``rows`` to ``out``, through a temporary file renamed over it."""
    tmp = out.with_name(out.name + ".tmp")
    with writing(out, tmp):  # a failed write: no .tmp left, one line naming the output
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(rows)
        os.replace(tmp, out)


def main() -> None:
    """Console entry point: ``handprop-predict ckpt_path=PATH input=FILE output=FILE``."""
    run_command(
        "handprop-predict",
        HELP,
        SETTINGS,
        lambda s: predict(
            str(required(s, "ckpt_path")),
            s["input"],
            str(required(s, "output")),
            s["n_samples"],
            s["seed"],
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
