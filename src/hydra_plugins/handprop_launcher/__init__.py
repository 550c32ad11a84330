"""handprop's sweep launchers where Hydra finds launchers (classes defined in the
``hydra_plugins`` namespace): ``hydra/launcher=in_turn`` (the default), ``vectorized``
(:class:`handprop.trainer.vectorized.VectorizedJobs`), ``parallel`` and ``slurm``. The code is in :mod:`handprop.trainer.sweep`; the last two extend Hydra's joblib and
submitit launchers, and exist only where those are installed (the ``scale`` extra)."""

from typing import Any

from handprop.trainer import sweep, vectorized


class JobsInTurn(sweep.JobsInTurn):
    """:class:`handprop.trainer.sweep.JobsInTurn`, registered with Hydra."""


try:
    from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
except ImportError:  # no [scale] extra: hydra/launcher=parallel does not compose either
    pass
else:

    class JobsInParallel(JoblibLauncher):
        """Hydra's joblib launcher; a job fails alone (:func:`handprop.trainer.sweep.launch_in_parallel`)."""

        def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
            return sweep.launch_in_parallel(self, job_overrides, initial_job_idx)


try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
except ImportError:  # no [scale] extra: hydra/launcher=slurm does not compose either
    pass
else:

    class SlurmJobs(SlurmLauncher):
        """Hydra's submitit launcher for SLURM; a job fails alone
        (:func:`handprop.trainer.sweep.launch_on_slurm`)."""

        def __call__(self, sweep_overrides: Any, *args: Any) -> Any:  # in the SLURM job
            return sweep.slurm_job(self, super().__call__, sweep_overrides, *args)

        def launch(self, job_overrides: Any, initial_job_idx: int) -> Any:
            return sweep.launch_on_slurm(self, job_overrides, initial_job_idx)


class VectorizedJobs(vectorized.VectorizedJobs):
    """:class:`handprop.trainer.vectorized.VectorizedJobs`, registered with Hydra."""
