"""Cell-list neighbour lists: the pair sum on a list equals the dense lattice sum (energy, forces,
virial) to round-off, before and after moves within the skin; stale and overflowing lists are caught."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermoflow.potentials.base import energy_forces_virial, hessian
from thermoflow.potentials.neighbors import allocate_neighbor_list, cell_grid, make_neighbor_list
from thermoflow.potentials.pair import (
    lennard_jones_pair_fn,
    make_lennard_jones_energy_fn,
    make_pair_energy_fn_neighbors,
    with_fresh_neighbors,
)
from thermoflow.structures import build_lattice, make_supercell, to_arrays

EPS, SIGMA = 0.0104, 3.40  # argon
TILT = np.array([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0], [0.6, -0.8, 0.0]])  # added to the cell rows: triclinic


def _argon(repeat, triclinic, seed=0, scatter=0.1):
    atoms = make_supercell(build_lattice("Ar", "fcc", a_A=5.26), repeat)
    if triclinic:
        atoms.set_cell(atoms.cell.array + TILT * repeat[0], scale_atoms=True)
    rng = np.random.default_rng(seed)
    atoms.positions += scatter * rng.normal(size=atoms.positions.shape)
    atoms.positions += atoms.cell.array[0] * rng.integers(-2, 3, size=(len(atoms), 1))  # unwrapped positions
    pos, cell, _ = to_arrays(atoms)
    return jnp.asarray(pos), jnp.asarray(cell)


def _efv(energy_fn, pos, cell, *extra):
    return jax.jit(lambda x, h, *e: energy_forces_virial(lambda a, b: energy_fn(a, b, *e), x, h))(pos, cell, *extra)


def _assert_same(got, want):
    (e1, f1, w1), (e0, f0, w0) = got, want
    np.testing.assert_allclose(e1, e0, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(f1, f0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(w1, w0, rtol=0, atol=1e-11)
    return float(abs(e1 - e0)), float(jnp.abs(f1 - f0).max()), float(jnp.abs(w1 - w0).max())


@pytest.mark.parametrize("repeat,triclinic,cutoff,grid", [
    ((4, 4, 4), False, 6.0, (3, 3, 3)),   # 256 atoms, 27 cells, +-1
    ((4, 4, 3), True, 6.0, None),         # triclinic, 192 atoms
    ((1, 1, 1), False, 8.5, (1, 1, 1)),   # 4 atoms, cutoff beyond half the cell: several images of each atom
    ((2, 1, 1), True, 8.5, (1, 1, 1)),    # thin triclinic cell
])
def test_cell_list_pair_sum_equals_dense_sum(repeat, triclinic, cutoff, grid):
    """LJ crystal with random displacements and unwrapped positions: energy, forces and virial
    (strain derivative) on a fresh list equal the dense lattice sum; measured deviations
    <= 4e-15 eV, 2e-15 eV/A, 1.2e-14 eV."""
    pos, cell = _argon(repeat, triclinic)
    skin = 0.5
    fns = allocate_neighbor_list(pos, cell, cutoff, skin)
    if grid is not None:
        assert fns.n_cells == grid
    neighbors = jax.jit(fns.build)(pos, cell)
    assert not bool(neighbors.overflow)
    energy_fn = make_pair_energy_fn_neighbors(lennard_jones_pair_fn(EPS, SIGMA), cutoff, skin)
    dense = make_lennard_jones_energy_fn(EPS, SIGMA, cutoff, np.asarray(cell))
    want = _efv(dense, pos, cell)
    print("deviation (energy eV, forces eV/A, virial eV):", _assert_same(_efv(energy_fn, pos, cell, neighbors), want))
    _assert_same(_efv(with_fresh_neighbors(energy_fn, fns), pos, cell), want)  # the contract form


def test_list_stays_exact_within_the_skin_and_is_rebuilt_beyond():
    """Moves below skin/2 plus a 0.4 % strain of the cell: the list built before stays exact
    (pairs that entered the cutoff are counted); moves beyond make it stale (NaN energy) until
    ``update`` rebuilds it."""
    cutoff, skin = 6.0, 0.6
    pos, cell = _argon((4, 4, 3), True, seed=1)
    fns = allocate_neighbor_list(pos, cell, cutoff, skin)
    neighbors = jax.jit(fns.build)(pos, cell)
    energy_fn = make_pair_energy_fn_neighbors(lennard_jones_pair_fn(EPS, SIGMA), cutoff, skin)
    dense = make_lennard_jones_energy_fn(EPS, SIGMA, cutoff, np.asarray(cell))

    rng = np.random.default_rng(2)
    step = rng.normal(size=pos.shape)
    step *= 0.2 / np.linalg.norm(step, axis=1).max()  # largest move 0.2 A < (skin - strain margin) / 2
    strain = jnp.eye(3) + jnp.asarray([[-0.004, 0.001, 0.0], [0.001, 0.003, 0.0], [0.0, 0.0, -0.002]])
    moved, strained = (pos + step) @ strain, cell @ strain
    assert not bool(fns.needs_rebuild(neighbors, moved, strained))
    # the test has teeth: pairs outside the cutoff at the build are inside it now
    assert _pairs_entering(pos, cell, moved, strained, cutoff) > 0
    print("no-rebuild deviation (energy eV, forces eV/A, virial eV):",
          _assert_same(_efv(energy_fn, moved, strained, neighbors), _efv(dense, moved, strained)))

    far = pos + 2.0 * step  # 0.4 A > skin / 2
    assert bool(fns.needs_rebuild(neighbors, far, cell))
    assert np.isnan(float(jax.jit(energy_fn)(far, cell, neighbors)))
    rebuilt = jax.jit(fns.update)(neighbors, far, cell)
    assert int(rebuilt.n_builds) == 2
    _assert_same(_efv(energy_fn, far, cell, rebuilt), _efv(dense, far, cell))
    assert int(jax.jit(fns.update)(neighbors, moved, strained).n_builds) == 1  # fresh enough: kept


def _pairs_entering(pos0, cell0, pos1, cell1, cutoff):
    """Number of pairs (minimum image; the cells are wider than 2 cutoffs) with r > cutoff at
    (pos0, cell0) and r < cutoff at (pos1, cell1)."""
    def distances(pos, cell):
        frac = np.asarray(pos) @ np.linalg.inv(np.asarray(cell))
        d = frac[None] - frac[:, None]
        d -= np.round(d)
        return np.linalg.norm(d @ np.asarray(cell), axis=-1)

    d0, d1 = distances(pos0, cell0), distances(pos1, cell1)
    return int(np.sum((d0 > cutoff) & (d1 < cutoff)))


def test_overflow_is_flagged_and_capacities_grow():
    """Too few slots per atom or per cell: ``overflow`` is set and the energy is NaN; a new
    allocation with ``previous`` grows both capacities by at least 1.5x and fits."""
    cutoff, skin = 6.0, 0.5
    pos, cell = _argon((3, 3, 3), False)
    n_cells, search = cell_grid(np.asarray(cell), cutoff + skin)
    energy_fn = make_pair_energy_fn_neighbors(lennard_jones_pair_fn(EPS, SIGMA), cutoff, skin)
    for max_neighbors, max_atoms_per_cell in ((16, 64), (128, 4)):
        small = make_neighbor_list(cutoff, skin, max_neighbors=max_neighbors, max_atoms_per_cell=max_atoms_per_cell,
                                   n_cells=n_cells, search=search)
        neighbors = jax.jit(small.build)(pos, cell)
        assert bool(neighbors.overflow)
        assert np.isnan(float(jax.jit(energy_fn)(pos, cell, neighbors)))
        grown = allocate_neighbor_list(pos, cell, cutoff, skin, previous=small)
        assert grown.max_neighbors >= 1.5 * max_neighbors and grown.max_atoms_per_cell >= 1.5 * max_atoms_per_cell
        assert not bool(jax.jit(grown.build)(pos, cell).overflow)


def test_grid_covers_the_cutoff_and_flags_a_shrunk_cell():
    """n_a cells of plane spacing >= L (1 + margin); a cell shrunk beyond the margin invalidates the grid."""
    cell = np.diag([20.0, 31.0, 9.0])
    n_cells, search = cell_grid(cell, 6.0, margin=0.05)
    assert n_cells == (3, 4, 1) and search == (1, 1, 1)
    assert cell_grid(cell, 9.5)[0][2] == 1 and cell_grid(cell, 9.5)[1][2] == 2  # thinner than the list cutoff
    pos, _ = _argon((4, 4, 4), False)
    cell = jnp.asarray(np.diag([21.04] * 3))
    fns = allocate_neighbor_list(pos, cell, 6.0, 0.5)
    build = jax.jit(fns.build)
    assert not bool(build(pos * 0.96, cell * 0.96).overflow)
    assert bool(build(pos * 0.9, cell * 0.9).overflow)  # 21.04 * 0.9 / 3 < 6.5: the +-1 search misses pairs


def test_hessian_through_the_custom_derivative_equals_the_dense_one():
    """The neighbour-list sum's hand-written JVP (row sums) is itself differentiable: the Hessian
    (forward over reverse) of a displaced 8-atom triclinic cell equals the dense sum's."""
    pos, cell = _argon((2, 1, 1), True, seed=3)
    cutoff, skin = 8.5, 0.5
    fns = allocate_neighbor_list(pos, cell, cutoff, skin)
    energy_fn = with_fresh_neighbors(make_pair_energy_fn_neighbors(lennard_jones_pair_fn(EPS, SIGMA), cutoff, skin), fns)
    dense = make_lennard_jones_energy_fn(EPS, SIGMA, cutoff, np.asarray(cell))
    want = hessian(dense, pos, cell)
    np.testing.assert_allclose(hessian(energy_fn, pos, cell), want, rtol=0, atol=1e-12 * float(jnp.abs(want).max()))
