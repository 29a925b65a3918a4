"""Atomic file writes: a temporary file in the same directory, then ``os.replace``, so a reader
(or a run killed mid-write) sees the old file or the new one, never a partial one. In a
multi-process run only process 0 writes (:func:`thermoflow.parallel.is_writer`); the others'
writes are no-ops."""

from __future__ import annotations

import os
from pathlib import Path

from thermoflow.parallel import is_writer


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync'd before the rename).

    Raises:
        OSError: if the write fails (the temporary file is removed, ``path`` is untouched).
    """
    if not is_writer():
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())
