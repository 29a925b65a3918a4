"""Data parallelism over devices and processes: a batch of independent samples split across a
one-axis mesh.

The NCT estimators are means over independent samples, so the work parallelises over the batch:
every device evaluates the local energies (and stresses) of its share of the samples, parameters
are replicated, and the means, estimators and gradients are reductions that XLA's partitioner
inserts (all-reduces over the mesh). The samples themselves are drawn from one global key before
they are split, so a run with a given seed and global batch draws the same samples on 1, 2 or N
devices and its results agree to round-off (the order of the reductions changes).

Several processes (hosts, or one process per GPU) join one run through
``jax.distributed.initialize`` (:func:`initialize_distributed`); the mesh then spans the devices
of every process, every process runs the same program on the same (replicated) parameters, and
only process 0 writes files (:func:`is_writer`; the run directory must be on a file system that
all processes see, so that a resume reads the same checkpoint everywhere).

jax.sharding, ``jax.shard_map`` and ``jax.distributed`` do the work; this module only builds the
mesh from the config's device count and maps a per-sample function over the sharded batch.
(JAX documentation, "Distributed arrays and automatic parallelization", "shard_map" and
"Using JAX in multi-host and multi-process environments".)
"""

from __future__ import annotations

from typing import Any, Callable

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

#: name of the mesh axis that the batch of samples is split along
BATCH_AXIS = "batch"


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Join a multi-process run: ``jax.distributed.initialize`` with these arguments (None:
    detected from the environment, e.g. Slurm's or Open MPI's variables, or
    ``JAX_COORDINATOR_ADDRESS``). Call it once per process before any JAX computation. CPU
    devices of different processes talk through gloo (set here; GPUs use NCCL).

    Raises:
        RuntimeError: JAX has already computed something in this process, or the coordinator
            cannot be reached (from JAX).
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)


def is_writer() -> bool:
    """Whether this process writes files: process 0 of a multi-process run (or the only one)."""
    return jax.process_index() == 0


def make_batch_mesh(devices: str | int = "all") -> Mesh | None:
    """A one-axis mesh over the first ``devices`` local devices (``"all"``: every one).

    Returns:
        the mesh, or None when it would hold a single device (no sharding needed).

    Raises:
        ValueError: ``devices`` is neither ``"all"`` nor a positive integer, or asks for more
            devices than JAX sees (``jax.devices()``; on a CPU, more can be emulated with
            ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before JAX starts).
    """
    available = jax.devices()  # global: the devices of every process of a multi-process run
    if devices == "all":
        n = len(available)
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        n = devices
    else:
        raise ValueError(f"devices must be 'all' or a positive integer, got {devices!r}")
    if n > len(available):
        raise ValueError(
            f"{n} devices requested but JAX sees {len(available)} ({available[0].platform}); "
            "on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N emulates N devices"
        )
    if n == 1:
        return None
    # Auto axis: XLA's partitioner propagates the batch split through the jitted step
    return jax.make_mesh((n,), (BATCH_AXIS,), axis_types=(AxisType.Auto,), devices=available[:n])


def n_devices(mesh: Mesh | None) -> int:
    """Devices of a batch mesh (1 for None)."""
    return 1 if mesh is None else mesh.devices.size


def check_batch_divisible(batch_size: int, mesh: Mesh | None, what: str = "batch_size") -> None:
    """Raise ValueError unless ``batch_size`` splits evenly over the mesh's devices."""
    n = n_devices(mesh)
    if batch_size % n:
        raise ValueError(f"{what} = {batch_size} does not split evenly over {n} devices: use a multiple of {n}")


def constrain_batch(x: Any, mesh: Mesh | None) -> Any:
    """Inside a jitted function: ask for the leading (batch) axis of every leaf of ``x`` to be
    split over the mesh, so the per-sample work that follows is partitioned. Identity for None."""
    if mesh is None:
        return x
    sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
    return jax.tree_util.tree_map(lambda a: jax.lax.with_sharding_constraint(a, sharding), x)


def map_samples(fn: Callable, xs: Any, *, chunk_size: int | None, mesh: Mesh | None = None) -> Any:
    """``fn`` over the leading (sample) axis of ``xs`` (an array or pytree): split over the mesh's
    devices, then ``chunk_size`` samples at a time on each (``jax.lax.map`` over chunks, ``vmap``
    within one; None: all at once). A sample count that does not split evenly stays on one
    device. ``fn`` may close over constants but not over traced values (use
    :func:`map_over_batch` with shared arguments for those). The result is replicated on every
    device (gathered), so the host of every process can read it.
    """
    n = jax.tree_util.tree_leaves(xs)[0].shape[0]

    def on_device(xs):
        if chunk_size is None or chunk_size >= jax.tree_util.tree_leaves(xs)[0].shape[0]:
            return jax.vmap(fn)(xs)
        return jax.lax.map(fn, xs, batch_size=chunk_size)

    if mesh is None or n % n_devices(mesh):
        return on_device(xs)
    out = map_over_batch(on_device, mesh, n_shared=0)(xs)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda a: jax.lax.with_sharding_constraint(a, replicated), out)


def map_over_batch(fn: Callable, mesh: Mesh | None, n_shared: int = 1) -> Callable:
    """``fn(*shared, *batched)`` run on each device's share of the batch.

    Args:
        fn: a function of ``n_shared`` replicated arguments (e.g. parameters) followed by
            arrays whose leading axis is the batch; it must return arrays (or a pytree of them)
            with the batch as leading axis.
        mesh: the batch mesh (None: ``fn`` itself).
        n_shared: how many leading arguments are replicated.

    The batch must split evenly over the devices (:func:`check_batch_divisible`).
    """
    if mesh is None:
        return fn

    def mapped(*args):
        specs = (PartitionSpec(),) * n_shared + (PartitionSpec(BATCH_AXIS),) * (len(args) - n_shared)
        return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(BATCH_AXIS), check_vma=False)(*args)

    return mapped
