"""Sweep executors: the phase comparison on a 2-worker Dask LocalCluster and through submitit's
in-process Slurm path gives the local results; bad executor configs are refused."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from thermoflow.workflows.compare import run_compare
from thermoflow.workflows.config import ConfigError
from thermoflow.workflows.executors import DaskExecutor, ExecutorConfig, LocalExecutor, SlurmExecutor

from test_compare import write

#: the tests directory (the plug-in potential `anharmonic_models` lives there), for worker processes
TESTS_DIR_FOR_WORKERS = str(Path(__file__).resolve().parents[1])

TEMPERATURES = [60.0, 150.0]


def _values(summary):
    return {name: (entry["value_eV_per_atom"], entry["stderr_eV_per_atom"]) for name, entry in summary["phases"].items()}


def _square_root(x):
    """A point runner: module level, plain data in and out; fails on negative input."""
    if x < 0:
        raise ValueError(f"negative point {x}")
    return float(np.sqrt(x))


def test_cluster_executors_map_in_order_and_raise_failures(tmp_path):
    """A 2-worker Dask LocalCluster and submitit's in-process Slurm path return the results in the
    order of the items, like the local executor, and a failing point raises its own error."""
    pytest.importorskip("distributed", reason='the Dask executor needs dask.distributed: pip install "thermoflow[cluster]"')
    pytest.importorskip("submitit", reason='the Slurm executor needs submitit: pip install "thermoflow[cluster]"')
    items = [16.0, 1.0, 9.0, 4.0, 0.0]
    expected = [4.0, 1.0, 3.0, 2.0, 0.0]
    dask = DaskExecutor(n_workers=2)
    try:
        assert dask.map(_square_root, items) == expected
        with pytest.raises(ValueError, match="negative point -1"):
            dask.map(_square_root, [1.0, -1.0])
    finally:
        dask.close()
    slurm = SlurmExecutor(tmp_path / "submitit", cluster="debug")
    assert slurm.map(_square_root, items) == expected
    assert LocalExecutor().map(_square_root, items) == expected


@pytest.mark.slow  # ~3 min on 2 cores: 12 NCT points, two Dask worker processes compiling their own
def test_dask_and_slurm_executors_give_the_local_results(tmp_path, monkeypatch):
    """Two Einstein phases at two temperatures (4 points): a 2-worker Dask LocalCluster (separate
    processes, so the plug-in module comes from PYTHONPATH) and submitit's debug cluster (the Slurm
    code path, in-process) reproduce the local free energies to round-off, and write the same run
    directories (finished points are read back by a rerun)."""
    pytest.importorskip("distributed", reason='the Dask executor needs dask.distributed: pip install "thermoflow[cluster]"')
    pytest.importorskip("submitit", reason='the Slurm executor needs submitit: pip install "thermoflow[cluster]"')
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS_DIR_FOR_WORKERS, os.environ.get("PYTHONPATH", "")]))
    path = write(tmp_path, temps=TEMPERATURES)
    local = run_compare(path, tmp_path / "local", executor=LocalExecutor())
    dask = DaskExecutor(n_workers=2)
    try:
        distributed = run_compare(path, tmp_path / "dask", executor=dask)
    finally:
        dask.close()
    slurm = run_compare(path, tmp_path / "slurm", executor=SlurmExecutor(tmp_path / "submitit", cluster="debug"))
    for other in (distributed, slurm):
        for name, (value, stderr) in _values(local).items():
            np.testing.assert_allclose(_values(other)[name][0], value, rtol=0, atol=1e-12)
            np.testing.assert_allclose(_values(other)[name][1], stderr, rtol=0, atol=1e-12)
    for directory in ("dask", "slurm"):
        assert json.loads((tmp_path / directory / "soft" / "150K" / "results.json").read_text())["completed"]


def test_executor_is_chosen_and_validated_from_the_compare_section(tmp_path):
    """[compare.executor] is validated with the rest of the file (unknown kinds, an address for a
    non-Dask executor), and kind = "local" is the default."""
    assert ExecutorConfig().kind == "local"
    path = write(tmp_path, temps=TEMPERATURES)
    text = path.read_text()
    for bad, message in (('kind = "mpi"', "compare.executor.kind"), ('address = "tcp://x:1"', "is for kind = 'dask'")):
        path.write_text(text.replace('warm_start_iterations = 2', f'warm_start_iterations = 2\nexecutor = {{ {bad} }}'))
        with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
            run_compare(path, tmp_path / "bad")
