"""Slater-Jastrow wavefunction of the electron gas: cusps, periodicity, and VMC optimisation below Hartree-Fock."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.electrons import mcmc
from thermoflow.electrons.ewald import make_ewald_sum
from thermoflow.electrons.hamiltonian import make_local_energy
from thermoflow.electrons.jastrow import make_slater_jastrow, periodic_distance
from thermoflow.electrons.plane_waves import closed_shell_kvectors, cubic_cell_from_rs, hartree_fock_energy
from thermoflow.electrons.vmc import make_vmc_step

N_UP, RS = 7, 2.0


def test_periodic_distance_and_cusps():
    """d equals |r| for small r, is invariant under lattice translations; the Jastrow factor gives
    d ln psi / dr = 1/2 (antiparallel) and 1/4 (parallel) as two electrons meet, whatever A (the part of
    ln psi even in the separation t along a line through the partner, whose slope in |t| is the cusp)."""
    cell = cubic_cell_from_rs(RS, 2 * N_UP)
    r = jnp.array([1e-3, 2e-3, -1e-3])
    assert abs(float(periodic_distance(r, jnp.asarray(cell))) - float(jnp.linalg.norm(r))) < 1e-9
    shifted = r + jnp.asarray(cell[0] - 2 * cell[2])
    assert abs(float(periodic_distance(shifted, jnp.asarray(cell))) - float(periodic_distance(r, jnp.asarray(cell)))) < 1e-12
    k = closed_shell_kvectors(cell, N_UP)
    wf = make_slater_jastrow(cell, k, k)
    params = {"a_parallel": jnp.asarray(0.7), "a_antiparallel": jnp.asarray(-0.3)}
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.uniform(size=(2 * N_UP, 3)) @ cell)
    direction = jnp.array([0.6, 0.0, 0.8])
    for partner, cusp in ((8, 0.5), (1, 0.25)):  # electron 0 is up; 8 is down, 1 is up
        def jastrow_along(t):
            y = x.at[0].set(x[partner] + t * direction)
            zero = {"a_parallel": jnp.asarray(-50.0), "a_antiparallel": jnp.asarray(-50.0)}  # A ~ 0: no Jastrow
            return wf.log_psi(params, y)[1] - wf.log_psi(zero, y)[1]

        h = 1e-4  # even part in t: the other pairs' smooth, linear-in-t contribution cancels
        slope = (float(jastrow_along(2 * h)) + float(jastrow_along(-2 * h)) - float(jastrow_along(h)) - float(jastrow_along(-h))) / (2 * h)
        assert abs(slope - cusp) < 2e-3, (partner, slope)


@pytest.mark.slow  # ~35 s; test_natural_gradient.py optimises the same wavefunction by default
def test_vmc_optimisation_lowers_the_energy_below_hartree_fock():
    """14 electrons at r_s = 2: Adam on the two Jastrow amplitudes (40 steps, 64 walkers) lowers the
    VMC energy clearly below the exact energy of the determinant alone (the correlation energy),
    and the local-energy variance with it; the final energy is a blocking average over 20 further
    steps at fixed parameters. The optimal amplitude is near the RPA value A = r_s^(3/2) / sqrt(3) = 1.63
    (Ceperley 1978)."""
    cell = cubic_cell_from_rs(RS, 2 * N_UP)
    k = closed_shell_kvectors(cell, N_UP)
    hf = hartree_fock_energy(cell, k, k)["total"]
    wf = make_slater_jastrow(cell, k, k)
    local_energy = make_local_energy(wf.log_psi, make_ewald_sum(cell, 2 * N_UP), 2 * N_UP)
    optimizer = optax.adam(0.05)
    step = make_vmc_step(wf.log_psi, local_energy, optimizer, n_mcmc_steps=10)
    frozen = make_vmc_step(wf.log_psi, local_energy, optax.set_to_zero(), n_mcmc_steps=10)
    params = wf.init()
    opt_state = optimizer.init(params)
    protons = jnp.zeros((0, 3))
    key, k0 = jax.random.split(jax.random.PRNGKey(1))
    walkers = mcmc.init_walkers(wf.log_psi, params, jax.random.uniform(k0, (64, 2 * N_UP, 3)) @ jnp.asarray(cell), protons, key)
    step_size, history = 0.3, []
    for i in range(40):
        params, opt_state, walkers, stats = step(params, opt_state, walkers, protons, step_size)
        step_size = mcmc.tune_step_size(step_size, float(stats.acceptance))
        history.append((float(stats.energy), float(stats.variance)))
    energies, variances = [], []
    for _ in range(20):
        params, _, walkers, stats = frozen(params, optax.set_to_zero().init(params), walkers, protons, step_size)
        energies.append(float(stats.energy))
        variances.append(float(stats.variance))
    b = blocking_stderr(np.array(energies))
    amplitudes = {name: float(jax.nn.softplus(v)) for name, v in params.items()}
    print(f"Slater-Jastrow: E = {b.mean:.4f} +- {b.stderr:.4f} Ha (HF {hf:.4f}), variance {np.mean(variances):.3f} "
          f"(first steps {np.mean([v for _, v in history[:5]]):.3f}), A = {amplitudes}")
    assert b.mean < hf - 0.15 and b.mean + 4 * b.stderr < hf
    assert np.mean(variances) < 0.7 * np.mean([v for _, v in history[:5]])
    assert 1.0 < amplitudes["a_antiparallel"] < 2.5
