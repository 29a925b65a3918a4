"""Periodic images and fixed-size neighbour lists for the Deep Potential adapter (:mod:`thermoflow.potentials.deepmd`).

The images are a fixed set of lattice shifts chosen from a reference cell (so the energy function
jits); the neighbour list is either deepmd-kit's distance-sorted one or, for descriptors that are
sums over neighbours (se_e2_a, se_e2_r, se_e3 and their hybrids), a sort-free counting sort over
cutoff shells that selects the same neighbours (XLA's sort is slow on CPU).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def descriptor_parts(model: Any) -> list:
    """The (sub-)descriptors of a model: the parts of a hybrid, else the descriptor itself."""
    descriptor = model.atomic_model.descriptor
    return list(getattr(descriptor, "descrpt_list", [descriptor]))


def fixed_atom_types(type_map: Sequence[str], type_map_symbols: Sequence[str] | None) -> np.ndarray | None:
    """The model's type index of every atom, (n_atoms,) int64, or None (single-type model, any count).

    Raises:
        ValueError: symbols not in the type map, or None for a model with several types.
    """
    if type_map_symbols is None:
        if len(type_map) != 1:
            raise ValueError(
                f"the model has {len(type_map)} atom types {list(type_map)}; pass type_map_symbols "
                "(one chemical symbol per atom)"
            )
        return None
    unknown = sorted(set(type_map_symbols) - set(type_map))
    if unknown:
        raise ValueError(f"symbols {unknown} are not in the model's type map {list(type_map)}")
    return np.array([list(type_map).index(s) for s in type_map_symbols], dtype=np.int64)


def interplanar_spacings(cell: Any) -> np.ndarray:
    """Distances between neighbouring lattice planes of a cell.

    Args:
        cell: (3, 3) lattice vectors as rows, Angstrom.

    Returns:
        (3,) spacing ``d_a = V / |b x c|`` (and cyclic), Angstrom.
    """
    cell = np.asarray(cell, dtype=np.float64)
    volume = abs(np.linalg.det(cell))
    cross = np.cross(np.roll(cell, -1, axis=0), np.roll(cell, -2, axis=0))
    return volume / np.linalg.norm(cross, axis=1)


def images_per_direction(cell: Any, cutoff: float) -> tuple[int, int, int]:
    """Number of periodic images ``n_a = ceil(cutoff / d_a)`` needed in each lattice direction.

    Args:
        cell: (3, 3) lattice vectors as rows, Angstrom.
        cutoff: interaction cutoff (plus any margin), Angstrom.

    Returns:
        ``(n_1, n_2, n_3)``; shifts ``-n_a..n_a`` reach every neighbour within ``cutoff`` of
        an atom wrapped into the cell.
    """
    return tuple(int(math.ceil(cutoff / d - 1e-12)) for d in interplanar_spacings(cell))


def image_shifts(n_images: Sequence[int]) -> np.ndarray:
    """Integer lattice shifts, (n_shifts, 3), with (0, 0, 0) first."""
    axes = [np.arange(-n, n + 1) for n in n_images]
    shifts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    order = np.argsort(np.abs(shifts).sum(axis=1), kind="stable")
    return shifts[order]


#: Descriptors whose output is a sum over neighbours: the order of the neighbour list and
#: padding with out-of-cutoff atoms do not change them, so a sort-free list is exact.
_ORDER_FREE_DESCRIPTORS = frozenset({"DescrptSeA", "DescrptSeR", "DescrptSeT"})


def neighbor_levels(model: Any) -> tuple[list[float], list[tuple[int, list[int]]]] | None:
    """Cutoff levels and per-descriptor selections for the sort-free neighbour list.

    Returns:
        ``(rcuts, checks)``: ascending distinct cutoffs (Angstrom) and, for every (sub-)
        descriptor, ``(level index, sel per type)``; ``None`` if some descriptor is not known
        to be independent of the neighbour order (then deepmd-kit's sorted list is needed).
    """
    parts = descriptor_parts(model)
    for part in parts:
        names = {cls.__name__ for cls in type(part).__mro__}
        if not names & _ORDER_FREE_DESCRIPTORS or part.mixed_types():
            return None
    rcuts = sorted({float(part.get_rcut()) for part in parts})
    checks = [(rcuts.index(float(part.get_rcut())), list(part.get_sel())) for part in parts]
    return rcuts, checks


def compact_neighbor_list(distances, extended_types, rcuts, checks, sel, ntypes, columns=None):
    """Fixed-size neighbour list without sorting (a counting sort by cutoff shell).

    Within the section of each neighbour type (``sel[t]`` slots, as deepmd-kit lays it out),
    neighbours inside the smallest cutoff come first, then the next shell, and so on; so the
    first ``sel_i[t]`` slots hold every type-t neighbour within ``rcut_i``, which is what
    deepmd-kit's hybrid descriptor takes for sub-descriptor i. Same set of neighbours as
    deepmd-kit's distance-sorted list whenever no count exceeds its ``sel``.

    Args:
        distances: (n_atoms, n_extended) distances, Angstrom, self pairs set to +inf; or
            (n_atoms, n_candidates) distances to each atom's own candidates (with ``columns``).
        extended_types: (n_extended,) atom types of the extended atoms, or (n_atoms,
            n_candidates) types of each atom's candidates.
        rcuts: ascending distinct cutoffs, Angstrom.
        checks: ``(level, sel per type)`` for each (sub-)descriptor.
        sel: model-level slots per type.
        ntypes: number of atom types.
        columns: None (candidate k of every atom is extended atom k), or (n_atoms, n_candidates)
            the extended-atom index of each atom's candidate (a neighbour list's ghost atoms).

    Returns:
        ``(nlist, overflow)``: (n_atoms, sum(sel)) int neighbour indices (-1 = empty) and a
        bool scalar, True if some atom has more neighbours than a descriptor's ``sel``.
    """
    import jax.numpy as jnp

    n_atoms, n_extended = distances.shape
    n_slots = sum(sel)
    shell = jnp.sum(distances[:, :, None] > jnp.asarray(rcuts), axis=-1)  # 0..K, K = outside
    slot = jnp.full((n_atoms, n_extended), n_slots, dtype=jnp.int32)  # n_slots = discarded
    overflow = jnp.zeros((), dtype=bool)
    offset = 0
    for t in range(ntypes):
        of_type = extended_types == t if extended_types.ndim == 2 else (extended_types == t)[None, :]
        filled = jnp.zeros((n_atoms,), dtype=jnp.int32)
        for level in range(len(rcuts)):
            member = of_type & (shell == level)
            rank = jnp.cumsum(member, axis=1, dtype=jnp.int32) - 1
            position = offset + filled[:, None] + rank
            keep = member & (position < offset + sel[t])
            slot = jnp.where(keep, position, slot)
            filled = filled + jnp.sum(member, axis=1, dtype=jnp.int32)
            for check_level, check_sel in checks:
                if check_level == level:
                    overflow = overflow | jnp.any(filled > check_sel[t])
        overflow = overflow | jnp.any(filled > sel[t])
        offset += sel[t]
    rows = jnp.broadcast_to(jnp.arange(n_atoms)[:, None], slot.shape)
    if columns is None:
        columns = jnp.arange(n_extended)[None, :]
    columns = jnp.broadcast_to(columns, slot.shape)
    nlist = jnp.full((n_atoms, n_slots + 1), -1, dtype=jnp.int64)
    nlist = nlist.at[rows, slot].set(columns.astype(jnp.int64))
    return nlist[:, :n_slots], overflow
