"""Harmonic potential + identity flow: NCT must reproduce the exact quantum harmonic crystal."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import crystals
from thermoflow.nct import occupations
from thermoflow.nct.flow import make_realnvp
from thermoflow.nct.loss import make_free_energy_model
from thermoflow.phonons import harmonic_thermodynamics
from thermoflow.units import KB_EV_PER_K

K = 3
TEMPERATURE_K = 25.0


@pytest.fixture(scope="module")
def harmonic_neon():
    """fcc neon (4 atoms, 9 modes) with the exact harmonic expansion of its LJ potential."""
    return crystals.harmonic_neon()


@pytest.mark.parametrize("laplacian", ["folx", pytest.param("exact", marks=pytest.mark.slow), pytest.param("hutchinson", marks=pytest.mark.slow)])
def test_local_energy_is_exact_eigenvalue(harmonic_neon, laplacian):
    """For every state n and sample s, E_loc = V0 + sum hbar omega (n + 1/2): zero variance."""
    energy_fn, modes = harmonic_neon
    kT = KB_EV_PER_K * TEMPERATURE_K
    flow = make_realnvp(modes.n_modes, 2, 8)
    model = make_free_energy_model(energy_fn, modes, flow, kT_eV=kT, n_levels=K, batch_size=64, laplacian=laplacian)
    params = model.init(jax.random.PRNGKey(0))
    levels, s = model.sample(params, jax.random.PRNGKey(1), 64)
    kin, pot = jax.vmap(model.local_energy, in_axes=(None, 0, 0, 0))(params, levels, s, jax.random.split(jax.random.PRNGKey(2), 64))
    exact = modes.energy0_eV + np.asarray(levels + 0.5) @ modes.phonon_energies_eV
    np.testing.assert_allclose(kin + pot, exact, rtol=1e-10, atol=1e-12)
    assert np.ptp(np.asarray(kin + pot) - exact) < 1e-10


def test_free_energy_by_state_enumeration_is_exact(harmonic_neon):
    """F = -kT S + sum_n p_n <E_loc>_n over all K^D states equals the analytic truncated F (1e-8)."""
    energy_fn, modes = harmonic_neon
    kT = KB_EV_PER_K * TEMPERATURE_K
    n_modes = 4  # enumerate a sub-block of modes; the others are fixed in their ground state
    flow = make_realnvp(modes.n_modes, 2, 8)
    model = make_free_energy_model(energy_fn, modes, flow, kT_eV=kT, n_levels=K, batch_size=2, laplacian="folx")
    params = model.init(jax.random.PRNGKey(0))
    states = np.array(list(itertools.product(range(K), repeat=n_modes)))
    levels = np.zeros((len(states), modes.n_modes), dtype=int)
    levels[:, :n_modes] = states
    from thermoflow.nct.wavefunction import make_sampler

    s = make_sampler(flow, K)(params["flow"], jax.random.PRNGKey(3), jnp.asarray(levels))
    kin, pot = jax.vmap(model.local_energy, in_axes=(None, 0, 0, 0))(params, jnp.asarray(levels), s, jax.random.split(jax.random.PRNGKey(4), len(states)))
    logits = params["logits"][:n_modes]
    log_p = jax.vmap(occupations.log_probability, in_axes=(None, 0))(logits, jnp.asarray(states))
    e_rest = 0.5 * modes.phonon_energies_eV[n_modes:].sum()
    free = -kT * occupations.entropy(logits) + jnp.sum(jnp.exp(log_p) * (kin + pot)) - e_rest
    th = harmonic_thermodynamics(modes.phonon_energies_eV[:n_modes], kT, n_levels=K)
    ref = modes.energy0_eV + th.free_energy_eV
    assert abs(float(free) - ref) < 1e-8 * abs(ref)


def test_training_estimator_is_exact_with_zero_variance(harmonic_neon):
    """The training estimator itself (sampled occupations, harmonic control variate) gives the
    analytic truncated-spectrum F to 1e-8 relative, with zero statistical error."""
    energy_fn, modes = harmonic_neon
    kT = KB_EV_PER_K * TEMPERATURE_K
    flow = make_realnvp(modes.n_modes, 2, 8)
    model = make_free_energy_model(energy_fn, modes, flow, kT_eV=kT, n_levels=K, batch_size=64, laplacian="folx")
    params = model.init(jax.random.PRNGKey(0))
    _, metrics = jax.jit(model.loss)(params, jax.random.PRNGKey(5))
    ref = modes.energy0_eV + harmonic_thermodynamics(modes.phonon_energies_eV, kT, n_levels=K).free_energy_eV
    assert abs(float(metrics["free_energy"]) - ref) < 1e-8 * abs(ref)
    assert float(metrics["energy_stderr"]) < 1e-12
    assert float(metrics["local_energy_variance"]) > 1e-8  # the raw local energies do vary between states
    # entropy is exact: equals the truncated harmonic entropy
    th = harmonic_thermodynamics(modes.phonon_energies_eV, kT, n_levels=K)
    np.testing.assert_allclose(float(metrics["entropy"]), th.entropy_kB, rtol=1e-12)
