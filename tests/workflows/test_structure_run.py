"""``thermoflow structure RUN_DIR`` on a tiny finished run: files, g(r), quenches, displacements."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from thermoflow.cli.main import app
from thermoflow.phonons.scha import mode_variances
from thermoflow.units import HBAR_EV, KB_EV_PER_K
from thermoflow.workflows.build import build_modes
from thermoflow.workflows.config import ConfigError, load_config
from thermoflow.workflows.finished_run import load_finished_run
from thermoflow.workflows.nct_run import run_nct

#: fcc neon, 4 atoms, harmonic wavefunctions (frozen flow) on the harmonic basis: the cheapest
#: finished run, a near-harmonic thermal state
FROZEN_TINY = [
    "structure.supercell=[1, 1, 1]", "nct.steps=4", "nct.averaging_fraction=0.5", "nct.batch_size=8",
    "nct.checkpoint_every=4", "nct.freeze_flow=true", "nct.flow.kind=realnvp", "nct.flow.hidden=4",
    "nct.flow.n_layers=1", "nct.n_levels=3", "nct.reference.kind='harmonic'", "nct.eval_batches=0",
]


def test_structure_command_on_a_finished_run(tmp_path):
    cfg, base = load_config(None, FROZEN_TINY)
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match="no finished NCT run"):
        load_finished_run(run_dir)
    run_nct(cfg, base, run_dir, progress=False)
    n_samples = 64
    out = CliRunner().invoke(app, ["structure", str(run_dir), "--samples", str(n_samples), "--quench", "2", "--r-max", "6"])
    assert out.exit_code == 0, out.output
    for name in ["rdf.csv", "rdf.png", "structure.json", "quenched.extxyz"]:
        assert (run_dir / name).is_file(), name
    res = json.loads((run_dir / "structure.json").read_text())
    with open(run_dir / "rdf.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["r_A", "g_Ne_Ne", "g_Ne_Ne_stderr", "n_Ne_Ne", "g_Ne_Ne_gaussian"]
    r = np.array([float(row["r_A"]) for row in rows])
    n = np.array([float(row["n_Ne_Ne"]) for row in rows])
    assert r[-1] < 6.0 and len(rows) == 200
    # 12 nearest neighbours at a / sqrt(2) = 3.16 A, 6 more at a = 4.46 A (rms displacement ~0.2 A)
    # (in this 4-atom cell the second shell holds the atom's own images: a sharp step)
    assert n[np.searchsorted(r, 4.1)] == pytest.approx(12, abs=0.1)
    assert n[np.searchsorted(r, 4.6)] == pytest.approx(18, abs=0.1)

    assert (res["reference_space_group"], res["reference_space_group_number"]) == ("Fm-3m", 225)
    assert res["fraction_in_reference_space_group"] == 1.0 and res["quenched_all_converged"]
    assert res["quenched_space_groups"] == {"Fm-3m (225)": 2}
    assert abs(res["quenched_energy_minus_reference_quench_meV_per_atom"]["max"]) < 1e-3
    assert res["reference_quenched"]["energy_eV_per_atom"] == pytest.approx(res["reference_static_energy_eV_per_atom"], abs=1e-9)
    assert "wyckoff_x_16c" not in res  # not an I-43d structure

    # exact rms displacement of the harmonic thermal state: sum_k |B_k|^2 coth(hbar omega_k / 2kT) / 2;
    # harmonic wavefunctions at (nearly) thermal occupations sample the same within ~3 % (64 samples)
    atoms, _, modes = build_modes(cfg, base)
    s2 = mode_variances(modes.omega, KB_EV_PER_K * cfg.state.temperature_K) * modes.omega / HBAR_EV
    exact = np.sqrt(np.sum(modes.displacement_matrix() ** 2 @ s2) / len(atoms))
    assert res["rms_displacement_gaussian_A"]["Ne"] == pytest.approx(exact, rel=1e-6)
    assert res["rms_displacement_A"]["Ne"] == pytest.approx(exact, rel=0.12)
    assert res["n_samples"] == n_samples and res["wall_seconds"] > 0
