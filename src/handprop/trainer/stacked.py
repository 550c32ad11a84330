"""A group of sweep jobs trained as one stacked network (:class:`StackedGroup`), for the
vectorised launcher (:mod:`handprop.trainer.vectorized`): each job's metrics at once
(:func:`stacked_metrics`) and each job's Lightning-format checkpoints (:func:`loops_state`)."""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from handprop.trainer.errors import ConfigError, Diverged
from handprop.trainer.files import write_json_atomic
from handprop.trainer.vectorized import Job, VectorizedJobs

# --------------------------------------------------------------------------------------------
# The metrics of every job at once
# --------------------------------------------------------------------------------------------
#: Above this many comparisons, AUROC is computed job by job (torchmetrics) instead of by
#: comparing every positive with every negative of every job at once.
PAIRWISE_LIMIT = 20_000_000


def _safe(num: Tensor, den: Tensor) -> Tensor:
    """``num / den``, 0 where ``den`` is 0 (torchmetrics' zero_division)."""
    return torch.where(den == 0, torch.zeros_like(num), num / den.clamp_min(1e-30))


def stacked_metrics(
    task: str,
    cost: torch.nn.Module,
    z: Tensor,
    y: Tensor,
    y_scale: Tensor,
    y_shift: Tensor,
    num_classes: int,
) -> dict[str, Tensor]:
    """:meth:`Task.metrics <handprop.trainer.task.Task.metrics>` of every job at once: outputs
    ``z`` (J, N, out) against targets ``y`` (J, N, 1) or class indices (J, N); each value (J,).
    ``y_scale``, ``y_shift`` (J,): each job's regression target scaling. Same definitions as
    torchmetrics' (tests/test_vectorized.py compares them)."""
    from handprop import functional as F
    from handprop.networks.stack import per_model_value

    out = {"loss": per_model_value(cost, z, y)}
    J, N = z.shape[:2]
    if task == "regression":
        scale, shift = y_scale.view(J, 1, 1), y_shift.view(J, 1, 1)
        pred = (z * scale + shift).squeeze(-1)
        true = (y * scale + shift).squeeze(-1)
        diff = pred - true
        out["mse"] = diff.square().mean(1)
        out["mae"] = diff.abs().mean(1)
        sum_obs, sum_sq = true.sum(1), (true * true).sum(1)
        residual = true - pred
        rss = (residual * residual).sum(1)
        tss = sum_sq - sum_obs * (sum_obs / N)
        cond_rss = ~torch.isclose(rss, torch.zeros_like(rss), atol=1e-4)
        cond_tss = ~torch.isclose(tss, torch.zeros_like(tss), atol=1e-4)
        r2 = torch.ones_like(rss)
        r2 = torch.where(cond_rss & cond_tss, 1 - rss / torch.where(cond_tss, tss, 1), r2)
        out["r2"] = torch.where(cond_rss & ~cond_tss, torch.zeros_like(r2), r2)
    elif task == "binary":
        p = F.sigmoid(z).squeeze(-1)
        labels = y.squeeze(-1) > 0.5
        pred = p > 0.5
        out["accuracy"] = (pred == labels).float().mean(1)
        tp = (pred & labels).sum(1).float()
        fp = (pred & ~labels).sum(1).float()
        fn = (~pred & labels).sum(1).float()
        out["f1"] = _safe(2 * tp, 2 * tp + fp + fn)
        out["auroc"] = _auroc(p, labels)
    elif task == "multiclass":
        pred = z.argmax(-1)
        out["accuracy"] = (pred == y).float().mean(1)
        P = torch.nn.functional.one_hot(pred, num_classes)
        T = torch.nn.functional.one_hot(y, num_classes)
        tp = (P * T).sum(1).float()
        fp, fn = P.sum(1).float() - tp, T.sum(1).float() - tp
        f1 = _safe(2 * tp, 2 * tp + fp + fn)
        w = (tp + fp + fn > 0).float()
        out["f1_macro"] = _safe((f1 * w).sum(-1), w.sum(-1))
    else:
        raise ValueError(f"stacked metrics: task={task} does not stack")
    return out


def _auroc(p: Tensor, labels: Tensor) -> Tensor:
    """Each job's area under the ROC curve: the share of (positive, negative) pairs that the
    scores ``p`` (J, N) order rightly, ties counting ½ (what torchmetrics' exact curve
    integrates to); 0 for a job without positives or negatives, as torchmetrics."""
    J, N = p.shape
    pos, neg = labels.float(), (~labels).float()
    pairs = pos.sum(1) * neg.sum(1)
    if J * N * N <= PAIRWISE_LIMIT:
        gt = (p.unsqueeze(2) > p.unsqueeze(1)).float()
        eq = (p.unsqueeze(2) == p.unsqueeze(1)).float()
        w = pos.unsqueeze(2) * neg.unsqueeze(1)
        return _safe(((gt + 0.5 * eq) * w).sum((1, 2)), pairs)
    from torchmetrics.functional.classification import binary_auroc

    return torch.stack(
        [
            binary_auroc(p[j], labels[j].long(), validate_args=False)
            if pairs[j] > 0
            else torch.zeros((), device=p.device)
            for j in range(J)
        ]
    )


# --------------------------------------------------------------------------------------------
# A group trained as one stacked network
# --------------------------------------------------------------------------------------------
_LOOP_TEMPLATE: dict[str, Any] | None = None


def loop_template() -> dict[str, Any]:
    """Lightning's loop state (``checkpoint["loops"]``) of a Trainer that has not run: what
    a job's ``last.ckpt`` fills in, so that ``ckpt_path=`` resumes it as Lightning's own."""
    global _LOOP_TEMPLATE
    if _LOOP_TEMPLATE is None:
        import lightning as L

        t = L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        _LOOP_TEMPLATE = {
            "fit_loop": t.fit_loop.state_dict(),
            "validate_loop": t.validate_loop.state_dict(),
            "test_loop": t.test_loop.state_dict(),
            "predict_loop": t.predict_loop.state_dict(),
        }
    return copy.deepcopy(_LOOP_TEMPLATE)


def _count(progress: dict[str, Any], **values: int) -> None:
    for key, v in values.items():
        if key in progress:
            progress[key] = v


def loops_state(
    epochs: int, epoch_ended: bool, chunks: int, chunks_this_epoch: int, updates: int, whole: bool
) -> dict[str, Any]:
    """The loop state Lightning saves after ``epochs`` epochs (``epoch_ended``: at the end of
    training; else at the end of the last epoch, before Lightning counts it completed),
    ``chunks`` Lightning steps (``chunks_this_epoch`` in the last epoch) and ``updates``
    optimiser updates; ``whole``: the last epoch went through all its batches."""
    loops = loop_template()
    fit = loops["fit_loop"]
    fit["epoch_loop.state_dict"]["_batches_that_stepped"] = chunks
    batches = fit["epoch_loop.batch_progress"]
    _count(batches["total"], ready=chunks, completed=chunks, started=chunks, processed=chunks)
    n = chunks_this_epoch
    _count(batches["current"], ready=n, completed=n, started=n, processed=n)
    batches["is_last_batch"] = whole
    steps = fit["epoch_loop.manual_optimization.optim_step_progress"]
    _count(steps["total"], ready=updates, completed=updates)
    done = epochs if epoch_ended else epochs - 1
    for part in ("total", "current"):
        _count(
            fit["epoch_progress"][part],
            ready=epochs,
            started=epochs,
            processed=epochs,
            completed=done,
        )
    return loops


#: With ``progress=true``, a group's progress line at most this often (the in-turn launcher's
#: plain progress lines are as far apart).
PROGRESS_SECONDS = 10.0


class StackedGroup:
    """Jobs of one group, built, trained as one :class:`~handprop.networks.MLPStack`.

    The training is the ordinary run's (:class:`~handprop.trainer.model.HandpropModule` and
    Lightning's loop) written out for the stack: each epoch's shuffled batches (each job's own
    order), chunks of ``steps_per_call`` updates whose losses are read to the host once, the
    divergence check, ``train/loss`` every ``log_every_n_steps`` updates, and at each epoch's
    end the validation metrics, the epoch-interval schedules, early stopping, then the
    checkpoints, in Lightning's order.
    """

    def __init__(self, jobs: list[Job], launcher: VectorizedJobs) -> None:
        self.jobs, self.launcher = jobs, launcher
        self.t0 = time.perf_counter()
        cfg = jobs[0].task_cfg
        assert cfg is not None
        self.cfg, self.plan = cfg, jobs[0].plan
        accelerator = str(cfg.trainer.accelerator)
        cuda = accelerator in ("gpu", "cuda") or (
            accelerator == "auto" and torch.cuda.is_available()
        )
        self.device = torch.device("cuda" if cuda else "cpu")

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        from handprop.networks.stack import contiguous_stack, to_stack
        from handprop.optim import STACKED
        from handprop.trainer.startup import set_threads

        jobs, p, cfg = self.jobs, self.plan, self.cfg
        for job in jobs:
            module, cfg_of_job = job.module, job.task_cfg
            whole = torch.nn.Parameter(
                torch.zeros(sum(q.numel() for q in module.net.parameters()), device=self.device)
            )
            job.opt = module.make_optimizer([whole])  # the job's own: lr, schedule, state
            job.sched = module.scheduler_fn(job.opt) if module.scheduler_fn is not None else None
            job.opt.step()  # (no gradient: nothing moves; the schedules see a step was made)
            job.loggers = self.make_loggers(job)
            for logger in job.loggers:  # what Lightning logs at the start of fit (the
                logger.log_hyperparams(dict(module.hparams))  # file: when it finalizes)
            tb = [lg for lg in job.loggers if isinstance(lg, TensorBoardLogger)]
            job.event_writers = [lg.experiment.file_writer for lg in tb]
            job.other_loggers = [lg for lg in job.loggers if lg not in tb]
            job.patience = int(cfg_of_job.callbacks.early_stopping.patience)
        self.stack = to_stack([job.module.net for job in jobs]).to(self.device)
        self.flat = contiguous_stack(list(self.stack.parameters()))
        self.opt = STACKED[type(jobs[0].opt)]([self.flat], **self.hyper(jobs))
        set_threads(cfg.num_threads, p.batch_size * len(jobs), self.stack)

        def stacked(split: str) -> tuple[Tensor, Tensor] | None:
            if not jobs[0].dm.has(split):
                return None
            parts = [job.dm.split(split, device="cpu") for job in jobs]
            X = torch.stack([x for x, _ in parts]).to(self.device)
            return X, torch.stack([y for _, y in parts]).to(self.device)

        self.data = {s: stacked(s) for s in ("train", "val", "test")}
        task = jobs[0].module.task
        self.cost, self.task_name, self.num_classes = task.cost, task.name, task.num_classes
        self.y_scale = torch.stack([j.module.task.y_scale.float() for j in jobs]).to(self.device)
        self.y_shift = torch.stack([j.module.task.y_shift.float() for j in jobs]).to(self.device)
        self.best = self.flat.detach().clone()
        self.updates, self.epochs, self.chunks, self.chunks_this_epoch = 0, 0, 0, 0
        self.whole_epoch = True
        self.last_write = self.last_line = time.monotonic()
        self.names = f"{jobs[0].name}–{jobs[-1].name}"

    def hyper(self, jobs: Sequence[Job]) -> dict[str, list[float]]:
        """Each job's hyperparameters, read from its own torch optimizer (defaults included;
        the learning rate as its schedule left it)."""
        groups = [job.opt.param_groups[0] for job in jobs]
        names = self.opt_names(groups[0])
        out: dict[str, list[float]] = {}
        for name in names:
            if name in ("beta1", "beta2"):
                out[name] = [float(g["betas"][name == "beta2"]) for g in groups]
            else:
                out[name] = [float(g[name]) for g in groups]
        return out

    @staticmethod
    def opt_names(group: dict[str, Any]) -> list[str]:
        names = [
            k
            for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "alpha", "eps")
            if k in group
        ]
        if "centered" in group:
            names.append("centered")
        if "betas" in group:
            names += ["beta1", "beta2"]
        return names

    def make_loggers(self, job: Job) -> list[Any]:
        from lightning.pytorch import loggers

        from handprop.trainer.startup import fast_tensorboard_checksums

        name = self.cfg.logger.name
        if name == "tensorboard":
            fast_tensorboard_checksums()
            return [
                loggers.TensorBoardLogger(
                    save_dir=str(job.run_dir),
                    name="tb",
                    version="",
                    default_hp_metric=False,
                    max_queue=1000,
                )
            ]
        if name == "csv":
            return [loggers.CSVLogger(save_dir=str(job.run_dir), name="csv", version="")]
        return []

    # ---- the run ------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self.setup()
            self.train()
        except Exception as e:  # noqa: BLE001 — the group's failure: each unfinished job's
            for job in self.jobs:
                if job.ret is None:
                    self.launcher.fail(job, e)

    def train(self) -> None:
        cfg, p = self.cfg, self.plan
        max_epochs = int(cfg.trainer.max_epochs)
        for epoch in range(max_epochs):
            if not self.jobs:
                return
            stop_all = self.epoch(epoch)
            stopping = self.epoch_end(epoch)
            last = (
                stop_all
                or epoch == max_epochs - 1
                or (p.max_steps > 0 and self.updates >= p.max_steps)
            )
            done = list(range(len(self.jobs))) if last else stopping
            if done:
                self.finish(done)
        if self.jobs:
            self.finish(list(range(len(self.jobs))))

    def epoch(self, epoch: int) -> bool:
        """One epoch of updates; True when ``max_steps`` ended it."""
        p, cfg = self.plan, self.cfg
        for job in self.jobs:
            if p.log_lr:
                self.log(job, {"lr": job.opt.param_groups[0]["lr"]})
        X, y = self.data["train"]  # type: ignore[misc]
        if cfg.gd.shuffle and not cfg.debug.overfit_batches:
            n = X.shape[1]
            order = torch.stack(
                [
                    torch.randperm(
                        n, generator=torch.Generator().manual_seed(job.dm.seed * 100_003 + epoch)
                    )
                    for job in self.jobs
                ]
            ).to(self.device)
            X = torch.take_along_dim(X, order.unsqueeze(-1), 1)
            y = torch.take_along_dim(y, order.view(*order.shape, *([1] * (y.dim() - 2))), 1)
        self.shuffled = (X, y)
        bs, n = p.batch_size, X.shape[1]
        nb = -(-n // bs)
        K = p.steps_per_call
        self.epoch_sum = torch.zeros(len(self.jobs), dtype=torch.float64)
        self.epoch_rows = 0
        self.chunks_this_epoch = 0
        self.whole_epoch = True
        every = int(cfg.trainer.log_every_n_steps)
        clip = cfg.trainer.gradient_clip_val
        step_sched = p.scheduler_interval == "step" and p.scheduler is not None
        for c0 in range(0, nb, K):
            losses, rows, first = [], [], self.updates
            for b in range(c0, min(c0 + K, nb)):
                X, y = self.shuffled
                x, t = X[:, b * bs : (b + 1) * bs], y[:, b * bs : (b + 1) * bs]
                losses.append(self.stack.backprop(x, t, self.cost))
                if clip:
                    norms = self.flat.grad.norm(dim=1, keepdim=True)
                    self.flat.grad.mul_((float(clip) / (norms + 1e-6)).clamp_(max=1.0))
                self.opt.step()
                if step_sched:
                    for job in self.jobs:
                        job.sched.step()
                    self.opt.set_hyper("lr", [j.opt.param_groups[0]["lr"] for j in self.jobs])
                rows.append(x.shape[1])
                self.updates += 1
                if self.updates == p.max_steps:
                    break
            self.chunks += 1
            self.chunks_this_epoch += 1
            self.after_chunk(torch.stack(losses), rows, first, every)
            if self.updates == p.max_steps:
                self.whole_epoch = c0 + K >= nb and len(rows) == min(K, nb - c0)
                return True
            if not self.jobs:
                return False
        return False

    def after_chunk(self, losses: Tensor, rows: list[int], first: int, every: int) -> None:
        """A chunk's losses (updates, J), read to the host once: divergence, the epoch's
        mean, ``train/loss`` every ``every`` updates."""
        finite = torch.isfinite(losses).all(0).tolist()
        weights = torch.tensor(rows, dtype=torch.float64, device=losses.device)
        self.epoch_sum += (losses.double() * weights.unsqueeze(1)).sum(0).cpu()
        values = losses.t().tolist()  # per job: one copy to the host
        failed = []
        for pos, (job, v) in enumerate(zip(self.jobs, values, strict=True)):
            if not finite[pos]:
                bad = next(i for i, x in enumerate(v) if not math.isfinite(x))
                last = v[bad - 1] if bad else job.last_finite
                path = job.run_dir / "checkpoints" / "last.ckpt"  # type: ignore[operator]
                kept = (
                    f" The last good checkpoint: {path}"
                    if job.last_saved and path.is_file()
                    else " No checkpoint was saved before it."
                )
                lr = job.opt.param_groups[0]["lr"]
                failed.append((pos, Diverged(first + bad, v[bad], last, lr, kept)))
                continue
            job.last_finite = v[-1]
            for i in range(-first % every, len(v), every):
                self.log(job, {"train/loss": v[i]}, first + i)
        self.epoch_rows += sum(rows)
        if failed:
            for pos, err in failed:
                self.close_loggers(self.jobs[pos], "failed")
                self.launcher.fail(self.jobs[pos], err)
            self.keep([i for i in range(len(self.jobs)) if i not in {f[0] for f in failed}])

    def keep(self, positions: list[int]) -> None:
        """Keep the jobs at ``positions`` in the stack (the others have ended)."""
        from handprop.networks.stack import select_models

        if len(positions) == len(self.jobs):
            return
        self.jobs = [self.jobs[i] for i in positions]
        if not positions:
            return
        index = torch.tensor(positions, device=self.device)
        self.flat = select_models(self.stack, self.flat, index)
        self.opt.select_(index, [self.flat])
        for s, pair in self.data.items():
            if pair is not None:
                self.data[s] = (pair[0].index_select(0, index), pair[1].index_select(0, index))
        X, y = self.shuffled
        self.shuffled = (X.index_select(0, index), y.index_select(0, index))
        self.y_scale = self.y_scale.index_select(0, index)
        self.y_shift = self.y_shift.index_select(0, index)
        self.best = self.best.index_select(0, index)
        self.epoch_sum = self.epoch_sum.index_select(0, index.cpu())

    def metrics(
        self, split: str, flat: Tensor | None = None, positions: list[int] | None = None
    ) -> list[dict[str, float]]:
        """Each job's metrics on ``split`` (those at ``positions``, with the weights ``flat``
        (J', P); default: every job, its current weights)."""
        from handprop.networks.stack import flat_forward

        X, y = self.data[split]  # type: ignore[misc]
        scale, shift = self.y_scale, self.y_shift
        with torch.no_grad():
            if positions is not None:
                index = torch.tensor(positions, device=self.device)
                X, y = X.index_select(0, index), y.index_select(0, index)
                scale, shift = scale.index_select(0, index), shift.index_select(0, index)
            z = self.stack(X) if flat is None else flat_forward(self.stack, flat, X)
            values = stacked_metrics(
                self.task_name, self.cost, z, y, scale, shift, self.num_classes
            )
        names = list(values)
        table = torch.stack([values[k].float() for k in names], 1).tolist()
        return [dict(zip(names, row, strict=True)) for row in table]

    def epoch_end(self, epoch: int) -> list[int]:
        """Validation, schedules, early stopping and checkpoints of every job (Lightning's
        order); the positions of the jobs that stop early."""
        p, cfg = self.plan, self.cfg
        self.epochs += 1
        losses = (self.epoch_sum / max(self.epoch_rows, 1)).tolist()
        vals = self.metrics("val") if self.data["val"] is not None else None
        es, ck = cfg.callbacks.early_stopping, cfg.callbacks.checkpoint
        stopping, improved = [], []
        es_on, ck_on, monitor = bool(es.enabled), bool(ck.enabled), p.monitor
        by_epoch = p.scheduler_interval == "epoch"
        for pos, job in enumerate(self.jobs):
            row = {"epoch": epoch, "train/epoch_loss": losses[pos]}
            if vals is not None:
                row |= {f"val/{k}": v for k, v in vals[pos].items()}
            job.epoch_metrics |= row
            self.log(job, row)
            value = row[monitor]
            if by_epoch and job.sched is not None:
                if isinstance(job.sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    job.sched.step(value)
                else:
                    job.sched.step()
            if es_on:  # Lightning's EarlyStopping: min mode, min_delta 0, finite check
                current = float(np.float32(value))  # the float32 its tensors compare
                if not math.isfinite(current):
                    stopping.append(pos)
                elif current < job.es_best:
                    job.es_best, job.es_wait = current, 0
                else:
                    job.es_wait += 1
                    if job.es_wait >= job.patience:
                        stopping.append(pos)
                if stopping and stopping[-1] == pos:
                    job.stopped_epoch = epoch
            if ck_on and value < job.ck_best:  # NaN never improves
                job.ck_best, job.ck_epoch, job.ck_step = value, epoch, self.updates
                job.best_unsaved = True
                improved.append(pos)
        if p.scheduler is not None and p.scheduler_interval == "epoch":
            self.opt.set_hyper("lr", [j.opt.param_groups[0]["lr"] for j in self.jobs])
        if improved:
            mask = torch.zeros(len(self.jobs), 1, dtype=torch.bool, device=self.device)
            mask[improved] = True
            self.best = torch.where(mask, self.flat.detach(), self.best)
        if cfg.progress and time.monotonic() - self.last_line >= PROGRESS_SECONDS:
            self.last_line = time.monotonic()
            print(
                f"    {self.names}: epoch {epoch + 1}/{cfg.trainer.max_epochs}, "
                f"{self.updates} updates, {len(self.jobs) - len(stopping)} jobs training",
                file=sys.stderr,
                flush=True,
            )
        if ck.enabled:
            due = time.monotonic() - self.last_write >= ck.every_seconds
            if due:
                for pos in range(len(self.jobs)):
                    self.save(pos, final=False)
                self.last_write = time.monotonic()
        return stopping

    # ---- a job's end --------------------------------------------------------------------------
    def finish(self, positions: list[int]) -> None:
        """The jobs at ``positions`` have ended training: last checkpoints, the metrics of
        their best (or last) weights, ``metrics.json``, HParams; then they leave the stack."""
        from handprop.trainer.run import hparams_summary, log_hparams

        cfg = self.cfg
        ck = cfg.callbacks.checkpoint
        if ck.enabled:
            for pos in positions:
                self.save(pos, final=True)
        index = torch.tensor(positions, device=self.device)
        weights = self.flat.detach().index_select(0, index)
        if ck.enabled and ck.restore_best:
            has_best = torch.tensor(
                [self.jobs[i].ck_epoch >= 0 for i in positions], device=self.device
            ).unsqueeze(1)
            weights = torch.where(has_best, self.best.index_select(0, index), weights)
        rows = {
            s: self.metrics(s, weights, positions)
            for s in ("train", "val", "test")
            if self.data[s] is not None
        }
        elapsed = round(time.perf_counter() - self.t0, 3)
        for k, pos in enumerate(positions):
            job = self.jobs[pos]
            split_rows = {s: r[k] for s, r in rows.items()}
            metrics: dict[str, float] = {
                f"{s}/{m}": v for s, r in split_rows.items() for m, v in r.items()
            }
            metrics["epochs"] = self.epochs
            metrics["global_step"] = self.updates
            metrics["train_seconds"] = elapsed
            try:
                # As the ordinary run: Lightning finalizes the loggers at the end of fit, then
                # the run logs the test metrics and the HParams.
                self.close_loggers(job, "success")
                job.event_writers, job.other_loggers = [], job.loggers  # (Lightning's own now)
                final = {k2: v for k2, v in metrics.items() if "/" in k2}
                self.log(job, {k2: v for k2, v in final.items() if k2.startswith("test/")})
                log_hparams(
                    SimpleNamespace(loggers=job.loggers),
                    hparams_summary(job.task_cfg, job.plan, job.dm.num_train),
                    final,
                    self.updates,
                )
                self.close_loggers(job, None)
                write_json_atomic(job.run_dir / "metrics.json", metrics)  # type: ignore[operator]
                target = job.cfg.get("optimized_metric")
                if target and target not in metrics:
                    raise ConfigError(
                        f"optimized_metric={target} is not a metric of this run; choose one of "
                        f"{sorted(k2 for k2 in metrics if '/' in k2)}"
                    )
            except Exception as e:  # noqa: BLE001 — that job fails alone
                self.launcher.fail(job, e)
                continue
            self.launcher.end(job, float(metrics[target]) if target else metrics)
        self.keep([i for i in range(len(self.jobs)) if i not in set(positions)])

    def close_loggers(self, job: Job, status: str | None) -> None:
        """Finalize the job's loggers (``status``), or (None) write what was logged after
        that and close their files."""
        from lightning.pytorch.loggers import TensorBoardLogger

        for logger in job.loggers:
            with suppress(Exception):
                if status is not None:
                    logger.finalize(status)
                elif isinstance(logger, TensorBoardLogger):
                    logger.experiment.close()
                else:
                    logger.save()

    def log(self, job: Job, values: dict[str, float], step: int | None = None) -> None:
        """``values`` at ``step`` to the job's loggers. TensorBoard: the scalars of one step
        in one event, written straight to its file writer (the same ``simple_value`` scalars
        ``add_scalar`` writes, at a tenth of its cost: a job logs hundreds)."""
        step = self.updates if step is None else step
        if job.event_writers:
            from tensorboard.compat.proto.summary_pb2 import Summary

            summary = Summary(
                value=[Summary.Value(tag=k, simple_value=float(v)) for k, v in values.items()]
            )
            for writer in job.event_writers:
                writer.add_summary(summary, step)
        for logger in job.other_loggers:
            logger.log_metrics(values, step=step)

    # ---- checkpoints --------------------------------------------------------------------------
    def module_state(self, job: Job, row: Tensor) -> dict[str, Tensor]:
        """The job's ``HandpropModule`` state dict with the weights ``row`` (P,)."""
        module, offset = job.module, 0
        with torch.no_grad():
            for q in module.net.parameters():
                n = q.numel()
                q.copy_(row[offset : offset + n].view_as(q))
                offset += n
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def save(self, pos: int, final: bool) -> None:
        """The job's ``last.ckpt`` (and ``best.ckpt`` when its best weights changed), as
        :class:`~handprop.trainer.checkpoints.Checkpoints` writes them: ``final`` at the end of
        training, else at an epoch's end."""
        import lightning as L
        from lightning.pytorch import callbacks as cb
        from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

        from handprop.trainer.checkpoints import AtomicCheckpointIO

        job, cfg = self.jobs[pos], self.cfg
        io = AtomicCheckpointIO()
        folder = job.run_dir / "checkpoints"  # type: ignore[operator]
        hparams = dict(job.module.hparams)
        best_weights = self.module_state(job, self.best[pos]) if job.ck_epoch >= 0 else None
        if job.best_unsaved and best_weights is not None:
            io.save_checkpoint(
                {
                    "state_dict": best_weights,
                    "hyper_parameters": hparams,
                    "epoch": job.ck_epoch,
                    "global_step": job.ck_step,
                    "pytorch-lightning_version": L.__version__,
                },
                folder / "best.ckpt",
            )
            job.best_unsaved = False
        callbacks: dict[str, Any] = {}
        es = cfg.callbacks.early_stopping
        if es.enabled:
            stop = cb.EarlyStopping(
                self.plan.monitor,
                patience=job.task_cfg.callbacks.early_stopping.patience,
                check_on_train_epoch_end=True,
            )
            stop.wait_count = job.es_wait
            stop.best_score = torch.tensor(job.es_best)
            if job.es_wait >= stop.patience or (final and job.stopped_epoch):
                stop.stopped_epoch = job.stopped_epoch
                stop.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
            callbacks[stop.state_key] = stop.state_dict()
        callbacks["Checkpoints"] = {
            "monitor": self.plan.monitor,
            "best_score": job.ck_best,
            "best_epoch": job.ck_epoch,
            "best_step": job.ck_step,
            "best_weights": best_weights,
        }
        whole = job.opt.param_groups[0]["params"][0]
        job.opt.state[whole] = {
            k: v.to(whole.device) if k != "step" else v
            for k, v in self.opt.model_state(pos).items()
        }
        ckpt = {
            "epoch": self.epochs if final else self.epochs - 1,
            "global_step": self.updates,
            "pytorch-lightning_version": L.__version__,
            "state_dict": self.module_state(job, self.flat.detach()[pos]),
            "loops": loops_state(
                self.epochs,
                final,
                self.chunks,
                self.chunks_this_epoch,
                self.updates,
                self.whole_epoch,
            ),
            "callbacks": callbacks,
            "optimizer_states": [job.opt.state_dict()],
            "lr_schedulers": [job.sched.state_dict()] if job.sched is not None else [],
            "hparams_name": "kwargs",
            "hyper_parameters": hparams,
            "epochs_done": self.epochs,
            # HandpropModule.on_save_checkpoint's: a job's checkpoint is written between epochs,
            # where the next epoch starts afresh (its sums are reset when it starts)
            "epoch_state": {
                "steps": 0,
                "loss_sum": 0.0,
                "rows": 0,
                "costs_sum": {},
                "costs_steps": 0,
                "last_finite": job.last_finite,
            },
        }
        io.save_checkpoint(ckpt, folder / "last.ckpt")
        job.opt.state.clear()
        job.last_saved = True
