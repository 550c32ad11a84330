"""Stopping a run on request: the first SIGINT (Ctrl-C) or SIGTERM (``kill``, a scheduler)
only records the request; training stops where its whole state can be saved
(:class:`handprop.trainer.checkpoints.StopOnSignal`), a sweep before its next job, and the run
prints the command that resumes it (:func:`resume_command`). A second signal ends the
process at once."""

from __future__ import annotations

import os
import shlex
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# ---- stopping on a signal --------------------------------------------------------------------
#: The signals that ask a run to stop: Ctrl-C and what schedulers and ``kill`` send.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


_stop: dict[str, Any] = {"signum": None, "handler": None}


def stop_requested() -> int | None:
    """The number of the first stop signal received (see :func:`stopping_on_signals`), or
    None."""
    return _stop["signum"]


def request_stop(signum: int) -> None:
    """Ask the run to stop, as the first SIGINT or SIGTERM does: training stops at its next
    safe point (:class:`handprop.trainer.checkpoints.StopOnSignal`), a sweep before its next job."""
    if _stop["signum"] is None:
        _stop["signum"] = signum


def _on_stop_signal(signum: int, frame: Any) -> None:
    if _stop["signum"] is not None:  # a second signal: end at once, as by default
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    request_stop(signum)


@contextmanager
def stopping_on_signals() -> Iterator[None]:
    """While inside, the first SIGINT or SIGTERM only records the request
    (:func:`stop_requested`), so that training stops where its state can be saved whole
    instead of wherever the signal lands; a second one ends the process at once, as the
    signal does by default. Outside the main thread (where Python cannot set handlers) it
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.signal(s, _on_stop_signal) for s in STOP_SIGNALS}
    _stop["handler"] = _on_stop_signal
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        _stop["signum"] = _stop["handler"] = None


def reclaim_stop_signals() -> None:
    """Put the stop handler back on SIGTERM where something replaced it (Lightning wraps it
    in its own when ``fit`` starts, which would end the epoch loop with its ``SIGTERMException``
    wherever the signal lands, before a checkpoint could be written)."""
    if _stop["handler"] is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop["handler"])


def resume_command(overrides: Iterable[str], run_dir: str | Path) -> str:
    """``handprop-train <overrides> hydra.run.dir=<run_dir> ckpt_path=last``: the command that
    resumes a stopped run, its overrides quoted for the shell. A search's (``hparams_search``)
    and a fresh start's (``overwrite``) are left out: resuming is one run, continued."""
    drop = ("ckpt_path", "overwrite", "hparams_search", "hydra.run.dir")
    kept = [o for o in overrides if o.lstrip("+~").partition("=")[0] not in drop]
    args = [*kept, f"hydra.run.dir={run_dir}", "ckpt_path=last"]
    return "handprop-train " + " ".join(shlex.quote(a) for a in args)
