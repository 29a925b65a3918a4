"""Deep Potential models on cell-list neighbour lists (O(N) per evaluation, for large cells).

The dense adapter (:func:`thermoflow.potentials.deepmd.make_deepmd_energy_fn`) builds every atom's
images over a fixed set of lattice shifts and an (n_atoms, n_atoms x n_shifts) distance matrix:
O(N^2) time and memory. Here the neighbours come from a
:class:`thermoflow.potentials.neighbors.NeighborList` built with the model's cutoff and a skin:
every slot (j, n) of atom i becomes one ghost atom at R_j + n @ cell of its own, so the extended
system deepmd-kit's ``forward_common_atomic`` sees is the n_atoms local atoms followed by
n_atoms x max_neighbors ghosts, and its neighbour list row i points at i's own ghosts. The
selection within a row is the dense adapter's sort-free one
(:func:`thermoflow.potentials.deepmd_neighbors.compact_neighbor_list`, per-row candidates), so the
same neighbours enter the descriptor and energies, forces and virials equal the dense adapter's
to round-off (``tests/potentials/test_deepmd_listed.py``).

Supported: the descriptors of the compact list (se_e2_a, se_e2_r, se_e3 and hybrids of them,
without pair_exclude_types), as the lithium models; models whose descriptors branch on the atom
types at trace time (multi-type se_e2_a with type_one_side=False) and mixed-type (attention)
descriptors are not (NotImplementedError): they need the dense adapter.

References: Zhang et al., Phys. Rev. Lett. 120, 143001 (2018), doi:10.1103/PhysRevLett.120.143001;
deepmd-kit v3, arXiv:2502.19161; neighbour lists as in :mod:`thermoflow.potentials.neighbors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.potentials.deepmd_neighbors import compact_neighbor_list, fixed_atom_types, neighbor_levels
from thermoflow.potentials.neighbors import NeighborList, needs_rebuild, pair_vectors


class NeighborEnergy(NamedTuple):
    """A neighbour-list potential: ``energy_fn(positions (n, 3) A, cell (3, 3) A, neighbors) -> eV``
    and the cutoff (Angstrom) and skin (Angstrom) its lists must be built with
    (:func:`thermoflow.potentials.neighbors.allocate_neighbor_list`)."""

    energy_fn: Callable
    cutoff_A: float
    skin_A: float


def _load(model_path: str | Path | Any):
    from thermoflow.potentials.deepmd import load_deepmd_model

    if isinstance(model_path, (str, Path)):
        return load_deepmd_model(model_path)
    if hasattr(model_path, "atomic_model") and hasattr(model_path, "get_rcut"):
        return model_path
    raise TypeError(f"model_path must be a path to a .dp file or a model from load_deepmd_model, got {type(model_path).__name__}")


def _listed_energy_fn(model, skin_A: float, types: np.ndarray | None, levels) -> Callable:
    atomic_model = model.atomic_model
    rcut, sel, ntypes = float(model.get_rcut()), list(model.get_sel()), len(model.get_type_map())

    def energy_fn(positions: jax.Array, cell: jax.Array, neighbors: NeighborList) -> jax.Array:
        with jax.default_matmul_precision("highest"):
            positions = jnp.asarray(positions, dtype=jnp.float64)
            cell = jnp.asarray(cell, dtype=jnp.float64)
            n_atoms = positions.shape[0]
            if types is not None and types.shape[0] != n_atoms:
                raise ValueError(f"positions have {n_atoms} atoms but type_map_symbols has {types.shape[0]}")
            local_types = jnp.zeros(n_atoms, jnp.int64) if types is None else jnp.asarray(types)
            vec, filled = pair_vectors(neighbors, positions, cell)
            vec = jnp.moveaxis(vec, 0, -1)  # (n, M, 3)
            n_slots = vec.shape[1]
            j = jnp.minimum(neighbors.indices, n_atoms - 1)
            ghosts = (positions[:, None, :] + vec).reshape(-1, 3)  # R_j + n h
            extended = jnp.concatenate([positions, ghosts])
            candidate_types = local_types[j]
            extended_types = jnp.concatenate([local_types, candidate_types.reshape(-1)])
            distances = jnp.where(filled, jnp.linalg.norm(jax.lax.stop_gradient(vec), axis=-1), jnp.inf)
            columns = n_atoms + jnp.arange(n_atoms * n_slots).reshape(n_atoms, n_slots)
            nlist, overflow = compact_neighbor_list(distances, candidate_types, levels[0], levels[1], sel, ntypes, columns=columns)
            mapping = jnp.concatenate([jnp.arange(n_atoms), j.reshape(-1)])
            atomic = atomic_model.forward_common_atomic(extended[None], extended_types[None], nlist[None], mapping=mapping[None],
                                                        fparam=None, aparam=None)
            energy = jnp.sum(atomic["energy"])
            stale = needs_rebuild(neighbors, positions, cell, rcut, skin_A)
            return jnp.where(overflow | stale, jnp.nan, energy)

    return energy_fn


def make_deepmd_energy_fn_neighbors(
    model_path: str | Path | Any, *, skin_A: float = 1.0, type_map_symbols: Sequence[str] | None = None,
    compress: bool = False, min_distance_A: float = 1.2,
) -> NeighborEnergy:
    """A DeePMD energy function on neighbour lists (see the module docstring).

    Args:
        model_path: a deepmd-kit native model file (``.dp``) or a model from
            :func:`thermoflow.potentials.deepmd.load_deepmd_model`.
        skin_A: skin of the lists, Angstrom (> 0).
        type_map_symbols: chemical symbol of every atom (length n_atoms); None for a single-type
            model (any number of atoms).
        compress: energies from tabulated embedding networks, derivatives from the network, as
            :func:`thermoflow.potentials.deepmd_compress.make_compressed_deepmd_energy_fn` (needs
            a path, not a loaded model).
        min_distance_A: with ``compress``, the closest pair the tables cover (closer: NaN).

    Returns:
        :class:`NeighborEnergy`: ``energy_fn(positions (n, 3) A, cell (3, 3) A, neighbors) -> eV``
        (jit/vmap/grad-safe; NaN when the list is stale or overflowed, or when an atom has more
        neighbours than the model's ``sel``), the model cutoff and ``skin_A``.

    Raises:
        ImportError: without deepmd-kit.
        FileNotFoundError, TypeError: as the dense adapter.
        ValueError: a non-positive skin, unknown symbols, a multi-type model without symbols,
            ``compress`` with a loaded model.
        NotImplementedError: for descriptors outside the compact list's family, or whose atom
            types must be concrete at trace time (use the dense adapter).
    """
    from thermoflow.potentials.deepmd import _needs_concrete_types

    if not skin_A > 0:
        raise ValueError(f"skin must be > 0 Angstrom, got {skin_A}")
    if compress and not isinstance(model_path, (str, Path)):
        raise ValueError("compress=True needs the model file's path (two copies are loaded, one is tabulated)")
    model = _load(model_path)
    levels = neighbor_levels(model)
    if levels is None or model.mixed_types() or model.atomic_model.pair_excl is not None or _needs_concrete_types(model):
        raise NotImplementedError(
            "DeePMD on neighbour lists covers se_e2_a / se_e2_r / se_e3 (and hybrids) without pair_exclude_types, and "
            "not multi-type se_e2_a with type_one_side=false; use make_deepmd_energy_fn (dense) for this model"
        )
    types = fixed_atom_types(list(model.get_type_map()), type_map_symbols)
    full = _listed_energy_fn(model, skin_A, types, levels)
    if compress:
        from thermoflow.potentials.deepmd_compress import compress_descriptors

        tabulated_model = _load(model_path)
        compress_descriptors(tabulated_model, min_distance_A=min_distance_A)
        tabulated = _listed_energy_fn(tabulated_model, skin_A, types, levels)

        def energy_fn(positions, cell, neighbors):
            @jax.custom_jvp
            def energy(x, h):
                return tabulated(x, h, neighbors)

            @energy.defjvp
            def _network_derivative(primals, tangents):
                return tabulated(*primals, neighbors), jax.jvp(lambda x, h: full(x, h, neighbors), primals, tangents)[1]

            return energy(positions, cell)
    else:
        energy_fn = full
    return NeighborEnergy(energy_fn, float(model.get_rcut()), float(skin_A))
