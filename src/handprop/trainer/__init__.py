"""The trainer: Lightning + Hydra around the library (:mod:`handprop.functional`,
:mod:`handprop.nn`, :mod:`handprop.networks`), with the command-line entry points
``handprop-train``, ``handprop-eval``, ``handprop-predict`` and ``handprop-demo``.

Imports run one way: the trainer imports the library, never the reverse. The trainer's packages
come with ``pip install "handprop[train]"``; the library needs torch and numpy alone. This
``__init__`` imports nothing but the standard library, so an entry point can say in one line
what is missing before anything heavy loads.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable

#: The trainer's packages, by import name, and the distribution that provides each.
PACKAGES = {
    "lightning": "lightning",
    "torchmetrics": "torchmetrics",
    "hydra": "hydra-core",
    "tensorboard": "tensorboard",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
}


def missing_packages() -> list[str]:
    """The distributions of :data:`PACKAGES` that cannot be imported here."""
    return [dist for name, dist in PACKAGES.items() if not _importable(name)]


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a broken install counts as missing
        return False


def _entry(module: str, command: str) -> Callable[[], None]:
    def main() -> None:
        missing = missing_packages()
        if missing:
            print(
                f"error: {command} needs the trainer's packages ({', '.join(missing)} "
                'missing): pip install "handprop[train]"',
                file=sys.stderr,
            )
            raise SystemExit(2)
        importlib.import_module(module).main()

    main.__doc__ = (
        f"Console entry point of ``{command}``: {module}.main, once its packages are there."
    )
    return main


train_main = _entry("handprop.trainer.train", "handprop-train")
eval_main = _entry("handprop.trainer.evaluate", "handprop-eval")
predict_main = _entry("handprop.trainer.predict", "handprop-predict")
demo_main = _entry("handprop.demos", "handprop-demo")
