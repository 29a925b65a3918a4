"""Shared test set-up: float64, a persistent compilation cache, the shared data directory, the test
plug-in module on sys.path."""

import os
import sys
import tempfile
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)

# Many tests build the same jitted step several times (a run, its interrupted twin, the resume, a
# CLI call): JAX's persistent compilation cache turns the repeats into cache hits (measured: the
# NCT resume test 84.6 -> 44.5 s from an empty cache). Keys hold the HLO, the backend and the JAX
# version, so a stale entry cannot be picked up; the xdist workers share the directory. Set
# JAX_COMPILATION_CACHE_DIR to choose another directory.
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", str(Path(tempfile.gettempdir()) / "thermoflow-test-jax-cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

TESTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS_DIR))  # makes `anharmonic_models` importable as a plug-in target

SHARED_DIR = TESTS_DIR.parents[1] / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The project's ../shared data directory; skips the test with a clear message if absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data directory {SHARED_DIR} not found (expected beside the repository)")
    return SHARED_DIR
