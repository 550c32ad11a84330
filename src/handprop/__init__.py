"""handprop: artificial neural networks whose every backward pass is written by hand.

* :mod:`handprop.functional` — the notes' equations as autograd Functions (drop-in for
  ``torch.nn.functional``).
* :mod:`handprop.nn` — modules built on them (drop-in for ``torch.nn``) and the ``MLP``.

The trainer (Lightning + Hydra) lives in :mod:`handprop.trainer.train`; it is imported only when used,
so ``import handprop`` stays as light as torch itself.
"""

__version__ = "0.1.0"
