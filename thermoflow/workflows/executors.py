"""Executors for the independent points of a sweep (phase comparison, EOS scans): run them here,
on a Dask cluster, or as Slurm jobs, behind one ``map(fn, items) -> list`` interface.

A point runner is a module-level function of plain data (it pickles) that writes its own run
directory and returns its results dictionary; the workflow never needs to know where it ran.
Results come back in the order of ``items``. A point that fails raises in ``map`` (after the other
points of the call finished on a cluster executor), so a rerun of the workflow reads the finished
points back and retries only the failed ones.

* ``local`` (default): one after another in this process.
* ``dask``: ``dask.distributed`` (https://distributed.dask.org): a running scheduler at
  ``address`` (any cluster: dask-jobqueue, Kubernetes, ``dask scheduler`` + ``dask worker`` by
  hand), or, without an address, a ``LocalCluster`` of ``n_workers`` single-threaded worker
  processes on this machine. Each worker process runs one point at a time (``resources`` of one
  "point" per worker), so a JAX point has the worker's devices to itself.
* ``slurm``: one Slurm job array per ``map`` call through submitit
  (https://github.com/facebookincubator/submitit): partition, time limit, CPUs and GPUs per point;
  job logs and pickles in ``folder``. submitit's ``debug`` cluster runs the same path in-process
  (tests), its ``local`` cluster as local subprocesses.

Why these libraries and not our own process pool: Dask and submitit already handle scheduling,
worker failure, logs and cluster submission; the only thermoflow-specific part is the point runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Protocol

from pydantic import Field, model_validator

from thermoflow.workflows.config import StrictModel


class Executor(Protocol):
    """Anything that runs ``fn`` on every item and returns the results in order."""

    def map(self, fn: Callable, items: Iterable) -> list: ...


class LocalExecutor:
    """Runs the points one after another in this process (the default executor)."""

    def map(self, fn: Callable, items: Iterable) -> list:
        return [fn(item) for item in items]

    def close(self) -> None:
        pass


class DaskExecutor:
    """Runs the points on a Dask cluster (``dask.distributed``), one point per worker at a time.

    Args:
        address: scheduler address (``tcp://host:8786``); None starts a ``LocalCluster``.
        n_workers: worker processes of the local cluster (ignored with ``address``).

    Raises:
        ImportError: ``dask.distributed`` is not installed (``pip install "thermoflow[cluster]"``).
    """

    def __init__(self, address: str | None = None, n_workers: int = 2):
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError('executor.kind = "dask" needs dask.distributed: pip install "thermoflow[cluster]"') from exc
        if address is None:
            self._cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                         resources={"point": 1}, dashboard_address=None)
            self._client = Client(self._cluster)
        else:
            self._cluster = None
            self._client = Client(address)

    def map(self, fn: Callable, items: Iterable) -> list:
        items = list(items)
        if not items:
            return []
        resources = {"point": 1} if self._cluster is not None else None
        futures = self._client.map(fn, items, pure=False, resources=resources)
        return self._client.gather(futures)

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


class SlurmExecutor:
    """Runs every ``map`` call as one Slurm job array (submitit), waiting for all of its jobs.

    Args:
        folder: directory for submitit's job scripts, pickles and logs.
        cluster: ``"slurm"``, or submitit's ``"local"`` / ``"debug"`` for testing the same path.
        partition, time_min, cpus_per_task, gpus_per_node, mem_gb: the job's resources.
        additional: other Slurm parameters (``slurm_additional_parameters``), e.g. ``{"account": "..."}``.

    Raises:
        ImportError: submitit is not installed (``pip install "thermoflow[cluster]"``).
    """

    def __init__(self, folder: str | Path, *, cluster: str = "slurm", partition: str | None = None, time_min: int = 60,
                 cpus_per_task: int = 2, gpus_per_node: int = 0, mem_gb: float | None = None,
                 additional: dict[str, Any] | None = None):
        try:
            import submitit
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError('executor.kind = "slurm" needs submitit: pip install "thermoflow[cluster]"') from exc
        self._executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params: dict[str, Any] = {"timeout_min": time_min, "cpus_per_task": cpus_per_task}
        if cluster == "slurm":
            params.update(slurm_partition=partition, gpus_per_node=gpus_per_node, slurm_additional_parameters=additional or {})
            if mem_gb is not None:
                params["mem_gb"] = mem_gb
        self._executor.update_parameters(**{k: v for k, v in params.items() if v is not None})

    def map(self, fn: Callable, items: Iterable) -> list:
        items = list(items)
        if not items:
            return []
        jobs = self._executor.map_array(fn, items)
        return [job.result() for job in jobs]

    def close(self) -> None:
        pass


class ExecutorConfig(StrictModel):
    """Where the independent points of a sweep run (``[compare.executor]``)."""

    kind: Literal["local", "dask", "slurm"] = Field("local", description="local (this process), dask (dask.distributed) or slurm (submitit job arrays)")
    address: str | None = Field(None, description="dask: scheduler address (tcp://host:8786); unset: a LocalCluster on this machine")
    n_workers: int = Field(2, ge=1, description="dask without an address: worker processes of the local cluster")
    partition: str | None = Field(None, description="slurm: partition")
    time_min: int = Field(60, ge=1, description="slurm: time limit per point, minutes")
    cpus_per_task: int = Field(2, ge=1, description="slurm: CPUs per point")
    gpus_per_node: int = Field(0, ge=0, description="slurm: GPUs per point")
    mem_gb: float | None = Field(None, gt=0, description="slurm: memory per point, GB")
    additional: dict[str, Any] = Field(default_factory=dict, description="slurm: further sbatch parameters, e.g. {account = \"...\"}")
    folder: str | None = Field(None, description="slurm: submitit's folder for job scripts and logs (default: OUT/slurm)")
    submitit_cluster: Literal["slurm", "local", "debug"] = Field(
        "slurm", description="slurm: submitit's backend; local (subprocesses) and debug (in-process) test the same path",
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.kind != "dask" and self.address is not None:
            raise ValueError(f"executor.address is for kind = 'dask', not {self.kind!r}")
        return self


def make_executor(config: ExecutorConfig, out_dir: Path) -> LocalExecutor | DaskExecutor | SlurmExecutor:
    """The executor a config asks for (close it when done)."""
    if config.kind == "dask":
        return DaskExecutor(config.address, config.n_workers)
    if config.kind == "slurm":
        return SlurmExecutor(config.folder or Path(out_dir) / "slurm", cluster=config.submitit_cluster, partition=config.partition,
                             time_min=config.time_min, cpus_per_task=config.cpus_per_task, gpus_per_node=config.gpus_per_node,
                             mem_gb=config.mem_gb, additional=config.additional)
    return LocalExecutor()
