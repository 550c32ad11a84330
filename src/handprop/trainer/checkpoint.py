"""Loading a handprop checkpoint for evaluation, prediction or resuming, safely.

``torch.load(weights_only=True)`` unpickles only tensors and plain containers, so a planted
checkpoint cannot run code; anything that is not a handprop checkpoint is refused in one line.
"""

from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from handprop.trainer.errors import ConfigError
from handprop.trainer.model import HandpropModule

#: The hyper-parameters HandpropModule needs to rebuild itself.
REQUIRED = ("network", "task", "config")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, checked to be a handprop checkpoint of plain data."""
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ConfigError(f"ckpt_path: no checkpoint file at {p}")
    try:
        with warnings.catch_warnings():  # a raw pickle draws torch's protocol warning first
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        what = f" (it asks for {found.group(1)})" if found else ""
        raise ConfigError(
            f"ckpt_path: {p} is not a checkpoint of plain tensors and data{what}; refused "
            "without running it. Only load checkpoints you trust."
        ) from None
    except Exception as e:  # noqa: BLE001 — torch raises many kinds for a file that isn't one
        raise ConfigError(f"ckpt_path: {p} is not a checkpoint file ({type(e).__name__})") from None
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hp, dict) or any(k not in hp for k in REQUIRED) or "state_dict" not in ckpt:
        raise ConfigError(
            f"ckpt_path: {p} is not a handprop checkpoint (no handprop hyper-parameters)"
        )
    return ckpt


def load_module(path: str | Path) -> HandpropModule:
    """The trained :class:`HandpropModule` in a checkpoint (a
    :class:`~handprop.trainer.gan.GANModule` for a GAN), in eval mode on the CPU."""
    from handprop.trainer.build import module_class

    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    model = module_class(hp["network"]["name"])(**hp)
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
