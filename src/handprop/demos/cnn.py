"""The notes' convolutional network ("image processing, uses filters"), on the 8×8 digits.

``handprop-train model=cnn data=digits`` as shipped: three blocks of a 3×3 convolution (32, 64,
128 filters, ``padding="same"``) and a ReLU, max-pooling 2×2 after the second and the third,
then an MLP head 512-128-10 with dropout. Each filter is the notes' neuron ``z = Σ w x + b``
with its 9 weights shared over every position of the image, so the first layer learns 32
small pictures (its filters) and turns a digit into 32 maps of where each one matches. The
demo trains it with the trainer's own objects (:func:`handprop.trainer.build.prepare`, the best
weights restored) and shows the first layer's filters and one test digit's feature maps after
each block.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from handprop.demos._figures import figure, save_figure
from handprop.demos._report import Table, plain
from handprop.demos._training import compose, fit_trainer, threads

SUMMARY = (
    "A convolutional network slides each small filter over the whole image: the same few "
    "weights look for one pattern everywhere, and each filter's map shows where on the digit "
    "its pattern is. Each pooling halves the maps' size while the next layer, with more "
    "filters, combines them into larger parts, until the head reads the digit off a few "
    "numbers per filter."
)

SHOWN = 8  # feature maps shown per block: the channels most active on the digit
DIGIT = 0  # the test row shown (the first of the test split)


def compute(quick: bool = False) -> dict:
    import torch

    epochs = 4 if quick else 60
    overrides = ["model=cnn", "data=digits", f"trainer.max_epochs={epochs}"]
    cfg = compose(*overrides, "logger=none", "progress=false")
    with threads(1), tempfile.TemporaryDirectory(prefix="handprop-demo-") as tmp:
        run = fit_trainer(cfg, Path(tmp))
    dm, module, trainer = run.datamodule, run.module, run.trainer
    net = module.net
    test = module.evaluate(*dm.split("test"))
    x, y = dm.split("test")
    with torch.no_grad():
        maps = [m[0] for m in net.feature_maps(x[DIGIT : DIGIT + 1])]
        probs = torch.softmax(net(x[DIGIT : DIGIT + 1]), dim=1)[0]
    blocks = []
    for k, m in enumerate(maps):
        strength = m.flatten(1).mean(1)  # each channel's mean response to the digit
        top = torch.argsort(strength, descending=True, stable=True)[:SHOWN]
        blocks.append(
            {
                "channels": int(m.shape[0]),
                "size": [int(m.shape[1]), int(m.shape[2])],
                "kernel": net.kernel_sizes[k],
                "pool": net.pools[k],
                "shown": top.tolist(),
                "maps": m[top].numpy(),
                "active": float((m > 0).float().mean()),  # the share of units a ReLU left on
                "silent_channels": int((m.flatten(1).amax(1) <= 0).sum()),
            }
        )
    filters = net.features[0].weight.detach()[:, 0]  # (32, 3, 3), the first layer's
    r = {
        "command": "handprop-train " + " ".join(overrides[:2]),
        "epochs": epochs,
        "epochs_trained": int(trainer.current_epoch),
        "test_accuracy": test["accuracy"],
        "describe": net.describe(),
        "filters": filters.numpy(),
        "digit": {
            "pixels": dm.table.X[dm.indices["test"][DIGIT]].reshape(8, 8),
            "label": int(y[DIGIT]),
            "predicted": int(probs.argmax()),
            "probability": float(probs.max()),
        },
        "blocks": blocks,
        "parameters": {
            "convolutions": sum(p.numel() for p in net.features.parameters()),
            "head": sum(p.numel() for p in net.head.parameters()),
        },
    }
    return plain(r)


def tables(r: dict) -> list[Table]:
    t = Table(
        f"{r['command']}: the blocks, for test digit {DIGIT} ({_a(r['digit']['label'])})",
        [
            "block",
            "filters",
            "filter size",
            "pooling",
            "maps",
            "units left on by ReLU",
            "filters silent on this digit",
        ],
        note=f"{r['describe']}; test accuracy {r['test_accuracy']:.4f} after "
        f"{r['epochs_trained']} epochs (best weights by validation loss). Weights: "
        f"{r['parameters']['convolutions']} in the convolutions, {r['parameters']['head']} "
        "in the head.",
    )
    for k, b in enumerate(r["blocks"]):
        k_ = b["kernel"]
        t.add(
            k + 1,
            b["channels"],
            f"{k_}×{k_}",
            "none" if b["pool"] == "none" else f"{b['pool']} 2×2",
            "{}×{}".format(*b["size"]),
            f"{100 * b['active']:.0f} %",
            b["silent_channels"],
        )
    return [t]


def _a(digit: int) -> str:
    """``a 3``, ``an 8``."""
    return f"{'an' if digit == 8 else 'a'} {digit}"


def caption(r: dict) -> str:
    d, blocks = r["digit"], r["blocks"]
    sizes = " → ".join("{}×{}".format(*b["size"]) for b in blocks)
    channels = " → ".join(str(b["channels"]) for b in blocks)
    active = ", ".join(f"{100 * b['active']:.0f} %" for b in blocks)
    verdict = "right" if d["predicted"] == d["label"] else "wrong"
    return (
        f"`{r['command']}` reaches a test accuracy of {100 * r['test_accuracy']:.1f} % "
        f"({r['epochs_trained']} epochs). Its first layer learns {len(r['filters'])} filters of "
        f"3×3 weights, each slid over every position of the digit. For the test digit shown "
        f"({_a(d['label'])}, read as {d['predicted']} with probability {d['probability']:.2f}: "
        f"{verdict}) the maps after each block shrink {sizes} while the filters grow "
        f"{channels}; the ReLUs leave {active} of the units on."
    )


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    filters = np.asarray(r["filters"])
    n = len(filters)
    cols = 8
    fig, axes = figure(9, 1.2 * (n // cols) + 0.6, n // cols, cols)
    top = float(np.abs(filters).max())
    for k, ax in enumerate(np.asarray(axes).flat):
        image = ax.imshow(filters[k], cmap="RdBu_r", vmin=-top, vmax=top, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"filter {k + 1}", fontsize=7)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    fig.suptitle(
        f"the {n} learned 3×3 filters of the first layer (red: positive weight, blue: negative)",
        fontsize=10,
    )
    figures = [save_figure(fig, out, "filters.png")]

    blocks = r["blocks"]
    fig, axes = figure(11, 1.5 * (len(blocks) + 1), len(blocks) + 1, SHOWN + 1)
    axes = np.asarray(axes)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    d = r["digit"]
    axes[0, 0].imshow(np.asarray(d["pixels"]), cmap="gray_r", interpolation="nearest")
    axes[0, 0].set_title(f"input: {_a(d['label'])}", fontsize=8)
    axes[0, 1].text(
        0,
        0.5,
        f"read as {d['predicted']} (p = {d['probability']:.2f})",
        fontsize=9,
        va="center",
    )
    for k, b in enumerate(blocks):
        row = axes[k + 1]
        row[0].text(
            0,
            0.5,
            f"block {k + 1}\n{b['channels']} maps\n" + "{}×{}".format(*b["size"]),
            fontsize=8,
            va="center",
        )
        maps = np.asarray(b["maps"])
        hi = float(maps.max()) or 1.0
        for j, m in enumerate(maps):
            row[j + 1].imshow(m, cmap="magma", vmin=0, vmax=hi, interpolation="nearest")
            row[j + 1].set_title(f"filter {b['shown'][j] + 1}", fontsize=7)
    fig.suptitle(
        f"the digit's feature maps after each block: the {SHOWN} most active of each", fontsize=10
    )
    figures.append(save_figure(fig, out, "feature_maps.png"))
    return figures
