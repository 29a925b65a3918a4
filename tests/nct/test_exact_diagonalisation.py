"""Trained NCT free energy and excitation energies of an anharmonic atom (3 coupled DoF)
against exact diagonalisation."""

import jax
import numpy as np
import pytest

import crystals
from thermoflow.nct.flow import make_realnvp
from thermoflow.nct.loss import make_free_energy_model
from thermoflow.nct.train import make_optimizer, train
from thermoflow.units import HBAR_EV, KB_EV_PER_K

SPRING, QUARTIC, COUPLING = (crystals.ANHARMONIC_ATOM[k] for k in ("spring_eV_per_A2", "quartic_eV_per_A4", "coupling_eV_per_A4"))
MASS = crystals.ANHARMONIC_ATOM_MASS
TEMPERATURE_K = 300.0


def exact_levels(n_basis: int) -> np.ndarray:
    """Eigenvalues of H = sum_d [p_d^2/2m + k x_d^2/2 + lam x_d^4] + mu sum_{d<e} x_d^2 x_e^2,
    diagonalised in a product harmonic-oscillator basis of n_basis functions per coordinate, eV."""
    omega = np.sqrt(SPRING / MASS)
    big = n_basis + 4  # build x in a larger basis so that x^2, x^4 are exact in the kept block
    a = np.diag(np.sqrt(np.arange(1, big)), 1)
    x = np.sqrt(HBAR_EV / (2 * MASS * omega)) * (a + a.T)
    x2 = (x @ x)[:n_basis, :n_basis]
    x4 = (x @ x @ x @ x)[:n_basis, :n_basis]
    h1 = np.diag(HBAR_EV * omega * (np.arange(n_basis) + 0.5)) + QUARTIC * x4
    eye = np.eye(n_basis)

    def kron3(a1, a2, a3):
        return np.kron(np.kron(a1, a2), a3)

    h = kron3(h1, eye, eye) + kron3(eye, h1, eye) + kron3(eye, eye, h1)
    h += COUPLING * (kron3(x2, x2, eye) + kron3(eye, x2, x2) + kron3(x2, eye, x2))
    return np.linalg.eigvalsh(h)


def exact_free_energy(n_basis: int, kT: float) -> float:
    """-kT ln Tr exp(-H/kT) of the anharmonic atom (see :func:`exact_levels`), eV."""
    e = exact_levels(n_basis)
    return float(e[0] - kT * np.log(np.sum(np.exp(-(e - e[0]) / kT))))


@pytest.fixture(scope="module")
def trained():
    """NCT trained at 300 K from the harmonic basis: (model, result, kT)."""
    kT = KB_EV_PER_K * TEMPERATURE_K
    energy_fn, modes = crystals.anharmonic_atom()
    assert modes.n_modes == 3 and modes.n_translations_removed == 0  # not translation-invariant
    n_levels, steps = 5, 1500
    flow = make_realnvp(3, 6, 32)
    model = make_free_energy_model(energy_fn, modes, flow, kT_eV=kT, n_levels=n_levels, batch_size=256, laplacian="folx")
    optimizer = make_optimizer("adam", 3e-3, schedule="cosine", steps=steps, final_fraction=0.05)
    return model, train(model, optimizer, steps=steps, seed=1), kT


def test_nct_free_energy_against_exact_diagonalisation(trained):
    model, result, kT = trained
    f_ed = exact_free_energy(14, kT)
    assert abs(f_ed - exact_free_energy(12, kT)) < 1e-6 * abs(f_ed)  # basis converged
    energy_fn, modes = crystals.anharmonic_atom()
    flow, n_levels = make_realnvp(3, 6, 32), model.n_levels

    eval_model = make_free_energy_model(energy_fn, modes, flow, kT_eV=kT, n_levels=n_levels, batch_size=8192, laplacian="folx")
    loss = jax.jit(eval_model.loss)
    f = np.array([float(loss(result.params, jax.random.PRNGKey(1000 + i))[1]["free_energy"]) for i in range(8)])
    f_nct, err = f.mean(), f.std(ddof=1) / np.sqrt(len(f))
    f_frozen_start = float(result.history["free_energy"][0])
    print(f"ED F = {f_ed:.6f} eV, NCT F = {f_nct:.6f} +- {err:.6f} eV, harmonic-wavefunction start {f_frozen_start:.6f} eV")
    assert abs(f_nct - f_ed) < 0.005 * abs(f_ed)
    assert f_nct > f_ed - 3 * err  # variational upper bound
    assert f_frozen_start - f_ed > 5 * abs(f_nct - f_ed)  # the flow did the work


def test_excitation_energies_against_exact_diagonalisation(trained):
    """w_k = E(e_k) - E(0) of the trained state within 1 % of E_1 - E_0 (triply degenerate); the
    untrained harmonic states miss it by 15 %. (Measured: 0.08570 +- 0.0001 against 0.085324 eV.)"""
    from thermoflow.nct.spectrum import excitation_energies

    model, result, _ = trained
    levels = exact_levels(14)
    gap = levels[1] - levels[0]
    coarse = exact_levels(12)
    assert abs(coarse[1] - coarse[0] - gap) < 1e-5 * gap  # basis converged
    spectrum = excitation_energies(model, result.params, n_samples=8192, seed=0, batch_size=4096)
    untrained = excitation_energies(model, model.init(jax.random.PRNGKey(0)), n_samples=4096, seed=0, batch_size=4096)
    print("ED E1 - E0", gap, "NCT w", spectrum.excitation_energies_eV, "+-", spectrum.excitation_stderr_eV,
          "untrained", untrained.excitation_energies_eV, "E(0)", spectrum.ground_state_energy_eV, "ED E0", levels[0])
    assert np.all(np.abs(spectrum.excitation_energies_eV / gap - 1) < 0.01)
    assert np.all(np.abs(untrained.excitation_energies_eV / gap - 1) > 0.05)
    assert spectrum.ground_state_energy_eV > levels[0] - 3 * spectrum.ground_state_energy_stderr_eV  # variational


def test_excitation_energies_of_a_harmonic_crystal_are_exact():
    """Identity flow on a harmonic crystal: w_k = hbar omega_k with zero variance."""
    from thermoflow.nct.spectrum import excitation_energies

    energy_fn, modes = crystals.harmonic_neon()
    flow = make_realnvp(modes.n_modes, 2, 8)
    model = make_free_energy_model(energy_fn, modes, flow, kT_eV=KB_EV_PER_K * 20.0, n_levels=3, batch_size=64)
    spectrum = excitation_energies(model, model.init(jax.random.PRNGKey(0)), n_samples=128, seed=0, batch_size=64)
    np.testing.assert_allclose(spectrum.excitation_energies_eV, modes.phonon_energies_eV, rtol=1e-10)
    assert np.all(spectrum.excitation_stderr_eV < 1e-12)
    assert np.isclose(spectrum.zero_point_energy_eV, 0.5 * modes.phonon_energies_eV.sum(), rtol=1e-10)
