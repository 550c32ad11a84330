"""A trained model back from its checkpoint, without Lightning: what ``handprop-eval`` and
``handprop-predict`` run.

The checkpoint is read with ``torch.load(weights_only=True)`` (:func:`read_checkpoint`); the
network is rebuilt from the library alone (:data:`NETWORKS`, :mod:`handprop.networks`) with the
task's prediction rule, scaling and metrics (:class:`~handprop.trainer.task.Task`, plain
torch), and the run's data and splits from the checkpoint's own config (:func:`table_of`,
:func:`splits_of`). Nothing here imports Lightning, Hydra, TensorBoard or torchmetrics; the
answers are those of the training module (:class:`~handprop.trainer.model.HandpropModule`),
which holds the same network and task under the same names (``tests/test_commands.py``).
"""

from __future__ import annotations

import copy
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from handprop.networks import GAN, MLP, Autoencoder, ConvNet, RecurrentNet
from handprop.nn import Dropout
from handprop.trainer.datasets import Table, load_table
from handprop.trainer.errors import ConfigError
from handprop.trainer.splits import Splits, pooled_scaling
from handprop.trainer.task import Task

#: The networks a config can name, built from their keyword arguments (a checkpoint's
#: ``hyper_parameters["network"]``).
NETWORKS: dict[str, type[nn.Module]] = {
    "mlp": MLP,
    "autoencoder": Autoencoder,
    "gan": GAN,
    "cnn": ConvNet,
    "rnn": RecurrentNet,
}

#: The hyper-parameters a checkpoint needs to rebuild its model.
REQUIRED = ("network", "task", "config")

#: Noise vectors of a GAN's fixed evaluation sample: metrics, pictures and the demo read the
#: generator's output on the same noise at every epoch (a buffer, saved in the checkpoint).
EVAL_SAMPLES = 2500


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


def is_mode_dependent(net: nn.Module) -> bool:
    """Whether ``net`` computes differently while training (dropout)."""
    return any(isinstance(m, Dropout | torch.nn.Dropout) for m in net.modules())


class Trained(nn.Module):
    """A trained network and its task, as a checkpoint's ``hyper_parameters`` describe them,
    in eval mode. Its state dict is the training module's (``net.*``, ``task.*``, a GAN's
    ``ema_generator.*`` and ``eval_noise``), so the checkpoint's ``state_dict`` loads as is.

    Args: ``network``, ``task``, ``columns``, ``config`` and a GAN's ``ema`` as
    :class:`~handprop.trainer.model.HandpropModule` takes them; the training settings besides
    are not needed here.
    """

    def __init__(
        self,
        network: dict[str, Any],
        task: dict[str, Any],
        columns: dict[str, Any] | None = None,
        config: dict | None = None,
        ema: float = 0.0,
        **training: Any,
    ) -> None:
        super().__init__()
        self.net = NETWORKS[network["name"]](**{k: v for k, v in network.items() if k != "name"})
        self.task = Task(**task)
        self.columns, self.config = columns or {}, config or {}
        self.mode_dependent = is_mode_dependent(self.net)
        if isinstance(self.net, GAN):
            self.ema_generator = (
                copy.deepcopy(self.net.generator).requires_grad_(False) if ema else None
            )
            # (the values come from the checkpoint: this only gives the buffer its shape)
            self.register_buffer("eval_noise", self.net.noise(EVAL_SAMPLES, torch.Generator()))
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        """Network output ``z`` for scaled inputs ``x``."""
        return self.net(x)

    @torch.no_grad()
    def predict_raw(self, x_raw: Tensor) -> Tensor:
        """Predictions ``ŷ`` for raw (unscaled) feature rows (N, in_features)."""
        return self.task.prediction(self(self.task.scale_inputs(x_raw)))

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """Loss and metrics of one whole split (scaled tensors, as :class:`Splits` gives);
        a GAN's on its fixed evaluation sample (:meth:`Task.generation_metrics`)."""
        if isinstance(self.net, GAN):
            fake = self.sample(self.eval_noise)
            return self.task.generation_metrics(
                self.net.discriminate(x), self.net.discriminate(fake), x, fake
            )
        return self.task.metrics(self(x), y)

    @torch.no_grad()
    def sample(self, z: Tensor) -> Tensor:
        """A GAN's samples (scaled) for noise ``z``: from the running average of the
        generator's weights when the run kept one, else from the trained generator."""
        if self.ema_generator is None:
            return self.net(z)
        return self.net.squash(self.ema_generator(z))

    @torch.no_grad()
    def sample_raw(self, n: int, seed: int = 0) -> Tensor:
        """``n`` samples of a GAN in the data's own units, from noise seeded by ``seed``."""
        z = self.net.noise(n, torch.Generator().manual_seed(seed))
        return self.task.prediction(self.sample(z))


def load_trained(path: str | Path) -> Trained:
    """The trained model in the checkpoint at ``path``, on the CPU, in eval mode."""
    ckpt = read_checkpoint(path)
    model = Trained(**ckpt["hyper_parameters"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def _setting(data: Mapping[str, Any], key: str) -> Any:
    """``data[key]``; None when absent or left unset (``???``)."""
    value = data.get(key)
    return None if value == "???" else value


def table_of(data: Mapping[str, Any], seed: int, task: str) -> Table:
    """The data set a config's ``data`` settings name (plain values; ``task`` says how to
    read a CSV)."""
    features = _setting(data, "features")
    return load_table(
        data["name"],
        n_samples=_setting(data, "n_samples"),
        noise=_setting(data, "noise"),
        seed=seed,
        path=_setting(data, "path"),
        target=_setting(data, "target"),
        features=list(features) if features else None,
        task=task if data["name"] == "csv" else None,
        n_features=_setting(data, "n_features"),
        n_classes=_setting(data, "n_classes"),
        window=_setting(data, "window"),
        radius=_setting(data, "radius"),
    )


def splits_of(config: Mapping[str, Any], task: str, table: Table | None = None) -> Splits:
    """The splits a run of ``config`` trained, validated and tested on: the same seed, rows
    and scaling (``table``: its data set, loaded when not given)."""
    d = config["data"]
    table = table if table is not None else table_of(d, config["seed"], task)
    return Splits(
        table,
        preprocessing=d["preprocessing"],
        val_fraction=d["val_fraction"],
        test_fraction=d["test_fraction"],
        seed=config["seed"],
        reconstruct=task == "reconstruction",
        pooled_scaling=pooled_scaling(config["model"]["name"], table),
    )
