"""Shared test set-up: float64, the shared data directory, the test plug-in module on sys.path."""

import sys
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)

TESTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS_DIR))  # makes `anharmonic_models` importable as a plug-in target

SHARED_DIR = TESTS_DIR.parents[1] / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The project's ../shared data directory; skips the test with a clear message if absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data directory {SHARED_DIR} not found (expected beside the repository)")
    return SHARED_DIR
