"""Cell-list neighbour lists with a skin (Verlet lists) for periodic cells of any shape.

A :class:`NeighborList` holds, for every atom i, up to ``max_neighbors`` pairs (j, n): an atom
index j and an integer lattice translation n, such that the pair vector at call time is

    r_ij = R_j - R_i + n @ cell        (positions R unwrapped, cell rows = lattice vectors).

It lists every pair (including periodic images of i itself, for cells thinner than the cutoff)
with |r_ij| < cutoff + skin at the positions and cell of the last build. Because the pair vector
is recomputed from the call-time positions and cell, an energy built on the list is an ordinary
differentiable function of both (forces, and the virial by strain derivatives, are exact), and it
equals the dense lattice sum as long as no pair now inside the cutoff was outside cutoff + skin
at the build. :func:`needs_rebuild` checks a sufficient condition, for moving atoms and a
changing cell (NPT): with A = h0^-1 h (h0 the cell of the build, h the current one) every pair
vector satisfies |s h| >= sigma_min(A) |s h0| for fractional s, and each atom's displacement
measured in the build cell is delta_i = R_i A^-1 - R0_i; a pair now within r_c was within
r_c / sigma_min(A) + 2 max|delta| at the build, so the list is exact while that stays below
r_c + skin (for a fixed cell: the familiar max displacement < skin / 2). The check uses the
upper bound 1 / sigma_min(A) <= 1 + |A^-1 - 1|_F, tight for the small cell changes of NPT.

The build is O(N): atoms are binned in fractional coordinates into n_a cells along each lattice
direction a whose plane spacing d_a / n_a is at least cutoff + skin, and each atom looks at the
cells within +-k_a (k_a = 1 for large cells; more, with one cell, for cells thinner than the
cutoff, so small supercells work as in the dense sum). Capacities (atoms per cell, neighbours
per atom) and the grid are static shapes fixed on the host by :func:`allocate_neighbor_list`;
the build itself jits, so an MD step can rebuild inside a ``lax.scan``. An atom or cell beyond
capacity, or a cell shrunk so that the grid no longer covers the cutoff, sets ``overflow``; the
caller then allocates larger capacities on the host (:func:`allocate_neighbor_list` with
``previous``) and redoes the work.

Why not jax-md's ``partition.neighbor_list``: jax-md 0.2.29 does run on JAX 0.10 here, but it
keeps one minimum image per pair (no cells thinner than twice the cutoff, which the dense sum and
the small lithium supercells need), takes only upper-triangular boxes in its column convention,
and brings flax, e3nn-jax, jraph, optax and pymatgen as install dependencies.

References: L. Verlet, Phys. Rev. 159, 98 (1967), doi:10.1103/PhysRev.159.98 (neighbour lists
with a skin); M. P. Allen and D. J. Tildesley, Computer Simulation of Liquids, 2nd ed. (Oxford,
2017), sec. 5.3 (cell lists), doi:10.1093/oso/9780198803195.001.0001.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NeighborList:
    """A fixed-capacity neighbour list (a pytree; every leaf is an array).

    Attributes:
        indices: (n_atoms, max_neighbors) int32 neighbour atom j of atom i; ``n_atoms`` marks an
            empty slot.
        shifts: (3, n_atoms, max_neighbors) int32 lattice translation n of the pair, r_ij =
            R_j - R_i + n @ cell (components first: the pair sums vectorise over atoms and slots).
        reference_positions: (n_atoms, 3) positions of the last build, Angstrom.
        reference_cell: (3, 3) cell of the last build, rows, Angstrom.
        overflow: () bool, True once a build ran out of capacity or grid (sticky until a new
            allocation): the list is then incomplete and energies on it are NaN.
        n_builds: () int32, builds since allocation (the first included).
    """

    indices: jax.Array
    shifts: jax.Array
    reference_positions: jax.Array
    reference_cell: jax.Array
    overflow: jax.Array
    n_builds: jax.Array

    def replace(self, **changes) -> "NeighborList":
        return dataclasses.replace(self, **changes)


class NeighborListFns(NamedTuple):
    """Functions of one allocation (static capacities and grid), and the capacities.

    ``build(positions, cell) -> NeighborList`` (jittable); ``update(neighbors, positions, cell)
    -> NeighborList``: rebuilds (``lax.cond``) when :func:`needs_rebuild`, else returns the list
    unchanged; ``needs_rebuild(neighbors, positions, cell) -> bool``.
    """

    build: Callable
    update: Callable
    needs_rebuild: Callable
    cutoff_A: float
    skin_A: float
    max_neighbors: int
    max_atoms_per_cell: int
    n_cells: tuple[int, int, int]
    search: tuple[int, int, int]


def plane_spacings(cell) -> jax.Array:
    """Distances between neighbouring lattice planes, d_a = V / |b x c| (cyclic), shape (3,), Angstrom."""
    cell = jnp.asarray(cell)
    cross = jnp.cross(jnp.roll(cell, -1, axis=0), jnp.roll(cell, -2, axis=0))
    return jnp.abs(jnp.dot(cell[0], cross[0])) / jnp.linalg.norm(cross, axis=1)


def needs_rebuild(neighbors: NeighborList, positions: jax.Array, cell: jax.Array, cutoff_A: float, skin_A: float) -> jax.Array:
    """Whether ``neighbors`` may miss a pair within ``cutoff_A`` at ``positions`` and ``cell``.

    True if ``cutoff (1 + |A^-1 - 1|_F) + 2 max_i |R_i A^-1 - R0_i| >= cutoff + skin`` with
    A = h0^-1 h, or if the list overflowed (no gradient flows). 1 + |A^-1 - 1|_F (Frobenius norm)
    bounds 1 / sigma_min(A) = |A^-1|_2 of the module docstring from above, tightly for the small
    cell changes of NPT. 3x3 inverses are written out: with ``jnp.linalg.solve`` and
    ``eigvalsh`` this check measured ~35 ms per jitted MD step at 1000 atoms, 4x the forces.

    Args:
        neighbors: the list.
        positions: (n_atoms, 3) current positions, Angstrom.
        cell: (3, 3) current cell, rows, Angstrom.
        cutoff_A, skin_A: as at the build, Angstrom.

    Returns:
        () bool.
    """
    positions, cell = jax.lax.stop_gradient(positions), jax.lax.stop_gradient(cell)
    a_inv = _matmul_3x3(inverse_3x3(cell), neighbors.reference_cell)  # A^-1 = h^-1 h0
    stretch = 1.0 + jnp.sqrt(jnp.sum((a_inv - jnp.eye(3, dtype=cell.dtype)) ** 2))
    moved = sum(positions[:, k:k + 1] * a_inv[k] for k in range(3))  # R A^-1, (n, 3)
    max_disp = jnp.sqrt(jnp.max(jnp.sum((moved - neighbors.reference_positions) ** 2, axis=1)))
    return neighbors.overflow | (cutoff_A * stretch + 2.0 * max_disp >= cutoff_A + skin_A)


def inverse_3x3(m: jax.Array) -> jax.Array:
    """Inverse of a (3, 3) matrix from cross products (adjugate / determinant), no LAPACK call."""
    columns = jnp.stack([jnp.cross(m[1], m[2]), jnp.cross(m[2], m[0]), jnp.cross(m[0], m[1])], axis=1)
    return columns / jnp.dot(m[0], jnp.cross(m[1], m[2]))


def _matmul_3x3(a: jax.Array, b: jax.Array) -> jax.Array:
    return sum(a[:, k:k + 1] * b[k] for k in range(3))


def cell_grid(cell, list_cutoff_A: float, margin: float = 0.05) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Cells per lattice direction n_a = max(1, floor(d_a / (L (1 + margin)))) and search range
    k_a = ceil(L (1 + margin) n_a / d_a), for a list cutoff L = cutoff + skin (host, NumPy).

    The grid stays valid for a call-time cell while L n_a / d_a <= k_a: the cell may shrink by
    ``margin`` (NPT) before a new allocation is needed.

    Raises:
        ValueError: for a singular cell or non-positive cutoff.
    """
    cell = np.asarray(cell, dtype=np.float64)
    if not list_cutoff_A > 0:
        raise ValueError(f"the list cutoff must be positive, got {list_cutoff_A}")
    if abs(np.linalg.det(cell)) < 1e-8:
        raise ValueError("cell is singular (zero volume)")
    spacing = np.asarray(plane_spacings(cell))
    reach = list_cutoff_A * (1.0 + margin)
    n_cells = tuple(max(1, int(math.floor(d / reach))) for d in spacing)
    search = tuple(int(math.ceil(reach * n / d - 1e-12)) for n, d in zip(n_cells, spacing))
    return n_cells, search


def _binning(positions, cell, n_cells):
    """Wrapped fractional coordinates (n, 3), wrap integers floor(f) (n, 3) and cell triples (n, 3)."""
    frac = positions @ inverse_3x3(cell)
    wraps = jnp.floor(frac)
    wrapped = frac - wraps
    grid = jnp.asarray(n_cells, dtype=jnp.int32)
    triples = jnp.clip(jnp.floor(wrapped * grid).astype(jnp.int32), 0, grid - 1)
    return wrapped, wraps.astype(jnp.int32), triples


def _flat(triples, n_cells):
    return (triples[..., 0] * n_cells[1] + triples[..., 1]) * n_cells[2] + triples[..., 2]


def _make_scan(list_cutoff_A: float, n_cells, search, max_atoms_per_cell: int):
    """``scan(positions, cell, visit, init) -> ((carry, stacked), cell_overflow, grid_invalid)``:
    ``visit(carry, j, image, inside) -> (carry, output)`` for every offset cell (outputs stacked), with candidate atoms j
    (n_atoms, max_atoms_per_cell), the lattice image of the offset cell (n_atoms, 3) int32 and
    ``inside`` (n_atoms, max_atoms_per_cell): within the list cutoff at the build, not the atom
    itself. Component by component, as :func:`pair_vectors` (the (.., 3) layout measured 4x slower)."""
    n_cells_arr = np.asarray(n_cells, dtype=np.int32)
    total = int(np.prod(n_cells_arr))
    offsets = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in search], indexing="ij"), axis=-1).reshape(-1, 3)
    offsets = jnp.asarray(offsets, dtype=jnp.int32)

    def scan(positions, cell, visit, init):
        n_atoms = positions.shape[0]
        wrapped, _, triples = _binning(positions, cell, n_cells)
        cell_id = _flat(triples, n_cells_arr)
        order = jnp.argsort(cell_id, stable=True)
        counts = jnp.bincount(cell_id, length=total)
        starts = jnp.cumsum(counts) - counts
        slot = jnp.arange(max_atoms_per_cell)
        members = jnp.where(slot[None, :] < counts[:, None],
                            order[jnp.minimum(starts[:, None] + slot[None, :], n_atoms - 1)], n_atoms)
        members = jnp.concatenate([members, jnp.full((1, max_atoms_per_cell), n_atoms, members.dtype)])  # padding row
        padded = jnp.concatenate([wrapped, jnp.zeros((1, 3), wrapped.dtype)]).T  # (3, n + 1)
        atom = jnp.arange(n_atoms)[:, None]

        def body(carry, offset):
            target = triples + offset  # (n, 3)
            image = jnp.floor_divide(target, n_cells_arr)
            j = members[_flat(target - image * n_cells_arr, n_cells_arr)]  # (n, cap)
            frac = [padded[a][j] + (image[:, a] - wrapped[:, a])[:, None] for a in range(3)]  # f_j + image - f_i
            r2 = sum((frac[0] * cell[0, c] + frac[1] * cell[1, c] + frac[2] * cell[2, c]) ** 2 for c in range(3))
            self_pair = (j == atom) & jnp.all(image == 0, axis=-1)[:, None]
            inside = (j < n_atoms) & (r2 < list_cutoff_A**2) & ~self_pair
            return visit(carry, j, image, inside)

        carry = jax.lax.scan(body, init, offsets)
        grid_invalid = jnp.any(list_cutoff_A * n_cells_arr / plane_spacings(cell) > jnp.asarray(search))
        return carry, jnp.max(counts) > max_atoms_per_cell, grid_invalid

    return scan


def make_neighbor_list(cutoff_A: float, skin_A: float, *, max_neighbors: int, max_atoms_per_cell: int,
                       n_cells: tuple[int, int, int], search: tuple[int, int, int]) -> NeighborListFns:
    """Neighbour-list functions with static capacities and grid (see :func:`allocate_neighbor_list`
    for choosing them from a structure).

    Args:
        cutoff_A: interaction cutoff r_c, Angstrom.
        skin_A: skin, Angstrom: the list holds pairs within r_c + skin.
        max_neighbors: slots per atom.
        max_atoms_per_cell: slots per cell of the grid.
        n_cells: cells per lattice direction.
        search: cells searched on either side, per direction.

    Returns:
        :class:`NeighborListFns`.

    Raises:
        ValueError: for a non-positive cutoff, non-positive skin or capacities below 1.
    """
    if not (cutoff_A > 0 and skin_A > 0):
        raise ValueError(f"need cutoff > 0 and skin > 0, got {cutoff_A} and {skin_A} Angstrom")
    if min(max_neighbors, max_atoms_per_cell, *n_cells, *search) < 1:
        raise ValueError("capacities, cells and search ranges must be >= 1")
    scan = _make_scan(cutoff_A + skin_A, n_cells, search, max_atoms_per_cell)

    def build(positions: jax.Array, cell: jax.Array) -> NeighborList:
        positions, cell = jax.lax.stop_gradient(positions), jax.lax.stop_gradient(cell)
        n_atoms = positions.shape[0]
        wraps_t = _binning(positions, cell, n_cells)[1].T  # (3, n)
        rows = jnp.broadcast_to(jnp.arange(n_atoms)[:, None], (n_atoms, max_atoms_per_cell))

        def visit(carry, j, image, inside):
            indices, shifts, filled = carry
            slot = filled[:, None] + jnp.cumsum(inside, axis=1, dtype=jnp.int32) - 1
            slot = jnp.where(inside, slot, max_neighbors)  # out of range: dropped
            jc = jnp.minimum(j, n_atoms - 1)
            shift = jnp.stack([(image[:, a] + wraps_t[a])[:, None] - wraps_t[a][jc] for a in range(3)])  # r = R_j - R_i + n h
            indices = indices.at[rows, slot].set(j.astype(jnp.int32), mode="drop")
            shifts = shifts.at[:, rows, slot].set(shift, mode="drop")
            return (indices, shifts, filled + jnp.sum(inside, axis=1, dtype=jnp.int32)), None

        init = (jnp.full((n_atoms, max_neighbors), n_atoms, jnp.int32), jnp.zeros((3, n_atoms, max_neighbors), jnp.int32),
                jnp.zeros((n_atoms,), jnp.int32))
        ((indices, shifts, filled), _), cell_overflow, grid_invalid = scan(positions, cell, visit, init)
        overflow = cell_overflow | grid_invalid | (jnp.max(filled) > max_neighbors)
        return NeighborList(indices, shifts, positions, cell, overflow, jnp.ones((), jnp.int32))

    def stale(neighbors, positions, cell):
        return needs_rebuild(neighbors, positions, cell, cutoff_A, skin_A)

    def update(neighbors: NeighborList, positions: jax.Array, cell: jax.Array) -> NeighborList:
        def rebuild(_):
            fresh = build(positions, cell)
            return fresh.replace(overflow=fresh.overflow | neighbors.overflow, n_builds=neighbors.n_builds + 1)

        # an overflowed list stays as it is (its energies are NaN) until the caller allocates anew
        return jax.lax.cond(stale(neighbors, positions, cell) & ~neighbors.overflow, rebuild, lambda _: neighbors, None)

    return NeighborListFns(build, update, stale, float(cutoff_A), float(skin_A), int(max_neighbors), int(max_atoms_per_cell),
                           tuple(int(n) for n in n_cells), tuple(int(k) for k in search))


@functools.lru_cache(maxsize=32)
def _counter(list_cutoff_A: float, n_cells, search, max_atoms_per_cell: int):
    """Jitted ``count(positions, cell) -> (n_atoms,)`` neighbours within the list cutoff (cached:
    MD drivers allocate at every checkpoint)."""
    scan = _make_scan(list_cutoff_A, n_cells, search, max_atoms_per_cell)

    def count(positions, cell):
        def visit(carry, j, image, inside):
            return carry + jnp.sum(inside, axis=1, dtype=jnp.int32), None

        return scan(positions, cell, visit, jnp.zeros(positions.shape[0], jnp.int32))[0][0]

    return jax.jit(count)


def _round_up(x: float, multiple: int = 8) -> int:
    return int(multiple * math.ceil(max(x, 1.0) / multiple))


def allocate_neighbor_list(positions, cell, cutoff_A: float, skin_A: float, *, headroom: float = 1.25,
                           grid_margin: float = 0.05, previous: NeighborListFns | None = None,
                           growth: float = 1.5) -> NeighborListFns:
    """Choose the grid and capacities from a structure (host side) and make the functions.

    Counts the atoms per cell and the neighbours per atom within cutoff + skin at ``positions``
    and ``cell`` and reserves ``headroom`` times the larger of the largest count and the mean
    density's count (a crystal's shells and lattice planes cross the list cutoff and the cell
    boundaries in whole groups as it vibrates; 1.5 x ``headroom`` for the cells), rounded up to
    multiples of 8: a deterministic function of the structure, so a resumed MD run allocates the
    same. With ``previous`` (after an overflow) both capacities are at least ``growth`` times the
    previous.

    Args:
        positions: (n_atoms, 3) positions, Angstrom.
        cell: (3, 3) cell, rows, Angstrom.
        cutoff_A: interaction cutoff, Angstrom.
        skin_A: skin, Angstrom.
        headroom: capacity over the counts found (density fluctuations during MD).
        grid_margin: relative shrinkage of the plane spacings the grid tolerates (:func:`cell_grid`).
        previous: the allocation that overflowed, or None.
        growth: least growth of the capacities over ``previous``.

    Returns:
        :class:`NeighborListFns`.

    Raises:
        ValueError: for a singular cell, non-positive cutoff or skin.
    """
    if not skin_A > 0:
        raise ValueError(f"skin must be > 0 Angstrom, got {skin_A}")
    positions, cell = jnp.asarray(positions), jnp.asarray(cell)
    n_cells, search = cell_grid(np.asarray(cell), cutoff_A + skin_A, grid_margin)
    triples = np.asarray(_binning(positions, cell, n_cells)[2])
    n_atoms, total_cells = positions.shape[0], int(np.prod(n_cells))
    per_cell = max(int(np.bincount(_flat(triples, np.asarray(n_cells)), minlength=total_cells).max()), n_atoms / total_cells)
    cap_cell = _round_up(per_cell * 1.5 * headroom)
    density_count = n_atoms / abs(float(np.linalg.det(np.asarray(cell)))) * 4.0 * np.pi / 3.0 * (cutoff_A + skin_A) ** 3
    per_atom = max(int(jnp.max(_counter(cutoff_A + skin_A, n_cells, search, cap_cell)(positions, cell))), density_count)
    cap_nbr = _round_up(per_atom * headroom)
    if previous is not None:
        cap_nbr = max(cap_nbr, _round_up(previous.max_neighbors * growth))
        cap_cell = max(cap_cell, _round_up(previous.max_atoms_per_cell * growth))
    return make_neighbor_list(cutoff_A, skin_A, max_neighbors=cap_nbr, max_atoms_per_cell=cap_cell, n_cells=n_cells, search=search)


def pair_vectors(neighbors: NeighborList, positions: jax.Array, cell: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pair vectors r_ij = R_j - R_i + n @ cell of every slot, components first: (3, n_atoms,
    max_neighbors) Angstrom, and the mask of filled slots (n_atoms, max_neighbors); differentiable
    in positions and cell.

    Computed component by component (structure of arrays): on CPU this measured 5-10x faster
    than the (n_atoms, max_neighbors, 3) layout, whose trailing axis of 3 does not vectorise.
    """
    n_atoms = positions.shape[0]
    j = neighbors.indices
    filled = j < n_atoms
    jc = jnp.minimum(j, n_atoms - 1)
    s = neighbors.shifts.astype(cell.dtype)
    components = [positions[:, c][jc] - positions[:, c][:, None] + s[0] * cell[0, c] + s[1] * cell[1, c] + s[2] * cell[2, c]
                  for c in range(3)]
    return jnp.stack(components), filled
