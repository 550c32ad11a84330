"""What a new user meets first: the errors for a mistyped setting, each command's ``--help``,
the predict input format as the README states it, eval's default output, and the README's
set-up and links."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from handprop.trainer import evaluate, predict, train
from handprop.trainer.cli import GROUPS, closest_key, options

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


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


def _error_line(entry, args: list[str], capsys: pytest.CaptureFixture[str]) -> str:  # noqa: ANN001
    capsys.readouterr()
    code = _run(entry, args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


# --------------------------------------------------------------------------------------------
# Errors that say how to fix them
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["epochs=10"], ["epochs is not a setting", "did you mean trainer.max_epochs?"]),
        (["trainer.max_epoch=3"], ["did you mean trainer.max_epochs?"]),
        (["lr=0.1"], ["did you mean optimizer.lr?"]),
        (["model.hiden=[4]"], ["did you mean model.hidden?"]),
        (["data.path=houses.csv"], ["data.path is a setting of data=csv", "add data=csv"]),
        (
            ["optimizer=sgd", "optimizer.nesterov=true"],
            ["optimizer.nesterov", "optimizer=momentum", "not of optimizer=sgd"],
        ),
        (["scheduler.gamma=0.5"], ["scheduler.fn.gamma", "scheduler=step"]),
        (
            ["model.hidden=[16,", "16]"],
            ["split the value at a space", "model.hidden=[16,16]", "'model.hidden=[16, 16]'"],
        ),
        (["hparams_search=grid"], ["hparams_search=grid is not an option", "optuna"]),
    ],
    ids=["epochs", "typo", "lr", "hidden", "csv-key", "nesterov", "nested", "space", "search"],
)
def test_mistyped_setting_names_the_fix(
    args: list[str], words: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = _error_line(train.main, [*args, f"hydra.run.dir={tmp_path}"], capsys)
    for w in words:
        assert w in line, f"{w!r} not in {line!r}"
    assert not list(tmp_path.iterdir()), "nothing may run before the error"


def test_mistyped_key_of_eval_and_predict(capsys: pytest.CaptureFixture[str]) -> None:
    line = _error_line(evaluate.main, ["ckpt_path=x.ckpt", "splt=val"], capsys)
    assert "splt is not a setting of handprop-eval; did you mean split?" in line
    line = _error_line(predict.main, ["ckpt_path=x", "inputs=a.csv", "output=b.csv"], capsys)
    assert "did you mean input?" in line and "handprop-predict --help" in line


def test_closest_key_prefers_the_same_name_then_the_nearest_spelling() -> None:
    keys = ["trainer.max_epochs", "optimizer.lr", "scheduler.fn.lr", "gd.batch_size", "seed"]
    assert closest_key("lr", keys) == "optimizer.lr"
    assert closest_key("scheduler.lr", keys) == "scheduler.fn.lr"  # its own group first
    assert closest_key("epochs", keys) == "trainer.max_epochs"
    assert closest_key("batchsize", keys) == "gd.batch_size"
    assert closest_key("colour", keys) is None


# --------------------------------------------------------------------------------------------
# --help of eval and predict: their own keys
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("entry", "keys"),
    [(evaluate.main, ["ckpt_path", "split", "output"]), (predict.main, ["ckpt_path", "input"])],
    ids=["eval", "predict"],
)
def test_help_lists_the_commands_own_keys(
    entry, keys: list[str], capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: ANN001
    assert _run(entry, ["--help"]) == 0
    out = capsys.readouterr().out
    for k in keys:
        assert f"  {k}=" in out, f"{k} not described in --help"
    assert "Configuration groups" not in out and "optimizer:" not in out, out


# --------------------------------------------------------------------------------------------
# The predict input format, as the README states it
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    args = ["trainer.max_epochs=1", "data.n_samples=200", "logger=none", f"hydra.run.dir={run}"]
    assert _run(train.main, args) == 0
    return run / "checkpoints" / "best.ckpt"


def _write(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def _read(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def test_predict_reads_features_by_name_and_copies_other_columns(
    checkpoint: Path, tmp_path: Path
) -> None:
    from handprop.trainer.datasets import property_prices

    t = property_prices(6, seed=3)
    names = t.feature_names
    rows = t.X.tolist()
    plain = _write(tmp_path / "plain.csv", names, rows)
    # Reversed feature order, an id and a note in between, and the target itself.
    header = ["id", names[3], "note", *reversed(names[:3]), t.target_name]
    mixed_rows = [
        [f"h{i}", r[3], "a, b" if i % 2 else "", r[2], r[1], r[0], "123"]
        for i, r in enumerate(rows)
    ]
    mixed = _write(tmp_path / "mixed.csv", header, mixed_rows)
    for inp in (plain, mixed):
        code = _run(predict.main, [f"ckpt_path={checkpoint}", f"input={inp}", f"output={inp}.out"])
        assert code == 0
    a, b = _read(Path(f"{plain}.out")), _read(Path(f"{mixed}.out"))
    target = t.target_name
    assert a[0] == [*names, f"predicted_{target}"]
    assert b[0] == [*header, f"predicted_{target}"]  # every input column, in its order
    assert [r[:-1] for r in b[1:]] == [[str(c) for c in r] for r in mixed_rows]  # unchanged
    assert [r[-1] for r in a[1:]] == [r[-1] for r in b[1:]]  # same predictions


def test_predict_needs_every_feature_column_and_says_which(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from handprop.trainer.datasets import property_prices

    names = property_prices(2, seed=0).feature_names
    inp = _write(tmp_path / "in.csv", names[1:], [[1, 2, 3]])
    line = _error_line(
        predict.main,
        [f"ckpt_path={checkpoint}", f"input={inp}", f"output={tmp_path}/o.csv"],
        capsys,
    )
    assert names[0] in line and "lacks the columns" in line


def test_readme_states_the_predict_format() -> None:
    section = README.split("### Predict: the input file", 1)[1].split("\n#", 1)[0]
    for fact in ("header row", "by name", "any order", "copied", "predicted_", "prob_"):
        assert fact in section, fact


# --------------------------------------------------------------------------------------------
# handprop-eval's default output: the run directory, wherever the checkpoint sits
# --------------------------------------------------------------------------------------------
def test_eval_default_output(checkpoint: Path, tmp_path: Path) -> None:
    assert evaluate.default_output(str(checkpoint)) == checkpoint.parent.parent / (
        "eval_metrics.json"
    )
    loose = tmp_path / "models" / "mine.ckpt"
    loose.parent.mkdir()
    shutil.copy(checkpoint, loose)
    assert _run(evaluate.main, [f"ckpt_path={loose}"]) == 0
    written = json.loads((loose.parent / "eval_metrics.json").read_text())
    assert "test/loss" in written
    assert not (tmp_path / "eval_metrics.json").exists()


# --------------------------------------------------------------------------------------------
# The README: set-up, links, the group table
# --------------------------------------------------------------------------------------------
def test_readme_says_how_to_reach_the_commands() -> None:
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    assert "source .venv/bin/activate" in setup and ".venv/bin/handprop-train" in setup
    assert "TORCH=" in setup and "CUDA" in setup
    make = (ROOT / "Makefile").read_text()
    for target in re.findall(r"make (\w[\w-]*)", setup):
        assert re.search(rf"^{target}:", make, re.M), f"make {target}: no such target"


def test_readme_links_resolve_inside_the_repository() -> None:
    assert "shared/" not in README and "ann-notes" not in README
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        if not link.startswith("http"):
            assert (ROOT / link).exists(), f"README links to {link}, which a clone lacks"


def test_readme_group_table_lists_every_group() -> None:
    table = README.split("| group | options |", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", table, re.M))
    assert set(rows) == set(GROUPS)
    for group, text in rows.items():
        for option in options(group):
            assert f"`{option}`" in text, f"README's {group} row lacks {option}"
