"""Update rules for many models trained at once (:class:`~handprop.networks.MLPStack`), each
hyperparameter per model: :class:`StackedSGD` (momentum, Nesterov), :class:`StackedRMSprop`,
:class:`StackedAdam`, :class:`StackedAdamW`. Model ``j``'s slice follows ``torch.optim``'s
update of the same name with model ``j``'s hyperparameters.
"""

from handprop.optim.stacked import (
    STACKED,
    StackedAdam,
    StackedAdamW,
    StackedOptimizer,
    StackedRMSprop,
    StackedSGD,
)

__all__ = [
    "StackedOptimizer",
    "StackedSGD",
    "StackedRMSprop",
    "StackedAdam",
    "StackedAdamW",
    "STACKED",
]
