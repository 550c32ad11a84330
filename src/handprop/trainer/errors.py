"""handprop's errors and what each one means for the user: one line and an exit status.

* :class:`UserError` — a mistake the user can fix (bad setting, bad data, a diverging run):
  one line, no traceback, status 2; :class:`ConfigError` is a bad config value.
* :class:`MachineError` — the machine refused a write (full disk, read-only folder): one line
  naming the path and the cause, status 1.

Imports nothing heavy: ``handprop-train --help`` must answer before torch is loaded.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix (bad setting, bad data, a diverging run): reported as one
    line, without a traceback."""


class ConfigError(UserError, ValueError):
    """A bad config value; the message names the key and what is allowed, in one line."""


class MachineError(Exception):
    """The machine refused a write (a full disk, a read-only or vanished folder, no
    permission): reported as one line naming the path and the cause, status 1."""


class Stopped(Exception):
    """A run stopped on request (SIGINT, i.e. Ctrl-C, or SIGTERM) after writing ``checkpoint``,
    its whole training state, from which ``ckpt_path=last`` resumes it exactly. Exit status
    128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process
    that a signal ended."""

    def __init__(self, signum: int, updates: int, checkpoint: Path) -> None:
        self.signum, self.updates, self.checkpoint = signum, updates, checkpoint
        super().__init__(f"stopped by {signal.Signals(signum).name} at update {updates}")


#: OS errors that only a write gets: the machine refused it, whoever wrote.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def is_user_error(err: BaseException) -> bool:
    if isinstance(err, UserError):
        return True
    if "omegaconf" not in sys.modules:  # (handprop-eval, -predict: never loaded, never raised)
        return False
    from omegaconf.errors import MissingMandatoryValue

    return isinstance(err, MissingMandatoryValue)


def is_known(err: BaseException) -> bool:
    """A failure reported as one line without a traceback: the user's or the machine's."""
    return is_user_error(err) or isinstance(err, MachineError)


def exit_status(err: BaseException) -> int:
    """2 for a mistake the user can fix in the command, 128 + the signal's number for a run
    stopped by one (:class:`Stopped`), 1 for anything else."""
    if isinstance(err, Stopped):
        return 128 + err.signum
    return 2 if is_user_error(err) else 1


def os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind ``err``: itself or one in its chain of causes (torch reports a
    failed write to a file object as a RuntimeError whose context is the OSError)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def write_failed(err: OSError, path: str | Path, doing: str = "writing") -> MachineError:
    """``no space left on device while writing <path>``."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    return MachineError(f"{reason[:1].lower()}{reason[1:]} while {doing} {path}")


def as_machine_error(err: BaseException, where: str | Path) -> BaseException:
    """``err`` as a :class:`MachineError` when an OS error that refuses writes caused it. A
    write whose error carries no file name (TensorBoard's writer thread) is named by the
    folder it wrote into, ``where``."""
    found = os_error(err)
    if is_known(err) or found is None or found.errno not in WRITE_ERRNOS:
        return err
    machine = write_failed(found, found.filename or f"into {where}")
    machine.__cause__ = err  # verbose=true shows where it came from
    return machine


class Diverged(UserError, RuntimeError):
    """Training produced a NaN or infinite loss; the message says at which step and why."""

    def __init__(
        self,
        step: int,
        loss: float,
        last_finite: float | None,
        lr: float | None,
        checkpoint_note: str = "",
    ) -> None:
        last = f"{last_finite:.6g}" if last_finite is not None else "none yet"
        lr_txt = f" (lr={lr:g})" if lr is not None else ""
        super().__init__(
            f"training diverged at step {step}: loss is {loss} (last finite loss: {last}); likely "
            f"causes: learning rate too high{lr_txt}, or unscaled inputs "
            f"(data.preprocessing=none).{checkpoint_note}"
        )
        self.step, self.loss, self.last_finite, self.lr = step, loss, last_finite, lr
