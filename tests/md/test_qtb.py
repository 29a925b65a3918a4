"""The quantum thermal bath: noise spectrum, zero net force, harmonic oscillators at hbar omega >> kT."""

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.md import integrators, qtb
from md_oscillators import CUTOFF_THZ, DT_FS, FRICTION, KT, MASS, N_OSC, broadened_qtb_energy, einstein_run, quantum_energy_per_dof

def test_noise_spectrum_matches_theta():
    """Periodogram of eta = |G(omega)|^2 of the filter (exact property of the method) within its
    statistical error, and |G|^2 = theta(omega) x window x O-step correction within 1.5 % below 0.9 x cutoff (6 % in the lowest bin)."""
    length, n_atoms, n_segments = 128, 64, 40
    masses = jnp.ones(n_atoms)
    noise = qtb.make_qtb_noise(KT, 1.0, 5.0, masses, np.zeros(n_atoms, int), cutoff_THz=150.0, filter_length=length)
    state = noise.init(jax.random.PRNGKey(1))

    def body(carry, key):
        eta, carry = noise.draw(carry, key)
        return carry, eta

    keys = jax.random.split(jax.random.PRNGKey(2), length * n_segments)
    _, eta = jax.jit(lambda s, k: jax.lax.scan(body, s, k))(state, keys)  # (steps, atoms, 3)
    segments = np.asarray(eta).reshape(n_segments, length, n_atoms * 3)
    periodogram = np.abs(np.fft.rfft(segments, axis=1)) ** 2 / length  # (segments, bins, dof)
    per_segment = periodogram.mean(axis=2)
    measured, error = per_segment.mean(axis=0), per_segment.std(axis=0, ddof=1) / np.sqrt(n_segments)
    g2 = np.abs(np.fft.rfft(np.asarray(state.kernel[0]))) ** 2
    # the periodogram of a finite segment is |G|^2 smoothed by the segment's Fejer kernel: compare in bands of 4
    # bins below the cutoff (bin 19; above it the leakage of the in-band power dominates the tiny |G|^2)
    bands = slice(1, 17)
    m4, e4 = measured[bands].reshape(-1, 4).mean(1), np.sqrt((error[bands] ** 2).reshape(-1, 4).mean(1) / 4)
    g4 = g2[bands].reshape(-1, 4).mean(1)
    assert np.all(np.abs(m4 - g4) < 5 * e4 + 0.02 * g4), (m4 / g4)
    omega = qtb.qtb_frequencies(length, 1.0)
    target = np.asarray(qtb.target_spectrum(jnp.asarray(omega), KT, 1.0, 5.0, 150.0))
    freq = np.fft.rfftfreq(length, d=1e-3)
    inside = (freq > 0) & (freq < 0.9 * 150.0)
    # the Hann window smooths sqrt(S) over ~2 bins: 5.6 % at the lowest bin (curvature of S about 0), < 1.5 % elsewhere
    np.testing.assert_allclose(g2[inside], target[inside], rtol=0.06)
    np.testing.assert_allclose(g2[inside][1:], target[inside][1:], rtol=0.015)
    assert target[inside].max() > 5 * KT  # really quantum: theta / kT reaches hbar omega / 2kT >> 1


def test_qtb_random_force_has_zero_total():
    """On a translation-invariant cluster of springs with two species (masses 1 and 7 amu) the QTB
    keeps the total momentum at zero (no net random force; the friction alone would not)."""
    rng = np.random.default_rng(0)
    pos = rng.normal(size=(6, 3)) * 1.5
    masses = jnp.array([1.0, 1.0, 1.0, 7.0, 7.0, 7.0])
    rest = jnp.asarray(np.linalg.norm(pos[:, None] - pos[None], axis=-1))

    def energy_fn(positions, cell):
        d = positions[:, None] - positions[None]
        r = jnp.sqrt(jnp.sum(d**2, axis=-1) + jnp.eye(6))
        return 0.25 * jnp.sum((r - rest - jnp.eye(6)) ** 2)

    noise = qtb.make_qtb_noise(KT, 1.0, 5.0, masses, np.array([0, 0, 0, 1, 1, 1]), cutoff_THz=100.0, filter_length=64)
    init_fn, step_fn = integrators.make_langevin(energy_fn, 20.0 * jnp.eye(3), masses, 1.0, 5.0, noise)
    v0 = integrators.maxwell_boltzmann_velocities(jax.random.PRNGKey(0), masses, KT)
    state = init_fn(jax.random.PRNGKey(3), jnp.asarray(pos), v0)
    state, *_ = integrators.make_block_fn(step_fn, 500, masses)(state)
    momentum = np.asarray(jnp.sum(masses[:, None] * state.velocities, axis=0))
    assert np.abs(momentum).max() < 1e-12
    assert float(integrators.kinetic_energy(state.velocities, masses)) > KT  # it did move


def test_qtb_harmonic_oscillators_reach_quantum_energy():
    """32 Einstein oscillators (96 degrees of freedom) at hbar omega / kT = 10: <E_kin> and <E_pot> per
    degree of freedom equal (hbar omega / 4) coth(hbar omega / 2kT) = 2.5 kT to within the
    friction broadening (gamma = omega / 20: the Lorentzian's high-frequency tail adds about
    (gamma / pi omega) ln(omega_c / omega) = 2 % to E_kin; the QTB is exact for a harmonic
    oscillator only as gamma -> 0) and 3 % in all, and the computed friction-broadened value within
    4 sigma + 0.5 %; far from the classical kT / 2."""
    noise = qtb.make_qtb_noise(KT, DT_FS, FRICTION, jnp.full(N_OSC, MASS), np.zeros(N_OSC, int), cutoff_THz=CUTOFF_THZ, filter_length=256)
    _, pot, kin = einstein_run(noise, n_blocks=11)
    exact = quantum_energy_per_dof()
    kin_b, pot_b = broadened_qtb_energy(KT, CUTOFF_THZ)
    for measured, broadened in ((blocking_stderr(kin), kin_b), (blocking_stderr(pot), pot_b)):
        print(f"QTB: {measured.mean / exact:.4f} +- {measured.stderr / exact:.4f} of the quantum value, broadened {broadened / exact:.4f}")
        assert abs(measured.mean - broadened) < 4 * measured.stderr + 0.005 * exact
        assert abs(measured.mean - exact) < 0.03 * exact
        assert measured.mean > 4 * (KT / 2)  # clearly not classical (quantum: 5.0 x kT / 2)
