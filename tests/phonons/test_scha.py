"""Self-consistent harmonic approximation against exact Gaussian optima."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from ase import Atoms

import crystals
from thermoflow.phonons import (
    GaussianInstabilityError,
    compute_harmonic_modes,
    harmonic_thermodynamics,
    optimise_gaussian,
)
from thermoflow.phonons.scha import antithetic_normals, mode_variances
from thermoflow.units import HBAR_EV, KB_EV_PER_K


def test_mismatched_harmonic_crystal_is_recovered_exactly():
    """Harmonic potential, wrong reference (frequencies x 0.8, rotated polarisations): the
    Gaussian step alone reaches the exact F, frequencies and polarisation subspaces."""
    energy_fn, exact = crystals.harmonic_neon()
    wrong = crystals.mismatched_reference(exact)
    kT = KB_EV_PER_K * 20.0
    n = exact.n_atoms
    f_exact = exact.energy0_eV + harmonic_thermodynamics(exact.phonon_energies_eV, kT).free_energy_eV
    f_wrong = exact.energy0_eV + harmonic_thermodynamics(wrong.phonon_energies_eV, kT).free_energy_eV
    assert abs(f_wrong - f_exact) / n > 1e-4  # the start is off by more than 0.1 meV/atom

    g = optimise_gaussian(energy_fn, wrong, kT, n_samples=64, n_iterations=30, n_eval_samples=256)
    assert abs(g.free_energy_eV - f_exact) / n < 1e-10  # eV/atom
    assert g.free_energy_stderr_eV < 1e-10  # zero variance on a harmonic potential
    np.testing.assert_allclose(g.modes.omega, exact.omega, rtol=1e-8)
    # each degenerate shell spans the exact shell's subspace
    for w in np.unique(np.round(exact.omega, 6)):
        a = exact.modes[:, np.isclose(exact.omega, w, rtol=1e-6)]
        b = g.modes.modes[:, np.isclose(g.modes.omega, w, rtol=1e-6)]
        np.testing.assert_allclose(np.linalg.svd(a.T @ b, compute_uv=False), 1.0, atol=1e-8)
    assert g.entropy_kB == pytest.approx(harmonic_thermodynamics(exact.phonon_energies_eV, kT).entropy_kB, rel=1e-8)



@pytest.mark.parametrize("symmetrise", [False, True])
def test_batches_too_small_to_whiten_still_reach_the_exact_harmonic_gaussian(symmetrise):
    """4 antithetic pairs for 9 modes cannot be whitened, so the sample covariance is not Sigma.
    With the current Phi as control variate the curvature estimate's error is proportional to
    Phi - H and vanishes at the fixed point: the iteration reaches the exact harmonic crystal
    (the plain Stein estimate Sigma^-1 <q g^T> keeps an O(1) error there and does not)."""
    energy_fn, exact = crystals.harmonic_neon()
    wrong = crystals.mismatched_reference(exact)
    kT = KB_EV_PER_K * 20.0
    f_exact = exact.energy0_eV + harmonic_thermodynamics(exact.phonon_energies_eV, kT).free_energy_eV
    g = optimise_gaussian(energy_fn, wrong, kT, n_samples=8, n_iterations=60, n_eval_samples=256, symmetrise=symmetrise)
    assert abs(g.free_energy_eV - f_exact) / exact.n_atoms < 1e-9  # eV/atom
    np.testing.assert_allclose(g.modes.omega, exact.omega, rtol=1e-5)


SPRING, QUARTIC, COUPLING = (crystals.ANHARMONIC_ATOM[k] for k in ("spring_eV_per_A2", "quartic_eV_per_A4", "coupling_eV_per_A4"))
MASS = crystals.ANHARMONIC_ATOM_MASS


def exact_gaussian_free_energy(kT):
    """Best isotropic Gaussian for V = sum_d [k x_d^2/2 + lam x_d^4] + mu sum_{d<e} x_d^2 x_e^2
    (cubic symmetry makes the optimal covariance isotropic): with <x^2> = s2(w), <x^4> = 3 s2^2,
    F_G(w) = 3 [f_harm(w) + k s2/2 + 3 lam s2^2 - m w^2 s2 / 2] + 3 mu s2^2, minimised over w."""

    def f(log_w):
        w = np.exp(log_w)
        s2 = mode_variances(np.array([w]), kT)[0] / MASS
        f_harm = harmonic_thermodynamics(np.array([HBAR_EV * w]), kT).free_energy_eV
        return 3 * (f_harm + SPRING * s2 / 2 + 3 * QUARTIC * s2**2 - MASS * w**2 * s2 / 2) + 3 * COUPLING * s2**2

    res = scipy.optimize.minimize_scalar(f, bracket=(-1.0, 0.0, 1.0), tol=1e-12)
    return res.fun, np.exp(res.x)


def test_anharmonic_atom_reaches_the_exact_gaussian_optimum():
    kT = KB_EV_PER_K * 300.0
    f_exact_gaussian, w_exact = exact_gaussian_free_energy(kT)
    energy_fn, harmonic = crystals.anharmonic_atom()
    g = optimise_gaussian(energy_fn, harmonic, kT, n_samples=2048, n_iterations=40, n_eval_samples=200_000, seed=3)
    print(f"SCHA F = {g.free_energy_eV:.6f} +- {g.free_energy_stderr_eV:.6f} eV, exact Gaussian optimum {f_exact_gaussian:.6f} eV")
    np.testing.assert_allclose(g.modes.omega, w_exact, rtol=3e-3)
    assert abs(g.free_energy_eV - f_exact_gaussian) < 4 * g.free_energy_stderr_eV + 2e-5
    # the Gaussian optimum lies above the exact-diagonalisation value of tests/nct (0.111986 eV)
    assert g.free_energy_eV > 0.111986


def test_antithetic_whitened_normals_have_exact_moments():
    xi = np.asarray(antithetic_normals(jax.random.PRNGKey(0), 64, 5))
    np.testing.assert_allclose(xi.mean(axis=0), 0.0, atol=1e-14)
    np.testing.assert_allclose(xi.T @ xi / 64, np.eye(5), atol=1e-12)
    with pytest.raises(ValueError, match="even"):
        antithetic_normals(jax.random.PRNGKey(0), 63, 5)


def test_unstable_structure_raises_a_clear_error():
    """A double well whose Gaussian cannot be stable: V = -k x^2/2 + lam x^4 in 3D with a
    wrong-signed spring; the harmonic start uses |omega|, the iteration finds no positive curvature."""
    atoms = Atoms("H", positions=[[0.0, 0.0, 0.0]], cell=10.0 * np.eye(3), pbc=True, masses=[MASS])

    def energy_fn(positions, cell):
        u = positions[0]
        return -0.5 * 5.0 * jnp.sum(u**2)

    harmonic = compute_harmonic_modes(energy_fn, atoms.get_positions(), atoms.cell.array, atoms.get_masses())
    assert harmonic.imaginary.all()
    with pytest.raises(GaussianInstabilityError, match="no stable Gaussian"):
        optimise_gaussian(energy_fn, harmonic, KB_EV_PER_K * 300.0, n_samples=64, n_iterations=5)


def test_warm_start_from_a_neighbouring_temperature():
    """The Gaussian at 200 K, expressed in the harmonic mode coordinates (curvature_in_basis), starts
    the 300 K self-consistency: 2 iterations reach the exact 300 K optimum within the noise (0.5 %),
    where 2 iterations from the harmonic modes are still 2 % off."""
    from thermoflow.phonons.scha import curvature_in_basis

    energy_fn, harmonic = crystals.anharmonic_atom()
    kT = KB_EV_PER_K * 300.0
    _, w_exact = exact_gaussian_free_energy(kT)
    settings = dict(n_samples=8192, mixing=0.5, averaging_fraction=0.5, n_eval_samples=1024, seed=5)
    colder = optimise_gaussian(energy_fn, harmonic, KB_EV_PER_K * 200.0, n_iterations=30, **settings)
    start = curvature_in_basis(colder.modes, harmonic)
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(start)), colder.modes.omega**2, rtol=1e-12)
    warm = optimise_gaussian(energy_fn, harmonic, kT, n_iterations=2, initial_curvature=start, **settings)
    cold = optimise_gaussian(energy_fn, harmonic, kT, n_iterations=2, **settings)
    print("exact", w_exact, "warm", warm.modes.omega, "cold", cold.modes.omega, "harmonic", harmonic.omega)
    np.testing.assert_allclose(warm.modes.omega, w_exact, rtol=5e-3)
    assert np.abs(cold.modes.omega / w_exact - 1).min() > 1.5e-2
    # another crystal's modes cannot start this one
    other = crystals.harmonic_neon()[1]
    with pytest.raises(ValueError, match="same structure"):
        curvature_in_basis(other, harmonic)


def test_relaxed_centroid_reaches_the_exact_gaussian_optimum_of_an_asymmetric_well():
    """V = k |u|^2 / 2 + g x^3 + lam x^4 (one atom, no inversion symmetry): the best Gaussian has its
    centre c and frequency w along x from minimising, with s2 = <(x - c)^2> of thermal oscillators,
    F_G(c, w) = f_harm(w) + k (c^2 + s2) / 2 + g (c^3 + 3 c s2) + lam (c^4 + 6 c^2 s2 + 3 s2^2) - m w^2 s2 / 2
    (+ the exact harmonic y, z). The SCHA with relax_centroid reaches c, w and F_G; with the centroid
    fixed at the minimum of V its F_G lies measurably higher."""
    from anharmonic_models import make_asymmetric_atom

    from thermoflow.phonons import compute_harmonic_modes

    k, g3, lam, mass = 1.0, -0.6, 1.0, 2.0
    kT = KB_EV_PER_K * 100.0
    atoms = Atoms("H", positions=[[1.0, 1.0, 1.0]], cell=10.0 * np.eye(3), pbc=True, masses=[mass])
    energy_fn = make_asymmetric_atom(atoms, k, g3, lam)
    harmonic = compute_harmonic_modes(energy_fn, atoms.get_positions(), atoms.cell.array, atoms.get_masses())
    w_yz = np.sqrt(k / mass)
    f_yz = harmonic_thermodynamics(np.full(2, HBAR_EV * w_yz), kT).free_energy_eV

    def free_energy(x):
        c, w = x[0], np.exp(x[1])
        s2 = mode_variances(np.array([w]), kT)[0] / mass
        f_h = harmonic_thermodynamics(np.array([HBAR_EV * w]), kT).free_energy_eV
        return f_h + k * (c**2 + s2) / 2 + g3 * (c**3 + 3 * c * s2) + lam * (c**4 + 6 * c**2 * s2 + 3 * s2**2) - mass * w**2 * s2 / 2 + f_yz

    best = scipy.optimize.minimize(free_energy, x0=[0.0, np.log(w_yz)], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000})
    c_exact, w_exact = best.x[0], np.exp(best.x[1])
    settings = dict(n_samples=4096, n_iterations=40, n_eval_samples=400_000, seed=2)
    relaxed = optimise_gaussian(energy_fn, harmonic, kT, relax_centroid=True, **settings)
    fixed = optimise_gaussian(energy_fn, harmonic, kT, **settings)
    shift = relaxed.centroid_shift_A[0]
    print(f"centroid shift {shift} A (exact {c_exact:.5f}), w_x {relaxed.modes.omega} (exact {w_exact:.5f}), "
          f"F relaxed {relaxed.free_energy_eV:.6f} +- {relaxed.free_energy_stderr_eV:.6f}, fixed {fixed.free_energy_eV:.6f}, exact {best.fun:.6f} eV")
    assert c_exact > 0.03  # the zero-point motion moves the centre by a measurable amount
    assert shift[0] == pytest.approx(c_exact, rel=1e-2)
    assert np.abs(shift[1:]).max() < 1e-3 * c_exact
    np.testing.assert_allclose(relaxed.modes.reference_positions, atoms.get_positions() + relaxed.centroid_shift_A)
    assert relaxed.modes.energy0_eV == pytest.approx(float(energy_fn(jnp.asarray(relaxed.modes.reference_positions), None)))
    assert np.min(np.abs(relaxed.modes.omega - w_exact)) < 3e-3 * w_exact
    assert abs(relaxed.free_energy_eV - best.fun) < 4 * relaxed.free_energy_stderr_eV + 2e-5
    assert fixed.free_energy_eV - relaxed.free_energy_eV > 10 * relaxed.free_energy_stderr_eV
    assert np.all(relaxed.history["mean_force_eV_per_A"][-5:] < 0.05 * relaxed.history["mean_force_eV_per_A"][0])


def test_interrupted_iterations_resume_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """The iterations checkpoint their state (curvature, centroid, the averaged iterates) after each
    iteration; a run killed after iteration 3 of 8 and started again on the same file gives the
    uninterrupted result bit for bit (centroid relaxation on, asymmetric well). A file of other
    settings is refused."""
    from anharmonic_models import make_asymmetric_atom

    from thermoflow.phonons import scha

    atoms = Atoms("H", positions=[[1.0, 1.0, 1.0]], cell=10.0 * np.eye(3), pbc=True, masses=[2.0])
    energy_fn = make_asymmetric_atom(atoms, 1.0, -0.6, 1.0)
    harmonic = compute_harmonic_modes(energy_fn, atoms.get_positions(), atoms.cell.array, atoms.get_masses())
    settings = dict(n_samples=64, n_iterations=8, n_eval_samples=256, seed=4, relax_centroid=True)
    kT = KB_EV_PER_K * 100.0
    full = optimise_gaussian(energy_fn, harmonic, kT, **settings)

    class Interrupted(Exception):
        pass

    save, calls = scha._save_progress, []

    def save_then_stop(*args):
        save(*args)
        calls.append(1)
        if len(calls) == 3:
            raise Interrupted

    progress = tmp_path / "gaussian_progress.npz"
    monkeypatch.setattr(scha, "_save_progress", save_then_stop)
    with pytest.raises(Interrupted):
        optimise_gaussian(energy_fn, harmonic, kT, progress_path=progress, **settings)
    done_after_resume = []
    monkeypatch.setattr(scha, "_save_progress", lambda *args: (save(*args), done_after_resume.append(args[2])))
    resumed = optimise_gaussian(energy_fn, harmonic, kT, progress_path=progress, **settings)
    assert done_after_resume == [4, 5, 6, 7, 8]  # only the iterations not done before the interruption
    assert resumed.free_energy_eV == full.free_energy_eV and resumed.free_energy_stderr_eV == full.free_energy_stderr_eV
    np.testing.assert_array_equal(resumed.modes.omega, full.modes.omega)
    np.testing.assert_array_equal(resumed.centroid_shift_A, full.centroid_shift_A)
    for key in full.history:
        np.testing.assert_array_equal(resumed.history[key], full.history[key])
    with pytest.raises(ValueError, match="other settings \\(seed\\)"):
        optimise_gaussian(energy_fn, harmonic, kT, progress_path=progress, **{**settings, "seed": 5})
    with pytest.raises(ValueError, match="other settings \\(kT_eV\\)"):
        optimise_gaussian(energy_fn, harmonic, 1.5 * kT, progress_path=progress, **settings)
