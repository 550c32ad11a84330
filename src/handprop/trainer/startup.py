"""Start-up: every process-wide side effect of a run, in one place — Lightning's log levels and
known warning noise, TensorBoard's event checksums in C, the number of torch threads."""

from __future__ import annotations

import logging
import os
import warnings

import crc32c
import torch


def masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum of an event: CRC-32C of ``data``, rotated right by 15 bits plus
    0xA282EAD8 (mod 2³²), computed in C by the ``crc32c`` package."""
    x = crc32c.crc32c(data)
    return (((x >> 15) | ((x << 17) & 0xFFFFFFFF)) + 0xA282EAD8) & 0xFFFFFFFF


def fast_tensorboard_checksums() -> None:
    """TensorBoard without TensorFlow checksums each event it writes in pure Python (~0.1 µs
    a byte, in its writer thread, holding the interpreter): ~40 % of a monitors event's cost.
    Its record writer gets the same checksum computed in C; where a TensorBoard version has
    no such writer, nothing changes (tests/test_train.py checks that it took)."""
    try:
        from tensorboard.summary.writer import record_writer
    except ImportError:
        return
    if hasattr(record_writer, "masked_crc32c"):
        record_writer.masked_crc32c = masked_crc32c


def quiet_lightning(verbose: bool) -> None:
    """Lightning's banner lines (GPU available, tips) and known deprecation noise off,
    unless ``verbose``; its warnings still show."""
    if verbose:
        return
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    # counts Lightning steps (chunks); handprop logs train/loss by update count itself
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    if "SLURM_JOB_ID" not in os.environ:
        # Outside any SLURM job, Lightning's hint that `srun` is installed but unused says
        # nothing: a run there is not meant for SLURM (hydra/launcher=slurm runs jobs under
        # srun). Inside a job (an sbatch script without srun) the hint stays.
        warnings.filterwarnings("ignore", message="The `srun` command is available")


def set_threads(num_threads: int | str | None, batch_size: int, net: torch.nn.Module) -> None:
    """``auto``: one intra-op thread for small networks. Their matrix products take
    microseconds, and waking a second OpenMP thread (which then competes with the logger's
    writer thread on a 2-core machine) costs more than it saves. Larger products keep
    torch's default thread count."""
    if num_threads in (None, "default"):
        return
    if num_threads == "auto":
        if batch_size * sum(p.numel() for p in net.parameters()) < 5_000_000:
            torch.set_num_threads(1)
        return
    torch.set_num_threads(int(num_threads))
