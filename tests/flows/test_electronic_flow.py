"""The joint proton-flow + electron training of the deep variational free energy against exact references.

With an analytic 'electronic' energy in place of the electrons (a wavefunction whose local energy is the
pair energy E(X) = -A sum_a cos(2 pi f_a) of the two protons' fractional separation, split over two
twists as E(X) +- c with equal weights, so that only the twist average is exact), the joint engine is the
classical variational free energy of two particles, whose exact F is known: -k_B T ln(V^2 I0(A / k_B T)^3)
+ the ideal-gas constant (the classical limit check of the issue). The constant itself is checked for
units: in Hartree and bohr it gives the ideal-gas F of the classical engine in eV and Angstrom. With real
electrons (two protons, two electrons, Slater-Jastrow) the joint step is checked against the
fixed-proton VMC gradient it must reproduce when the flow does not move the protons.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as special

from thermoflow.electrons.hamiltonian import LocalEnergy
from thermoflow.flows import classical, electronic
from thermoflow.flows.periodic import make_periodic_flow
from thermoflow.optimize import learning_rate_factor, optimise
from thermoflow.units import BOHR_A, EV_PER_HARTREE, KB_EV_PER_K

TEMPERATURE_K = 3000.0
KT_HA = KB_EV_PER_K * TEMPERATURE_K / EV_PER_HARTREE
CELL = np.eye(3) * 3.0  # bohr


def _analytic_wavefunction(kappa: float, shift: float) -> electronic.Wavefunction:
    """A 'wavefunction' of one electron whose local energy is E(X) = -kappa kT sum cos(2 pi f) + shift for every electron position."""
    inverse = jnp.asarray(np.linalg.inv(CELL))

    def log_psi(params, electrons, protons):
        return jnp.ones(()), params["c"] + 0.0 * jnp.sum(electrons)

    def local_energy(params, electrons, protons):
        frac = (protons[0] - protons[1]) @ inverse
        e = -kappa * KT_HA * jnp.sum(jnp.cos(2 * jnp.pi * frac)) + shift + 0.0 * jnp.sum(electrons)
        return LocalEnergy(e, jnp.zeros(()), e)

    return electronic.Wavefunction(log_psi, local_energy)


def _analytic_model(kappa: float):
    flow = make_periodic_flow(CELL, 2, n_layers=1, one_body=8, two_body=8)
    wavefunctions = [_analytic_wavefunction(kappa, +0.3), _analytic_wavefunction(kappa, -0.3)]
    model = electronic.make_electronic_free_energy(flow, wavefunctions, n_electrons=1, temperature_K=TEMPERATURE_K, mass_amu=1.008,
                                                   twist_weights=[2.0, 2.0])
    exact = -KT_HA * (2 * math.log(27.0) + 3 * math.log(special.i0(kappa))) + model.constant_Ha
    return model, exact


def _analytic_state(model, step_init, n_walkers=256):
    key = jax.random.PRNGKey(0)
    protons = jax.random.uniform(key, (n_walkers, 2, 3)) @ jnp.asarray(CELL)
    electrons = jnp.zeros((2, n_walkers, 2, 1, 3))
    params = model.flow.init(jax.random.PRNGKey(1))
    return electronic.initial_state(model, step_init, params, ({"c": jnp.zeros(())}, {"c": jnp.zeros(())}), protons, electrons,
                                    jax.random.PRNGKey(2), proton_step_size=0.5, electron_step_size=0.1)


def test_ideal_constant_in_atomic_units():
    """k_B T (3N ln lambda + ln N!) - N k_B T ln V in Hartree with bohr lengths equals the classical engine's ideal-gas F in eV
    with Angstrom lengths (the same physical free energy)."""
    n, temperature = 16, 6000.0
    flow = make_periodic_flow(CELL * 2.0, n)
    model = electronic.make_electronic_free_energy(flow, [_analytic_wavefunction(0.0, 0.0)], n_electrons=n, temperature_K=temperature,
                                                   mass_amu=1.00784)
    kT_eV = KB_EV_PER_K * temperature
    ideal_ha = model.constant_Ha - model.kT_Ha * n * math.log(flow.volume)
    ideal_ev = classical.ideal_constant(n, 1.00784, temperature) - kT_eV * n * math.log(flow.volume * BOHR_A**3)
    assert abs(ideal_ha * EV_PER_HARTREE - ideal_ev) < 1e-9 * abs(ideal_ev)
    with pytest.raises(ValueError, match="twist_weights"):
        electronic.make_electronic_free_energy(flow, [_analytic_wavefunction(0.0, 0.0)], n_electrons=n, temperature_K=temperature,
                                               mass_amu=1.0, twist_weights=[1.0, 1.0])


def test_joint_training_reaches_the_exact_classical_limit():
    """The analytic 'electrons' E(X) = -A sum cos(2 pi f) (A = 0.5 kT), twist-averaged: F starts at the uniform density's value and
    the joint training recovers > 95 % of the exact gain, staying above the exact F; the evaluation's E matches the exact
    3 kT + <E>."""
    model, exact = _analytic_model(0.5)
    uniform_gap = 3 * math.log(special.i0(0.5)) * KT_HA
    step, init_opt = electronic.make_joint_train_step(model, flow_learning_rate=2e-2, wavefunction_optimizer="adam",
                                                      wavefunction_learning_rate=1e-3, proton_mcmc_steps=5, electron_mcmc_steps=1)
    state = _analytic_state(model, init_opt)
    result = optimise(step, state, steps=120)
    first = result.history["free_energy"][0]
    assert abs(first - (exact + uniform_gap)) < 4 * result.history["free_energy_stderr"][0]
    assert float(result.history["negative_jacobians"].max()) == 0.0
    s = result.state
    ev = electronic.evaluate(model, s.flow_params, s.wavefunction_params, s.protons, s.electrons, jax.random.PRNGKey(5), n_blocks=10,
                             proton_mcmc_steps=10, electron_mcmc_steps=1, proton_step_size=float(s.proton_step_size),
                             electron_step_sizes=s.electron_step_size)
    free = ev["blocks"]["free_energy"]
    mean, stderr = free.mean(), free.std(ddof=1) / math.sqrt(len(free))
    gap = mean - exact
    assert gap > -4 * stderr
    assert gap < 0.05 * uniform_gap
    exact_energy = 3 * KT_HA - 3 * 0.5 * KT_HA * special.i1(0.5) / special.i0(0.5)
    energy = ev["blocks"]["energy"]
    assert abs(energy.mean() - exact_energy) < 4 * energy.std(ddof=1) / math.sqrt(len(energy)) + 0.02 * KT_HA
    # the analytic local energy has no kinetic part: P = N kT / V + <V> / (3 V)
    assert np.allclose(ev["blocks"]["pressure"], 2 * KT_HA / 27.0 + ev["blocks"]["potential"] / 81.0)


def test_joint_step_with_electrons_is_the_vmc_gradient_at_fixed_protons():
    """Two protons and two electrons (Slater-Jastrow) with a zero proton step (every proposal is the current
    configuration, so the protons stay put): the wavefunction update of the joint step equals the ensemble VMC
    driver's update on the moved electron walkers with their local energies computed configuration by configuration."""
    from thermoflow.electrons.driver import make_wavefunction_update
    from thermoflow.electrons.ewald import make_ewald_sum
    from thermoflow.electrons.hamiltonian import make_local_energy
    from thermoflow.electrons.jastrow import make_slater_jastrow
    from thermoflow.electrons.plane_waves import cubic_cell_from_rs
    from thermoflow.electrons.twists import twisted_kvectors

    cell = cubic_cell_from_rs(1.5, 2)
    k_up, k_down = (twisted_kvectors(cell, 1, np.zeros(3)) for _ in range(2))
    wf = make_slater_jastrow(cell, k_up, k_down)
    local_energy = make_local_energy(wf.log_psi, make_ewald_sum(cell, 4), 2)
    flow = make_periodic_flow(cell, 2, n_layers=1, one_body=4, two_body=4)
    model = electronic.make_electronic_free_energy(flow, [electronic.Wavefunction(wf.log_psi, local_energy)], n_electrons=2,
                                                   temperature_K=6000.0, mass_amu=1.00784)
    step, init_opt = electronic.make_joint_train_step(model, flow_learning_rate=1e-2, wavefunction_optimizer="adam",
                                                      wavefunction_learning_rate=1e-2, proton_mcmc_steps=1, electron_mcmc_steps=3)
    n_walkers, w = 3, 4
    protons = jax.random.uniform(jax.random.PRNGKey(0), (n_walkers, 2, 3)) @ jnp.asarray(cell)
    electrons = protons[None, :, None] + 0.3 * jax.random.normal(jax.random.PRNGKey(1), (1, n_walkers, w, 2, 3))
    params = wf.init()
    state = electronic.initial_state(model, init_opt, flow.init(jax.random.PRNGKey(2)), (params,), protons, electrons,
                                     jax.random.PRNGKey(3), proton_step_size=0.0, electron_step_size=0.3)
    new, metrics, finite = step(state)
    assert bool(finite)
    assert float(metrics["proton_acceptance"]) == 1.0  # a zero step: every proposal is the current configuration
    np.testing.assert_allclose(np.asarray(new.protons), np.asarray(protons), atol=1e-12)
    # the moved walkers' local energies, computed per configuration, fed to the driver's update
    x = new.electrons[0]
    assert float(jnp.max(jnp.abs(x - electrons[0]))) > 0.01  # the electrons moved
    e_loc = jax.jit(jax.vmap(lambda xs, r: jax.vmap(lambda e: local_energy(params, e, r).total)(xs)))(x, protons)
    update, transform = make_wavefunction_update(wf.log_psi, optimizer="adam", learning_rate=1e-2)
    expected, _ = update(params, transform.init(params), 1.0, x, protons, e_loc)
    for a, b in zip(jax.tree.leaves(new.wavefunction_params[0]), jax.tree.leaves(expected)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-8, atol=1e-12)
    assert abs(float(metrics["electronic_energy"]) - float(jnp.mean(e_loc))) < 1e-10


def test_learning_rate_schedule_scales_both_updates():
    """A schedule factor of 0.5 at step 0 halves the first update of the flow and of every twist's wavefunction (both
    learning rates follow it); the factor of an optax cosine schedule reaches final_fraction at the last step."""
    model, _ = _analytic_model(0.5)
    moves = {}
    for factor in (None, 0.5):
        step, init_opt = electronic.make_joint_train_step(
            model, flow_learning_rate=2e-2, wavefunction_optimizer="adam", wavefunction_learning_rate=1e-3, proton_mcmc_steps=2,
            electron_mcmc_steps=1, learning_rate_schedule=None if factor is None else (lambda t: factor * jnp.ones(())))
        state = _analytic_state(model, init_opt)
        new, _, finite = step(state)
        assert bool(finite)
        moves[factor] = [np.asarray(a) - np.asarray(b) for a, b in zip(jax.tree.leaves((new.flow_params, new.wavefunction_params)),
                                                                      jax.tree.leaves((state.flow_params, state.wavefunction_params)))]
    assert max(np.abs(m).max() for m in moves[None]) > 1e-4
    for full, half in zip(moves[None], moves[0.5]):
        np.testing.assert_allclose(half, 0.5 * full, rtol=1e-9, atol=1e-14)
    factor = learning_rate_factor("cosine", 100, 0.1)
    assert float(factor(0)) == 1.0 and abs(float(factor(100)) - 0.1) < 1e-12 and abs(float(factor(50)) - 0.55) < 1e-12
    assert abs(float(learning_rate_factor("exponential", 100, 0.1)(50)) - 0.1**0.5) < 1e-12
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_factor("linear", 100)


def test_base_potential_makes_the_identity_flow_exact():
    """With the analytic E(X) as the base potential (in eV and Angstrom, as a thermoflow potential) and its exact ln Z_b
    (Angstrom units), the identity flow is the Boltzmann density: k_B T ln p + E(X) = -k_B T ln Z_b for every
    configuration, so the first step's F is the exact F with zero spread (the unit conversions of the base included)."""
    kappa = 0.5
    model_uniform, exact = _analytic_model(kappa)
    inverse = np.linalg.inv(CELL * BOHR_A)

    def base_ev(positions_A, cell_A):
        frac = (positions_A[0] - positions_A[1]) @ jnp.asarray(inverse)
        return -kappa * KT_HA * EV_PER_HARTREE * jnp.sum(jnp.cos(2 * jnp.pi * frac))

    log_z_A = 2 * math.log(27.0) + 3 * math.log(special.i0(kappa)) + 6 * math.log(BOHR_A)
    model = electronic.make_electronic_free_energy(model_uniform.flow, model_uniform.wavefunctions, n_electrons=1,
                                                   temperature_K=TEMPERATURE_K, mass_amu=1.008, base_energy_fn=base_ev,
                                                   base_log_partition_A=log_z_A)
    step, init_opt = electronic.make_joint_train_step(model, flow_learning_rate=1e-2, wavefunction_optimizer="adam",
                                                      wavefunction_learning_rate=1e-3, proton_mcmc_steps=3, electron_mcmc_steps=1)
    _, metrics, finite = step(_analytic_state(model, init_opt, n_walkers=64))
    assert bool(finite)
    assert abs(float(metrics["free_energy"]) - exact) < 1e-9
    assert float(metrics["free_energy_stderr"]) < 1e-9
    with pytest.raises(ValueError, match="ln Z"):
        electronic.make_electronic_free_energy(model_uniform.flow, model_uniform.wavefunctions, n_electrons=1, temperature_K=TEMPERATURE_K,
                                               mass_amu=1.008, base_energy_fn=base_ev)
