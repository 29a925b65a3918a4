"""Velocity Verlet on a Lennard-Jones crystal, classical Langevin BAOAB on harmonic oscillators."""

import jax
import jax.numpy as jnp
import numpy as np

from md_oscillators import KT, OMEGA0, einstein_run
from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.md import integrators
from thermoflow.potentials import make_lennard_jones_energy_fn
from thermoflow.structures import build_lattice, make_supercell, to_arrays
from thermoflow.units import ASE_TIME_PER_PS, KB_EV_PER_K


def _nve_energy_error(timestep_fs, duration_fs=4000.0):
    """Largest |E(t) - E(0)| per atom (eV) of fcc neon (32 atoms, LJ) started at 30 K."""
    pos, cell, masses = to_arrays(make_supercell(build_lattice("Ne", "fcc", a_A=4.464), (2, 2, 2)))
    energy_fn = make_lennard_jones_energy_fn(0.0031, 2.74, 6.0, cell)
    init_fn, step_fn = integrators.make_nve(energy_fn, jnp.asarray(cell), jnp.asarray(masses), timestep_fs)
    key = jax.random.PRNGKey(0)
    state = init_fn(key, jnp.asarray(pos), integrators.maxwell_boltzmann_velocities(key, jnp.asarray(masses), 30.0 * KB_EV_PER_K))
    e0 = float(state.potential_energy + integrators.kinetic_energy(state.velocities, jnp.asarray(masses)))
    state, obs = integrators.make_block_fn(step_fn, int(duration_fs / timestep_fs), masses)(state)
    pot, kin = obs.potential_energy, obs.kinetic_energy
    momentum = np.abs(np.asarray(jnp.sum(jnp.asarray(masses)[:, None] * state.velocities, axis=0))).max()
    return float(np.max(np.abs(np.asarray(pot + kin) - e0))) / len(masses), float(np.mean(kin)) / len(masses), momentum


def test_nve_conserves_energy_with_dt_squared_error():
    """Velocity Verlet: the energy error is bounded (no drift) and scales as dt^2: halving dt
    divides it by 4 (between 3 and 5), and at 5 fs (Ne's highest phonon period is ~500 fs) it is
    below 1e-3 of the kinetic energy. Total momentum stays zero."""
    coarse, kinetic, _ = _nve_energy_error(10.0)
    fine, _, momentum = _nve_energy_error(5.0)
    print(f"NVE LJ neon: max |dE| = {coarse:.3e} eV/atom at 10 fs, {fine:.3e} at 5 fs (ratio {coarse / fine:.2f}); "
          f"<E_kin> = {kinetic:.3e} eV/atom")
    assert 3.0 < coarse / fine < 5.0
    assert fine < 1e-3 * kinetic
    assert momentum < 1e-12


def test_classical_langevin_equipartition_on_harmonic_oscillators():
    """BAOAB with white noise on 32 Einstein oscillators: <m v^2> = kT and <k x^2> = kT per degree of
    freedom within 4 sigma (blocking) + 0.3 % (the O(dt^2) kinetic bias of BAOAB at omega dt = 0.078
    is 0.15 %; its configurational sampling of a harmonic potential is exact)."""
    noise = integrators.make_white_noise(KT)
    friction = OMEGA0 * ASE_TIME_PER_PS  # critical damping: short correlation times
    _, pot, kin = einstein_run(noise, n_blocks=9, block=5000, friction_per_ps=friction)
    for name, series in (("m v^2", 2 * kin), ("k x^2", 2 * pot)):
        b = blocking_stderr(series)
        print(f"classical Langevin: <{name}> / kT = {b.mean / KT:.4f} +- {b.stderr / KT:.4f}")
        assert abs(b.mean - KT) < 4 * b.stderr + 0.003 * KT
        assert b.stderr < 0.01 * KT  # the test has the power to see a 3 % error
