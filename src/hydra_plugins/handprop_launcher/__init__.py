"""handprop's sweep launchers where Hydra finds launchers (classes defined in the
``hydra_plugins`` namespace): ``hydra/launcher=in_turn``, the default
(:class:`handprop.trainer.sweep.JobsInTurn`), and ``hydra/launcher=vectorized``
(:class:`handprop.trainer.vectorized.VectorizedJobs`)."""

from handprop.trainer import sweep, vectorized


class JobsInTurn(sweep.JobsInTurn):
    """:class:`handprop.trainer.sweep.JobsInTurn`, registered with Hydra."""


class VectorizedJobs(vectorized.VectorizedJobs):
    """:class:`handprop.trainer.vectorized.VectorizedJobs`, registered with Hydra."""
