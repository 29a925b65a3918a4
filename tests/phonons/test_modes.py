import jax.numpy as jnp
import numpy as np
import pytest
from phonopy import Phonopy
from phonopy.harmonic.dynmat_to_fc import get_commensurate_points
from phonopy.structure.atoms import PhonopyAtoms

from thermoflow.phonons import compute_harmonic_modes, harmonic_thermodynamics, modes_from_hessian
from thermoflow.potentials import forces, hessian, make_einstein_energy_fn, make_lennard_jones_energy_fn
from thermoflow.structures import build_lattice, make_supercell, to_arrays
from thermoflow.units import HBAR_EV, omega_to_thz

EPS, SIGMA, RC = 0.0031, 2.74, 8.2


def test_frequencies_match_phonopy_at_commensurate_qpoints():
    """Gamma-point modes of a 2x2x2 supercell == phonopy's bands at the commensurate q-points."""
    unit = build_lattice("Ne", "fcc", a_A=4.464)
    sc_matrix = 2 * np.eye(3, dtype=int)
    ph = Phonopy(PhonopyAtoms(symbols=unit.get_chemical_symbols(), cell=unit.cell.array, scaled_positions=unit.get_scaled_positions(), masses=unit.get_masses()), supercell_matrix=sc_matrix, primitive_matrix=np.eye(3))
    ph.generate_displacements(distance=0.005, is_plusminus=True)
    sc_cell = ph.supercell.cell
    fn = make_lennard_jones_energy_fn(EPS, SIGMA, RC, sc_cell)
    ph.forces = np.array([np.asarray(forces(fn, jnp.asarray(s.positions), jnp.asarray(s.cell))) for s in ph.supercells_with_displacements])
    ph.produce_force_constants()
    ph.run_qpoints(get_commensurate_points(sc_matrix))
    ref = np.sort(ph.qpoints.frequencies.ravel())[3:]  # drop the 3 acoustic zeros at Gamma

    pos, cell, masses = to_arrays(make_supercell(unit, (2, 2, 2)))
    modes = compute_harmonic_modes(make_lennard_jones_energy_fn(EPS, SIGMA, RC, cell), pos, cell, masses)
    assert modes.n_modes == 3 * len(pos) - 3 and modes.n_translations_removed == 3
    assert not modes.imaginary.any()
    np.testing.assert_allclose(np.sort(omega_to_thz(modes.omega)), ref, rtol=2e-4)


def test_einstein_crystal_keeps_all_modes():
    pos, cell, masses = to_arrays(build_lattice("Ne", "fcc", a_A=4.464))
    modes = compute_harmonic_modes(make_einstein_energy_fn(pos, 0.5), pos, cell, masses)
    assert modes.n_modes == 12 and modes.n_translations_removed == 0
    np.testing.assert_allclose(modes.omega, np.sqrt(0.5 / masses[0]), rtol=1e-12)


def test_modes_are_orthonormal_and_reproduce_hessian():
    pos, cell, masses = to_arrays(build_lattice("Ne", "fcc", a_A=4.464))
    masses = masses * np.array([1.0, 2.0, 1.0, 3.0])  # unequal masses
    fn = make_lennard_jones_energy_fn(EPS, SIGMA, RC, cell)
    modes = compute_harmonic_modes(fn, pos, cell, masses)
    np.testing.assert_allclose(modes.modes.T @ modes.modes, np.eye(9), atol=1e-12)
    # displacement along B s costs exactly sum_k hbar omega_k s_k^2 / 2 in harmonic energy
    from thermoflow.potentials import hessian

    h = np.asarray(hessian(fn, jnp.asarray(pos), jnp.asarray(cell)))
    b = modes.displacement_matrix()
    np.testing.assert_allclose(b.T @ h @ b, np.diag(HBAR_EV * modes.omega), rtol=1e-9, atol=1e-14)


def test_imaginary_modes_are_flagged_and_zero_modes_rejected():
    h = np.diag([1.0, -0.5, 2.0])
    modes = modes_from_hessian(h, np.array([1.0]), np.zeros((1, 3)), np.eye(3), 0.0)
    assert modes.imaginary.sum() == 1 and np.all(modes.omega > 0)
    with pytest.raises(ValueError, match="zero frequency"):
        modes_from_hessian(np.diag([1.0, 0.0, 2.0]), np.array([1.0]), np.zeros((1, 3)), np.eye(3), 0.0)


def test_harmonic_thermodynamics_limits():
    e = np.array([0.01, 0.02, 0.05])
    kT = 0.015
    th = harmonic_thermodynamics(e, kT)
    np.testing.assert_allclose(th.free_energy_eV, th.energy_eV - kT * th.entropy_kB, rtol=1e-13)
    # many levels: truncated == full
    np.testing.assert_allclose(harmonic_thermodynamics(e, kT, n_levels=200).free_energy_eV, th.free_energy_eV, rtol=1e-13)
    # classical limit kT >> e: F -> kT ln(e / kT) per mode
    hot = harmonic_thermodynamics(e, 100.0)
    np.testing.assert_allclose(hot.free_energy_eV, np.sum(100.0 * np.log(e / 100.0)), rtol=1e-6)
    # S = -dF/dT by finite differences
    d = 1e-6
    s_fd = -(harmonic_thermodynamics(e, kT + d).free_energy_eV - harmonic_thermodynamics(e, kT - d).free_energy_eV) / (2 * d)
    np.testing.assert_allclose(th.entropy_kB, s_fd, rtol=1e-7)
    assert harmonic_thermodynamics(e, 0.0).free_energy_eV == pytest.approx(0.5 * e.sum())


@pytest.mark.parametrize("noise", [1e-6, 1e-4])
def test_noisy_hessian_keeps_translations_out(noise):
    """Symmetric noise on the Hessian (as from finite differences) breaks the acoustic sum rule;
    the rule is imposed, so no soft or imaginary translational modes appear and the internal
    frequencies move only by the noise."""
    pos, cell, masses = to_arrays(make_supercell(build_lattice("Ne", "fcc", a_A=4.464), (2, 2, 2)))
    fn = make_lennard_jones_energy_fn(EPS, SIGMA, RC, cell)
    h = np.asarray(hessian(fn, jnp.asarray(pos), jnp.asarray(cell)))
    clean = modes_from_hessian(h, masses, pos, cell, 0.0)
    a = np.random.default_rng(0).normal(size=h.shape)
    noisy = modes_from_hessian(h + noise * np.abs(h).max() * (a + a.T) / 2, masses, pos, cell, 0.0)
    assert noisy.n_modes == 3 * len(pos) - 3 and noisy.n_translations_removed == 3
    assert not noisy.imaginary.any()
    np.testing.assert_allclose(noisy.omega, clean.omega, rtol=200 * noise)


def test_aligned_modes_follow_their_predecessors_after_a_strain():
    """fcc LJ 2x2x2 (many degenerate shells): modes at a 0.5 % isotropic strain, returned by eigh in
    an arbitrary basis of each degenerate subspace (here: rotated at random), overlap their
    unstrained predecessors by >= 0.99 after the alignment, and stay eigenvectors."""
    from thermoflow.phonons.modes import align_modes, degenerate_subspaces, dynamical_matrix

    unit = build_lattice("Ne", "fcc", a_A=4.464)
    pos, cell, masses = to_arrays(make_supercell(unit, (2, 2, 2)))
    old = compute_harmonic_modes(make_lennard_jones_energy_fn(EPS, SIGMA, RC, cell), pos, cell, masses)
    s = 1.005
    fn = make_lennard_jones_energy_fn(EPS, SIGMA, RC, cell * s)
    new = compute_harmonic_modes(fn, pos * s, cell * s, masses)
    groups = degenerate_subspaces(new.omega)
    assert max(len(g) for g in groups) >= 3  # the test needs degenerate subspaces
    rng = np.random.default_rng(0)
    scrambled = np.array(new.modes)
    for g in groups:  # what eigh may return: any orthonormal basis of each subspace, any signs
        q, _ = np.linalg.qr(rng.normal(size=(len(g), len(g))))
        scrambled[:, g] = new.modes[:, g] @ q
    scrambled_modes = type(new)(**{**new.__dict__, "modes": scrambled})
    overlap_before = np.abs(np.sum(scrambled * old.modes, axis=0))
    assert overlap_before.min() < 0.9  # scrambled: some modes are not their predecessors

    aligned = align_modes(scrambled_modes, old)
    overlap = np.abs(np.sum(aligned.modes * old.modes, axis=0))
    print("min overlap before", overlap_before.min(), "after", overlap.min())
    assert overlap.min() >= 0.99
    np.testing.assert_allclose(np.sort(aligned.omega), new.omega)
    dyn = dynamical_matrix(np.asarray(hessian(fn, jnp.asarray(pos * s), jnp.asarray(cell * s))), masses)
    np.testing.assert_allclose(dyn @ aligned.modes, aligned.modes * aligned.omega**2, atol=1e-9 * np.max(aligned.omega**2))
    np.testing.assert_allclose(aligned.modes.T @ aligned.modes, np.eye(new.n_modes), atol=1e-12)
