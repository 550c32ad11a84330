"""The catalogue of bad inputs: each gives one clear line, a non-zero exit, no traceback, and
leaves no file that looks like a finished run.

Every case runs the real console entry point (``handprop.trainer.train.main`` and friends) in-process
with its command line, so what is checked is exactly what a user sees on stderr.
"""

from __future__ import annotations

import csv
import os
import pickle
import sys
from pathlib import Path

import pytest

from handprop.trainer import evaluate, predict, train
from handprop.trainer.cli import CONF_DIR, GROUPS, options
from handprop.trainer.config import check

# --------------------------------------------------------------------------------------------
# CSV fixtures, by name: rows of cells (the first row is the header); None = special content
# --------------------------------------------------------------------------------------------
GOOD_ROWS = [["a", "b", "y"]] + [[str(i), str(i % 7), str(i % 2)] for i in range(40)]


def _rows(name: str) -> list[list[str]] | str:
    h = ["a", "b", "y"]
    body = [r[:] for r in GOOD_ROWS[1:]]
    if name == "good":
        return [h, *body]
    if name == "empty":
        return ""
    if name == "header_only":
        return [h]
    if name == "duplicate_columns":
        return [["a", "a", "y"], *body]
    if name == "non_numeric":
        body[4][1] = "seven"
        return [h, *body]
    if name == "nan_cell":
        body[9][0] = "nan"
        return [h, *body]
    if name == "inf_cell":
        body[2][1] = "inf"
        return [h, *body]
    if name == "empty_cell":
        body[3][0] = ""
        return [h, *body]
    if name == "ragged":
        body[5] = body[5][:2]
        return [h, *body]
    if name == "single_class":
        return [h, *[[r[0], r[1], "1"] for r in body]]
    if name == "float_labels":
        return [h, *[[r[0], r[1], "0.5" if i % 3 else "1"] for i, r in enumerate(body)]]
    if name == "three_classes":
        return [h, *[[r[0], r[1], str(i % 3)] for i, r in enumerate(body)]]
    if name == "too_few_rows":
        return [h, *body[:3]]
    if name == "other_columns":
        return [["x1", "x2"], ["1", "2"]]
    raise KeyError(name)


def _write_csv(path: Path, name: str) -> Path:
    rows = _rows(name)
    if isinstance(rows, str):
        path.write_text(rows)
    else:
        with path.open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)
    return path


TRAIN = train.main
CSV = ["data=csv", "task=binary", "data.target=y"]

# (id, entry point, arguments — {tmp} and {csv:NAME} are filled in — expected words in the
#  message). Thirty-odd cases: command line, then data, then checkpoints.
CATALOGUE = [
    # unknown group options
    ("unknown-optimizer", TRAIN, ["optimizer=foo"], ["optimizer=foo", "adam", "sgd"]),
    ("unknown-data", TRAIN, ["data=mnist"], ["data=mnist", "digits", "csv"]),
    ("unknown-gd", TRAIN, ["gd=huge"], ["gd=huge", "minibatch", "stochastic"]),
    ("unknown-task", TRAIN, ["task=clustering"], ["task=clustering", "regression"]),
    ("unknown-scheduler", TRAIN, ["scheduler=linear"], ["scheduler=linear", "cosine"]),
    ("unknown-sweep-value", TRAIN, ["-m", "optimizer=sgd,foo"], ["optimizer=foo"]),
    # several problems at once: every one named in the one line
    (
        "csv-neither-task-nor-path",
        TRAIN,
        ["data=csv"],
        ["task=auto needs a known data set", "data=csv needs data.path and data.target"],
    ),
    (
        "csv-wrong-path-and-no-target",
        TRAIN,
        ["data=csv", "task=regression", "data.path={tmp}/nope.csv"],
        ["data=csv needs data.target", "file not found", "nope.csv"],
    ),
    (
        "csv-wrong-target-and-feature",
        TRAIN,
        [*CSV[:2], "data.target=price", "data.features=[a,zz]", "data.path={csv:good}"],
        ["data.target: column 'price'", "data.features: columns ['zz']"],
    ),
    ("two-bad-values", TRAIN, ["optimizer.lr=-1", "gd.batch_size=0"], ["lr=-1", "batch_size=0"]),
    (
        "bad-value-and-wrong-path",
        TRAIN,
        ["optimizer.lr=-1", *CSV, "data.path={tmp}/nope.csv"],
        ["optimizer.lr=-1 is invalid", "file not found"],
    ),
    (
        "two-misspelt-keys",
        TRAIN,
        ["trainer.max_epoch=3", "optimizer.lrr=0.1"],
        ["did you mean trainer.max_epochs?", "did you mean optimizer.lr?"],
    ),
    (
        "misspelt-key-and-bad-value",
        TRAIN,
        ["trainer.max_epoch=3", "optimizer.lr=-1"],
        ["did you mean trainer.max_epochs?", "optimizer.lr=-1 is invalid"],
    ),
    (
        "unknown-option-and-bad-value",
        TRAIN,
        ["optimizer=foo", "optimizer.momentum=0.5", "gd=huge", "trainer.max_epochs=0"],
        ["optimizer=foo is not an option", "gd=huge is not an option", "max_epochs=0"],
    ),
    # wrong types and out-of-range numbers
    ("lr-negative", TRAIN, ["optimizer.lr=-1"], ["optimizer.lr", "> 0"]),
    ("lr-zero", TRAIN, ["optimizer.lr=0"], ["optimizer.lr", "> 0"]),
    ("lr-not-a-number", TRAIN, ["optimizer.lr=fast"], ["optimizer.lr", "number"]),
    (
        "momentum-too-big",
        TRAIN,
        ["optimizer=momentum", "optimizer.momentum=1.5"],
        ["optimizer.momentum", "[0, 1)"],
    ),
    (
        "weight-decay-negative",
        TRAIN,
        ["optimizer.weight_decay=-0.1"],
        ["optimizer.weight_decay", ">= 0"],
    ),
    ("batch-size-zero", TRAIN, ["gd.batch_size=0"], ["gd.batch_size", "positive integer"]),
    ("batch-size-negative", TRAIN, ["gd.batch_size=-5"], ["gd.batch_size", "positive integer"]),
    ("batch-size-float", TRAIN, ["gd.batch_size=2.5"], ["gd.batch_size", "positive integer"]),
    ("hidden-zero", TRAIN, ["model.hidden=[0]"], ["model.hidden", "positive integers"]),
    ("hidden-negative", TRAIN, ["model.hidden=[5,-1]"], ["model.hidden", "positive integers"]),
    ("hidden-not-a-list", TRAIN, ["model.hidden=5"], ["model.hidden", "list"]),
    ("activation-unknown", TRAIN, ["model.activation=swish"], ["model.activation", "relu"]),
    ("init-unknown", TRAIN, ["model.init=uniformish"], ["model.init", "xavier"]),
    ("val-fraction-above-1", TRAIN, ["data.val_fraction=1.5"], ["data.val_fraction", "[0, 1)"]),
    (
        "test-fraction-negative",
        TRAIN,
        ["data.test_fraction=-0.1"],
        ["data.test_fraction", "[0, 1)"],
    ),
    (
        "fractions-sum-above-1",
        TRAIN,
        ["data.val_fraction=0.6", "data.test_fraction=0.5"],
        ["test_fraction", "below 1"],
    ),
    ("epochs-zero", TRAIN, ["trainer.max_epochs=0"], ["trainer.max_epochs", "positive integer"]),
    (
        "preprocessing-unknown",
        TRAIN,
        ["data.preprocessing=whiten"],
        ["data.preprocessing", "standardize"],
    ),
    ("n-samples-zero", TRAIN, ["data.n_samples=0"], ["data.n_samples", "positive integer"]),
    ("seed-negative", TRAIN, ["seed=-1"], ["seed", "non-negative"]),
    ("threads-zero", TRAIN, ["num_threads=0"], ["num_threads"]),
    ("steps-per-call-zero", TRAIN, ["steps_per_call=0"], ["steps_per_call"]),
    ("clip-negative", TRAIN, ["trainer.gradient_clip_val=-1"], ["trainer.gradient_clip_val"]),
    (
        "optimized-metric-unknown",
        TRAIN,
        ["optimized_metric=val/speed"],
        ["optimized_metric", "val/loss"],
    ),
    (
        "task-does-not-fit-data",
        TRAIN,
        ["data=digits", "task=regression"],
        ["task=regression", "multiclass"],
    ),
    (
        "binary-on-multiclass-data",
        TRAIN,
        ["data=iris", "task=binary"],
        ["task=binary", "multiclass"],
    ),
    # the autoencoder and the GAN
    (
        "code-size-zero",
        TRAIN,
        ["model=autoencoder", "model.code_size=0"],
        ["model.code_size=0", "positive integer"],
    ),
    (
        "noise-size-zero",
        TRAIN,
        ["model=gan", "model.noise_size=0"],
        ["model.noise_size=0", "positive integer"],
    ),
    (
        "d-steps-zero",
        TRAIN,
        ["model=gan", "model.d_steps=0"],
        ["model.d_steps=0", "positive integer"],
    ),
    ("ema-one", TRAIN, ["model=gan", "model.ema=1"], ["model.ema=1", "[0, 1)"]),
    (
        "gan-output-unknown",
        TRAIN,
        ["model=gan", "model.output=softmax"],
        ["model.output", "sigmoid"],
    ),
    (
        "gan-with-regression",
        TRAIN,
        ["model=gan", "task=regression"],
        ["task=regression", "model=gan", "task=generation"],
    ),
    (
        "autoencoder-with-multiclass",
        TRAIN,
        ["model=autoencoder", "data=digits", "task=multiclass"],
        ["task=multiclass", "model=autoencoder", "task=reconstruction"],
    ),
    (
        "reconstruction-without-autoencoder",
        TRAIN,
        ["task=reconstruction"],
        ["task=reconstruction", "model=autoencoder"],
    ),
    ("gan-with-mse", TRAIN, ["model=gan", "task.cost=mse"], ["task.cost=mse", "bce"]),
    (
        "gan-without-validation",
        TRAIN,
        ["model=gan", "data=ring", "data.val_fraction=0"],
        ["data.val_fraction=0", "model=gan", "validation"],
    ),
    ("ring-noise-negative", TRAIN, ["data=ring", "data.noise=-1"], ["data.noise", ">= 0"]),
    (
        "gan-under-ddp",
        TRAIN,
        ["model=gan", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
        ["model=gan", "one process"],
    ),
    ("gan-with-monitors", TRAIN, ["model=gan", "monitors=on"], ["monitors=on", "model=gan"]),
    # the convolutional and the recurrent network
    (
        "cnn-on-separate-features",
        TRAIN,
        ["model=cnn", "data=property_prices"],
        ["model=cnn", "images", "data=property_prices", "use model=mlp"],
    ),
    (
        "rnn-on-separate-features",
        TRAIN,
        ["model=rnn", "data=iris"],
        ["model=rnn", "sequences", "data=iris", "use model=mlp"],
    ),
    (
        "cnn-channels-empty",
        TRAIN,
        ["model=cnn", "data=digits", "model.channels=[]"],
        ["model.channels", "positive integers"],
    ),
    (
        "cnn-kernel-sizes-one-short",
        TRAIN,
        ["model=cnn", "data=digits", "model.channels=[8,16]", "model.kernel_sizes=[3]"],
        ["model.kernel_sizes", "one per entry", "model.channels"],
    ),
    ("cnn-pool-unknown", TRAIN, ["model=cnn", "model.pool=min"], ["model.pool", "max", "avg"]),
    (
        "cnn-pooled-to-nothing",
        TRAIN,
        ["model=cnn", "data=digits", "model.channels=[4,4,4,4]", "model.pool=max"],
        ["model.pool", "8×8", "nothing"],
    ),
    ("cnn-dropout-one", TRAIN, ["model=cnn", "model.dropout=1"], ["model.dropout", "[0, 1)"]),
    ("rnn-cell-unknown", TRAIN, ["model=rnn", "model.cell=gru"], ["model.cell", "rnn", "lstm"]),
    (
        "rnn-hidden-size-zero",
        TRAIN,
        ["model=rnn", "model.hidden_size=0"],
        ["model.hidden_size", "positive integer"],
    ),
    (
        "rnn-nonlinearity-unknown",
        TRAIN,
        ["model=rnn", "model.nonlinearity=sigmoid"],
        ["model.nonlinearity", "tanh", "relu"],
    ),
    (
        "cnn-by-recursion",
        TRAIN,
        ["model=cnn", "data=digits", "backprop=recursion"],
        ["backprop=recursion", "model=cnn", "model=mlp", "backprop=auto"],
    ),
    ("sine-window-zero", TRAIN, ["data=sine", "data.window=0"], ["data.window", "positive"]),
    (
        "csv-window-does-not-divide",
        TRAIN,
        ["data=csv", "task=binary", "data.target=y", "data.path={csv:good}", "data.window=3"],
        ["data.window=3", "2 feature columns"],
    ),
    # the user's CSV
    ("csv-no-path", TRAIN, ["data=csv", "task=regression", "data.target=y"], ["data.path"]),
    (
        "csv-task-auto",
        TRAIN,
        ["data=csv", "data.path={csv:good}", "data.target=y"],
        ["task=auto", "data=csv"],
    ),
    ("csv-missing-file", TRAIN, [*CSV, "data.path={tmp}/nope.csv"], ["file not found", "nope.csv"]),
    ("csv-is-a-folder", TRAIN, [*CSV, "data.path={tmp}"], ["is not a file"]),
    ("csv-empty", TRAIN, [*CSV, "data.path={csv:empty}"], ["empty"]),
    ("csv-header-only", TRAIN, [*CSV, "data.path={csv:header_only}"], ["no data rows"]),
    (
        "csv-missing-target",
        TRAIN,
        ["data=csv", "task=binary", "data.target=price", "data.path={csv:good}"],
        ["data.target", "'price'", "columns are"],
    ),
    (
        "csv-missing-feature",
        TRAIN,
        [*CSV, "data.path={csv:good}", "data.features=[a,zz]"],
        ["data.features", "zz"],
    ),
    (
        "csv-target-as-feature",
        TRAIN,
        [*CSV, "data.path={csv:good}", "data.features=[a,y]"],
        ["data.features", "target"],
    ),
    (
        "csv-duplicate-columns",
        TRAIN,
        [*CSV, "data.path={csv:duplicate_columns}"],
        ["duplicate column", "'a'"],
    ),
    (
        "csv-non-numeric",
        TRAIN,
        [*CSV, "data.path={csv:non_numeric}"],
        ["line 6 (data row 5)", "'b'", "'seven'", "not a number"],
    ),
    ("csv-nan", TRAIN, [*CSV, "data.path={csv:nan_cell}"], ["line 11 (data row 10)", "'a'", "NaN"]),
    (
        "csv-inf",
        TRAIN,
        [*CSV, "data.path={csv:inf_cell}"],
        ["line 4 (data row 3)", "'b'", "finite"],
    ),
    (
        "csv-empty-cell",
        TRAIN,
        [*CSV, "data.path={csv:empty_cell}"],
        ["line 5 (data row 4)", "'a'", "not a number"],
    ),
    ("csv-ragged-row", TRAIN, [*CSV, "data.path={csv:ragged}"], ["line 7 (data row 6)", "cells"]),
    ("csv-single-class", TRAIN, [*CSV, "data.path={csv:single_class}"], ["single class", "'y'"]),
    (
        "csv-float-labels",
        TRAIN,
        ["data=csv", "task=multiclass", "data.target=y", "data.path={csv:float_labels}"],
        ["integer class labels", "line 3 (data row 2)"],
    ),
    (
        "csv-three-classes-binary",
        TRAIN,
        [*CSV, "data.path={csv:three_classes}"],
        ["exactly two classes", "multiclass"],
    ),
    ("csv-too-few-rows", TRAIN, [*CSV, "data.path={csv:too_few_rows}"], ["too few rows", "(3)"]),
    (
        "reconstruction-of-text",
        TRAIN,
        ["model=autoencoder", "data=csv", "data.path={csv:non_numeric}"],
        ["'seven' is not a number", "task=reconstruction", "data.features"],
    ),
    # checkpoints
    ("resume-missing-checkpoint", TRAIN, ["ckpt_path={tmp}/gone.ckpt"], ["ckpt_path", "gone.ckpt"]),
    (
        "eval-missing-checkpoint",
        evaluate.main,
        ["ckpt_path={tmp}/gone.ckpt"],
        ["ckpt_path", "no checkpoint file"],
    ),
    ("eval-not-a-checkpoint", evaluate.main, ["ckpt_path={csv:good}"], ["not a checkpoint"]),
    (
        "eval-foreign-checkpoint",
        evaluate.main,
        ["ckpt_path={foreign}"],
        ["not a handprop checkpoint"],
    ),
    (
        "predict-missing-columns",
        predict.main,
        ["ckpt_path={ckpt}", "input={csv:other_columns}", "output={tmp}/out.csv"],
        ["lacks the columns", "area_sqft"],
    ),
    (
        "predict-missing-input",
        predict.main,
        ["ckpt_path={ckpt}", "input={tmp}/none.csv", "output={tmp}/out.csv"],
        ["input", "file not found"],
    ),
    (
        "predict-other-width",
        predict.main,
        ["ckpt_path={ckpt}", "input={csv:good}", "output={tmp}/out.csv"],
        ["lacks the columns", "bedrooms"],
    ),
    (
        "predict-output-folder-missing",
        predict.main,
        ["ckpt_path={ckpt}", "input={prices_csv}", "output={tmp}/no/dir/out.csv"],
        ["output", "does not exist"],
    ),
    (
        "predict-unsafe-checkpoint",
        predict.main,
        ["ckpt_path={evil}", "input={prices_csv}", "output={tmp}/out.csv"],
        ["refused without running it"],
    ),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real (tiny) training run's checkpoint, a CSV of its features, and two bad files."""
    import torch

    root = tmp_path_factory.mktemp("trained")
    run = root / "run"
    _run(
        TRAIN, ["trainer.max_epochs=1", "data.n_samples=200", "logger=none", f"hydra.run.dir={run}"]
    )
    ckpt = run / "checkpoints" / "best.ckpt"
    assert ckpt.is_file()
    from handprop.trainer.datasets import property_prices

    t = property_prices(10, seed=1)
    prices = root / "prices.csv"
    with prices.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(t.feature_names)
        w.writerows(t.X.tolist())
    foreign = root / "foreign.ckpt"
    torch.save({"state_dict": {}, "something": 1}, foreign)
    evil = root / "evil.ckpt"
    evil.write_bytes(pickle.dumps(_Evil(root / "PWNED")))
    return {"ckpt": ckpt, "prices_csv": prices, "foreign": foreign, "evil": evil, "root": root}


class _Evil:
    """A pickle that would create a file if it were ever unpickled with code allowed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch {self.marker}",))


def _run(entry, args: list[str]) -> int:  # noqa: ANN001
    old = sys.argv
    sys.argv = ["handprop", *args]
    try:
        entry()
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        sys.argv = old
    return 0


def _fill(arg: str, tmp: Path, files: dict[str, Path]) -> str:
    while "{csv:" in arg:
        start = arg.index("{csv:")
        end = arg.index("}", start)
        name = arg[start + 5 : end]
        path = _write_csv(tmp / f"{name}.csv", name)
        arg = arg[:start] + str(path) + arg[end + 1 :]
    for key, value in files.items():
        arg = arg.replace("{" + key + "}", str(value))
    return arg.replace("{tmp}", str(tmp))


def test_every_shipped_option_composes_and_passes_the_checks() -> None:
    """A config file that ships broken (a typo in a key, a value the checks refuse, a group
    the README names but conf/ lacks) fails here, not on a user's first run."""
    from hydra import compose, initialize_config_module

    assert {p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name != "hydra"} <= set(GROUPS)
    # hparams_search holds a sweeper's settings, composed by a sweep (tests/test_scale.py);
    # experiments set other groups themselves, so each is composed on its own.
    plain = {g: options(g) for g in GROUPS if g not in ("hparams_search", "experiment")}
    runs = [
        [f"{g}={opts[i % len(opts)]}" for g, opts in plain.items()]  # every option at least once
        for i in range(max(map(len, plain.values())))
    ] + [[f"experiment={e}"] for e in options("experiment")]
    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        for overrides in runs:
            check(compose("train", overrides=overrides))


@pytest.mark.parametrize(
    ("entry", "args", "words"), [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE]
)
def test_bad_input_gives_one_clear_line(
    entry,
    args: list[str],
    words: list[str],
    tmp_path: Path,
    trained: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # noqa: ANN001
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    files = {k: v for k, v in trained.items() if k != "root"}
    run_dir = tmp_path / "run"
    argv = [_fill(a, tmp_path, files) for a in args]
    if entry is TRAIN:
        argv.append(f"hydra.run.dir={run_dir}")
        argv.append(f"hydra.sweep.dir={tmp_path / 'sweep'}")
    capsys.readouterr()
    code = _run(entry, argv)
    err = capsys.readouterr().err
    assert code != 0, f"exit status 0 for {argv}"
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) >= 1, err
    assert len(set(lines)) == 1, f"more than one distinct error line: {lines}"
    message = lines[0]
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    # Nothing half-written: no metrics.json anywhere under this case's directories.
    assert not list(tmp_path.rglob("metrics.json"))
    assert not (trained["root"] / "PWNED").exists()  # the planted pickle never ran


@pytest.mark.skipif(
    __import__("torch").cuda.is_available(), reason="the machine has a GPU: trainer=gpu is valid"
)
def test_gpu_trainer_without_a_gpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    code = _run(TRAIN, ["trainer=gpu", f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "error: trainer.accelerator=gpu needs a CUDA GPU" in err and "trainer=cpu" in err


def test_full_traceback_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    code = _run(TRAIN, ["optimizer.lr=-1", f"hydra.run.dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" in err and "error: optimizer.lr" in err


def test_constant_column_under_normalize_is_finite(tmp_path: Path) -> None:
    """Min-max normalisation of a constant column must not divide by zero."""
    rows = [["a", "const", "y"]] + [[str(i), "3", str(2.0 * i + 1)] for i in range(60)]
    path = tmp_path / "const.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    run = tmp_path / "run"
    code = _run(
        TRAIN,
        [
            "data=csv",
            f"data.path={path}",
            "data.target=y",
            "task=regression",
            "data.preprocessing=normalize",
            "trainer.max_epochs=3",
            "logger=none",
            f"hydra.run.dir={run}",
        ],
    )
    assert code == 0
    import json

    m = json.loads((run / "metrics.json").read_text())
    assert all(v == v and abs(v) != float("inf") for k, v in m.items() if "/" in k)
