"""handprop's sweep launcher where Hydra finds launchers (classes defined in the
``hydra_plugins`` namespace): ``hydra/launcher=in_turn``, the default. The code is
:class:`handprop.trainer.sweep.JobsInTurn`."""

from handprop.trainer import sweep


class JobsInTurn(sweep.JobsInTurn):
    """:class:`handprop.trainer.sweep.JobsInTurn`, registered with Hydra."""
