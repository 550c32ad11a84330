"""What each place where handprop does Lightning's Trainer's work buys, side by side in one run.

The same fit (``handprop-train``'s own objects, from ``handprop.trainer.build.prepare``) with one
of handprop's shortcuts undone at a time, repetitions interleaved, medians reported:

* **shipped**: K = 64 updates per ``training_step``, the optimizer stepped directly, the epoch's
  metrics written into ``trainer.callback_metrics``, validation of the whole split at the
  epoch's end;
* **one update per training_step** (``steps_per_call=1``): Lightning's loop runs every update;
* **+ LightningOptimizer.step()**: each update also steps through Lightning's optimizer
  wrapper (``opt.step()``, as Lightning's manual-optimisation docs write it) instead of
  ``opt.optimizer.step()``;
* **+ self.log for the epoch metrics**: the epoch's metrics through ``LightningModule.log``
  instead of ``trainer.callback_metrics``;
* **+ Lightning's validation loop**: validation through ``validation_step`` on one batch of
  the whole split (``limit_val_batches=1.0``) instead of in ``on_train_epoch_end``.

Each row adds to the one above it. ``docs/architecture.md`` quotes the table.

    python scripts/bench_lightning.py            # digits 64-64-10, batch 32, 20 epochs, 5 reps
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from hydra import compose, initialize_config_module

from handprop.trainer.build import prepare
from handprop.trainer.model import HandpropModule

OVERRIDES = [
    "data=digits",
    "model.hidden=[64]",
    "gd.batch_size=32",
    "optimizer.lr=0.001",
    "trainer.max_epochs=20",
    "callbacks.early_stopping.enabled=false",
    "callbacks.checkpoint.enabled=false",
    "logger=none",
    "progress=false",
]


def lightning_step(self: HandpropModule, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """:meth:`HandpropModule.update` on the recursion path, stepping through Lightning's
    optimizer wrapper (its hooks, precision plugin and step counter) as stock code does."""
    opt = self.optimizers()
    loss = self.net.backprop(x, y, self.task.cost)
    opt.step()
    if self.scheduler_interval == "step" and self.scheduler_fn is not None:
        self.lr_schedulers().step()
    self.updates += 1
    return loss


def logged_epoch_end(self: HandpropModule) -> None:
    """The shipped epoch end, then every epoch metric through ``self.log`` as well."""
    HandpropModule.on_train_epoch_end(self)
    for k, v in self.epoch_metrics.items():
        self.log(k, v)


def variant(name: str, cfg, run_dir: Path):  # noqa: ANN001, ANN201
    run = prepare(cfg, run_dir)
    module, dm, trainer = run.module, run.datamodule, run.trainer
    if name == "shipped":
        return run
    if name in ("lightning optimizer", "self.log", "validation loop"):
        module.update = lightning_step.__get__(module)
    if name in ("self.log", "validation loop"):
        module.on_train_epoch_end = logged_epoch_end.__get__(module)
    if name == "validation loop":
        # Lightning's own loop over one batch (the whole split), the same evaluation
        def validation_step(batch, batch_idx):  # noqa: ANN001, ANN202
            values = module.evaluate(*batch)
            module.log_dict({f"val/{k}": v for k, v in values.items()})

        module.validation_step = validation_step
        val = dm.split("val")
        dm.val_dataloader = lambda: torch.utils.data.DataLoader([val], batch_size=None)
        trainer.limit_val_batches = 1.0
    return run


NAMES = [
    ("shipped", []),
    ("one update per training_step", ["steps_per_call=1"]),
    ("lightning optimizer", ["steps_per_call=1"]),
    ("self.log", ["steps_per_call=1"]),
    ("validation loop", ["steps_per_call=1"]),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    times: dict[str, list[float]] = {n: [] for n, _ in NAMES}
    updates = 0
    for _ in range(args.reps):
        for name, extra in NAMES:  # interleaved
            with initialize_config_module("handprop.trainer.conf", version_base="1.3"):
                cfg = compose("train", overrides=[*OVERRIDES, *extra])
            with tempfile.TemporaryDirectory() as tmp:
                run = variant(name, cfg, Path(tmp))
                t0 = time.perf_counter()
                run.trainer.fit(run.module, datamodule=run.datamodule)
                times[name].append(time.perf_counter() - t0)
                updates = run.module.updates
    base = statistics.median(times["shipped"])
    print(f"digits 64-64-10, batch 32, 20 epochs ({updates} updates); medians of {args.reps}")
    print("| variant | fit s | / shipped | µs per update over shipped |")
    print("|---|---:|---:|---:|")
    for name, _ in NAMES:
        m = statistics.median(times[name])
        print(f"| {name} | {m:.3f} | {m / base:.2f} | {1e6 * (m - base) / updates:.0f} |")


if __name__ == "__main__":
    main()
