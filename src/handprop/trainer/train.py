"""``handprop-train``: the command line of a training run.

Thin on purpose: Hydra composes the config, and every failure becomes one line. Building and
running the pieces is :mod:`handprop.trainer.build` and :mod:`handprop.trainer.run`, imported only when a run
starts, so that ``--help`` and ``--cfg`` answer before torch and Lightning are loaded.
"""

from __future__ import annotations

import math
import sys
from contextlib import suppress
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from handprop.trainer.cli import report, run_cli, verbose_errors
from handprop.trainer.errors import (
    ConfigError,
    MachineError,
    Stopped,
    as_machine_error,
    exit_status,
    is_known,
)
from handprop.trainer.files import write_json_atomic
from handprop.trainer.rundir import is_rank_zero, write_hydra_files
from handprop.trainer.stops import resume_command, stopping_on_signals


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> dict | float | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    target = cfg.get("optimized_metric")  # set by hparams_search: sweepers want one number
    try:
        if is_rank_zero():  # Hydra's .hydra/ files (hydra.output_subdir is null: see rundir)
            write_hydra_files(run_dir, cfg, hc)
        from handprop.trainer.run import train

        metrics = train(cfg, run_dir)
        if target:
            if target not in metrics:
                raise ConfigError(
                    f"optimized_metric={target} is not a metric of this run; choose one of "
                    f"{sorted(k for k in metrics if '/' in k)}"
                )
            value = float(metrics[target])
            # Optuna refuses a NaN (and then ends the search); None makes it a failed trial.
            return None if math.isnan(value) else value
        return metrics
    except Stopped as e:  # Ctrl-C or SIGTERM: last.ckpt is written; say how to go on
        if is_rank_zero():
            line = f"{e}; resume with: {resume_command(hc.overrides.task, run_dir)}"
            print(line, file=sys.stderr, flush=True)
            with suppress(MachineError):
                write_json_atomic(run_dir / "error.json", {"error": line, "status": "stopped"})
        if hc.mode == RunMode.MULTIRUN:
            return None  # the launcher ends the sweep (handprop.trainer.sweep.JobsInTurn)
        raise SystemExit(exit_status(e)) from None
    except Exception as e:  # noqa: BLE001 — every failure becomes one line (trace on request)
        err = as_machine_error(e, run_dir)  # a write the machine refused: one line, its path
        report(err, verbose_errors(cfg) or not is_known(err))
        with suppress(MachineError):  # a full disk takes no error.json: the line says it all
            write_json_atomic(run_dir / "error.json", {"error": f"{type(err).__name__}: {err}"})
        if hc.mode == RunMode.MULTIRUN:
            # The sweep goes on; the summary lists this job as failed. A search gets None, not
            # a number: Optuna's sweeper records the trial as failed and goes on (a NaN it
            # refuses with an error that ends the search).
            return None
        raise SystemExit(exit_status(err)) from None


def main() -> None:
    """Console entry point: ``handprop-train [group=option ...] [key=value ...] [-m]``.

    Ctrl-C or SIGTERM stops a run at its next safe point with ``last.ckpt`` written, and
    prints the command that resumes it (:class:`~handprop.trainer.checkpoints.StopOnSignal`); a second
    one ends the process at once."""
    with stopping_on_signals():
        run_cli(_hydra_main, "train")


if __name__ == "__main__":
    sys.exit(main())
