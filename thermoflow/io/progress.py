"""Progress files of long deterministic stages (the self-consistent Gaussian's iterations, the
cubic force constants' sample groups): arrays plus the settings that produced them, written
atomically after every unit of work, so that an interrupted stage resumes where it stopped and a
file of other settings is refused rather than silently mixed in.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from thermoflow.io.atomic import atomic_write_bytes

_META = "metadata_json"


def save_progress(path: str | Path, settings: dict, done: int, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` with ``settings`` (JSON-serialisable) and the count of units ``done``.

    Raises:
        OSError: if the write fails (``path`` keeps its previous content).
    """
    meta = json.dumps({**settings, "done": done})
    buffer = io.BytesIO()
    np.savez(buffer, **{_META: np.frombuffer(meta.encode(), dtype=np.uint8)}, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def read_progress(path: str | Path, settings: dict, what: str) -> tuple[int, dict[str, np.ndarray]]:
    """``(units done, arrays)`` of a progress file written with exactly ``settings``.

    Args:
        path: the ``.npz`` progress file.
        settings: the settings of the stage about to run.
        what: what the file holds, for the error message (e.g. "the iterations of a Gaussian").

    Raises:
        ValueError: if the file was written with other settings (naming them) or by another version.
    """
    with np.load(path) as data:
        meta = json.loads(bytes(data[_META]).decode())
        arrays = {k: data[k] for k in data.files if k != _META}
    if "done" not in meta:
        raise ValueError(f"{path} is not a progress file of this version (no count of units done); remove it to start afresh")
    done = meta.pop("done")
    if meta != settings:
        differing = sorted(k for k in settings.keys() | meta.keys() if meta.get(k) != settings.get(k))
        raise ValueError(f"{path} holds {what} with other settings ({', '.join(differing)}); remove it to start afresh")
    return done, arrays
