"""The ``thermoflow vfe`` workflow: run directory, exact resume, the base potential's AIS, config errors.

The physics of the flow and the free energy is tested in tests/flows/test_classical_flow.py (exact
references); here a dilute gas of 4 neon atoms (216 A^3 each, 100 K) with a soft Morse pair potential
(finite at contact, so the uniform base is usable), whose free energy lies within a fraction of k_B T
of the ideal gas's, checks the plumbing and the reported numbers. A Lennard-Jones core is not
integrable against the uniform density (<r^-12> diverges): that case goes through the base potential.
"""

import csv
import json
import math

import pytest
from typer.testing import CliRunner

from run_tables import metric_rows
from thermoflow.cli.main import app
from thermoflow.units import KB_EV_PER_K
from thermoflow.workflows.config import ConfigError, validate_config
from thermoflow.workflows.vfe_config import VFERunConfig
from thermoflow.workflows.vfe_run import run_vfe

LJ_NEON = {"kind": "lennard_jones", "epsilon_eV": 0.0031, "sigma_A": 2.74, "cutoff_A": 5.9}
SOFT_MORSE = {"kind": "morse", "depth_eV": 0.002, "alpha_per_A": 0.5, "r0_A": 3.0, "cutoff_A": 5.9}
GAS = {
    "seed": 0,
    "state": {"temperature_K": 100.0},
    "structure": {"lattice": "sc", "symbol": "Ne", "a_A": 6.0, "supercell": [2, 2, 1]},
    "potential": SOFT_MORSE,
    "flow": {"n_layers": 1, "one_body": 8, "two_body": 8},
    "vfe": {"walkers": 32, "steps": 8, "mcmc_steps": 4, "learning_rate": 1e-2, "eval_blocks": 4, "eval_mcmc_steps": 4,
            "checkpoint_every": 2, "initial_step_size_A": 1.0},
}


@pytest.mark.slow  # a compilation-bound run directory (~70 s); the ideal-gas F is exact in tests/flows, resume in the driver's tests
def test_vfe_run_resumes_exactly_and_reports_the_gas_free_energy(tmp_path):
    config = validate_config(GAS, VFERunConfig)
    full = run_vfe(config, tmp_path, tmp_path / "full", log_every=None)
    assert run_vfe(config, tmp_path, tmp_path / "split", log_every=None, stop_after=3) == {"completed": False, "steps_done": 3}
    resumed = run_vfe(config, tmp_path, tmp_path / "split", resume=True, log_every=None)
    assert metric_rows(tmp_path / "split" / "metrics.csv") == metric_rows(tmp_path / "full" / "metrics.csv")
    assert resumed["free_energy_eV_per_particle"] == full["free_energy_eV_per_particle"]
    kT = KB_EV_PER_K * 100.0
    assert full["n_particles"] == 4 and full["volume_A3_per_particle"] == pytest.approx(216.0)
    # the ideal gas's F per particle: -kT ln(V / lambda^3) + kT ln(N!) / N
    assert full["ideal_gas_free_energy_eV_per_particle"] == pytest.approx(
        -kT * math.log(864.0) + full["ideal_constant_eV_per_particle"], rel=1e-12)
    assert abs(full["free_energy_eV_per_particle"] - full["ideal_gas_free_energy_eV_per_particle"]) < 0.2 * kT
    assert full["energy_eV_per_particle"] == pytest.approx(1.5 * kT + full["potential_energy_eV_per_particle"], rel=1e-9)
    assert 0 < full["pressure_GPa"] < 2 * 4 * kT / 864.0 * 160.21766
    assert full["negative_jacobian_fraction"] == 0.0
    for name in ("config.resolved.toml", "metrics.csv", "results.json", "rdf.csv", "rdf.png", "samples.extxyz", "free_energy.png",
                 "checkpoints/state.npz"):
        assert (tmp_path / "full" / name).is_file(), name
    with open(tmp_path / "full" / "metrics.csv") as fh:
        header = next(csv.reader(fh))
    assert "free_energy_eV_per_particle" in header and "entropy_kB_per_particle" in header
    with pytest.raises(ConfigError, match="already holds a run"):
        run_vfe(config, tmp_path, tmp_path / "full", log_every=None)


@pytest.mark.slow  # default-budget trim (2026-12-03): AIS and the base-as-target identity are unit-tested in tests/flows
def test_vfe_base_potential_by_annealed_importance_sampling(tmp_path):
    """With the target itself as the base, the identity flow is exact: F = -kT ln Z_AIS + the ideal constant (before
    training), and the base's AIS is stored and read back on resume."""
    data = {**GAS, "potential": LJ_NEON, "base": {"kind": "potential", "potential": LJ_NEON, "ais_walkers": 64, "ais_temperatures": 10, "ais_mcmc_steps": 4},
            "vfe": {**GAS["vfe"], "steps": 4}}
    config = validate_config(data, VFERunConfig)
    res = run_vfe(config, tmp_path, tmp_path / "base", log_every=None, stop_after=2)
    assert res == {"completed": False, "steps_done": 2}
    stored = json.loads((tmp_path / "base" / "base_ais.json").read_text())
    stamp = (tmp_path / "base" / "base_ais.json").stat().st_mtime_ns
    done = run_vfe(config, tmp_path, tmp_path / "base", resume=True, log_every=None)
    assert (tmp_path / "base" / "base_ais.json").stat().st_mtime_ns == stamp
    assert done["base_ln_Z"] == stored["ln_Z"]
    kT = KB_EV_PER_K * 100.0
    exact_identity = (-kT * stored["ln_Z"]) / 4 + done["ideal_constant_eV_per_particle"]
    assert abs(done["free_energy_eV_per_particle"] - exact_identity) < 0.05 * kT  # the flow moved little in 4 steps
    assert abs(done["free_energy_eV_per_particle"] - done["ideal_gas_free_energy_eV_per_particle"]) < 0.5 * kT


@pytest.mark.parametrize("change, message", [
    ({"base": {"kind": "potential"}}, "base.potential"),
    ({"vfe": {"walkers": 1}}, "vfe.walkers"),
    ({"state": {"temperature_K": 100.0, "pressure_GPa": 1.0}}, "pressure_GPa"),
])
def test_vfe_config_errors_name_the_field(change, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({**GAS, **change}, VFERunConfig)


def test_vfe_cli_refuses_two_species(tmp_path):
    (tmp_path / "two.toml").write_text(
        'seed = 0\n[state]\ntemperature_K = 100.0\n[structure]\nspacegroup = 225\nsites = [["Na", [0, 0, 0]], ["Cl", [0.5, 0.5, 0.5]]]\n'
        'a_A = 5.6\n[potential]\nkind = "lennard_jones"\nepsilon_eV = 0.003\nsigma_A = 2.7\ncutoff_A = 5.0\n')
    out = CliRunner().invoke(app, ["vfe", str(tmp_path / "two.toml"), "--out", str(tmp_path / "run")])
    assert out.exit_code != 0 and "one species" in out.output
