"""Thermodynamic integration with classical Langevin MD against exact classical free energies."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import tomli_w
from typer.testing import CliRunner

from crystals import harmonic_neon
from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.cli.main import app
from thermoflow.md import thermodynamic_integration as ti
from thermoflow.md.integrators import make_block_fn, make_langevin, make_white_noise, maxwell_boltzmann_velocities
from thermoflow.phonons import compute_harmonic_modes
from thermoflow.phonons.modes import dynamical_matrix
from thermoflow.potentials import hessian, make_lennard_jones_energy_fn
from thermoflow.structures import build_lattice, to_arrays
from thermoflow.units import HBAR_EV, KB_EV_PER_K
from thermoflow.workflows.config import ConfigError, validate_config
from thermoflow.workflows.ti_config import TIRunConfig
from thermoflow.workflows.ti_run import TI_COLUMNS, run_ti


def test_harmonic_reference_of_a_harmonic_crystal_is_exact():
    """The harmonic reference of a harmonic (translation-invariant) crystal is the crystal itself:
    U - U_ref = 0 along a whole Langevin run (to round-off), the centre of mass stays at R0's, and
    F_ref counts the 3N - 3 internal modes."""
    energy_fn, modes = harmonic_neon()
    reference = ti.make_harmonic_reference(modes)
    assert reference.fix_centre_of_mass and reference.omega.size == 9
    kT = 20.0 * KB_EV_PER_K
    sampler = ti.make_ti_sampler(energy_fn, reference, jnp.asarray(modes.cell), kT, 10.0, 5.0, 200)
    masses = jnp.asarray(modes.masses)
    key = jax.random.PRNGKey(0)
    for lam in (0.003, 0.6):  # both branches of dU/dlambda
        state = sampler.init_fn(key, jnp.asarray(modes.reference_positions), maxwell_boltzmann_velocities(key, masses, kT), lam)
        state, du = sampler.block_fn(state, lam)
        assert np.abs(np.asarray(du)).max() < 1e-12
        com = np.asarray(masses @ (state.positions - modes.reference_positions)) / float(masses.sum())
        assert np.abs(com).max() < 1e-12 and np.abs(np.asarray(state.positions - modes.reference_positions)).max() > 0.05
    assert np.isclose(reference.free_energy(kT), modes.energy0_eV + kT * np.sum(np.log(HBAR_EV * modes.omega / kT)), rtol=1e-14)


def _lj_neon_force_constants(tmp_path):
    """Force-constant file (the LJ Hessian of fcc neon, conventional cell) and the exact classical F of
    that harmonic crystal with the centre of mass fixed, eV: kT sum ln(hbar omega / kT) over the 9
    nonzero eigenfrequencies of the mass-weighted Hessian (computed here with numpy, not thermoflow's modes)."""
    pos, cell, masses = to_arrays(build_lattice("Ne", "fcc", a_A=4.464))
    fc = np.asarray(hessian(make_lennard_jones_energy_fn(0.0031, 2.74, 8.2, cell), jnp.asarray(pos), jnp.asarray(cell)))
    np.save(tmp_path / "fc.npy", fc)
    omega2 = np.linalg.eigvalsh(dynamical_matrix(fc, masses))[3:]
    kT = 20.0 * KB_EV_PER_K
    return kT * np.sum(np.log(HBAR_EV * np.sqrt(omega2) / kT)), np.sqrt(omega2)


CONFIG = {
    "seed": 1,
    "state": {"temperature_K": 20.0},
    "structure": {"lattice": "fcc", "symbol": "Ne", "a_A": 4.464},
    "potential": {"kind": "harmonic", "force_constants_file": "fc.npy"},
    "ti": {"n_lambda": 6, "equilibration_steps": 1000, "production_steps": 8000, "block_steps": 1000,
           "timestep_fs": 10.0, "friction_per_ps": 5.0, "reference": "einstein"},
}


def test_einstein_to_harmonic_crystal_with_fixed_centre_of_mass(tmp_path):
    """Frenkel-Ladd with the COM fixed: from the Einstein crystal (spring matched to the harmonic
    mean-square displacement) to a translation-invariant harmonic crystal (fcc neon, LJ Hessian, 4
    atoms, 20 K). The integrand is known exactly (the COM-restricted Einstein matrix k/m is a multiple
    of the identity, so it commutes with the dynamical matrix): (kT/2) sum_k (w_k^2 - w_E^2) /
    (lam w_k^2 + (1 - lam) w_E^2). TI's integral is within 4 sigma of its Gauss-Legendre sum, which is
    within 1e-3 kT of the exact integral; F_TI matches the exact 3N - 3 mode F. Also: the run directory
    and ``thermoflow ti --resume`` after an interruption (finished nodes read back, identical results)."""
    exact, omega = _lj_neon_force_constants(tmp_path)
    config = validate_config(CONFIG, TIRunConfig)
    res = run_ti(config, tmp_path, tmp_path / "run")
    kT = 20.0 * KB_EV_PER_K
    omega_e2 = res["einstein_spring_eV_per_A2"] / 20.1797
    lambdas, weights = ti.gauss_legendre(6)
    integrand = [0.5 * kT * np.sum((omega**2 - omega_e2) / (lam * omega**2 + (1 - lam) * omega_e2)) for lam in lambdas]
    quadrature, integral = weights @ integrand, 0.5 * kT * np.sum(np.log(omega**2 / omega_e2))
    n, sigma = 4, res["integral_stderr_eV_per_atom"] * 4
    print(f"Einstein -> harmonic neon (COM fixed): TI F = {res['free_energy_eV_per_atom'] * 1e3:.5f} +- {sigma / n * 1e3:.5f} "
          f"meV/atom, exact {exact / n * 1e3:.5f}; integral {res['integral_eV_per_atom'] * n * 1e3:.4f} meV, GL sum of the exact "
          f"integrand {quadrature * 1e3:.4f}, exact integral {integral * 1e3:.4f}; k = {res['einstein_spring_eV_per_A2']:.4f} eV/A^2")
    assert res["centre_of_mass_fixed"] and res["n_degrees_of_freedom"] == 9 and res["reference"] == "einstein"
    assert abs(quadrature - integral) < 1e-3 * kT
    assert abs(res["integral_eV_per_atom"] * n - quadrature) < 4 * sigma
    assert abs(res["free_energy_eV_per_atom"] * n - exact) < 4 * sigma + 1e-3 * kT
    assert sigma < 0.05 * kT  # the test can see a 0.2 kT error (12 free Einstein modes instead of 9 would cost 2.7 kT)
    assert np.isclose(res["harmonic_free_energy_classical_eV_per_atom"] * n, exact, rtol=0, atol=1e-12)
    table = np.loadtxt(tmp_path / "run" / "ti.csv", delimiter=",", skiprows=1)
    assert (tmp_path / "run" / "ti.csv").read_text().splitlines()[0].split(",") == list(TI_COLUMNS)
    np.testing.assert_allclose(table[:, 0], lambdas, rtol=1e-14)
    for name in ("config.resolved.toml", "run_info.json", "results.json", "ti_integrand.png", "nodes/node_05.npz"):
        assert (tmp_path / "run" / name).is_file(), name

    part = run_ti(config, tmp_path, tmp_path / "part", stop_after_nodes=2)
    assert part == {"completed": False, "nodes_done": 2}
    path = tmp_path / "ti.toml"
    path.write_text(tomli_w.dumps(CONFIG))
    cli = CliRunner().invoke(app, ["ti", str(path), "--out", str(tmp_path / "part"), "--resume"])
    assert cli.exit_code == 0, cli.output
    resumed = json.loads((tmp_path / "part" / "results.json").read_text())
    timing = {"seconds_per_step", "wall_seconds"}
    assert {k: v for k, v in res.items() if k not in timing} == {k: v for k, v in resumed.items() if k not in timing}
    with pytest.raises(ConfigError, match="already holds a run"):
        run_ti(config, tmp_path, tmp_path / "part")


SPRING, QUARTIC, MASS, N_ATOMS = 1.0, 2.0, 4.0, 64  # eV/A^2, eV/A^4, amu: omega = 0.5 / ASE time (period 128 fs)


def _quartic_oscillators(r0):
    def energy_fn(positions, cell):
        u = positions - r0
        return jnp.sum(0.5 * SPRING * u**2 + QUARTIC * u**4)

    return energy_fn


def test_quartic_oscillators_match_quadrature():
    """Harmonic-reference TI on 64 atoms x 3 independent quartic oscillators V = k/2 x^2 + c x^4 (not
    translation invariant: 3N modes, the COM free), 300 K, c <x^4> ~ 0.3 kT/2: F - F_harm
    = -kT ln(int exp(-V/kT) dx / int exp(-k x^2 / 2kT) dx) per dimension by scipy quad; TI within 4 sigma
    (+ the 5-node quadrature error of the exact integrand, computed)."""
    kT = 300.0 * KB_EV_PER_K
    r0 = np.random.default_rng(0).normal(size=(N_ATOMS, 3)) * 5.0
    cell = 100.0 * np.eye(3)
    energy_fn = _quartic_oscillators(jnp.asarray(r0))
    modes = compute_harmonic_modes(energy_fn, r0, cell, np.full(N_ATOMS, MASS))
    reference = ti.make_harmonic_reference(modes)
    assert not reference.fix_centre_of_mass and reference.omega.size == 3 * N_ATOMS

    def boltzmann(x, lam=1.0):
        return np.exp(-(0.5 * SPRING * x**2 + lam * QUARTIC * x**4) / kT)

    z = scipy.integrate.quad(boltzmann, -np.inf, np.inf)[0]
    exact = -3 * N_ATOMS * kT * np.log(z / np.sqrt(2 * np.pi * kT / SPRING))
    lambdas, weights = ti.gauss_legendre(5)
    moments = [scipy.integrate.quad(lambda x: QUARTIC * x**4 * boltzmann(x, lam), -np.inf, np.inf)[0]
               / scipy.integrate.quad(boltzmann, -np.inf, np.inf, args=(lam,))[0] for lam in lambdas]
    quadrature = 3 * N_ATOMS * weights @ np.array(moments)

    sampler = ti.make_ti_sampler(energy_fn, reference, jnp.asarray(cell), kT, 2.0, 49.0, 2000)
    means, errors = [], []
    for i, lam in enumerate(lambdas):
        key = jax.random.PRNGKey(i)
        velocities = maxwell_boltzmann_velocities(key, jnp.asarray(modes.masses), kT, remove_drift=False)
        state = sampler.init_fn(key, jnp.asarray(r0), velocities, lam)
        state, _ = sampler.block_fn(state, lam)
        series = []
        for _ in range(3):
            state, du = sampler.block_fn(state, lam)
            series.append(np.asarray(du))
        b = blocking_stderr(np.concatenate(series))
        means.append(b.mean)
        errors.append(b.stderr)
    integral, sigma = ti.integrate_nodes(weights, means, errors)
    free_energy = reference.free_energy(kT) + integral
    harmonic = modes.energy0_eV + ti.classical_harmonic_free_energy(modes.omega, kT)
    print(f"quartic oscillators: F - F_harm = {integral * 1e3:.3f} +- {sigma * 1e3:.3f} meV (TI), {exact * 1e3:.3f} meV "
          f"(quad), GL-5 sum of the exact integrand {quadrature * 1e3:.3f} meV; F = {free_energy / N_ATOMS * 1e3:.4f} meV/atom")
    assert np.isclose(reference.free_energy(kT), harmonic, rtol=1e-14)
    assert abs(integral - exact) < 4 * sigma + abs(quadrature - exact)
    assert sigma < 0.02 * exact  # the test has the power to see a 10 % error


def test_temperature_integration_of_quartic_oscillators():
    """Gibbs-Helmholtz from 150 K to 300 K on 32 atoms x 3 quartic oscillators: the exact F(150 K) (scipy
    quad) and classical Langevin energies E = <U> + 3N kT/2 at 3 Gauss-Legendre temperatures give F(300 K)
    within 4 sigma (+ the 3-node quadrature error of the exact E(T), computed) of quad's."""
    n_atoms, omega = 32, np.sqrt(SPRING / MASS)
    r0 = np.random.default_rng(1).normal(size=(n_atoms, 3)) * 5.0
    energy_fn = _quartic_oscillators(jnp.asarray(r0))
    masses = jnp.full(n_atoms, MASS)

    def exact(T):  # F and E per degree of freedom, eV
        kT = T * KB_EV_PER_K
        weight = lambda x: np.exp(-(0.5 * SPRING * x**2 + QUARTIC * x**4) / kT)  # noqa: E731
        z = scipy.integrate.quad(weight, -np.inf, np.inf)[0]
        potential = scipy.integrate.quad(lambda x: (0.5 * SPRING * x**2 + QUARTIC * x**4) * weight(x), -np.inf, np.inf)[0] / z
        return kT * np.log(HBAR_EV * omega / kT) - kT * np.log(z / np.sqrt(2 * np.pi * kT / SPRING)), 0.5 * kT + potential

    temperatures, weights = ti.gibbs_helmholtz_nodes(150.0, 300.0, 3)
    energies, errors = [], []
    for i, T in enumerate(temperatures):
        kT = T * KB_EV_PER_K
        init_fn, step_fn = make_langevin(energy_fn, jnp.eye(3) * 100.0, masses, 2.0, 49.0, make_white_noise(kT), zero_net_force=False)
        key = jax.random.PRNGKey(10 + i)
        state = init_fn(key, jnp.asarray(r0), maxwell_boltzmann_velocities(key, masses, kT, remove_drift=False))
        block_fn = make_block_fn(step_fn, 2000, masses)
        state, *_ = block_fn(state)
        series = []
        for _ in range(3):
            state, obs = block_fn(state)
            potential = obs.potential_energy
            series.append(np.asarray(potential))
        b = blocking_stderr(np.concatenate(series))
        energies.append(b.mean + 1.5 * n_atoms * kT)
        errors.append(b.stderr)
    n_dof = 3 * n_atoms
    f2, sigma = ti.integrate_temperature(n_dof * exact(150.0)[0], 150.0, 300.0, temperatures, weights, energies, errors)
    quadrature = ti.integrate_temperature(n_dof * exact(150.0)[0], 150.0, 300.0, temperatures, weights,
                                          [n_dof * exact(T)[1] for T in temperatures], np.zeros(3))[0]
    target = n_dof * exact(300.0)[0]
    print(f"temperature integration 150 -> 300 K: F = {f2 * 1e3:.3f} +- {sigma * 1e3:.3f} meV, exact {target * 1e3:.3f}, "
          f"3-node sum of the exact E(T) {quadrature * 1e3:.3f}")
    assert abs(f2 - target) < 4 * sigma + abs(quadrature - target)
    assert sigma < 0.01 * abs(target - n_dof * exact(150.0)[0])


BAD = [
    ({"n_lambda": 0}, "ti.n_lambda: Input should be greater than or equal to 1"),
    ({"production_steps": 8500}, "ti.production_steps (8500) must be a multiple of ti.block_steps (1000)"),
    ({"equilibration_steps": 10}, "ti.equilibration_steps (10) must be a multiple of ti.block_steps"),
    ({"reference": "debye"}, "ti.reference"),
    ({"timestep_fs": -1.0}, "ti.timestep_fs: Input should be greater than 0"),
    ({"friction_per_ps": float("nan")}, "ti.friction_per_ps: Input should be a finite number"),
    ({"reference": "harmonic", "einstein_spring_eV_per_A2": 1.0}, "ti.einstein_spring_eV_per_A2 is only used with"),
    ({"einstein_spring_eV_per_A2": 0.0}, "ti.einstein_spring_eV_per_A2: Input should be greater than 0"),
    ({"steps": 10}, "ti.steps: Extra inputs are not permitted"),
]


def test_gibbs_along_an_isobar_is_exact_for_a_quadratic_enthalpy():
    """A classical anharmonic model with G(T) = G0 + 3 kT ln(hbar w / kT) - a T^2 has the enthalpy
    H = G0 + 3 kT + a T^2 (quadratic): G(T) from G(T0) and noiseless H at 5 temperatures is exact to
    round-off at, between and beyond the fit points; the error bar grows away from T0 and reduces to
    G(T0)'s (x T / T0) when the enthalpies are exact; too few temperatures are refused."""
    kb, hw, a, g0 = KB_EV_PER_K, 0.03, 2e-8, -1.0

    def exact(t):
        return g0 + 3 * kb * t * np.log(hw / (kb * t)) - a * t**2

    temps = np.array([50.0, 100.0, 150.0, 200.0, 300.0])
    enthalpy = g0 + 3 * kb * temps + a * temps**2
    gibbs = ti.gibbs_along_isobar(100.0, exact(100.0), 1e-4, temps, enthalpy, np.full(5, 1e-9))
    probe = np.array([40.0, 100.0, 175.0, 400.0])
    value, error = gibbs(probe)
    np.testing.assert_allclose(value, exact(probe), atol=1e-12)
    np.testing.assert_allclose(error, 1e-4 * probe / 100.0, rtol=1e-3)
    noisy = ti.gibbs_along_isobar(100.0, exact(100.0), 0.0 + 1e-12, temps, enthalpy, np.full(5, 1e-4))
    assert noisy(np.array([100.0]))[1][0] < 1e-9 < noisy(np.array([300.0]))[1][0]
    with pytest.raises(ValueError, match="needs more than 2 temperatures"):
        ti.gibbs_along_isobar(100.0, 0.0, 1e-4, temps[:2], enthalpy[:2], np.full(2, 1e-4))


@pytest.mark.parametrize("changes, message", BAD, ids=[next(iter(c[0])) + f"[{i}]" for i, c in enumerate(BAD)])
def test_bad_ti_config_names_the_field(changes, message):
    data = json.loads(json.dumps(CONFIG))
    data["ti"].update(changes)
    with pytest.raises(ConfigError) as info:
        validate_config(data, TIRunConfig)
    assert message in str(info.value)


def test_ti_refuses_a_pressure_and_the_cli_reports_bad_values(tmp_path):
    data = json.loads(json.dumps(CONFIG))
    data["state"]["pressure_GPa"] = 1.0
    with pytest.raises(ConfigError, match="state.pressure_GPa: thermodynamic integration runs at the structure's fixed cell"):
        validate_config(data, TIRunConfig)
    path = tmp_path / "ti.toml"
    path.write_text(tomli_w.dumps(CONFIG))
    bad = CliRunner().invoke(app, ["ti", str(path), "--out", str(tmp_path / "bad"), "--set", "ti.n_lambda=0"])
    assert bad.exit_code == 2 and "ti.n_lambda" in bad.output
    missing = CliRunner().invoke(app, ["ti", str(path), "--out", str(tmp_path / "run"), "--set", "ti.n_lambda=2",
                                       "--set", "ti.production_steps=1000", "--set", "ti.equilibration_steps=0"])
    assert missing.exit_code == 1 and "force_constants_file not found" in missing.output
