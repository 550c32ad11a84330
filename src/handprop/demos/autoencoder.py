"""The notes' "autoencoders: dimensionality reduction, encoding-decoding", on the 8×8 digits.

``handprop-train experiment=autoencoder_digits model.code_size=K`` squeezes each 64-pixel
digit through a code of K units and rebuilds it; the trainer itself fits PCA with K components
on the same training rows and reports both errors (``test/mse``, ``test/pca_mse``). Here for
K = 2, 4, 8, 16: the 2-D code of every test digit beside PCA's first two components (how well
a 5-nearest-neighbour classifier reads the digit off each), the reconstruction error against
the code size, and a few test digits rebuilt by both.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from handprop.demos._figures import COLORS, figure, save_figure
from handprop.demos._report import Table, plain, two
from handprop.demos._training import compose, fit_trainer, pca, threads

SUMMARY = (
    "An autoencoder is trained to give back its input through a narrow code: the encoder has "
    "to keep what matters, the decoder to rebuild the rest. With a linear code and hidden "
    "ReLU layers it bends where PCA, the best linear code, cannot: less reconstruction error "
    "for the same number of numbers per digit, and a 2-D code in which the digits fall apart "
    "into clusters."
)

SHOWN = 10  # test digits in the reconstruction figure
NEIGHBOURS = 5


def _knn(train_code, train_y, test_code, test_y) -> float:  # noqa: ANN001
    """Accuracy of a 5-nearest-neighbour classifier reading the digit off a 2-D code."""
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(NEIGHBOURS).fit(train_code, train_y)
    return float(knn.score(test_code, test_y))


def compute(quick: bool = False) -> dict:
    import torch

    sizes = [2, 8] if quick else [2, 4, 8, 16]
    epochs = 12 if quick else 30
    r: dict = {"epochs": epochs, "code_sizes": [str(k) for k in sizes], "mse": {}}
    rebuilt: dict = {"autoencoder": {}, "pca": {}}
    with threads(1), tempfile.TemporaryDirectory(prefix="handprop-demo-") as tmp:
        for k in sizes:
            cfg = compose(
                "experiment=autoencoder_digits",
                f"model.code_size={k}",
                f"trainer.max_epochs={epochs}",
                "logger=none",
                "progress=false",
            )
            run = fit_trainer(cfg, Path(tmp) / f"code{k}")
            dm, module = run.datamodule, run.module
            xtr, _ = dm.split("train")
            xte, _ = dm.split("test")
            test = module.evaluate(xte, xte)
            r["mse"][str(k)] = {"autoencoder": test["mse"], "pca": test["pca_mse"]}
            unscale = module.task.unscale_inputs
            with torch.no_grad():
                rebuilt["autoencoder"][str(k)] = unscale(module.net(xte[:SHOWN])).numpy()
                rebuilt["pca"][str(k)] = unscale(pca(xtr, xte[:SHOWN], k)[1]).numpy()
                original = unscale(xte[:SHOWN]).numpy()
            if k == 2:
                labels = dm.table.y
                ytr, yte = labels[dm.indices["train"]], labels[dm.indices["test"]]
                with torch.no_grad():
                    codes = {
                        "autoencoder": (module.net.encode(xtr), module.net.encode(xte)),
                        "pca": (pca(xtr, xtr, 2)[0], pca(xtr, xte, 2)[0]),
                    }
                r["map"] = {
                    "labels": yte,
                    **{name: test_code.numpy() for name, (_, test_code) in codes.items()},
                }
                r["knn"] = {
                    name: _knn(a.numpy(), ytr, b.numpy(), yte) for name, (a, b) in codes.items()
                }
    r["digits"] = {"original": original, **rebuilt}
    r["pixel_max"] = float(dm.table.X.max())
    return plain(r)


def tables(r: dict) -> list[Table]:
    t1 = Table(
        f"Test reconstruction error of the digits ({r['epochs']} epochs at most, best by val loss)",
        ["code size", "autoencoder MSE", "PCA MSE (same components)", "ratio"],
        note="MSE over every pixel of the test digits, in pixel units (0-16). PCA is fitted on "
        "the same training rows (pixels scaled to [0, 1]); the autoencoder is 64-64-K-64-64, "
        "ReLU, handprop-train experiment=autoencoder_digits model.code_size=K.",
    )
    for k in r["code_sizes"]:
        m = r["mse"][k]
        t1.add(int(k), m["autoencoder"], m["pca"], m["autoencoder"] / m["pca"])
    t2 = Table(
        "Reading the digit off a 2-D code (5 nearest neighbours, test digits)",
        ["code", "accuracy"],
    )
    t2.add("autoencoder (2 units)", r["knn"]["autoencoder"])
    t2.add("PCA (2 components)", r["knn"]["pca"])
    return [t1, t2]


def below_pca(r: dict) -> list[str]:
    """The code sizes at which the autoencoder's test error is below PCA's."""
    return [k for k in r["code_sizes"] if r["mse"][k]["autoencoder"] < r["mse"][k]["pca"]]


def caption(r: dict) -> str:
    m2 = r["mse"]["2"]
    a, p = two(m2["autoencoder"], m2["pca"])
    ka, kp = r["knn"]["autoencoder"], r["knn"]["pca"]
    sizes = r["code_sizes"]
    below = below_pca(r)
    if len(below) == len(sizes):
        every = f"at every code size tried ({', '.join(sizes)}) its error is below PCA's"
    else:
        every = f"its error is below PCA's at code sizes {', '.join(below) or 'none'} of {', '.join(sizes)}"
    big = r["mse"][sizes[-1]]
    ba, bp = two(big["autoencoder"], big["pca"])
    return (
        f"With a code of 2 numbers per digit the autoencoder rebuilds the test digits with an "
        f"MSE of {a} against {p} for PCA's two components, and a 5-nearest-neighbour "
        f"classifier reads the digit off its code {100 * ka:.0f} % of the time, off PCA's "
        f"{100 * kp:.0f} %; {every} ({ba} vs {bp} with {sizes[-1]})."
    )


def draw(r: dict, out: Path) -> list[Path]:
    import numpy as np

    fig, axes = figure(10, 4.6, 1, 2)
    labels = np.asarray(r["map"]["labels"])
    for ax, name, title in zip(
        axes, ("autoencoder", "pca"), ("autoencoder: 2-unit code", "PCA: 2 components"), strict=True
    ):
        code = np.asarray(r["map"][name])
        points = ax.scatter(
            code[:, 0], code[:, 1], c=labels, cmap="tab10", s=9, vmin=-0.5, vmax=9.5
        )
        ax.set_title(f"{title} (5-NN reads the digit {100 * r['knn'][name]:.0f} %)", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(points, ax=axes, ticks=range(10), label="digit")
    figures = [save_figure(fig, out, "code_map.png")]

    sizes = r["code_sizes"]
    fig, axes = figure(12, 4.6, 1, 2, width_ratios=[1, 1.6])
    ax = axes[0]
    ks = [int(k) for k in sizes]
    for i, name in enumerate(("autoencoder", "pca")):
        ax.plot(ks, [r["mse"][k][name] for k in sizes], "o-", color=COLORS[i], label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("code size (numbers per digit)")
    ax.set_ylabel("test MSE (pixel units)")
    ax.set_title("reconstruction error against code size", fontsize=10)
    ax.legend()
    # the reconstructions: one row per code (original first), one column per test digit
    rows = [("original", r["digits"]["original"])]
    for k in sizes:
        rows.append((f"AE {k}", r["digits"]["autoencoder"][k]))
        rows.append((f"PCA {k}", r["digits"]["pca"][k]))
    top = r["pixel_max"]
    tile = np.full((len(rows) * 9 + 1, SHOWN * 9 + 1), np.nan)
    for i, (_, digits) in enumerate(rows):
        for j, d in enumerate(np.asarray(digits)):
            tile[1 + 9 * i : 9 * i + 9, 1 + 9 * j : 9 * j + 9] = np.clip(d, 0, top).reshape(8, 8)
    ax = axes[1]
    ax.imshow(tile, cmap="gray_r", vmin=0, vmax=top, interpolation="nearest")
    ax.set_yticks([4.5 + 9 * i for i in range(len(rows))], [name for name, _ in rows], fontsize=8)
    ax.set_xticks([])
    ax.set_title("test digits rebuilt from each code", fontsize=10)
    figures.append(save_figure(fig, out, "code_size.png"))
    return figures
