"""The NCT pressure estimator is the exact strain derivative of the free-energy estimator."""

import dataclasses

import jax
import numpy as np
import pytest

import crystals
from helpers import perturbed_params
from thermoflow.nct.flow import make_realnvp
from thermoflow.nct.loss import make_free_energy_model
from thermoflow.nct.train import evaluate
from thermoflow.units import KB_EV_PER_K


def strained(modes, eps):
    """The crystal under isotropic strain eps with the state fixed in scaled coordinates:
    R0, cell and the displacement matrix B = M^-1/2 E sqrt(hbar / omega) all scale by 1 + eps."""
    return dataclasses.replace(
        modes, reference_positions=modes.reference_positions * (1 + eps), cell=modes.cell * (1 + eps),
        omega=modes.omega / (1 + eps) ** 2,
    )


@pytest.mark.parametrize("freeze_flow", [pytest.param(True, marks=pytest.mark.slow), False])
def test_pressure_is_minus_the_volume_derivative_of_the_free_energy_estimator(freeze_flow):
    energy_fn, modes = crystals.anharmonic_neon()
    kT = KB_EV_PER_K * 20.0
    flow = make_realnvp(modes.n_modes, 2, 8)
    kwargs = dict(kT_eV=kT, n_levels=3, batch_size=64, freeze_flow=freeze_flow)
    model = make_free_energy_model(energy_fn, modes, flow, stress=True, **kwargs)
    params = {"flow": perturbed_params(flow, scale=0.05), "logits": model.init(jax.random.PRNGKey(0))["logits"]}
    at = {e: evaluate(make_free_energy_model(energy_fn, strained(modes, e), flow, **kwargs), params, seed=1, n_batches=3)["free_energy"]
          for e in (-1e-5, 1e-5)}
    pressure = evaluate(model, params, seed=1, n_batches=3)["pressure"]
    volume = abs(np.linalg.det(modes.cell))
    numerical = -(at[1e-5] - at[-1e-5]) / 2e-5 / (3 * volume)
    print("pressure (eV/A^3)", pressure, "numerical", numerical, "rel", (pressure - numerical) / numerical)
    assert np.allclose(pressure, numerical, rtol=1e-5, atol=1e-12)  # 1e-8 typically; a pair crossing the cutoff costs more


def _velocity_matrix(modes):
    from thermoflow.units import HBAR_EV

    return modes.modes * np.sqrt(HBAR_EV * modes.omega)[None, :] / np.repeat(np.sqrt(modes.masses), 3)[:, None]


def _tensor_of_second_moments(modes, moments):
    """sum_atoms m v v^T averaged: <g g^T> = ``moments`` (D, D) with v = V g."""
    v = _velocity_matrix(modes)
    c = v @ moments @ v.T  # (3N, 3N)
    n = modes.n_atoms
    return sum(modes.masses[a] * c[3 * a:3 * a + 3, 3 * a:3 * a + 3] for a in range(n))


def test_kinetic_tensor_of_harmonic_states_is_exact_with_zero_variance():
    """Identity flow: every sample returns the analytic tensor of its state, per component."""
    from thermoflow.nct.hamiltonian import make_kinetic_stress
    from thermoflow.nct.wavefunction import make_sampler

    _, modes = crystals.anharmonic_neon()
    flow = make_realnvp(modes.n_modes, 2, 8)
    params = flow.init(jax.random.PRNGKey(0))
    kinetic_tensor = make_kinetic_stress(flow, 4, modes.modes, modes.omega, modes.masses)
    levels = jax.numpy.asarray(np.random.default_rng(0).integers(0, 4, size=(64, modes.n_modes)))
    s = make_sampler(flow, 4)(params, jax.random.PRNGKey(1), levels)
    pi = np.asarray(jax.vmap(kinetic_tensor, in_axes=(None, 0, 0))(params, levels, s))
    for n, p in zip(np.asarray(levels), pi):
        expected = _tensor_of_second_moments(modes, np.diag(n + 0.5))
        assert np.allclose(p, expected, rtol=1e-12, atol=1e-15)
        assert np.isclose(np.trace(p), np.sum((n + 0.5) * modes.phonon_energies_eV), rtol=1e-12)  # tr Pi = 2 <K>
    assert np.ptp(pi[:, 0, 1]) > 0  # the states differ, so would a constant answer


def test_kinetic_tensor_of_a_linear_flow_state_matches_the_analytic_gaussian_value():
    """Psi_n(s) = Phi_n(A s) |det A|^1/2 with a random A = 1 + W: <g g^T> = A^T diag(n + 1/2) A,
    so the tensor is analytic; the estimator (with its control variate) must reproduce it and
    must not be zero-variance."""
    from thermoflow.nct.hamiltonian import make_kinetic_stress
    from thermoflow.nct.wavefunction import make_sampler

    _, modes = crystals.anharmonic_neon()
    d = modes.n_modes
    flow = make_realnvp(d, 0, linear=True)
    w = 0.15 * np.random.default_rng(3).normal(size=(d, d))
    params = {**flow.init(jax.random.PRNGKey(0)), "linear": jax.numpy.asarray(w)}
    n = np.zeros(d, dtype=int)
    n[[0, 5, 11]] = [1, 2, 1]
    levels = jax.numpy.asarray(np.tile(n, (20000, 1)))
    s = make_sampler(flow, 4)(params, jax.random.PRNGKey(2), levels)
    kinetic_tensor = make_kinetic_stress(flow, 4, modes.modes, modes.omega, modes.masses)
    pi = np.asarray(jax.vmap(kinetic_tensor, in_axes=(None, 0, 0))(params, levels, s))
    a = np.eye(d) + w
    expected = _tensor_of_second_moments(modes, a.T @ np.diag(n + 0.5) @ a)
    mean, err = pi.mean(axis=0), pi.std(axis=0, ddof=1) / np.sqrt(len(pi))
    print("expected\n", expected, "\nestimated\n", mean, "\nstderr\n", err)
    assert np.all(err > 1e-6 * np.abs(expected).max())
    assert np.all(np.abs(mean - expected) < 5 * err)


def test_directional_kinetic_energies_sum_to_the_local_kinetic_energy_and_give_the_analytic_tensor_diagonal():
    """The local kinetic energy split by Cartesian direction (three directional Laplacians): through
    a perturbed nonlinear flow it sums to the full local kinetic energy per sample (folx and
    forward-over-reverse alike); for the linear-flow state above its mean per direction is half the
    analytic kinetic tensor's diagonal, which the isotropic split K / 3 (the published code's
    assumption) misses by many standard errors."""
    import jax.numpy as jnp

    from thermoflow.nct.hamiltonian import make_directional_kinetic_energy, make_kinetic_energy
    from thermoflow.nct.wavefunction import make_log_psi, make_sampler

    _, modes = crystals.anharmonic_neon()
    d = modes.n_modes
    eps = jnp.asarray(modes.phonon_energies_eV)

    def directional(flow, params, levels, s, method="folx"):
        fn = make_directional_kinetic_energy(make_log_psi(flow, 4), modes.modes, eps, method)
        keys = jax.random.split(jax.random.PRNGKey(3), levels.shape[0])
        return np.asarray(jax.jit(jax.vmap(fn, in_axes=(None, 0, 0, 0)))(params, levels, s, keys))

    flow = make_realnvp(d, 2, 8)
    params = perturbed_params(flow, scale=0.1)
    levels = jax.random.randint(jax.random.PRNGKey(1), (64, d), 0, 4)
    s = make_sampler(flow, 4)(params, jax.random.PRNGKey(2), levels)
    keys = jax.random.split(jax.random.PRNGKey(3), 64)
    total = jax.jit(jax.vmap(make_kinetic_energy(make_log_psi(flow, 4), eps, "folx"), in_axes=(None, 0, 0, 0)))(params, levels, s, keys)
    by_folx, by_hvp = directional(flow, params, levels, s), directional(flow, params, levels, s, "exact")
    np.testing.assert_allclose(by_folx.sum(axis=1), np.asarray(total), rtol=1e-10)
    np.testing.assert_allclose(by_folx, by_hvp, rtol=1e-9)

    linear = make_realnvp(d, 0, linear=True)
    w = 0.15 * np.random.default_rng(3).normal(size=(d, d))
    params = {**linear.init(jax.random.PRNGKey(0)), "linear": jnp.asarray(w)}
    n = np.zeros(d, dtype=int)
    n[[0, 5, 11]] = [1, 2, 1]
    levels = jnp.asarray(np.tile(n, (8192, 1)))
    s = make_sampler(linear, 4)(params, jax.random.PRNGKey(2), levels)
    k = directional(linear, params, levels, s)
    a = np.eye(d) + w
    expected = 0.5 * np.diag(_tensor_of_second_moments(modes, a.T @ np.diag(n + 0.5) @ a))
    mean, err = k.mean(axis=0), k.std(axis=0, ddof=1) / np.sqrt(len(k))
    print("K_a", mean, "+-", err, "analytic Pi_aa / 2", expected, "isotropic split", expected.sum() / 3)
    assert np.all(np.abs(mean - expected) < 5 * err)
    assert np.abs(expected - expected.sum() / 3).max() > 20 * err.max()


def test_kinetic_pressure_reaches_the_classical_limit():
    """Harmonic states at kT = 4 hbar omega_max: -tr(kinetic stress)/3 is the exact quantum
    value sum_k hbar omega_k (<n_k> + 1/2) / (3V) with zero variance, and within 1 % of the
    classical (N - 1) kT / V of the 3N - 3 internal modes."""
    energy_fn, modes = crystals.harmonic_neon()
    kT = 4.0 * modes.phonon_energies_eV.max()
    flow = make_realnvp(modes.n_modes, 1, 4)
    model = make_free_energy_model(energy_fn, modes, flow, kT_eV=kT, n_levels=48, batch_size=256, freeze_flow=True, stress=True)
    params = model.init(jax.random.PRNGKey(0))
    batches = evaluate(model, params, seed=0, n_batches=16)
    volume = abs(np.linalg.det(modes.cell))
    kinetic_pressure = -np.trace(batches["kinetic_stress"], axis1=1, axis2=2) / 3
    probs = np.asarray(jax.nn.softmax(params["logits"], axis=-1))
    quantum = np.sum(modes.phonon_energies_eV * (probs @ np.arange(48) + 0.5)) / (3 * volume)
    classical = (modes.n_atoms - 1) * kT / volume
    print("kinetic pressure per batch", kinetic_pressure, "quantum", quantum, "classical", classical)
    # the batch's sampled occupations vary, so compare the mean over batches to within their spread
    assert abs(kinetic_pressure.mean() - quantum) < 5 * kinetic_pressure.std(ddof=1) / 4
    assert abs(quantum / classical - 1) < 0.01


def test_trace_of_the_stress_is_a_second_estimator_of_the_pressure():
    """Anharmonic neon, perturbed flow: -tr(sigma)/3 (kinetic tensor from ln|Psi| gradients) and
    the strain-derivative pressure (Laplacian kinetic energy) are two unbiased estimators of P;
    batch by batch (the same samples) they agree within their errors, and sigma is symmetric."""
    energy_fn, modes = crystals.anharmonic_neon()
    kT = KB_EV_PER_K * 20.0
    flow = make_realnvp(modes.n_modes, 2, 8)
    model = make_free_energy_model(energy_fn, modes, flow, kT_eV=kT, n_levels=3, batch_size=128, stress=True)
    params = {"flow": perturbed_params(flow, scale=0.05), "logits": model.init(jax.random.PRNGKey(0))["logits"]}
    batches = evaluate(model, params, seed=2, n_batches=8)
    from_stress = -np.trace(batches["stress"], axis1=1, axis2=2) / 3
    diff = from_stress - batches["pressure"]
    err = diff.std(ddof=1) / np.sqrt(len(diff))
    print("P (eV/A^3)", batches["pressure"].mean(), "-tr(sigma)/3", from_stress.mean(), "difference", diff.mean(), "+-", err)
    assert err > 0
    assert abs(diff.mean()) < 4 * err
    assert np.allclose(batches["stress"], np.swapaxes(batches["stress"], 1, 2))
