"""Low-level storage shared by every layer that writes files: atomic writes and checkpoints.

It imports nothing from thermoflow, so engines (``nct``, and the ones to come) can checkpoint
without importing the workflows layer above them.
"""

from thermoflow.io.atomic import atomic_write_bytes, atomic_write_text
from thermoflow.io.checkpoint import CheckpointError, load_checkpoint, load_latest_checkpoint, previous_path, save_checkpoint

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_checkpoint",
    "load_latest_checkpoint",
    "previous_path",
    "save_checkpoint",
]
