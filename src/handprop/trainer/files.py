"""Files a run writes, written so that no reader sees half of one and a refused write is one
line: ``<path>.tmp`` and a rename; an OS error becomes a
:class:`~handprop.trainer.errors.MachineError` naming the path."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from handprop.trainer.errors import MachineError, os_error, write_failed


@contextmanager
def writing(path: str | Path, tmp: Path | None = None, doing: str = "writing") -> Iterator[None]:
    """Any failure inside: ``tmp`` removed, and an OS error raised as a :class:`MachineError`
    naming ``path`` (``<cause> while <doing> <path>``)."""
    try:
        yield
    except BaseException as e:
        if tmp is not None:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)
        found = os_error(e)
        if found is None or isinstance(e, MachineError):
            raise
        raise write_failed(found, path, doing) from e


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``path`` via ``<path>.tmp`` and a rename, so no reader sees half a file; a failed
    write leaves the old file (or none), no ``.tmp``, and raises a :class:`MachineError`."""
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
