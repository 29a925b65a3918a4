"""``thermoflow vfe`` with quantum electrons (a [hydrogen] section): run directory, exact resume, reported identities.

The physics of the joint training is tested in tests/flows/test_electronic_flow.py (the exact classical limit and the
VMC gradient at fixed protons); here two protons and two electrons (Slater-Jastrow) at r_s = 1.25 and 6000 K check the
plumbing: a run interrupted and resumed repeats the uninterrupted one row for row (slow), the reported F, E, S (on a base
potential, whose ln Z_b error enters F's) obey
S = (E - F) / T, E = 3/2 k_B T + E_el and P = (k_B T + (2 T_e + V) / 3) / (Omega / N) per atom, and the CLI picks the
hydrogen config by its [hydrogen] section and names a bad field.
"""

import json

import pytest
from typer.testing import CliRunner

from run_tables import metric_rows
from thermoflow.cli.main import app
from thermoflow.units import EV_PER_HARTREE, GPA_PER_HARTREE_PER_BOHR3, KB_EV_PER_K
from thermoflow.workflows.config import validate_config
from thermoflow.workflows.vfe_config import VFEElectronsRunConfig
from thermoflow.workflows.vfe_hydrogen_run import run_vfe_hydrogen, run_vfe_hydrogen_scan

H2 = {
    "seed": 0,
    "state": {"temperature_K": 6000.0},
    "hydrogen": {"rs_bohr": 1.25, "n_protons": 2},
    "flow": {"n_layers": 1, "one_body": 4, "two_body": 4},
    "wavefunction": {"kind": "slater_jastrow"},
    "vfe": {"walkers": 4, "electron_walkers": 4, "steps": 4, "proton_mcmc_steps": 3, "electron_mcmc_steps": 3,
            "equilibration_blocks": 2, "eval_blocks": 3, "checkpoint_every": 2},
}


@pytest.mark.slow  # three short joint runs (compilation-bound, ~1.5 min); the driver's exact resume is tested in the default run
def test_hydrogen_vfe_resumes_exactly(tmp_path):
    config = validate_config(H2, VFEElectronsRunConfig)
    full = run_vfe_hydrogen(config, tmp_path, tmp_path / "full", log_every=None)
    assert run_vfe_hydrogen(config, tmp_path, tmp_path / "split", log_every=None, stop_after=3) == {"completed": False, "steps_done": 3}
    resumed = run_vfe_hydrogen(config, tmp_path, tmp_path / "split", resume=True, log_every=None)
    assert metric_rows(tmp_path / "split" / "metrics.csv") == metric_rows(tmp_path / "full" / "metrics.csv")
    assert resumed["free_energy_eV_per_atom"] == full["free_energy_eV_per_atom"]


def test_hydrogen_vfe_reports_consistent_thermodynamics_and_structure(tmp_path):
    """On a base potential (a soft Lennard-Jones repulsion; ln Z_b by AIS, its error in F's): the identities, the files, and
    the structure command rebuilding the model from the run directory (base_ais.json read back)."""
    base = {"kind": "potential", "potential": {"kind": "lennard_jones", "epsilon_eV": 0.05, "sigma_A": 0.3, "cutoff_A": 0.6},
            "ais_walkers": 16, "ais_temperatures": 4, "ais_mcmc_steps": 2}
    config = validate_config({**H2, "base": base}, VFEElectronsRunConfig)
    full = run_vfe_hydrogen(config, tmp_path, tmp_path / "full", log_every=None)
    kT = KB_EV_PER_K * 6000.0
    ais = json.loads((tmp_path / "full" / "base_ais.json").read_text())
    assert full["base"] == "potential" and full["base_ln_Z"] == ais["ln_Z"]
    assert 0.0 < full["closest_proton_pair_A"] and 0.0 <= full["close_pair_sample_fraction"] <= 1.0
    assert full["free_energy_stderr_eV_per_atom"] >= kT * ais["ln_Z_stderr"] / 2 - 1e-15
    assert full["kT_eV"] == pytest.approx(kT, rel=1e-12)
    assert full["energy_eV_per_atom"] == pytest.approx(1.5 * kT + full["electronic_energy_eV_per_atom"], rel=1e-9)
    assert full["entropy_kB_per_atom"] == pytest.approx((full["energy_eV_per_atom"] - full["free_energy_eV_per_atom"]) / kT, rel=1e-9)
    assert full["free_energy_Ha_per_atom"] == pytest.approx(full["free_energy_eV_per_atom"] / EV_PER_HARTREE, rel=1e-12)
    assert full["free_energy_Ry_per_atom"] == pytest.approx(2 * full["free_energy_Ha_per_atom"], rel=1e-12)
    # an electronic energy below zero, of order -1 Ha per atom at this density
    assert -2.0 < full["electronic_energy_Ha_per_atom"] < 0.0
    # P = N k_B T / Omega + (2 T_e + V) / (3 Omega): per atom, (k_B T + (2 T_e + V) / 3) / (Omega / N)
    kT_Ha = kT / EV_PER_HARTREE
    virial = (kT_Ha + (2 * full["electron_kinetic_energy_Ha_per_atom"] + full["potential_energy_Ha_per_atom"]) / 3)
    assert full["pressure_GPa"] == pytest.approx(virial / full["volume_bohr3_per_atom"] * GPA_PER_HARTREE_PER_BOHR3, rel=1e-9)
    for name in ("config.resolved.toml", "metrics.csv", "results.json", "rdf.csv", "rdf.png", "samples.extxyz", "free_energy.png",
                 "checkpoints/state.npz", "quenched.extxyz", "structure.json"):
        assert (tmp_path / "full" / name).is_file(), name
    structure = full["structure"]
    assert len(structure["quench_betas"]) == 10 and structure["quench_betas"][-1] == pytest.approx(100.0)
    assert 0.0 <= structure["paired_fraction_mean"] <= 1.0
    assert (tmp_path / "full" / "xrd.csv").is_file() == ("xrd_wavelength_A" in structure)
    # recomputed from the run directory alone (thermoflow structure on a vfe run): the same annealing from the same samples
    (tmp_path / "full" / "structure.json").unlink()
    result = CliRunner().invoke(app, ["structure", str(tmp_path / "full"), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "full" / "structure.json").read_text())["quench_betas"] == structure["quench_betas"]
    assert "structure" in json.loads((tmp_path / "full" / "results.json").read_text())


def test_vfe_cli_picks_the_hydrogen_config_and_names_bad_fields(tmp_path):
    path = tmp_path / "h.toml"
    path.write_text('[state]\ntemperature_K = 6000.0\n[hydrogen]\nrs_bohr = -1.0\nn_protons = 2\n')
    result = CliRunner().invoke(app, ["vfe", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "hydrogen.rs_bohr" in result.output
    path.write_text('[state]\ntemperature_K = 6000.0\npressure_GPa = 100.0\n[hydrogen]\nrs_bohr = 1.25\nn_protons = 2\n')
    result = CliRunner().invoke(app, ["vfe", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "fixed r_s" in result.output


@pytest.mark.slow  # two short joint runs (compilation-bound, ~1.5 min)
def test_hydrogen_rs_scan_warm_starts_and_summarises(tmp_path):
    data = {**H2, "scan": {"rs_bohr": [1.25, 1.35]}, "vfe": {**H2["vfe"], "steps": 2}}
    config = validate_config(data, VFEElectronsRunConfig)
    summary = run_vfe_hydrogen_scan(config, tmp_path, tmp_path / "scan", log_every=None)
    assert [p["rs_bohr"] for p in summary["points"]] == [1.25, 1.35]
    second = json.loads((tmp_path / "scan" / "rs-1.3500" / "results.json").read_text())
    assert second["warm_start_from"]["rs_bohr"] == 1.25
    assert "warm_start_from" not in json.loads((tmp_path / "scan" / "rs-1.2500" / "results.json").read_text())
    # the lower density has the larger volume per atom and, at equal N, the smaller ideal pressure share
    assert summary["points"][1]["volume_A3_per_atom"] == pytest.approx(summary["points"][0]["volume_A3_per_atom"] * (1.35 / 1.25) ** 3)
    for name in ("summary.csv", "summary.json", "eos.png", "rdf.png"):
        assert (tmp_path / "scan" / name).is_file(), name
    # a finished scan is read back, not rerun
    again = run_vfe_hydrogen_scan(config, tmp_path, tmp_path / "scan", resume=True, log_every=None)
    assert again["points"] == summary["points"]
