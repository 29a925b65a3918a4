"""The periodic neural wavefunction: symmetries, the Slater-Jastrow limit, and VMC with protons."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from thermoflow.electrons import mcmc
from thermoflow.electrons.ewald import make_ewald_sum
from thermoflow.electrons.hamiltonian import make_local_energy
from thermoflow.electrons.jastrow import make_slater_jastrow
from thermoflow.electrons.network import make_periodic_network
from thermoflow.electrons.plane_waves import closed_shell_kvectors, cubic_cell_from_rs
from thermoflow.electrons.vmc import make_vmc_step

N_UP = 7


def _setup(seed=0):
    cell = cubic_cell_from_rs(1.5, 2 * N_UP)
    k = closed_shell_kvectors(cell, N_UP)
    net = make_periodic_network(cell, k, k, n_layers=2, one_body=16, two_body=4, seed=seed)
    params = net.init()
    # non-zero orbital couplings so that the features matter in the symmetry tests
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), 3)
    for key, name in zip(keys, ("envelope_up", "envelope_down", "backflow")):
        params[name] = 0.3 * jax.random.normal(key, params[name].shape)
    rng = np.random.default_rng(seed)
    electrons = jnp.asarray(rng.uniform(size=(2 * N_UP, 3)) @ cell)
    protons = jnp.asarray(rng.uniform(size=(2 * N_UP, 3)) @ cell)
    return cell, k, net, params, electrons, protons


def test_antisymmetry_periodicity_and_proton_permutation_invariance():
    """Exchanging two same-spin electrons flips the sign of psi at equal |psi|; moving any electron by a
    lattice vector, permuting the protons, or translating electrons and protons together leaves psi
    unchanged (1e-9 in ln|psi|); exchanging an up and a down electron changes |psi| (spins distinct)."""
    cell, _, net, params, x, protons = _setup()
    sign, log_abs = net.log_psi(params, x, protons)

    def same(s2, l2):
        return float(s2) == float(sign) and abs(float(l2) - float(log_abs)) < 1e-9

    swapped = x.at[jnp.array([2, 5])].set(x[jnp.array([5, 2])])
    s2, l2 = net.log_psi(params, swapped, protons)
    assert float(s2) == -float(sign) and abs(float(l2) - float(log_abs)) < 1e-9
    assert same(*net.log_psi(params, x.at[3].add(jnp.asarray(cell[1] - 2 * cell[0])), protons))
    assert same(*net.log_psi(params, x, protons[::-1]))
    t = jnp.array([0.37, -1.2, 0.8])
    assert same(*net.log_psi(params, x + t, protons + t))
    mixed = x.at[jnp.array([0, 9])].set(x[jnp.array([9, 0])])
    assert abs(float(net.log_psi(params, mixed, protons)[1]) - float(log_abs)) > 1e-6


def test_initial_network_is_the_slater_jastrow_wavefunction():
    """With the orbital couplings at their initial zeros the network equals the Slater-Jastrow
    wavefunction (plane waves x RPA Jastrow with the electron-proton term) at a proton configuration, to 1e-12."""
    cell, k, net, _, x, protons = _setup()
    params = net.init()
    reference = make_slater_jastrow(cell, k, k)
    s_net, l_net = net.log_psi(params, x, protons)
    s_ref, l_ref = reference.log_psi(reference.init(), x, protons)
    assert float(s_net) == float(s_ref) and abs(float(l_net) - float(l_ref)) < 1e-12


@pytest.mark.slow  # default-budget trim (2026-12-02); run with -m slow
def test_vmc_with_protons_lowers_the_energy():
    """14 electrons and 14 protons (a random configuration at r_s = 1.5): 30 Adam steps on all network
    parameters lower the mean local energy (the first five steps' mean minus the last five's > 5 x
    their combined standard error), with finite local energies throughout (folx through the network)."""
    cell, _, net, _, _, protons = _setup(seed=2)
    params = net.init()
    local_energy = make_local_energy(net.log_psi, make_ewald_sum(cell, 4 * N_UP), 2 * N_UP)
    optimizer = optax.adam(0.02)
    step = make_vmc_step(net.log_psi, local_energy, optimizer, n_mcmc_steps=5)
    opt_state = optimizer.init(params)
    key, k0 = jax.random.split(jax.random.PRNGKey(7))
    walkers = mcmc.init_walkers(net.log_psi, params, jax.random.uniform(k0, (32, 2 * N_UP, 3)) @ jnp.asarray(cell), protons, key)
    step_size, energies, variances = 0.3, [], []
    for _ in range(30):
        params, opt_state, walkers, stats = step(params, opt_state, walkers, protons, step_size)
        step_size = mcmc.tune_step_size(step_size, float(stats.acceptance))
        energies.append(float(stats.energy))
        variances.append(float(stats.variance))
    assert np.all(np.isfinite(energies))
    first, last = np.mean(energies[:5]), np.mean(energies[-5:])
    error = np.hypot(np.sqrt(np.mean(variances[:5]) / 32 / 5), np.sqrt(np.mean(variances[-5:]) / 32 / 5))
    print(f"network VMC with protons: E {first:.3f} -> {last:.3f} Ha (+- {error:.3f})")
    assert first - last > 5 * error
