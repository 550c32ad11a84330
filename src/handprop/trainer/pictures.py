"""TensorBoard pictures of the autoencoder and the GAN, drawn at the end of every epoch.

* Autoencoder: on image data (digits) a grid of validation inputs (top row) over their
  reconstructions (bottom row), tag ``reconstructions``; for a code of 2 or 3 units, the code
  of every validation row coloured by its class, tag ``code``.
* GAN: the fixed evaluation sample (the same noise every epoch), as an image grid on image
  data and otherwise as a scatter of the first two features over the validation rows, tag
  ``samples``.

Each picture is logged at the update count, as every scalar. Figures are drawn with
matplotlib's object API (no pyplot) and logged as images.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

#: The networks that have pictures (``model.name``).
PICTURED = ("autoencoder", "gan")
#: Validation rows in the reconstruction grid, samples in the GAN's grid and scatter.
GRID_ROWS, GRID_SAMPLES, SCATTER_SAMPLES = 16, 64, 1000
#: Screen pixels per image pixel (an 8×8 digit is 32×32 on screen).
ZOOM = 4


def image_grid(images: Tensor, columns: int, pad: int = 1, zoom: int = ZOOM) -> Tensor:
    """Images (N, h, w) with values in [0, 1] as one (H, W) grid of ``columns`` per row,
    ``pad`` pixels of 0.5 grey between them, each pixel drawn as ``zoom × zoom``."""
    images = images.repeat_interleave(zoom, 1).repeat_interleave(zoom, 2)
    n, h, w = images.shape
    rows = -(-n // columns)
    grid = torch.full((rows * (h + pad) + pad, columns * (w + pad) + pad), 0.5)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + c * (w + pad)
        grid[top : top + h, left : left + w] = img
    return grid


def _unit(x: Tensor, lo: float, hi: float) -> Tensor:
    return ((x - lo) / (hi - lo if hi > lo else 1.0)).clamp(0, 1)


def render(fig: Any) -> np.ndarray:
    """A matplotlib ``Figure`` as an RGB array (H, W, 3), without pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _figure(width: float, height: float, projection: str | None = None) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=72, layout="constrained")
    return fig, fig.add_subplot(projection=projection)


def _classes_cmap(k: int) -> Any:
    """One distinct colour per class (tab10's for up to 10 classes)."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    return ListedColormap(matplotlib.colormaps["tab10"].colors[:k]) if k <= 10 else "viridis"


def autoencoder_pictures(module: Any, dm: Any) -> dict[str, tuple[str, Any]]:
    """``reconstructions`` (image data) and ``code`` (codes of 2 or 3 units)."""
    out: dict[str, tuple[str, Any]] = {}
    x, _ = dm.split("val")
    net, task, table = module.net, module.task, dm.table
    with torch.no_grad():
        if table.image_shape is not None:
            first = x[:GRID_ROWS]
            both = task.unscale_inputs(torch.cat([first, net(first)])).cpu()
            lo, hi = float(table.X.min()), float(table.X.max())
            images = _unit(both, lo, hi).reshape(-1, *table.image_shape)
            out["reconstructions"] = ("image", image_grid(images, len(first)))
        if net.code_size in (2, 3):
            code = net.encode(x).cpu().numpy()
            fig, ax = _figure(5, 4.5, "3d" if net.code_size == 3 else None)
            labels = table.y[dm.indices["val"]]
            if table.class_names:
                k = len(table.class_names)
                points = ax.scatter(
                    *code.T, c=labels, cmap=_classes_cmap(k), vmin=-0.5, vmax=k - 0.5, s=6
                )
                bar = fig.colorbar(
                    points, ax=ax, ticks=range(k), label=table.target_name or "class"
                )
                bar.ax.set_yticklabels(table.class_names)
            else:
                ax.scatter(*code.T, s=6)
            ax.set_title(f"code of the {len(code)} validation rows", fontsize=9)
            out["code"] = ("figure", render(fig))
    return out


def gan_pictures(module: Any, dm: Any) -> dict[str, tuple[str, Any]]:
    """``samples``: an image grid (image data) or a scatter over the validation rows."""
    table = dm.table
    with torch.no_grad():
        fake = module.task.unscale_inputs(module.sample(module.eval_noise)).cpu()
    if table.image_shape is not None:
        lo, hi = float(table.X.min()), float(table.X.max())
        images = _unit(fake[:GRID_SAMPLES], lo, hi).reshape(-1, *table.image_shape)
        return {"samples": ("image", image_grid(images, 8))}
    real = table.X[dm.indices["val"]]
    f = fake[:SCATTER_SAMPLES].numpy()
    fig, ax = _figure(4.5, 4.5)
    if real.shape[1] == 1:  # one feature: the two distributions as histograms
        ax.hist(real[:, 0], bins=40, density=True, color="0.7", label="validation rows")
        ax.hist(f[:, 0], bins=40, density=True, histtype="step", color="#d62728", label="generated")
        ax.set_xlabel(table.feature_names[0])
        ax.legend(fontsize=8, loc="upper right")
        return {"samples": ("figure", render(fig))}
    ax.scatter(real[:, 0], real[:, 1], s=4, color="0.7", label="validation rows")
    ax.scatter(f[:, 0], f[:, 1], s=4, color="#d62728", label="generated")
    ax.set_xlabel(table.feature_names[0])
    ax.set_ylabel(table.feature_names[1])
    ax.legend(fontsize=8, loc="upper right")
    ax.set_aspect("equal", adjustable="datalim")
    return {"samples": ("figure", render(fig))}


class Pictures(L.Callback):
    """Log the network's pictures (see the module docstring) to every TensorBoard logger at
    the end of each training epoch."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        writers = [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        dm = trainer.datamodule
        if not writers or not dm.has("val"):
            return
        draw = gan_pictures if hasattr(pl_module.net, "discriminator") else autoencoder_pictures
        for tag, (kind, value) in draw(pl_module, dm).items():
            layout = "HW" if kind == "image" else "HWC"  # a grey grid, or a figure's RGB
            for w in writers:
                w.add_image(tag, value, pl_module.updates, dataformats=layout)
