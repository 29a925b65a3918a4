import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.calculators.lj import LennardJones

from thermoflow.potentials import (
    forces,
    hessian,
    lattice_images,
    make_einstein_energy_fn,
    make_harmonic_energy_fn,
    make_lennard_jones_energy_fn,
    make_morse_energy_fn,
    virial,
)
from thermoflow.structures import build_lattice, make_supercell, to_arrays

EPS, SIGMA, RC = 0.0104, 3.40, 8.5  # argon-like; the cutoff exceeds half of a 1x1x1 fcc cell


def _displaced_argon(repeat=(1, 1, 1), seed=0):
    atoms = make_supercell(build_lattice("Ar", "fcc", a_A=5.26), repeat)
    rng = np.random.default_rng(seed)
    atoms.positions += 0.1 * rng.normal(size=atoms.positions.shape)
    return atoms


def test_lennard_jones_matches_ase_calculator():
    """Energy, forces and stress against ASE's LennardJones (same shifted potential, no smoothing)."""
    atoms = _displaced_argon((2, 1, 1))
    atoms.cell[1] += [0.4, 0.0, 0.0]  # triclinic
    pos, cell, _ = to_arrays(atoms)
    energy_fn = make_lennard_jones_energy_fn(EPS, SIGMA, RC, cell)
    atoms.calc = LennardJones(epsilon=EPS, sigma=SIGMA, rc=RC, smooth=False)
    e_ref = atoms.get_potential_energy()
    np.testing.assert_allclose(energy_fn(jnp.asarray(pos), jnp.asarray(cell)), e_ref, rtol=1e-11)
    np.testing.assert_allclose(forces(energy_fn, jnp.asarray(pos), jnp.asarray(cell)), atoms.get_forces(), atol=1e-10)
    stress_ref = atoms.get_stress(voigt=False)
    w = virial(energy_fn, jnp.asarray(pos), jnp.asarray(cell))
    np.testing.assert_allclose(-np.asarray(w) / atoms.get_volume(), stress_ref, atol=1e-10)


@pytest.mark.parametrize("make", ["lj", "morse"])
def test_supercell_energy_per_atom_is_invariant(make):
    """A perfect crystal has the same energy per atom in any supercell (images counted right)."""
    unit = build_lattice("Ar", "fcc", a_A=5.26)
    per_atom = []
    for rep in [(1, 1, 1), (2, 1, 1), (2, 2, 2)]:
        pos, cell, _ = to_arrays(make_supercell(unit, rep))
        if make == "lj":
            fn = make_lennard_jones_energy_fn(EPS, SIGMA, RC, cell)
        else:
            fn = make_morse_energy_fn(0.01, 1.2, 3.8, RC, cell)
        per_atom.append(float(fn(jnp.asarray(pos), jnp.asarray(cell))) / len(pos))
    np.testing.assert_allclose(per_atom, per_atom[0], rtol=1e-12)


def test_translation_invariance_and_force_sum():
    pos, cell, _ = to_arrays(_displaced_argon())
    fn = make_lennard_jones_energy_fn(EPS, SIGMA, RC, cell)
    e0 = fn(jnp.asarray(pos), jnp.asarray(cell))
    e1 = fn(jnp.asarray(pos + np.array([0.37, -1.2, 2.9])), jnp.asarray(cell))
    np.testing.assert_allclose(e0, e1, rtol=1e-12)
    np.testing.assert_allclose(forces(fn, jnp.asarray(pos), jnp.asarray(cell)).sum(0), 0.0, atol=1e-12)


def test_vmap_equals_loop_and_jit():
    pos, cell, _ = to_arrays(_displaced_argon())
    fn = make_lennard_jones_energy_fn(EPS, SIGMA, RC, cell)
    batch = jnp.stack([jnp.asarray(pos) + 0.01 * k for k in range(3)])
    batch = batch.at[1, 0, 0].add(0.05)
    v = jax.vmap(fn, in_axes=(0, None))(batch, jnp.asarray(cell))
    loop = [jax.jit(fn)(b, jnp.asarray(cell)) for b in batch]
    np.testing.assert_allclose(v, loop, rtol=1e-13)


def test_harmonic_potential_reproduces_its_force_constants():
    pos, cell, _ = to_arrays(_displaced_argon())
    rng = np.random.default_rng(1)
    a = rng.normal(size=(len(pos) * 3, len(pos) * 3))
    fc = a @ a.T
    fn = make_harmonic_energy_fn(pos, fc, energy0_eV=-1.5)
    np.testing.assert_allclose(hessian(fn, jnp.asarray(pos), jnp.asarray(cell)), fc, rtol=1e-12)
    assert float(fn(jnp.asarray(pos), jnp.asarray(cell))) == -1.5
    einstein = make_einstein_energy_fn(pos, 2.0)
    np.testing.assert_allclose(hessian(einstein, jnp.asarray(pos), jnp.asarray(cell)), 2.0 * np.eye(3 * len(pos)))
    with pytest.raises(ValueError, match="symmetric"):
        make_harmonic_energy_fn(pos, a)
    with pytest.raises(ValueError, match="shape"):
        make_harmonic_energy_fn(pos, np.eye(5))


def test_lattice_images_cover_cutoff():
    cell = np.diag([3.0, 4.0, 10.0])
    images = lattice_images(cell, 7.0)
    assert images[:, 0].max() == 3 and images[:, 2].max() == 1  # floor(7/(0.9*3) + 1/2) = 3
    with pytest.raises(ValueError):
        lattice_images(np.zeros((3, 3)), 5.0)


@pytest.mark.parametrize("chunk_size", [pytest.param(1, marks=pytest.mark.slow), 7, 1000])  # 7 does not divide 3 x 8 = 24 columns
def test_chunked_hessian_equals_jax_hessian(chunk_size):
    """The chunked forward-over-reverse Hessian equals jax.hessian (LJ, displaced fcc cell)."""
    pos, cell, _ = to_arrays(_displaced_argon((1, 1, 2), seed=3))
    fn = make_lennard_jones_energy_fn(EPS, SIGMA, RC, cell)
    ref = np.asarray(jax.hessian(fn)(jnp.asarray(pos), jnp.asarray(cell))).reshape(3 * len(pos), -1)
    got = np.asarray(hessian(fn, jnp.asarray(pos), jnp.asarray(cell), chunk_size=chunk_size))
    np.testing.assert_allclose(got, 0.5 * (ref + ref.T), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="chunk_size"):
        hessian(fn, jnp.asarray(pos), jnp.asarray(cell), chunk_size=0)


def test_cell_shrunk_beyond_the_image_set_gives_nan_not_a_wrong_energy():
    """Built for one cell, called with a much smaller one (0.62x isotropic strain): more images
    would be needed; the energy is NaN instead of a silently truncated lattice sum."""
    pos, cell, _ = to_arrays(build_lattice("Ne", "fcc", a_A=4.464))
    fn = make_lennard_jones_energy_fn(0.0031, 2.74, 8.2, cell)
    assert np.isfinite(float(fn(jnp.asarray(pos), jnp.asarray(cell))))
    assert np.isfinite(float(fn(jnp.asarray(pos * 0.95), jnp.asarray(cell * 0.95))))  # within the margin
    small = fn(jnp.asarray(pos * 0.62), jnp.asarray(cell * 0.62))
    assert np.isnan(float(small))
    assert np.isnan(float(jax.jit(fn)(jnp.asarray(pos * 0.62), jnp.asarray(cell * 0.62))))
