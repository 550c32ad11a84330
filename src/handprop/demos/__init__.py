"""``handprop-demo``: the lecture notes, runnable — one demonstration per idea, with pictures.

Each demo runs on a CPU in seconds, prints a short table and writes PNG figures, ``table.md``,
``caption.md`` and ``results.json`` into its output directory. They use the package itself:
the Functions' hand-written backward passes, :class:`handprop.nn.MLP` and its init schemes,
the data sets and :class:`handprop.trainer.data.Scaler`, and the trainer's Hydra configs and builders.

Each demo module has four parts: ``compute(quick=False, ...)`` runs the experiment and returns
its numbers as plain data (what ``results.json`` holds); ``tables(results)``,
``caption(results)`` and ``draw(results, out)`` turn those numbers into the tables, the
caption under the README's figure and the figures, computing nothing new. So every number a
figure, table or caption shows comes from the results, and the tests check the results.

Usage::

    handprop-demo --list
    handprop-demo NAME [--out DIR] [--quick]      # default DIR: outputs/demos/NAME
    handprop-demo all [--out DIR] [--quick]       # DIR/NAME for each demo

Nothing heavy is imported until a demo runs, so ``--list`` answers at once.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["DEMOS", "compute", "write", "run", "main"]

#: name → (module, one line of what it shows), in the notes' order of ideas.
DEMOS: dict[str, tuple[str, str]] = {
    "neuron": (
        "neuron",
        "sigmoid, tanh, ReLU, leaky ReLU, softmax and their derivatives, from the hand-written backward",
    ),
    "brute-force": (
        "brute_force",
        "one weight on a 0.01..10.00 grid vs gradient descent; why 4-5-1 cannot be brute-forced",
    ),
    "gd-modes": (
        "gd_modes",
        "batch vs stochastic vs mini-batch: loss per update and epoch, paths over the cost surface",
    ),
    "optimizers": (
        "optimizers",
        "SGD, momentum, RMSProp, Adam, AdamW: loss curves and paths through a ravine",
    ),
    "lr-schedules": (
        "lr_schedules",
        "step, exponential, cosine, 1/sqrt(t), plateau decay; the linear scaling rule",
    ),
    "preprocessing": (
        "preprocessing",
        "property prices raw vs standardised vs min-max normalised: speed and final error",
    ),
    "init": ("init", "zero vs small random initial weights: identical hidden neurons vs learning"),
    "hidden-layers": (
        "hidden_layers",
        "linear regression vs the 4-5-1 network, and what each hidden neuron responds to",
    ),
    "backprop": (
        "backprop",
        "one sample through 4-5-1: z, a, delta and every gradient by hand vs autograd, one update",
    ),
    "epochs": (
        "epochs",
        "the notes' 8 students: the same weights for every row, the cost falling epoch by epoch",
    ),
    "vanishing": (
        "vanishing",
        "8 hidden layers of sigmoid, tanh, ReLU: mean |delta| per layer and who trains fastest",
    ),
    "overfitting": (
        "overfitting",
        "a big network on 60 rows: validation loss turns up, early stopping, the best weights",
    ),
    "autoencoder": (
        "autoencoder",
        "digits through a 2..16-unit code: the 2-D code map beside PCA's, error vs code size",
    ),
    "gan": (
        "gan",
        "a GAN on the ring of 8 Gaussians: samples as training goes, both networks' costs",
    ),
    "cnn": (
        "cnn",
        "a convolutional network on the digits: its learned filters, one digit's feature maps",
    ),
    "rnn": (
        "rnn",
        "tanh RNN vs LSTM: the gradient flowing back through 30 time steps, what each remembers",
    ),
}

DEFAULT_OUT = Path("outputs") / "demos"


def _module(name: str) -> Any:
    return importlib.import_module(f"{__name__}.{DEMOS[name][0]}")


def compute(name: str, quick: bool = False, **options: Any) -> dict:
    """Demo ``name``'s results (plain data), computed and not written anywhere.

    ``quick`` uses smaller data / fewer epochs (what the tests run). Options a demo does not
    take (e.g. ``layers`` for anything but ``brute-force``) are ignored.
    """
    if name not in DEMOS:
        raise KeyError(f"unknown demo {name!r}; choose one of: {', '.join(DEMOS)}, all")
    fn = _module(name).compute
    accepted = inspect.signature(fn).parameters
    opts = {k: v for k, v in options.items() if k in accepted and v is not None}
    return fn(quick=quick, **opts)


def write(name: str, results: dict, out: str | Path) -> list[Path]:
    """Draw demo ``name``'s figures from ``results`` and write them with ``table.md``,
    ``caption.md`` and ``results.json`` into ``out``; return the figure paths."""
    from handprop.demos._report import write as write_text

    mod = _module(name)
    out = Path(out)
    figures = mod.draw(results, out)
    write_text(name, mod.SUMMARY, results, mod.tables(results), mod.caption(results), figures, out)
    return figures


def run(name: str, out: str | Path | None = None, quick: bool = False, **options: Any) -> dict:
    """Run demo ``name`` into ``out`` (default ``outputs/demos/NAME``); return its results."""
    results = compute(name, quick=quick, **options)
    write(name, results, Path(out) if out is not None else DEFAULT_OUT / name)
    return results


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="handprop-demo",
        description="The lecture notes, runnable: one demonstration per idea, with pictures.",
        epilog="demos: " + ", ".join(DEMOS) + ", all",
    )
    p.add_argument("name", nargs="?", help="the demo to run (see --list), or 'all'")
    p.add_argument(
        "--out",
        type=Path,
        help="output directory (default outputs/demos/NAME; with 'all': DIR/NAME for each)",
    )
    p.add_argument("--list", action="store_true", help="list the demos and exit")
    p.add_argument("--quick", action="store_true", help="smaller data and fewer epochs")
    p.add_argument(
        "--layers",
        help="brute-force: the network's layer sizes, e.g. 4-5-1 (default) or 784-128-10",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit status (2 for a bad name or option)."""
    args = _parser().parse_args(argv)
    if args.list:
        w = max(map(len, DEMOS))
        for name, (_, what) in DEMOS.items():
            print(f"{name:<{w}}  {what}")
        return 0
    if not args.name:
        print(f"error: name a demo ({', '.join(DEMOS)}, all) or use --list", file=sys.stderr)
        return 2
    if args.name != "all" and args.name not in DEMOS:
        print(
            f"error: unknown demo {args.name!r}; choose one of: {', '.join(DEMOS)}, all",
            file=sys.stderr,
        )
        return 2
    if args.layers is not None:  # a bad option: one line before any demo runs
        from handprop.demos.brute_force import parse_layers

        try:
            parse_layers(args.layers)
        except ValueError as e:
            print(f"error: brute-force: {e}", file=sys.stderr)
            return 2
    names = list(DEMOS) if args.name == "all" else [args.name]
    base = args.out if args.out is not None else DEFAULT_OUT
    failed = []
    for i, name in enumerate(names, 1):
        out = base / name if (args.name == "all" or args.out is None) else args.out
        # Announced before it runs: the training demos take tens of seconds.
        print(f"[{i}/{len(names)}] {name}: {DEMOS[name][1]} …", flush=True)
        t0 = time.perf_counter()
        try:
            run(name, out, quick=args.quick, layers=args.layers)
        except Exception as e:  # noqa: BLE001 — with 'all', one failure must not stop the rest
            if len(names) == 1:
                raise
            print(f"error: {name} failed: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"\n[{name}: {time.perf_counter() - t0:.1f} s, output in {out}]\n")
    if failed:
        print(f"error: failed demos: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
