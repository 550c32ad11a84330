"""Vectorised sweeps (``hydra/launcher=vectorized``): the jobs that can share one network train
as one stacked network, and each job's results are those of the same job run alone by the
default launcher (losses within 0.5 %, accuracy within one test row, the same epochs, early
stopping and divergence per job); its files are an ordinary run's."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from runs import cfg_of
from runs import sweep as run_sweep

from handprop.trainer.stacked import loops_state, stacked_metrics
from handprop.trainer.task import Task
from handprop.trainer.vectorized import alone_reason, group_key

VECTORIZED = "hydra/launcher=vectorized"


def sweep(sweep_dir: Path, *overrides: str) -> list[dict]:
    """The jobs of ``handprop-train -m OVERRIDES``' summary.json, failed jobs or not."""
    try:
        return run_sweep(sweep_dir, *overrides)
    except SystemExit as e:  # a job failed: the sweep ran to its end all the same
        assert e.code == 1
        return json.loads((sweep_dir / "summary.json").read_text())["jobs"]


def _by_dir(jobs: list[dict]) -> dict[str, dict]:
    return {j["dir"]: j for j in jobs}


def _metrics(sweep_dir: Path, job: dict) -> dict[str, float]:
    return json.loads((sweep_dir / job["dir"] / "metrics.json").read_text())


def assert_same_results(a_dir: Path, a_jobs: list[dict], b_dir: Path, b_jobs: list[dict]) -> None:
    """Every job of sweep ``a`` has the results of the same job of sweep ``b``."""
    a, b = _by_dir(a_jobs), _by_dir(b_jobs)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name]["status"] == b[name]["status"], name
        if a[name]["status"] != "ok":
            # the same step, rate and checkpoint (the last finite loss, ~1e20 by then, is chaos)
            same = r"diverged at step \d+|lr=[\d.e+-]+|last good checkpoint|No checkpoint"
            assert re.findall(same, a[name]["error"]) == re.findall(same, b[name]["error"]), name
            assert (a_dir / name / "error.json").is_file()
            continue
        ma, mb = _metrics(a_dir, a[name]), _metrics(b_dir, b[name])
        assert ma.keys() == mb.keys(), name
        assert ma["epochs"] == mb["epochs"] and ma["global_step"] == mb["global_step"], name
        for k, v in mb.items():
            if k.endswith("/loss"):
                assert ma[k] == pytest.approx(v, rel=5e-3), (name, k)
            elif k.endswith("accuracy"):
                rows = 1 / 0.15 / 100  # generous bound on one row of the smallest split used
                assert abs(ma[k] - v) <= max(rows, 1e-6), (name, k)


def test_a_sweep_with_early_stopping_and_a_divergence_matches_the_default_launcher(tmp_path):
    # lr × seed × a per-job schedule: the rate grows by 1.6 an epoch in half of the jobs, so
    # that some of them stop early and one diverges after its first checkpoint.
    overrides = (
        "optimizer=sgd",
        "optimizer.lr=0.1,0.3",
        "seed=1,2",
        "scheduler=exponential",
        "scheduler.fn.gamma=1.0,1.6",
        "trainer.max_epochs=12",
        "callbacks.early_stopping.patience=2",
        "callbacks.checkpoint.every_seconds=0",  # a checkpoint each epoch: none lost to timing
    )
    stacked = sweep(tmp_path / "v", VECTORIZED, *overrides)
    alone = sweep(tmp_path / "t", *overrides)
    assert_same_results(tmp_path / "v", stacked, tmp_path / "t", alone)
    # the sweep covers what it claims: a job that stops early, one that diverges
    epochs = [_metrics(tmp_path / "t", j)["epochs"] for j in alone if j["status"] == "ok"]
    assert min(epochs) < 12 and max(epochs) == 12
    failed = [j for j in alone if j["status"] == "failed"]
    assert failed and all("diverged" in j["error"] for j in failed)
    assert any("The last good checkpoint" in j["error"] for j in failed)
    assert len(failed) < len(alone)


@pytest.mark.parametrize(
    "experiment",
    [
        ("experiment=digits", "trainer.max_epochs=3", "optimizer.lr=0.001,0.003", "seed=1,2"),
        ("experiment=cancer", "trainer.max_epochs=25", "optimizer.lr=0.003,0.03", "seed=1,2"),
    ],
    ids=["digits", "cancer"],
)
def test_the_experiments_match_the_default_launcher(tmp_path, experiment):
    stacked = sweep(tmp_path / "v", VECTORIZED, *experiment)
    alone = sweep(tmp_path / "t", *experiment)
    assert all(j["status"] == "ok" for j in alone)
    assert_same_results(tmp_path / "v", stacked, tmp_path / "t", alone)


# --------------------------------------------------------------------------------------------
# Grouping
# --------------------------------------------------------------------------------------------
def test_jobs_group_on_everything_but_the_per_job_settings():
    base = group_key(cfg_of())
    for same in ("seed=3", "optimizer.lr=0.1", "model.init=xavier", "optimizer.betas=[0.8,0.9]"):
        assert group_key(cfg_of(same)) == base, same
    assert group_key(cfg_of("scheduler=step", "scheduler.fn.gamma=0.1")) == group_key(
        cfg_of("scheduler=step")
    )
    for other in ("model.hidden=[6]", "gd.batch_size=16", "optimizer=sgd", "trainer.max_epochs=3"):
        assert group_key(cfg_of(other)) != base, other
    assert alone_reason(cfg_of()) is None
    assert "GAN" in alone_reason(cfg_of("model=gan"))
    assert "lr_find" in alone_reason(cfg_of("lr_find=true"))
    assert "CNN" in alone_reason(cfg_of("model=cnn", "data=digits"))


# --------------------------------------------------------------------------------------------
# Metrics of every job at once
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_stacked_metrics_are_task_metrics(task):
    torch.manual_seed(0)
    J, N, K = 4, 37, 5
    out = K if task == "multiclass" else 1
    z = torch.randn(J, N, out)
    if task == "regression":
        y = torch.randn(J, N, 1)
    elif task == "binary":
        y = (torch.rand(J, N, 1) > 0.5).float()
        z[1] = z[1].round()  # ties between scores
    else:
        y = torch.randint(0, K - 1, (J, N))  # one class never a target
    scales, shifts = torch.rand(J) + 0.5, torch.randn(J)
    tasks = [
        Task(
            task,
            num_classes=K if task == "multiclass" else 2,
            y_shift=float(shifts[j]),
            y_scale=float(scales[j]),
        )
        for j in range(J)
    ]
    got = stacked_metrics(task, tasks[0].cost, z, y, scales, shifts, K)
    for j in range(J):
        want = tasks[j].metrics(z[j], y[j])
        assert set(want) == set(got)
        for k, v in want.items():
            assert float(got[k][j]) == pytest.approx(v, rel=1e-5, abs=1e-6), (j, k)


def test_loop_state_of_a_finished_run():
    loops = loops_state(
        epochs=3, epoch_ended=True, chunks=6, chunks_this_epoch=2, updates=130, whole=True
    )
    fit = loops["fit_loop"]
    assert fit["epoch_progress"]["total"]["completed"] == 3
    assert fit["epoch_loop.manual_optimization.optim_step_progress"]["total"]["completed"] == 130
    assert fit["epoch_loop.state_dict"]["_batches_that_stepped"] == 6


# --------------------------------------------------------------------------------------------
# Each job's checkpoints are an ordinary run's
# --------------------------------------------------------------------------------------------
def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_each_jobs_checkpoints_are_an_ordinary_runs(tmp_path):
    from runs import run

    from handprop.trainer.evaluate import evaluate

    overrides = (  # seed 1 stops early (after 5 epochs)
        "seed=1,2",
        "trainer.max_epochs=6",
        "scheduler=step",
        "optimizer=momentum",
        "callbacks.early_stopping.patience=1",
    )
    stacked = sweep(tmp_path / "v", VECTORIZED, *overrides)
    alone = sweep(tmp_path / "t", *overrides)
    assert {_metrics(tmp_path / "t", j)["epochs"] for j in alone} == {5, 6}
    for job in stacked:
        mine = _ckpt(tmp_path / "v" / job["dir"] / "checkpoints" / "last.ckpt")
        theirs = _ckpt(tmp_path / "t" / job["dir"] / "checkpoints" / "last.ckpt")
        assert mine.keys() == theirs.keys()
        for k in ("epoch", "global_step", "epochs_done", "loops", "hparams_name"):
            assert mine[k] == theirs[k], k
        assert mine["state_dict"].keys() == theirs["state_dict"].keys()
        for k, v in theirs["state_dict"].items():
            torch.testing.assert_close(mine["state_dict"][k], v, rtol=1e-3, atol=1e-4)
        assert mine["hyper_parameters"] == theirs["hyper_parameters"]
        assert mine["callbacks"].keys() == theirs["callbacks"].keys()
        stop = next(k for k in theirs["callbacks"] if k.startswith("EarlyStopping"))
        for k in ("wait_count", "stopped_epoch", "patience", "stopping_reason"):
            assert mine["callbacks"][stop][k] == theirs["callbacks"][stop][k], k
        best = mine["callbacks"]["Checkpoints"], theirs["callbacks"]["Checkpoints"]
        assert best[0]["best_epoch"] == best[1]["best_epoch"]
        assert best[0]["best_weights"].keys() == best[1]["best_weights"].keys()
        (o1,), (o2,) = mine["optimizer_states"], theirs["optimizer_states"]
        assert o1["param_groups"] == o2["param_groups"]
        assert o1["state"].keys() == o2["state"].keys()
        for k, v in o2["state"][0].items():
            torch.testing.assert_close(o1["state"][0][k], v, rtol=1e-3, atol=1e-4)
        assert mine["lr_schedulers"] == theirs["lr_schedulers"]
        b1 = _ckpt(tmp_path / "v" / job["dir"] / "checkpoints" / "best.ckpt")
        b2 = _ckpt(tmp_path / "t" / job["dir"] / "checkpoints" / "best.ckpt")
        assert b1.keys() == b2.keys() and b1["epoch"] == b2["epoch"]

    # handprop-eval reads a job's best.ckpt; ckpt_path= resumes its last.ckpt
    job = tmp_path / "v" / stacked[0]["dir"]
    evaluated = evaluate(str(job / "checkpoints" / "best.ckpt"), output=str(tmp_path / "e.json"))
    reported = json.loads((job / "metrics.json").read_text())
    assert evaluated["test/loss"] == pytest.approx(reported["test/loss"], rel=1e-5)
    last = tmp_path / "last.ckpt"  # (a job's directory name holds '=', which Hydra would parse)
    shutil.copy(job / "checkpoints" / "last.ckpt", last)
    resumed = run(
        tmp_path / "resumed",
        *(o.replace("seed=1,2", "seed=1") for o in overrides),
        "trainer.max_epochs=8",
        "callbacks.early_stopping.patience=100",
        f"ckpt_path={last}",
        "logger=none",
    )
    done = _ckpt(last)["epochs_done"]
    assert done < 6  # it had stopped early
    assert resumed["epochs"] == 8 and resumed["global_step"] == 8 * 44


def test_job_configs_are_hydras_with_fewer_compositions():
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict, read_write

    from handprop.trainer.vectorized import DerivingLoader, _task_cfg

    values = [
        [f"optimizer.lr={lr}", f"seed={s}", f"model.hidden={h}"]
        for lr in (0.001, 0.01)
        for s in (1, 2)
        for h in ("[8]", "[16,4]")
    ]
    groups = [[f"optimizer={o}", "seed=1"] for o in ("sgd", "adam", "momentum")]
    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        master = compose("train", return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        for job_overrides, compositions in ((values, 2), (groups, 3)):
            deriving = DerivingLoader(loader)
            for _ in range(2):  # the sweeper's check, then the launcher: made once
                configs = [deriving.load_sweep_config(master, o) for o in job_overrides]
            assert deriving.compositions == compositions
            for overrides, cfg in zip(job_overrides, configs, strict=True):
                want = loader.load_sweep_config(master, overrides)
                assert OmegaConf.to_yaml(cfg) == OmegaConf.to_yaml(want), overrides
                # the task's config, as run_job makes it (a deep copy without hydra)
                task = copy.deepcopy(want)
                with read_write(task), open_dict(task):
                    del task["hydra"]
                assert OmegaConf.to_yaml(_task_cfg(cfg)) == OmegaConf.to_yaml(task)
                assert OmegaConf.is_struct(_task_cfg(cfg))


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """The scalars of ``tb/`` and of its HParams run ``tb/hparams`` (the final metrics)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found = {}
    for folder in (run_dir / "tb", run_dir / "tb" / "hparams"):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        for t in acc.Tags()["scalars"]:
            found[t] = [(e.step, e.value) for e in acc.Scalars(t)]
    return found


def test_each_job_logs_what_it_logs_alone(tmp_path):
    """A job's TensorBoard scalars: the same tags at the same updates as the same job run in
    turn, the values to float rounding; its hparams.yaml the same."""
    import sys

    from handprop.trainer.train import main

    overrides = ["seed=1,2", "trainer.max_epochs=3", "progress=false", "logger=tensorboard"]
    for name, extra in (("v", [VECTORIZED]), ("t", [])):
        old, sys.argv = sys.argv, ["handprop-train", "-m", *extra, *overrides]
        sys.argv.append(f"hydra.sweep.dir={tmp_path / name}")
        try:
            main()
        finally:
            sys.argv = old
    jobs = [d.name for d in (tmp_path / "t").iterdir() if (d / "tb").is_dir()]
    assert len(jobs) == 2
    for job in jobs:
        mine, theirs = _scalars(tmp_path / "v" / job), _scalars(tmp_path / "t" / job)
        assert mine.keys() == theirs.keys()
        assert {"train/loss", "val/loss", "lr", "final/test/loss"} <= mine.keys()
        for tag, events in theirs.items():
            assert [s for s, _ in mine[tag]] == [s for s, _ in events], tag
            for (_, a), (_, b) in zip(mine[tag], events, strict=True):
                assert a == pytest.approx(b, rel=1e-3, abs=1e-5), tag
        hp = [(tmp_path / d / job / "tb" / "hparams.yaml").read_text() for d in ("v", "t")]
        assert hp[0] == hp[1]


# --------------------------------------------------------------------------------------------
# What does not stack runs in turn; large groups split; a search stacks each batch
# --------------------------------------------------------------------------------------------
def test_what_cannot_stack_runs_in_turn_with_its_reason(tmp_path, capsys):
    jobs = sweep(tmp_path / "s", VECTORIZED, "lr_find=false,true", "trainer.max_epochs=2")
    out = capsys.readouterr().out
    assert "in turn (lr_find runs its own range test first)" in out
    assert "in turn (a group of one)" in out
    assert [j["status"] for j in jobs] == ["ok", "ok"]


def test_a_group_larger_than_the_budget_is_split(tmp_path, capsys):
    overrides = ("seed=1,2,3", "trainer.max_epochs=2")
    whole = sweep(tmp_path / "w", VECTORIZED, *overrides)
    assert "one stacked network of 3 jobs" in capsys.readouterr().out
    split = sweep(tmp_path / "s", VECTORIZED, "hydra.launcher.max_group=2", *overrides)
    assert "split into 2 groups of up to 2 jobs" in capsys.readouterr().out
    assert [j["status"] for j in split] == ["ok"] * 3
    for a, b in zip(whole, split, strict=True):
        ma, mb = _metrics(tmp_path / "w", a), _metrics(tmp_path / "s", b)
        assert ma["test/loss"] == pytest.approx(mb["test/loss"], rel=1e-4)
    tiny = sweep(tmp_path / "m", VECTORIZED, "hydra.launcher.memory_mb=0.1", *overrides)
    assert "split into 3 groups of up to 1 job " in capsys.readouterr().out
    assert [j["status"] for j in tiny] == ["ok"] * 3


def test_an_optuna_search_stacks_each_batch_of_trials(tmp_path, capsys):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import yaml

    jobs = sweep(
        tmp_path / "o",
        VECTORIZED,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=3",
        # the search over the learning rate alone: every trial of a batch fits one network
        'hydra.sweeper.params={optimizer:"choice(adam)",model.hidden:"choice([5])",'
        'gd.batch_size:"choice(32)"}',
        "trainer.max_epochs=2",
    )
    out = capsys.readouterr().out
    assert out.count("one stacked network of 3 jobs (optimizer.lr per job)") == 2
    assert [j["status"] for j in jobs] == ["ok"] * 6
    best = yaml.safe_load((tmp_path / "o" / "optimization_results.yaml").read_text())
    losses = [_metrics(tmp_path / "o", j)["val/loss"] for j in jobs]
    assert best["best_value"] == pytest.approx(min(losses), rel=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_vectorized_sweep_trains_on_cuda_as_on_the_cpu(tmp_path, capsys):
    overrides = ("seed=1,2", "optimizer.lr=0.003,0.01", "trainer.max_epochs=3")
    gpu = sweep(tmp_path / "g", VECTORIZED, "trainer=gpu", *overrides)
    cpu = sweep(tmp_path / "c", VECTORIZED, "trainer=cpu", *overrides)
    assert [j["status"] for j in gpu] == ["ok"] * 4
    for a, b in zip(gpu, cpu, strict=True):
        ma, mb = _metrics(tmp_path / "g", a), _metrics(tmp_path / "c", b)
        assert ma["epochs"] == mb["epochs"]
        assert ma["test/loss"] == pytest.approx(mb["test/loss"], rel=5e-3)


def test_a_job_with_a_bad_setting_fails_alone(tmp_path, capsys):
    jobs = sweep(
        tmp_path / "s", VECTORIZED, "optimizer.lr=0.01,-1", "seed=1,2", "trainer.max_epochs=2"
    )
    assert [j["status"] for j in jobs] == ["ok", "ok", "failed", "failed"]
    assert all("optimizer.lr=-1" in j["error"] for j in jobs[2:])
    err = capsys.readouterr().err
    assert err.count("error: optimizer.lr=-1") == 2 and "Traceback" not in err
    assert all((tmp_path / "s" / j["dir"] / "error.json").is_file() for j in jobs[2:])
