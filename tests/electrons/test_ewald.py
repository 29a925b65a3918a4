"""Ewald summation against Madelung constants and Wigner-crystal energies; invariances; forces."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from thermoflow.electrons.ewald import make_ewald_sum

#: Madelung constants referred to the nearest-neighbour distance (e.g. C. Kittel, Introduction to
#: Solid State Physics, 8th ed., Table 3.8 / problem 3.5; more digits from the lattice sums of
#: J. Zucker, J. Phys. A 8, 1734 (1975))
ROCK_SALT = 1.747564594633182
CAESIUM_CHLORIDE = 1.762674773070
#: Wigner crystal (point electrons in a uniform background): E / N = -M / r_s Hartree, r_s in bohr
#: (K. Fuchs, Proc. R. Soc. A 151, 585 (1935); R. A. Coldwell-Horsfall and A. A. Maradudin, J. Math.
#: Phys. 1, 395 (1960)); simple cubic to the 8 digits quoted there
WIGNER = {"bcc": 0.895929255682, "fcc": 0.895873615195, "sc": 0.88005944}


def _energy(atoms, charges, **kwargs):
    ewald = make_ewald_sum(atoms.cell.array, len(atoms), **kwargs)
    return float(ewald.energy(jnp.asarray(atoms.get_positions()), jnp.asarray(charges, dtype=float))), ewald


@pytest.mark.parametrize("structure", ["rocksalt", "cesiumchloride"])
def test_madelung_constants_of_ionic_crystals(structure):
    """Charges +-1 on rock salt (conventional cell, 8 ions) and CsCl (2 ions): E per ion pair =
    -M / r_nn to 1e-10, for a lattice constant of 3 bohr and for a 2x1x1 supercell."""
    atoms = bulk("NaCl", structure, a=3.0, cubic=True)
    nearest = 1.5 if structure == "rocksalt" else 3.0 * np.sqrt(3.0) / 2.0
    madelung = ROCK_SALT if structure == "rocksalt" else CAESIUM_CHLORIDE
    for cell in (atoms, atoms.repeat((2, 1, 1))):
        q = [1.0 if s == "Na" else -1.0 for s in cell.get_chemical_symbols()]
        energy, _ = _energy(cell, q)
        np.testing.assert_allclose(energy / (len(cell) / 2), -madelung / nearest, rtol=1e-10)


@pytest.mark.parametrize("lattice", ["bcc", "fcc", "sc"])
def test_wigner_crystal_energies_include_the_background(lattice):
    """Electrons (q = -1) alone on bcc / fcc / simple cubic lattices in a uniform positive background
    (the charged-system term): E / N = -M / r_s to 1e-9 (sc: 1e-8, the digits quoted) at r_s = 1.31 bohr, in the conventional cell
    and a primitive (non-orthogonal, for bcc and fcc) one."""
    rs = 1.31
    volume_per_electron = 4.0 * np.pi * rs**3 / 3.0
    per_cell = {"bcc": 2, "fcc": 4, "sc": 1}[lattice]
    a = (volume_per_electron * per_cell) ** (1.0 / 3.0)
    for cubic in (True, False):
        atoms = bulk("H", lattice, a=a, cubic=cubic)
        energy, ewald = _energy(atoms, -np.ones(len(atoms)))
        np.testing.assert_allclose(energy / len(atoms), -WIGNER[lattice] / rs, rtol=1e-9 if lattice != "sc" else 1e-8)
    assert ewald.n_reciprocal > 0 and ewald.n_images > 0


def test_energy_does_not_depend_on_alpha_and_is_translation_invariant():
    """A random neutral configuration of 4 protons and 4 electrons in a triclinic cell: the energy is
    the same to 1e-10 Hartree for alpha x 0.5, 1, 2 (the split changes, the sum does not), and under a
    common translation and the wrapping of a particle by a lattice vector."""
    rng = np.random.default_rng(0)
    cell = np.array([[4.0, 0.0, 0.0], [1.0, 3.8, 0.0], [0.5, 0.7, 4.3]])
    positions = rng.uniform(size=(8, 3)) @ cell
    charges = np.array([1.0] * 4 + [-1.0] * 4)
    base = make_ewald_sum(cell, 8)
    reference = float(base.energy(jnp.asarray(positions), jnp.asarray(charges)))
    for factor in (0.5, 2.0):
        other = make_ewald_sum(cell, 8, alpha=factor * base.alpha)
        np.testing.assert_allclose(float(other.energy(jnp.asarray(positions), jnp.asarray(charges))), reference, atol=1e-10)
    moved = positions + np.array([0.3, -1.1, 2.0])
    moved[3] += cell[1] - cell[2]
    np.testing.assert_allclose(float(base.energy(jnp.asarray(moved), jnp.asarray(charges))), reference, atol=1e-10)


def test_forces_match_finite_differences():
    """-grad E (jax.grad, jitted) equals central finite differences to 1e-7 Hartree/bohr."""
    rng = np.random.default_rng(1)
    cell = 5.0 * np.eye(3)
    positions = rng.uniform(size=(6, 3)) * 5.0
    charges = jnp.asarray([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    ewald = make_ewald_sum(cell, 6)
    grad = np.asarray(jax.jit(jax.grad(ewald.energy))(jnp.asarray(positions), charges))
    h = 1e-5
    for i, a in ((0, 0), (3, 2), (5, 1)):
        plus, minus = positions.copy(), positions.copy()
        plus[i, a] += h
        minus[i, a] -= h
        fd = (float(ewald.energy(jnp.asarray(plus), charges)) - float(ewald.energy(jnp.asarray(minus), charges))) / (2 * h)
        assert abs(grad[i, a] - fd) < 1e-7


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match="tolerance"):
        make_ewald_sum(np.eye(3), 2, tolerance=2.0)
    with pytest.raises(ValueError, match="singular"):
        make_ewald_sum(np.zeros((3, 3)), 2)
    with pytest.raises(ValueError, match="alpha must be positive"):
        make_ewald_sum(np.eye(3), 2, alpha=-1.0)
