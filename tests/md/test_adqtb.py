"""adQTB: the adaptation rule, the FDT restored on harmonic oscillators started with a wrong bath, and the
zero-point-energy leakage of the plain QTB removed on an anharmonic crystal."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from md_oscillators import CUTOFF_THZ, DT_FS, FRICTION, KT, MASS, N_OSC, einstein_run, quantum_energy_per_dof
from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.md import adqtb, integrators, qtb
from thermoflow.potentials import hessian, make_harmonic_energy_fn, make_lennard_jones_energy_fn
from thermoflow.structures import build_lattice, to_arrays
from thermoflow.units import KB_EV_PER_K


def test_adaptation_moves_gamma_r_towards_balance():
    """adapt_gamma_ratio raises gamma_r where the bath injects more than it removes, lowers it where
    less, leaves bins above the cutoff alone, and respects the bounds."""
    ratio = jnp.ones((2, 5))
    deviation = jnp.array([[0.5, -0.5, 0.0, 1000.0, 1.0], [-1000.0, 0.2, -0.2, 0.0, 1.0]])
    band = jnp.array([True, True, True, True, False])
    new = np.asarray(adqtb.adapt_gamma_ratio(ratio, deviation, 0.1, band))
    np.testing.assert_allclose(new, [[1.05, 0.95, 1.0, adqtb.GAMMA_RATIO_BOUNDS[1], 1.0], [adqtb.GAMMA_RATIO_BOUNDS[0], 1.02, 0.98, 1.0, 1.0]])


def test_adqtb_restores_the_fdt_on_harmonic_oscillators():
    """adQTB started with half the random-force friction (gamma_r = gamma / 2: the oscillators run
    cold) measures a positive FDT deviation at omega0 and drives gamma_r back to gamma, and the
    energy back to the quantum value."""
    length = 256
    masses = jnp.full(N_OSC, MASS)
    noise = qtb.make_qtb_noise(KT, DT_FS, FRICTION, masses, np.zeros(N_OSC, int), cutoff_THz=CUTOFF_THZ,
                               filter_length=length, adaptive=True, adaptation_rate_per_ps=2.0,
                               kernel_oversampling=1)  # the kernel is rebuilt by hand below, on the L grid
    spectrum = qtb.target_spectrum(jnp.asarray(qtb.qtb_frequencies(length, DT_FS)), KT, DT_FS, FRICTION, CUTOFF_THZ)

    def halve(state):
        ratio = 0.5 * state.noise.gamma_ratio
        return state.replace(noise=dataclasses.replace(state.noise, gamma_ratio=ratio, kernel=qtb.filter_kernel(spectrum[None] * ratio)))

    state, pot, kin = einstein_run(noise, n_blocks=12, state_fn=halve, discard=0)
    # the filter's bins (15.6 THz) are wider than the oscillator's line (gamma / 2 pi = 2.5 THz): the run fixes the
    # noise power at omega0, a dissipation-weighted mean of gamma_r over the neighbouring bins
    weights = np.asarray(state.noise.dissipation[0])
    ratio = float(np.sum(weights * np.asarray(state.noise.gamma_ratio[0])) / np.sum(weights))
    exact = quantum_energy_per_dof()
    early, late = blocking_stderr(kin[: len(kin) // 24]), blocking_stderr(kin[len(kin) // 2 :])
    print(f"adQTB: weighted gamma_r/gamma {ratio:.4f}; E_kin / quantum: first 2500 steps {early.mean / exact:.4f}, "
          f"second half {late.mean / exact:.4f} +- {late.stderr / exact:.4f}")
    assert early.mean < 0.85 * exact  # it started cold
    assert abs(ratio - 1.0) < 0.1
    assert abs(late.mean - exact) < 4 * late.stderr + 0.03 * exact


def _neon_deviation(adaptive, harmonic=False, n_warmup=20, n_snapshots=10, length=256, timestep_fs=10.0):
    """Plain or adaptive QTB on fcc neon (4 atoms, LJ or its harmonic expansion, 20 K, gamma = 1/ps,
    cutoff 8 THz): the relative FDT deviation below 5 THz, averaged over ``n_snapshots`` running
    means 20 segments apart (about independent) after ``n_warmup`` x 10 segments, and the mean energy
    per atom (eV) after the warm-up."""
    pos, cell, masses = to_arrays(build_lattice("Ne", "fcc", a_A=4.464))
    energy_fn = make_lennard_jones_energy_fn(0.0031, 2.74, 6.0, cell)
    if harmonic:
        e0 = float(energy_fn(jnp.asarray(pos), jnp.asarray(cell)))
        energy_fn = make_harmonic_energy_fn(pos, np.asarray(hessian(energy_fn, jnp.asarray(pos), jnp.asarray(cell))), e0)
    kT, masses = 20.0 * KB_EV_PER_K, jnp.asarray(masses)
    noise = qtb.make_qtb_noise(kT, timestep_fs, 1.0, masses, np.zeros(4, int), cutoff_THz=8.0, filter_length=length,
                               adaptive=adaptive, adaptation_rate_per_ps=0.1)
    init_fn, step_fn = integrators.make_langevin(energy_fn, jnp.asarray(cell), masses, timestep_fs, 1.0, noise)
    key = jax.random.PRNGKey(0)
    state = init_fn(key, jnp.asarray(pos), integrators.maxwell_boltzmann_velocities(key, masses, kT))
    block_fn = integrators.make_block_fn(step_fn, 10 * length, masses)  # 10 segments
    for _ in range(n_warmup):
        state, *_ = block_fn(state)
    deviations, energies = [], []
    for _ in range(n_snapshots):
        for _ in range(2):
            state, obs = block_fn(state)
            pot, kin = obs.potential_energy, obs.kinetic_energy
            energies.append(np.mean(np.asarray(pot + kin)) / 4)
        spectra = qtb.deviation_spectrum(state.noise, 8.0, timestep_fs)
        deviations.append(spectra["relative_deviation"][0])
    band = (spectra["frequency_THz"] > 0) & (spectra["frequency_THz"] < 5.0)
    return np.mean(deviations, axis=0)[band], float(np.mean(energies))


@pytest.mark.slow  # default-budget trim (2026-12-02); run with -m slow
def test_adqtb_removes_the_zero_point_energy_leakage_of_an_lj_crystal():
    """On anharmonic LJ neon at 20 K the plain QTB violates the FDT (zero-point-energy leakage
    between its phonons): its rms relative deviation is well above the noise floor of the estimator,
    measured by the same QTB run on the crystal's harmonic expansion (where the FDT holds exactly);
    adQTB lowers the energy (leaked zero-point energy no longer heats the soft modes).

    Measured over seeds 0-3 (20 snapshots): floor 0.051 / 0.031 / 0.062 / 0.046, QTB 0.104 / 0.092 /
    0.092 / 0.109 (1.5-2.9x the floor); adQTB lowers E by 0.13-0.45 meV/atom in every seed. The rms
    deviation of the adQTB run itself is not asserted: it stays at 0.09-0.13 (10 snapshots) because the
    running-mean spectra mix the segments of a gamma_r that keeps adapting to the estimator's noise
    (about +-20 % per bin at this rate), so this metric cannot show the floor for an adaptive run; the
    exact test of adQTB's leakage correction is tests/md/test_leakage.py (mode energies against exact
    diagonalisation)."""
    floor = np.sqrt(np.mean(_neon_deviation(adaptive=False, harmonic=True, n_snapshots=20)[0] ** 2))
    qtb_dev, qtb_energy = _neon_deviation(adaptive=False, n_snapshots=20)
    ad_dev, ad_energy = _neon_deviation(adaptive=True)
    rms_qtb, rms_ad = np.sqrt(np.mean(qtb_dev**2)), np.sqrt(np.mean(ad_dev**2))
    print(f"LJ neon 4 atoms: rms relative FDT deviation: harmonic floor {floor:.3f}, QTB {rms_qtb:.3f}, adQTB {rms_ad:.3f}; "
          f"E {qtb_energy * 1e3:.3f} -> {ad_energy * 1e3:.3f} meV/atom")
    assert rms_qtb > 1.35 * floor
    assert ad_energy < qtb_energy - 1e-4
