"""Einstein oscillators at hbar omega / kT = 10 driven by a Langevin bath, shared by the QTB and adQTB tests."""

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.md import integrators, qtb
from thermoflow.potentials import make_einstein_energy_fn
from thermoflow.units import ASE_TIME_PER_PS, HBAR_EV, omega_to_thz

# Einstein oscillators: k = 10 eV/A^2, m = 1 amu -> omega0 = 0.311 rad/fs (49 THz), hbar omega0 = 0.204 eV
SPRING, MASS, N_OSC = 10.0, 1.0, 32
OMEGA0 = np.sqrt(SPRING / MASS)  # rad / ASE time
KT = HBAR_EV * OMEGA0 / 10.0  # hbar omega / kT = 10 (237 K)
DT_FS = 0.25  # omega0 dt = 0.078
FRICTION = 0.05 * OMEGA0 * ASE_TIME_PER_PS  # gamma = omega0 / 20, 1/ps
CUTOFF_THZ = float(omega_to_thz(4.0 * OMEGA0))


def einstein_run(noise, n_blocks, block=5000, seed=0, state_fn=None, discard=1, friction_per_ps=FRICTION):
    """Langevin BAOAB with ``noise`` on N_OSC Einstein oscillators (no net-force removal: not
    translation invariant); ``state_fn`` edits the initial state. Returns ``(final state,
    potential, kinetic)``: energies per degree of freedom every 10 steps, eV, without the first
    ``discard`` blocks."""
    r0 = np.random.default_rng(0).normal(size=(N_OSC, 3)) * 3.0
    energy_fn = make_einstein_energy_fn(r0, SPRING)
    masses = jnp.full(N_OSC, MASS)
    init_fn, step_fn = integrators.make_langevin(energy_fn, 20.0 * jnp.eye(3), masses, DT_FS, friction_per_ps, noise, zero_net_force=False)
    key = jax.random.PRNGKey(seed)
    state = init_fn(key, jnp.asarray(r0), integrators.maxwell_boltzmann_velocities(key, masses, KT, remove_drift=False))
    if state_fn is not None:
        state = state_fn(state)
    block_fn = integrators.make_block_fn(step_fn, block, masses)
    pot, kin = [], []
    for _ in range(n_blocks):
        state, obs = block_fn(state)
        p, k = obs.potential_energy, obs.kinetic_energy
        pot.append(np.asarray(p)[::10])
        kin.append(np.asarray(k)[::10])
    return state, np.concatenate(pot[discard:]) / (3 * N_OSC), np.concatenate(kin[discard:]) / (3 * N_OSC)


def broadened_qtb_energy(kT, cutoff_thz):
    """<E_kin>, <E_pot> per degree of freedom of a continuous-time QTB Langevin oscillator:
    (1/2) int d omega / 2 pi  2 gamma (omega^2, omega0^2) S(omega) / ((omega0^2 - omega^2)^2 + gamma^2 omega^2)
    with S = theta x cutoff window (the friction-broadened QTB prediction)."""
    gamma = FRICTION / ASE_TIME_PER_PS
    omega = np.linspace(1e-6, 6.0 * OMEGA0, 600001)
    omega_c = 2 * np.pi * cutoff_thz / ASE_TIME_PER_PS
    s = np.asarray(qtb.quantum_spectrum(jnp.asarray(omega), kT)) / (1 + np.exp((omega - omega_c) / (qtb.CUTOFF_WIDTH_FRACTION * omega_c)))
    lorentz = 2 * gamma * s / ((OMEGA0**2 - omega**2) ** 2 + gamma**2 * omega**2)
    kin = np.trapezoid(omega**2 * lorentz, omega) / np.pi / 2  # two-sided integral / 2 pi = one-sided / pi
    pot = np.trapezoid(OMEGA0**2 * lorentz, omega) / np.pi / 2
    return kin, pot


def quantum_energy_per_dof():
    """(hbar omega0 / 4) coth(hbar omega0 / 2kT), eV: the exact <E_kin> = <E_pot> per degree of freedom."""
    return HBAR_EV * OMEGA0 / 4.0 / np.tanh(HBAR_EV * OMEGA0 / (2 * KT))
