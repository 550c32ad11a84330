r"""Vectorised sweeps (``handprop-train -m hydra/launcher=vectorized ...``): the jobs of a sweep
that can share one network are trained at once, as one :class:`~handprop.networks.MLPStack`
whose parameters have a leading job dimension, and each job is still its own run.

**Grouping.** The launcher composes every job's config and groups the jobs whose configs are
equal but for :data:`PER_JOB` (the seed, the optimizer's hyperparameters, the schedule's
parameters, ``model.init``, the early-stopping patience): same data set, network shape, task,
optimizer type, batch size, gradient-descent mode and number of epochs. A job that cannot be
stacked (:func:`alone_reason`: a GAN, a CNN or RNN, DDP, ``lr_find``, a resumed run, …) or
whose group would hold it alone runs as an ordinary job, in turn, with one line saying why.
A group whose estimated memory exceeds ``memory_mb`` (or that has more than ``max_group``
jobs) is split.

**One network, many runs.** Job ``j`` of a group is built exactly as the ordinary run builds
it (:func:`~handprop.trainer.build.plan_run`, :func:`~handprop.trainer.build.build`: its own
seed draws its weights, its data split and its shuffle order); its slice of the stack follows
the same updates (:mod:`handprop.optim`, each hyperparameter per job; its own LR schedule, a
``torch.optim.lr_scheduler`` on an optimizer of its own, plateau included). Every decision
stays per job: early stopping freezes that job alone (it leaves the stack), the best weights
are its own, and a job whose loss stops being finite fails alone (its line, ``error.json``)
while the rest of its group goes on.

**Each job's files.** Its run directory with ``.hydra/`` and ``train.log``, its TensorBoard
events on the update axis with its HParams, ``checkpoints/best.ckpt`` and ``last.ckpt`` as
ordinary handprop checkpoints (the job's slice as a ``HandpropModule`` MLP: ``handprop-eval``,
``handprop-predict`` and ``ckpt_path=`` read them; ``last.ckpt`` holds the job's optimizer,
schedule, early-stopping and loop state as Lightning writes them), ``metrics.json``.
``summary.json`` lists every job as for any sweep.
"""

from __future__ import annotations

import copy
import json
import math
import os
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from handprop.trainer.cli import report, verbose_errors
from handprop.trainer.errors import MachineError, as_machine_error, is_known
from handprop.trainer.files import write_json_atomic, writing
from handprop.trainer.sweep import JobsInTurn

if TYPE_CHECKING:
    from torch import Tensor

#: The settings that may differ between the jobs of one group; any other difference makes
#: another group. ``scheduler.fn.*`` (the schedule's parameters, not its kind) too.
PER_JOB = (
    "seed",
    "optimizer.lr",
    "optimizer.weight_decay",
    "optimizer.momentum",
    "optimizer.nesterov",
    "optimizer.dampening",
    "optimizer.betas",
    "optimizer.eps",
    "optimizer.alpha",
    "optimizer.centered",
    "model.init",
    "callbacks.early_stopping.patience",
)

#: The optimizers with a stacked twin (handprop.optim) and the settings each may have.
OPTIMIZER_KEYS = {
    "torch.optim.SGD": {"lr", "momentum", "dampening", "weight_decay", "nesterov"},
    "torch.optim.Adam": {"lr", "betas", "eps", "weight_decay"},
    "torch.optim.AdamW": {"lr", "betas", "eps", "weight_decay"},
    "torch.optim.RMSprop": {"lr", "alpha", "eps", "weight_decay", "momentum", "centered"},
}

#: The trainer.* settings a stacked group applies itself; any other needs Lightning's Trainer.
TRAINER_KEYS = {
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "max_epochs",
    "max_steps",
    "precision",
    "deterministic",
    "gradient_clip_val",
    "log_every_n_steps",
    "enable_progress_bar",
}


# --------------------------------------------------------------------------------------------
# Which jobs stack, and with which
# --------------------------------------------------------------------------------------------
def alone_reason(cfg: DictConfig) -> str | None:
    """Why the job of ``cfg`` cannot join a stacked group (one phrase), or None if it can."""
    from handprop.trainer.plan import world_size

    model = cfg.model.name
    if model != "mlp":
        kind = {"gan": "a GAN", "cnn": "a CNN", "rnn": "an RNN", "autoencoder": "an autoencoder"}
        return f"model={model}: {kind.get(model, model)} does not stack, only MLPs do"
    if cfg.lr_find:
        return "lr_find runs its own range test first"
    if cfg.get("ckpt_path") is not None:
        return "it resumes a checkpoint (ckpt_path)"
    if world_size(cfg) > 1:
        return f"DDP (trainer.strategy={cfg.trainer.strategy}) runs its own processes"
    extra = sorted(set(cfg.trainer) - TRAINER_KEYS)
    if extra:
        return f"trainer.{extra[0]} needs Lightning's Trainer"
    if str(cfg.trainer.precision) not in ("32", "32-true"):
        return f"trainer.precision={cfg.trainer.precision}: stacks train at full precision"
    accelerator = str(cfg.trainer.accelerator)
    if accelerator not in ("auto", "cpu", "gpu", "cuda"):
        return f"trainer.accelerator={accelerator}"
    if accelerator in ("gpu", "cuda") and not _cuda():
        return f"trainer.accelerator={accelerator} and no CUDA GPU is visible"
    if cfg.backprop == "autograd":
        return "backprop=autograd (stacks run the δ recursion)"
    if cfg.monitors.enabled:
        return "monitors=on follows one network's δ recursion"
    if cfg.debug.fast_dev_run or cfg.debug.overfit_batches:
        return "a debug mode"
    if cfg.callbacks.get("extra"):
        return "callbacks.extra: the user's Lightning callbacks need a Trainer of their own"
    if cfg.logger.name not in ("tensorboard", "csv", "none"):
        return f"logger={cfg.logger.name}"
    target = str(cfg.optimizer.get("_target_"))
    if target not in OPTIMIZER_KEYS:
        return f"optimizer {target} has no stacked update rule"
    odd = sorted(
        k for k in cfg.optimizer if not str(k).startswith("_") and k not in OPTIMIZER_KEYS[target]
    )
    if odd:
        return f"optimizer.{odd[0]} is not in the stacked {target.rsplit('.', 1)[-1]}"
    return None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def group_key(cfg: DictConfig) -> str:
    """The job's config without :data:`PER_JOB` (and without the schedule's parameters): jobs
    with equal keys share one stacked network."""
    c = OmegaConf.to_container(_task_cfg(cfg) if "hydra" in cfg else cfg, resolve=True)
    for key in PER_JOB:
        *path, leaf = key.split(".")
        node: Any = c
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    fn = (c.get("scheduler") or {}).get("fn")
    if isinstance(fn, dict):
        c["scheduler"]["fn"] = {"_target_": fn.get("_target_")}
    return json.dumps(c, sort_keys=True, default=str)


def job_bytes(table: Any, plan: Any, cfg: DictConfig) -> int:
    """A job's memory in a stack, estimated: its parameters five times (weights, gradient,
    two optimizer buffers, best weights), its data twice (as loaded and shuffled), and the
    activations of one update."""
    sizes = [table.in_features, *cfg.model.hidden, table.out_features]
    params = sum((i + 1) * o for i, o in zip(sizes[:-1], sizes[1:], strict=True))
    data = len(table.y) * (table.in_features + table.out_features) * 2
    acts = plan.batch_size * sum(sizes) * 4
    return 4 * (5 * params + data + acts)


# --------------------------------------------------------------------------------------------
# Every job's config
# --------------------------------------------------------------------------------------------
class DerivingLoader:
    """Hydra's config loader, with each sweep job's config derived where it can be, for the
    vectorised launcher (installed in the shared Hydra context by :meth:`VectorizedJobs.setup`,
    so that the sweeper's check of a batch, which composes every job, derives too).

    Composing a config from its YAML files costs tens of milliseconds, more than a small
    job's share of a stacked group. When a job's overrides only set values where the first
    job's set the same keys (no config group, nothing added or deleted, no dict), its config
    is the first job's with those values set, as Hydra sets an override
    (``OmegaConf.update(merge=True)``), and ``hydra.overrides.task`` and
    ``hydra.job.override_dirname`` written as Hydra writes them. The first derived config is
    also composed in full and compared: on any difference every later job is composed in
    full. Each job's config is made once (the sweeper's check and the launcher share it).
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.reference: tuple[list[str], DictConfig] | None = None
        self.trusted: bool | None = None  # None: not checked yet
        self.made: dict[tuple[str, ...], DictConfig] = {}
        self.compositions = 0  # full compositions made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def compose(self, master: DictConfig, overrides: list[str]) -> DictConfig:
        self.compositions += 1
        return self.loader.load_sweep_config(master, overrides)

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        """As Hydra's (its argument names too: the sweeper passes them by name)."""
        key = tuple(sweep_overrides)
        if key in self.made:  # asked before (the sweeper's check): the launcher's now
            return self.made.pop(key)
        cfg = self.derive(master_config, list(sweep_overrides))
        self.made[key] = cfg
        return cfg

    def derive(self, master: DictConfig, overrides: list[str]) -> DictConfig:
        if self.reference is None or self.trusted is False:
            cfg = self.compose(master, overrides)
            self.reference = self.reference or (overrides, cfg)
            return cfg
        try:
            cfg = _derive(self.reference[1], self.reference[0], overrides)
        except _NotDerivable:
            return self.compose(master, overrides)
        OmegaConf.copy_cache(from_config=master, to_config=cfg)
        if self.trusted is None:
            full = self.compose(master, overrides)
            self.trusted = OmegaConf.to_yaml(full) == OmegaConf.to_yaml(cfg)
            return full
        return cfg


class _NotDerivable(Exception):
    pass


def _derive(first: DictConfig, first_overrides: list[str], overrides: list[str]) -> DictConfig:
    """The config of a job whose ``overrides`` differ from the first job's in values only."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    mine, theirs = parser.parse_overrides(overrides), parser.parse_overrides(first_overrides)
    if [o.key_or_group for o in mine] != [o.key_or_group for o in theirs]:
        raise _NotDerivable
    groups = set(first.hydra.runtime.choices)
    changes = []
    for o, t in zip(mine, theirs, strict=True):
        if o.input_line == t.input_line:
            continue
        key = o.key_or_group
        plain = not (o.is_add() or o.is_delete() or o.is_force_add() or o.is_sweep_override())
        if not plain or o.package is not None or key in groups or key.startswith("hydra"):
            raise _NotDerivable
        value = o.value()
        if isinstance(value, dict) or OmegaConf.select(first, key, default=_NotDerivable) is (
            _NotDerivable
        ):
            raise _NotDerivable
        changes.append((key, value))
    cfg = copy.deepcopy(first)
    for key, value in changes:
        OmegaConf.update(cfg, key, value, merge=True)
    job = cfg.hydra.job
    with open_dict(cfg.hydra):
        cfg.hydra.overrides.task = list(overrides)
        dirname = job.config.override_dirname
        lines = sorted(o.input_line for o in mine if o.key_or_group not in dirname.exclude_keys)
        job.override_dirname = dirname.item_sep.join(lines).replace("=", dirname.kv_sep)
    return cfg


# --------------------------------------------------------------------------------------------
# A job of a sweep
# --------------------------------------------------------------------------------------------
@dataclass
class Job:
    """One job of the sweep: its config, directory, built pieces and, once it has ended, its
    :class:`JobReturn`."""

    idx: int
    overrides: list[str]
    cfg: DictConfig  # with hydra
    reason: str | None = None  # why it runs in turn (None: it may stack)
    hydra_cfg: Any = None  # HydraConfig's copy of the job's config
    run_dir: Path | None = None
    task_cfg: DictConfig | None = None
    table: Any = None
    plan: Any = None
    dm: Any = None
    module: Any = None
    ret: JobReturn | None = None
    # while training in a stack
    opt: Any = None  # a torch optimizer of the job's own: its lr, its schedule, its state
    sched: Any = None
    loggers: list[Any] = field(default_factory=list)
    event_writers: list[Any] = field(default_factory=list)  # TensorBoard's file writers
    other_loggers: list[Any] = field(default_factory=list)
    patience: int = 0
    es_best: float = math.inf
    es_wait: int = 0
    stopped_epoch: int = 0
    ck_best: float = math.inf
    ck_epoch: int = -1
    ck_step: int = -1
    best_row: Tensor | None = None
    best_unsaved: bool = False
    last_finite: float | None = None
    last_saved: bool = False
    epoch_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"#{self.idx}"


def _job_return(job: Job, value: Any) -> JobReturn:
    ret = JobReturn()
    task_cfg = job.task_cfg if job.task_cfg is not None else _task_cfg(job.cfg)
    ret.cfg = task_cfg
    ret.hydra_cfg = job.hydra_cfg  # set_config's own copy, which nothing changes after
    ret.overrides = list(job.overrides)
    ret.working_dir = os.getcwd()
    ret.task_name = job.cfg.hydra.job.name
    ret.status = JobStatus.COMPLETED
    ret.return_value = value
    return ret


def _task_cfg(cfg: DictConfig) -> DictConfig:
    """The job's config without ``hydra``, as ``run_job`` hands it to the task (a copy of
    its own: ``masked_copy`` copies the nodes, at half a deep copy's cost)."""
    task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.set_struct(task_cfg, True)
    return task_cfg


def _failed_value(job: Job) -> Any:
    """What a failed job returns to the sweeper: NaN for a search, else None (as ``train``)."""
    return float("nan") if job.cfg.get("optimized_metric") else None


# --------------------------------------------------------------------------------------------
# The launcher
# --------------------------------------------------------------------------------------------
class VectorizedJobs(JobsInTurn):
    """Hydra launcher: the sweep's jobs grouped, each group trained as one stacked network
    (:class:`StackedGroup`); the jobs that cannot stack run in turn (:class:`JobsInTurn`).

    Args:
        memory_mb: a group whose estimated memory is larger is split into groups that fit.
        max_group: at most this many jobs in one group (None: no limit but memory).
    """

    def __init__(self, memory_mb: float = 1024, max_group: int | None = None) -> None:
        super().__init__()
        self.memory_mb, self.max_group = float(memory_mb), max_group

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if not isinstance(hydra_context.config_loader, DerivingLoader):
            hydra_context.config_loader = DerivingLoader(hydra_context.config_loader)

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        assert self.config is not None and self.context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = []
        for idx, overrides in enumerate(job_overrides):
            cfg = self.context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = idx + initial_job_idx
            jobs.append(Job(idx + initial_job_idx, list(overrides), cfg))
        print(f"Launching {len(jobs)} jobs, stacked where they can share one network", flush=True)
        groups: dict[str, list[Job]] = {}
        for job in jobs:
            cfg = job.cfg
            # The job's directory, as Hydra's run_job sets it; the job's Hydra config then.
            out = os.path.join(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir))
            with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
                cfg.hydra.runtime.output_dir = os.path.abspath(out)
            HydraConfig.instance().set_config(cfg)
            job.hydra_cfg = HydraConfig.instance().cfg
            try:
                job.reason = alone_reason(cfg)
                if job.reason is None:
                    job.task_cfg = _task_cfg(cfg)
                    groups.setdefault(group_key(job.task_cfg), []).append(job)
            except Exception:  # noqa: BLE001 — the ordinary run reports it, in one line
                job.reason = "its config does not resolve"
        for members in groups.values():
            if len(members) == 1:
                members[0].reason = "a group of one"
        # Units in the order of their first job: a group, or one job in turn.
        units: list[list[Job]] = [ms for ms in groups.values() if len(ms) > 1]
        units += [[j] for j in jobs if j.reason is not None]
        units.sort(key=lambda u: u[0].idx)
        for unit in units:
            if unit[0].reason is not None:
                self.in_turn(unit[0])
            else:
                self.stacked(unit)
        HydraConfig.instance().set_config(self.config)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [job.ret for job in jobs]  # type: ignore[misc]

    # ---- a job in turn ------------------------------------------------------------------------
    def in_turn(self, job: Job) -> None:
        """The job run as the default launcher runs it, after a line saying why."""
        print(
            f"  {job.name}: {' '.join(filter_overrides(job.overrides))} — in turn ({job.reason})",
            flush=True,
        )
        job.ret = self.run_one(job.idx, job.overrides, job.cfg)

    def run_one(self, idx: int, overrides: list[str], cfg: DictConfig) -> JobReturn:
        """One job through Hydra's ``run_job``, as :class:`JobsInTurn` runs each."""
        from hydra.core.utils import run_job

        from handprop.trainer.sweep import SweepSummary

        assert self.context is not None and self.config is not None
        try:
            ret = run_job(
                hydra_context=self.context,
                task_function=self.task_function,
                config=cfg,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        except OSError as e:
            err = as_machine_error(e, self.config.hydra.sweep.dir)
            if not isinstance(err, MachineError):
                raise
            report(err, verbose_errors(cfg))
            for cb in self.context.callbacks.callbacks:
                if isinstance(cb, SweepSummary):
                    cb.unstarted_job(list(overrides), err)
            ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            ret.return_value = float("nan") if cfg.get("optimized_metric") else None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    # ---- a stacked group ----------------------------------------------------------------------
    def stacked(self, jobs: list[Job]) -> None:
        """Start each job (directory, ``.hydra/``, build), then train the built ones in
        groups that fit the memory budget."""
        differ = sorted(
            {o.split("=", 1)[0] for j in jobs for o in filter_overrides(j.overrides)}
            - {
                o.split("=", 1)[0]
                for o in set.intersection(*(set(filter_overrides(j.overrides)) for j in jobs))
            }
        )
        print(
            f"  {', '.join(j.name for j in jobs)}: one stacked network of {len(jobs)} jobs"
            + (f" ({', '.join(differ)} per job)" if differ else ""),
            flush=True,
        )
        ready = [job for job in jobs if self.start(job)]
        if not ready:
            return
        per_job = job_bytes(ready[0].table, ready[0].plan, ready[0].task_cfg)
        size = max(1, int(self.memory_mb * 2**20 // max(per_job, 1)))
        if self.max_group:
            size = min(size, int(self.max_group))
        parts = [ready[i : i + size] for i in range(0, len(ready), size)]
        if len(parts) > 1:
            print(
                f"    split into {len(parts)} groups of up to {size} job{'s' * (size > 1)} "
                f"(~{per_job / 2**20:.2f} "
                f"MB a job; hydra.launcher.memory_mb={self.memory_mb:g})",
                flush=True,
            )
        from handprop.trainer.stacked import StackedGroup

        for part in parts:
            StackedGroup(part, self).run()

    def start(self, job: Job) -> bool:
        """The job's directory, ``.hydra/`` and ``train.log`` (as Hydra's ``run_job`` and the
        task make them), then its data, plan and module; False (and the job ended, failed)
        when any of it fails."""
        from handprop.trainer.build import build, plan_run
        from handprop.trainer.rundir import write_hydra_files

        assert self.context is not None and job.task_cfg is not None
        cfg = job.cfg
        HydraConfig.instance().cfg = job.hydra_cfg  # (set_config's copy, made in launch)
        job.run_dir = Path(cfg.hydra.runtime.output_dir)
        try:
            with writing(job.run_dir):
                job.run_dir.mkdir(parents=True, exist_ok=True)
                (job.run_dir / f"{cfg.hydra.job.name}.log").touch()
        except MachineError as err:
            from handprop.trainer.sweep import SweepSummary

            report(err, verbose_errors(cfg))
            for cb in self.context.callbacks.callbacks:
                if isinstance(cb, SweepSummary):
                    cb.unstarted_job(list(job.overrides), err)
            job.ret = _job_return(job, _failed_value(job))
            return False
        self.context.callbacks.on_job_start(config=cfg, task_function=self.task_function)
        try:
            write_hydra_files(job.run_dir, job.task_cfg, job.hydra_cfg.hydra)
            job.table, job.plan = plan_run(job.task_cfg)
            job.dm, job.module = build(job.task_cfg, job.table, job.plan)
        except Exception as e:  # noqa: BLE001 — one line per failing job, as train_main
            self.fail(job, e)
            return False
        return True

    def fail(self, job: Job, e: BaseException) -> None:
        """End ``job`` as failed: one line, ``error.json``, its return (as ``train_main``)."""
        assert job.run_dir is not None
        err = as_machine_error(e, job.run_dir)
        report(err, verbose_errors(job.cfg) or not is_known(err))
        with suppress(MachineError):
            write_json_atomic(job.run_dir / "error.json", {"error": f"{type(err).__name__}: {err}"})
        self.end(job, _failed_value(job))

    def end(self, job: Job, value: Any) -> None:
        """``job``'s return, and Hydra's ``on_job_end`` callbacks."""
        assert self.context is not None
        HydraConfig.instance().cfg = job.hydra_cfg
        job.ret = _job_return(job, value)
        self.context.callbacks.on_job_end(config=job.cfg, job_return=job.ret)
