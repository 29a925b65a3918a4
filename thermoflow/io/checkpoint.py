"""Atomic checkpoints of pytrees as plain arrays (NumPy ``.npz``), no pickled code objects.

A checkpoint holds the leaves of a pytree (params, optimiser state, ...) under their index,
plus JSON metadata. Restoring needs a template pytree of the same structure (built from the
config, as at the start of a run), which also makes an incompatible checkpoint an error rather
than silent garbage. Writes go to a temporary file in the same directory followed by
``os.replace``, so an interrupted write never corrupts the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

from thermoflow.parallel import is_writer


class CheckpointError(RuntimeError):
    """No usable checkpoint could be read, or a checkpoint could not be written."""


#: what reading a damaged or foreign checkpoint file raises
UNREADABLE = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile)


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before the newest one is kept (``state.npz`` -> ``state.prev.npz``)."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def save_checkpoint(path: str | Path, tree: Any, metadata: dict, arrays: dict[str, np.ndarray] | None = None) -> None:
    """Atomically write ``tree`` leaves, extra named ``arrays`` and JSON ``metadata`` to ``path``.

    The checkpoint it replaces is kept as :func:`previous_path` (one generation), so a newest
    checkpoint damaged after it was written still leaves a usable one.

    Raises:
        CheckpointError: if the write fails (e.g. the disk is full); the existing checkpoints
            are left untouched and the partial file is removed.

    In a multi-process run only process 0 writes (:func:`thermoflow.parallel.is_writer`).
    """
    if not is_writer():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(tree)
    payload = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    for name, value in (arrays or {}).items():
        payload[f"array_{name}"] = np.asarray(value)
    payload["metadata_json"] = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(
            f"could not write the checkpoint {path} ({exc.strerror or exc}); the previous checkpoint is intact: "
            "free disk space, then continue with --resume"
        ) from exc
    if path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)


def load_latest_checkpoint(path: str | Path, template: Any) -> tuple[Any, dict, dict[str, np.ndarray], Path]:
    """The newest readable checkpoint: ``path``, else :func:`previous_path` (damaged newest file).

    Returns:
        ``(tree, metadata, arrays, path_read)``.

    Raises:
        FileNotFoundError: if neither file exists.
        CheckpointError: if no existing file is usable (the message gives each reason).
    """
    path = Path(path)
    candidates = [p for p in (path, previous_path(path)) if p.is_file()]
    if not candidates:
        raise FileNotFoundError(f"checkpoint not found: {path}")
    reasons = []
    for candidate in candidates:
        try:
            tree, metadata, arrays = load_checkpoint(candidate, template)
        except UNREADABLE as exc:
            reasons.append(f"{candidate.name}: {exc}")
            continue
        return tree, metadata, arrays, candidate
    raise CheckpointError("no usable checkpoint: " + "; ".join(reasons) + ". Start the run afresh in a new directory.")


def load_checkpoint(path: str | Path, template: Any) -> tuple[Any, dict, dict[str, np.ndarray]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns:
        ``(tree, metadata, arrays)`` with ``tree`` shaped like ``template``.

    Raises:
        FileNotFoundError: if the file is missing.
        ValueError: if the stored leaves do not match the template (other config).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with np.load(path) as data:
        metadata = json.loads(bytes(data["metadata_json"]).decode())
        leaves_t, treedef = jax.tree_util.tree_flatten(template)
        keys = sorted(k for k in data.files if k.startswith("leaf_"))
        if len(keys) != len(leaves_t):
            raise ValueError(
                f"checkpoint {path} has {len(keys)} arrays, the current config needs "
                f"{len(leaves_t)}: it was written by a run with another model configuration"
            )
        leaves = []
        for key, ref in zip(keys, leaves_t):
            value = data[key]
            if value.shape != np.shape(ref):
                raise ValueError(f"checkpoint {path}: array {key} has shape {value.shape}, expected {np.shape(ref)}")
            leaves.append(jax.numpy.asarray(value, dtype=jax.numpy.asarray(ref).dtype))
        arrays = {k[len("array_") :]: data[k] for k in data.files if k.startswith("array_")}
    return jax.tree_util.tree_unflatten(treedef, leaves), metadata, arrays
