"""Scaling out: DDP over CPU processes, GPU placement and mixed precision, sweep launchers
(parallel on one machine, SLURM) and the Optuna search.

DDP, the sweeps and the search run the installed ``handprop-train`` command in subprocesses,
as a user would. Tests that need a GPU are skipped without one; tests that need an optional
Hydra plugin (``pip install -e ".[scale,optuna]"``, both part of ``dev``) are skipped, with
the reason, when it is missing.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from handprop.trainer.data import TensorBatches

ROOT = Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


def has_plugin(module: str) -> bool:
    return importlib.util.find_spec(f"hydra_plugins.{module}") is not None


# --------------------------------------------------------------------------------------------
# Helpers: the installed commands, run in their own process group (a DDP run that hangs is
# killed with all its ranks, not left behind)
# --------------------------------------------------------------------------------------------
def cli(module: str) -> list[str]:
    """The console script next to this interpreter, else ``python -m handprop.<module>``."""
    script = {"train": "handprop-train", "evaluate": "handprop-eval", "predict": "handprop-predict"}
    exe = Path(sys.executable).parent / script[module]
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", f"handprop.{module}"]


def cli_env(**extra: str) -> dict[str, str]:
    drop = ("PL_", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_", "HYDRA_FULL")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def run_cmd(
    cmd: list[str], cwd: Path, timeout: float = 240, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd``; its result and wall time. On timeout the whole process group is killed."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env or cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        pytest.fail(f"{' '.join(cmd)} did not finish in {timeout} s:\n{err[-3000:]}")
    finally:
        try:  # ranks or workers it left behind
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(cmd, p.returncode, out, err), time.perf_counter() - t0


def ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-4000:]


def load_state(run_dir: Path, name: str = "last") -> dict:
    ckpt = torch.load(
        run_dir / "checkpoints" / f"{name}.ckpt", map_location="cpu", weights_only=True
    )
    return ckpt["state_dict"], ckpt["global_step"]


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(
        (d for d in sweep_dir.iterdir() if (d / ".hydra").is_dir()),
        key=lambda d: int(d.name.split("_", 1)[0]),
    )


# --------------------------------------------------------------------------------------------
# 1. TensorBatches under a simulated torch.distributed: disjoint, equal shards every epoch
# --------------------------------------------------------------------------------------------
def epoch_batches(n, bs, world, epoch, monkeypatch, k=None):
    """Each rank's batches (as row ids) of one epoch, torch.distributed faked per rank."""
    X = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    per_rank = []
    for rank in range(world):
        monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: world)
        tb = TensorBatches(
            X, X.clone(), bs, shuffle=True, seed=5, epoch_fn=lambda: epoch, steps_per_call=k
        )
        items = list(tb)
        assert len(items) == len(tb)
        flat = [b for item in items for b in (item if isinstance(item, list) else [item])]
        assert len(flat) == tb.num_batches()
        per_rank.append([xb[:, 0].long().tolist() for xb, _ in flat])
    return per_rank


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize(
    ("n", "bs", "k"),
    [(140, 8, None), (129, 32, None), (131, 4, 3), (7, 2, None)],
    ids=["even", "uneven-tail", "chunks", "tiny"],
)
def test_each_rank_takes_a_disjoint_equal_shard_of_every_epoch(monkeypatch, world, n, bs, k):
    orders = []
    for epoch in range(3):
        ranks = epoch_batches(n, bs, world, epoch, monkeypatch, k)
        # Every rank makes the same number of steps: DDP all-reduces each step's gradients,
        # so a rank with one step more would wait forever (n=129, B=32: 65 rows vs 64 once).
        assert len({len(b) for b in ranks}) == 1, [len(b) for b in ranks]
        shards = [[i for b in batches for i in b] for batches in ranks]
        assert len({len(s) for s in shards}) == 1
        assert len(shards[0]) == n // world
        seen = [i for s in shards for i in s]
        assert len(seen) == len(set(seen)), "shards overlap"
        assert set(seen) <= set(range(n))
        assert n - len(seen) == n % world  # only the remainder sits out
        # Step i of all ranks together = step i of one process with batch world·B over the
        # same permutation: why DDP(B) ≡ one process(world·B) with averaged gradients.
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(5 * 100_003 + epoch))
        perm = perm[: n - n % world].tolist()
        big = world * bs
        for i in range(len(ranks[0])):
            together = sorted(j for r in ranks for j in r[i])
            assert together == sorted(perm[i * big : (i + 1) * big])
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2]  # a fresh permutation each epoch


def test_one_process_sees_every_row(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    X = torch.arange(129, dtype=torch.float32).unsqueeze(1)
    rows = [i for xb, _ in TensorBatches(X, X, 32, shuffle=True) for i in xb[:, 0].tolist()]
    assert sorted(rows) == list(range(129))


# --------------------------------------------------------------------------------------------
# 2. DDP through the real command line: 2 CPU processes (gloo) vs one process
# --------------------------------------------------------------------------------------------
# property_prices with 200 rows: 140 training rows (70 per rank), 30 val, 30 test.
DDP_COMMON = (
    "data.n_samples=200",
    "trainer.max_epochs=4",
    "optimizer=sgd",
    "gd=minibatch",
    "seed=7",
    "trainer.accelerator=cpu",
)
B = 8  # per rank; the one-process run takes the same global batch, 2·B

# The audit hook a sitecustomize installs in every process of the DDP run: it lists each file
# a process opens for writing, renames, removes or creates under the run directory, so the
# test can tell rank 1's writes from rank 0's.
WRITE_AUDIT = r"""
import os, sys
_out, _root = os.environ.get("HANDPROP_WRITE_LOG"), os.environ.get("HANDPROP_WRITE_ROOT")
if _out and _root:
    _rank = os.environ.get("LOCAL_RANK", "0")  # set by Lightning for the ranks it launches
    _fh = open(os.path.join(_out, f"rank{_rank}.{os.getpid()}.log"), "a", buffering=1)
    _root = os.path.realpath(_root)

    def _under(p):
        if isinstance(p, int):
            return None
        try:
            p = os.path.realpath(os.fsdecode(p))
        except TypeError:
            return None
        return p if p == _root or p.startswith(_root + os.sep) else None

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            paths = [path] if writes else []
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate"):
            paths = list(args[:2]) if event == "os.rename" else [args[0]]
        else:
            return
        for p in paths:
            q = _under(p)
            if q:
                _fh.write(f"{event} {os.path.relpath(q, _root)}\n")

    sys.addaudithook(_hook)
"""


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """One DDP run (2 ranks, batch B each) and one single-process run (batch 2B)."""
    tmp = tmp_path_factory.mktemp("ddp")
    hook, writes = tmp / "hook", tmp / "writes"
    hook.mkdir()
    writes.mkdir()
    (hook / "sitecustomize.py").write_text(WRITE_AUDIT)
    ddp_dir, single_dir = tmp / "ddp", tmp / "single"
    env = cli_env(
        HANDPROP_WRITE_LOG=str(writes),
        HANDPROP_WRITE_ROOT=str(ddp_dir),
        PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    )
    cmd = [*cli("train"), *DDP_COMMON, "trainer=ddp", f"gd.batch_size={B}"]
    ddp, ddp_s = run_cmd([*cmd, f"hydra.run.dir={ddp_dir}"], cwd=tmp, env=env)
    ok(ddp)
    cmd = [*cli("train"), *DDP_COMMON, f"gd.batch_size={2 * B}"]
    single, single_s = run_cmd([*cmd, f"hydra.run.dir={single_dir}"], cwd=tmp)
    ok(single)
    print(f"\nDDP 2 ranks: {ddp_s:.1f} s; one process: {single_s:.1f} s")
    return {
        "tmp": tmp,
        "ddp": ddp_dir,
        "single": single_dir,
        "ddp_proc": ddp,
        "writes": writes,
    }


def test_ddp_averages_gradients_like_one_process_with_the_global_batch(ddp_runs):
    """Rank r's step i takes rows perm[r::2][iB:(i+1)B]; together the two ranks hold exactly
    the one-process batch perm[2iB:2(i+1)B], and both halves have B rows, so the average of
    the two ranks' mean-loss gradients IS the one-process gradient. Same seed, same initial
    weights (DDP broadcasts rank 0's), plain SGD: the runs must agree up to float32 rounding.

    Tolerance: 1e-5 absolute + 1e-4 relative per weight, metrics 1e-4 relative. The only
    difference is the order of float32 sums (two 8-row products added by the all-reduce and
    halved, instead of one 16-row product): ~1e-7 relative per step, ~1e-6 after these 36
    steps (measured: see the printed maximum). Summed instead of averaged gradients (a
    doubled step) or unsynchronised ranks differ by 1e-2 or more, far outside it.
    """
    ddp_state, ddp_step = load_state(ddp_runs["ddp"])
    one_state, one_step = load_state(ddp_runs["single"])
    assert ddp_step == one_step == 4 * 9  # 70 rows per rank / 8 = 9 steps; 140 / 16 = 9
    assert ddp_state.keys() == one_state.keys()
    worst = 0.0
    for name, w in one_state.items():
        torch.testing.assert_close(ddp_state[name], w, atol=1e-5, rtol=1e-4, msg=name)
        worst = max(worst, (ddp_state[name].float() - w.float()).abs().max().item())
    print(f"\nlargest weight difference DDP vs one process: {worst:.2e}")
    ddp_m = json.loads((ddp_runs["ddp"] / "metrics.json").read_text())
    one_m = json.loads((ddp_runs["single"] / "metrics.json").read_text())
    assert ddp_m["global_step"] == one_m["global_step"] and ddp_m["epochs"] == one_m["epochs"]
    for k, v in one_m.items():
        if "/" in k:
            assert ddp_m[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k


def test_ddp_only_rank_0_writes(ddp_runs):
    logs = sorted(ddp_runs["writes"].glob("rank*.log"))
    assert [p.name.split(".")[0] for p in logs] == ["rank0", "rank1"], "expected two processes"
    events = {p.name.split(".")[0]: set(p.read_text().splitlines()) for p in logs}
    pid0 = logs[0].name.split(".")[1]
    # Rank 0: checkpoints, TensorBoard, hparams, metrics.json (each via a temporary file).
    for must in (
        "os.rename checkpoints/best.ckpt",
        "os.rename checkpoints/last.ckpt",
        "os.rename metrics.json",
        "open tb/hparams.yaml",
    ):
        assert must in events["rank0"], must
    assert any(e.startswith("open tb/events.out.tfevents") for e in events["rank0"])
    # Rank 1: nothing of handprop's. Hydra itself (re-run by Lightning for rank 1 with
    # hydra.output_subdir=null) only creates the run directory, which exists already, and
    # opens an (empty) job log named after the rank's job.
    assert events["rank1"] <= {"os.mkdir .", "open train_ddp_process_1.log"}, events["rank1"]
    run = ddp_runs["ddp"]
    assert (run / "train_ddp_process_1.log").stat().st_size == 0
    # What is in the run directory came from rank 0: one set of outputs, its pid on the events.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    tb = sorted(p.name for p in (run / "tb").iterdir())
    assert "hparams.yaml" in tb
    assert all(f".{pid0}." in name for name in tb if name.startswith("events.out"))
    assert not list(run.rglob("*.tmp")) and not list(run.glob(".pl_*"))
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    out = ddp_runs["ddp_proc"].stdout
    assert out.count("handprop: regression on property_prices") == 1  # rank 0's report only
    assert "sync_dist" not in ddp_runs["ddp_proc"].stderr  # epoch metrics reduced over ranks


def test_eval_and_predict_work_from_the_ddp_checkpoint(ddp_runs):
    from handprop.trainer.build import data_of
    from handprop.trainer.checkpoints import load_module

    run, tmp = ddp_runs["ddp"], ddp_runs["tmp"]
    best = run / "checkpoints" / "best.ckpt"
    model = load_module(best)
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(model.hparams["config"])
    assert cfg.trainer.strategy == "ddp"  # the checkpoint of a DDP run, used without DDP
    dm = data_of(cfg, model.task.name)
    rows = dm.indices["test"]
    X, y = dm.table.X[rows], dm.table.y[rows]
    inp = tmp / "in.csv"
    with inp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["row_id", *dm.table.feature_names])
        w.writerows([f"r{i}", *(repr(float(v)) for v in x)] for i, x in enumerate(X))
    out, eval_json = tmp / "pred.csv", tmp / "eval.json"
    calls = [
        [*cli("evaluate"), f"ckpt_path={best}", f"output={eval_json}"],
        [*cli("predict"), f"ckpt_path={best}", f"input={inp}", f"output={out}"],
    ]
    with ThreadPoolExecutor(2) as pool:
        for r, _ in pool.map(lambda c: run_cmd(c, cwd=tmp, timeout=120), calls):
            ok(r)
    metrics = json.loads((run / "metrics.json").read_text())
    evaluated = json.loads(eval_json.read_text())
    assert set(evaluated) == {k for k in metrics if k.startswith("test/")}
    for k, v in evaluated.items():
        assert v == pytest.approx(metrics[k], rel=1e-6, abs=1e-6), k
    with out.open(newline="") as fh:
        pred = list(csv.DictReader(fh))
    assert [p["row_id"] for p in pred] == [f"r{i}" for i in range(len(rows))]
    yhat = [float(p[f"predicted_{dm.table.target_name}"]) for p in pred]
    mse = sum((a - b) ** 2 for a, b in zip(yhat, y, strict=True)) / len(y)
    assert mse == pytest.approx(metrics["test/mse"], rel=1e-3)


# --------------------------------------------------------------------------------------------
# 3. Mixed precision: the hand-written Functions under autocast
# --------------------------------------------------------------------------------------------
def twin_models(act: str, seed: int = 0):
    """A handprop MLP and the torch.nn.Sequential with the same weights."""
    from torch import nn

    from handprop.networks import MLP

    torch.manual_seed(seed)
    hp = MLP(8, [16, 16], 3, act)
    act_t = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[act]
    tn = nn.Sequential(nn.Linear(8, 16), act_t(), nn.Linear(16, 16), act_t(), nn.Linear(16, 3))
    tn.load_state_dict({k.removeprefix("layers."): v for k, v in hp.state_dict().items()})
    return hp, tn


LOSS_PAIRS = {
    "mse": ("mse_loss", lambda: torch.randn(64, 3)),
    "bce": ("binary_cross_entropy_with_logits", lambda: torch.rand(64, 3)),
    "ce": ("cross_entropy", lambda: torch.randint(0, 3, (64,))),
}


@pytest.mark.parametrize("loss", sorted(LOSS_PAIRS))
@pytest.mark.parametrize("act", ["relu", "tanh", "sigmoid"])
def test_functions_under_cpu_autocast_bf16(act, loss):
    """Backward inside the autocast region, as HandpropModule runs it (its training_step
    calls backward, and Lightning's bf16-mixed wraps training_step in autocast): bf16
    activations, float32 gradients for the float32 weights, and gradients within bf16
    rounding (~1e-2 relative) of torch.nn's under the same autocast."""
    import handprop.functional as F

    name, target = LOSS_PAIRS[loss]
    hp, tn = twin_models(act)
    torch.manual_seed(1)
    x, y = torch.randn(64, 8), target()
    grads = {}
    for tag, model, fn in (
        ("handprop", hp, getattr(F, name)),
        ("torch", tn, getattr(torch.nn.functional, name)),
    ):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = model(x)
            c = fn(z, y)
            c.backward()
        assert z.dtype == torch.bfloat16, tag
        assert torch.isfinite(c).all(), tag
        grads[tag] = [p.grad for p in model.parameters()]
        assert all(
            g.dtype == p.dtype == torch.float32
            for g, p in zip(grads[tag], model.parameters(), strict=True)
        )
    for g_hp, g_t in zip(grads["handprop"], grads["torch"], strict=True):
        assert torch.isfinite(g_hp).all()
        assert ((g_hp - g_t).norm() / g_t.norm().clamp_min(1e-12)).item() < 3e-2


def test_linear_backward_outside_the_autocast_region():
    """torch's recommended pattern: forward under autocast, backward after it. HandFunction
    runs each backward under its forward's autocast state, so the dtypes still meet."""
    hp, _ = twin_models("relu")
    import handprop.functional as F

    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = F.mse_loss(hp(torch.randn(64, 8)), torch.randn(64, 3))
    c.backward()
    assert all(p.grad.dtype == torch.float32 for p in hp.parameters())


def test_bf16_mixed_training_matches_float32_closely(ddp_runs):
    """trainer.precision=bf16-mixed (CPU autocast here) trains the one-process reference run's
    network to nearly the same loss."""
    tmp = ddp_runs["tmp"]
    run = tmp / "bf16"
    cmd = [*cli("train"), *DDP_COMMON, f"gd.batch_size={2 * B}", "trainer.precision=bf16-mixed"]
    r, _ = run_cmd([*cmd, f"hydra.run.dir={run}", "logger=none"], cwd=tmp)
    ok(r)
    bf = json.loads((run / "metrics.json").read_text())
    fp = json.loads((ddp_runs["single"] / "metrics.json").read_text())
    assert bf["global_step"] == fp["global_step"]
    for k in ("train/loss", "val/loss", "test/loss"):
        assert math.isfinite(bf[k])
        assert bf[k] == pytest.approx(fp[k], rel=0.05), k


# --------------------------------------------------------------------------------------------
# 4. GPU (skipped without one)
# --------------------------------------------------------------------------------------------
@needs_cuda
@pytest.mark.parametrize("trainer", ["gpu", "default"], ids=["trainer=gpu", "accelerator=auto"])
def test_gpu_holds_data_and_model(tmp_path, trainer):
    from hydra import compose, initialize_config_module

    from handprop.trainer.build import prepare

    with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                f"trainer={trainer}",
                "data.n_samples=300",
                "trainer.max_epochs=2",
                "logger=none",
            ],
        )
    dm, model, trainer_, _ = prepare(cfg, tmp_path)
    trainer_.fit(model, datamodule=dm)
    assert trainer_.strategy.root_device.type == "cuda"
    assert all(p.is_cuda for p in model.parameters())
    assert dm._tensors["train"][0].is_cuda and dm._tensors["train"][1].is_cuda
    assert model.updates > 0  # the module's own count (Lightning's global_step is not it)


@needs_cuda
def test_gpu_check_script(tmp_path):
    r, _ = run_cmd(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--quick"],
        cwd=tmp_path,
        timeout=600,
    )
    ok(r)
    assert "all checks passed" in r.stdout


def test_gpu_check_script_dry_run_on_the_cpu(tmp_path):
    """The GPU script's own code, run where CI can: it must not rot between GPU sessions."""
    r, _ = run_cmd(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--quick"],
        cwd=tmp_path,
        timeout=300,
    )
    ok(r)
    assert "all checks passed" in r.stdout and "Traceback" not in r.stdout + r.stderr


@pytest.mark.skipif(CUDA, reason="checks the message given where there is no GPU")
def test_gpu_check_says_so_without_cuda(tmp_path):
    r, _ = run_cmd(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py")], cwd=tmp_path, timeout=120
    )
    assert r.returncode == 2
    assert "CUDA is not available" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------------------------
# 5. Sweeps: parallel jobs on one machine, SLURM (its config; runs: test_slurm.py), Optuna
# --------------------------------------------------------------------------------------------
# Four small jobs at one thread (one thread each: bit-identical arithmetic in either launcher).
SWEEP = (
    "data.n_samples=300",
    "trainer.max_epochs=3",
    "logger=none",
    "progress=false",
    "num_threads=1",
    "optimizer=sgd,adam",
    "seed=1,2",
)


@pytest.mark.skipif(
    not has_plugin("hydra_joblib_launcher"),
    reason='hydra-joblib-launcher is not installed (pip install -e ".[scale]")',
)
def test_parallel_sweep_runs_the_same_jobs_as_one_after_another(tmp_path):
    """The same 4-job sweep with Hydra's basic launcher (one job after another, one process)
    and with hydra/launcher=parallel (2 worker processes): the same jobs, the same results.
    (How much faster the parallel launcher is: scripts/bench_sweep.py.)"""
    runs = {}
    for name, extra in (("sequential", []), ("parallel", ["hydra/launcher=parallel"])):
        sweep = tmp_path / name
        r, _ = run_cmd(
            [*cli("train"), "-m", *SWEEP, *extra, f"hydra.sweep.dir={sweep}"],
            cwd=tmp_path,
            timeout=300,
        )
        ok(r)
        summary = json.loads((sweep / "summary.json").read_text())
        assert [j["status"] for j in summary["jobs"]] == ["ok"] * 4, summary
        runs[name] = summary
    seq, par = runs["sequential"], runs["parallel"]
    if "hydra/launcher=parallel" in par["jobs"][0]["overrides"]:  # the flag itself is listed
        for j in par["jobs"]:
            j["overrides"].remove("hydra/launcher=parallel")
    assert [j["overrides"] for j in par["jobs"]] == [j["overrides"] for j in seq["jobs"]]
    for a, b in zip(par["jobs"], seq["jobs"], strict=True):
        assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-6)


@pytest.mark.skipif(
    not has_plugin("hydra_submitit_launcher"),
    reason='hydra-submitit-launcher is not installed (pip install -e ".[scale]")',
)
def test_slurm_launcher_is_configured(tmp_path):
    """hydra/launcher=slurm composes into handprop's submitit SLURM launcher (submitted to a
    real cluster in tests/test_slurm.py)."""
    r, _ = run_cmd(
        [*cli("train"), "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra"],
        cwd=tmp_path,
        timeout=60,
    )
    ok(r)
    launcher = yaml.safe_load(r.stdout)["hydra"]["launcher"]
    assert launcher["_target_"] == "hydra_plugins.handprop_launcher.SlurmJobs"
    assert launcher["partition"] == "gpu"
    assert launcher["timeout_min"] > 0 and launcher["cpus_per_task"] >= 1
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"


@pytest.mark.skipif(
    not has_plugin("hydra_optuna_sweeper"),
    reason='hydra-optuna-sweeper is not installed (pip install -e ".[optuna]")',
)
def test_optuna_search_reports_the_best_trial(tmp_path):
    sweep = tmp_path / "search"
    r, _ = run_cmd(
        [
            *cli("train"),
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=3",
            "trainer.max_epochs=1",
            "data.n_samples=300",
            "logger=none",
            "callbacks.checkpoint.enabled=false",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        timeout=180,
    )
    ok(r)
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best_params, best_value = result["best_params"], result["best_value"]
    assert set(best_params) == {"optimizer", "optimizer.lr", "model.hidden", "gd.batch_size"}
    summary = json.loads((sweep / "summary.json").read_text())
    assert [j["status"] for j in summary["jobs"]] == ["ok"] * 3
    trials = []
    for d in job_dirs(sweep):
        m = json.loads((d / "metrics.json").read_text())
        overrides = (d / ".hydra" / "overrides.yaml").read_text().replace(" ", "")
        trials.append((m["val/loss"], overrides))
    assert len(trials) == 3
    value, overrides = min(trials)
    assert best_value == pytest.approx(value, rel=1e-12)  # the trial's own val/loss
    for k, v in best_params.items():
        assert f"-{k}={v}".replace(" ", "") in overrides, (k, v)
    assert 3e-4 <= best_params["optimizer.lr"] <= 0.3
    assert "Best value" in r.stderr + r.stdout


@pytest.mark.skipif(
    not has_plugin("hydra_optuna_sweeper"),
    reason='hydra-optuna-sweeper is not installed (pip install -e ".[optuna]")',
)
@pytest.mark.usefixtures("restore_process_state")  # (trains in-process)
def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path, capsys):
    """A trial that fails (here a weight decay the config refuses) is listed as failed with
    its one error line, and the search runs its remaining trials; the best trial is one that
    finished. (A failed job used to return NaN, which Optuna refused with an error that
    ended the search after it.)"""
    from runs import sweep

    search = tmp_path / "search"
    with pytest.raises(SystemExit) as info:  # the search ran to its end; trials failed
        sweep(
            search,
            "hparams_search=optuna",
            "hydra.sweeper.n_trials=3",
            "optimizer.weight_decay=choice(-1,0.0)",
            "trainer.max_epochs=1",
            "data.n_samples=300",
            "callbacks.checkpoint.enabled=false",
        )
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    jobs = json.loads((search / "summary.json").read_text())["jobs"]
    assert len(jobs) == 3
    status = {j["status"] for j in jobs}
    assert jobs[0]["status"] == "failed" and status == {"failed", "ok"}, jobs  # trial 0 failed
    for j in jobs:
        failed = "optimizer.weight_decay=-1" in j["overrides"]
        assert j["status"] == ("failed" if failed else "ok")
        if failed:
            assert (
                j["error"]
                == "ConfigError: optimizer.weight_decay=-1 is invalid: must be a number >= 0"
            )
            assert f"error: {j['error'].split(': ', 1)[1]}" in err
    best = yaml.safe_load((search / "optimization_results.yaml").read_text())
    assert best["best_params"]["optimizer.weight_decay"] == 0.0
    finished = [
        json.loads((search / j["dir"] / "metrics.json").read_text())
        for j in jobs
        if j["status"] == "ok"
    ]
    assert best["best_value"] == min(m["val/loss"] for m in finished)

    # Every trial failed: no best trial to report, said in one line (Optuna's own error
    # otherwise, with its traceback). (In this test: Optuna's log handler keeps the stream
    # it found first, which the next test's capture would close.)
    search = tmp_path / "failing"
    with pytest.raises(SystemExit) as info:
        sweep(search, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "optimizer.lr=-1")
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"error: every trial of the search failed: see {search}/summary.json" in err
    jobs = json.loads((search / "summary.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["failed", "failed"]


def test_lr_scaling_uses_the_global_batch_under_ddp():
    """The linear scaling rule's B is what one update averages over: under DDP every process
    takes gd.batch_size rows, so B = gd.batch_size × processes."""
    from hydra import compose, initialize_config_module

    from handprop.trainer.build import build, plan_run

    lrs = {}
    for name, extra in (("one", []), ("ddp", ["trainer=ddp", "trainer.devices=2"])):
        with initialize_config_module(config_module="handprop.trainer.conf", version_base="1.3"):
            cfg = compose(
                "train",
                overrides=["data.n_samples=200", "gd.batch_size=16", "gd.lr_scaling=true", *extra],
            )
        _, model = build(cfg, *plan_run(cfg))
        lrs[name] = model.configure_optimizers().param_groups[0]["lr"]
    assert lrs["one"] == pytest.approx(0.01 * 16 / 32)
    assert lrs["ddp"] == pytest.approx(0.01 * 32 / 32)


def test_evaluation_is_not_sharded(monkeypatch):
    """Under DDP every rank evaluates every row (the model evaluates whole splits from the data
    module: no row dropped for equal shards), while training batches are sharded."""
    from handprop.trainer.data import TabularDataModule, TensorBatches
    from handprop.trainer.datasets import property_prices

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    dm = TabularDataModule(property_prices(40), batch_size=15, val_fraction=0.25)
    for split in ("val", "test"):
        x, y = dm.split(split)
        assert len(x) == len(y) == len(dm.indices[split]) > 2
    X, y = torch.arange(7.0).unsqueeze(1), torch.arange(7.0)
    training = TensorBatches(X, y, 65536, shuffle=False)
    assert sorted(v for _, yb in training for v in yb.tolist()) == [1, 3, 5]
