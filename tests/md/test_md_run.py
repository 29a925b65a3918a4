"""The MD workflow: run directory, exact resume, invalid configs, the CLI command."""

import json

import ase.io
import numpy as np
import pytest
import tomli_w
from typer.testing import CliRunner

from thermoflow.cli.main import app
from thermoflow.workflows.config import ConfigError, validate_config
from thermoflow.workflows.md_config import MDRunConfig
from thermoflow.workflows.md_run import THERMO_COLUMNS, run_md

# fcc neon, conventional cell (4 atoms), LJ; adQTB with a short filter so that it adapts during the run
BASE = {
    "seed": 3,
    "state": {"temperature_K": 20.0},
    "structure": {"lattice": "fcc", "symbol": "Ne", "a_A": 4.464},
    "potential": {"kind": "lennard_jones", "epsilon_eV": 0.0031, "sigma_A": 2.74, "cutoff_A": 5.0},
    "md": {"thermostat": "adqtb", "timestep_fs": 5.0, "steps": 240, "friction_per_ps": 2.0, "qtb_cutoff_THz": 10.0,
           "qtb_filter_length": 32, "adqtb_rate_per_ps": 1.0, "trajectory_every": 10, "thermo_every": 5,
           "checkpoint_every": 60},
}


def _config(potential=None, **md):
    data = json.loads(json.dumps(BASE))
    data["md"].update(md)
    if potential is not None:
        data["potential"] = potential
    return validate_config(data, MDRunConfig)


#: an Einstein crystal compiles in a fraction of the LJ lattice sum's time (the resume tests compile 3 runs)
EINSTEIN = {"potential": {"kind": "harmonic", "einstein_spring_eV_per_A2": 0.05}, "zero_net_force": False}


def test_resumed_run_reproduces_the_uninterrupted_one(tmp_path):
    """240 adQTB steps at once vs 130 steps (killed after the checkpoint at 120) + --resume: the
    thermo table, the trajectory (positions and velocities) and the adQTB state are identical bit
    for bit; the run directory holds every documented file."""
    config = _config(**EINSTEIN)
    full = run_md(config, tmp_path, tmp_path / "full", log_every=None)
    part = run_md(config, tmp_path, tmp_path / "part", log_every=None, stop_after=130)
    assert part == {"completed": False, "steps_done": 130}
    resumed = run_md(config, tmp_path, tmp_path / "part", resume=True, log_every=None)
    a, b = tmp_path / "full", tmp_path / "part"
    assert (a / "thermo.csv").read_text() == (b / "thermo.csv").read_text()
    frames_a, frames_b = ase.io.read(a / "trajectory.extxyz", index=":"), ase.io.read(b / "trajectory.extxyz", index=":")
    assert len(frames_a) == len(frames_b) == 240 // 10 + 1
    for fa, fb in zip(frames_a, frames_b):
        assert fa.info["step"] == fb.info["step"]
        np.testing.assert_array_equal(fa.get_positions(), fb.get_positions())
        np.testing.assert_array_equal(fa.get_velocities(), fb.get_velocities())
    assert not np.array_equal(frames_a[0].get_positions(), frames_a[-1].get_positions())
    with np.load(a / "checkpoints" / "state.npz") as ca, np.load(b / "checkpoints" / "state.npz") as cb:
        for key in ca.files:
            np.testing.assert_array_equal(ca[key], cb[key])
    timing = {"ns_per_day", "seconds_per_step", "wall_seconds"}
    assert {k: v for k, v in full.items() if k not in timing} == {k: v for k, v in resumed.items() if k not in timing}
    header = (a / "thermo.csv").read_text().splitlines()[0].split(",")
    assert header == list(THERMO_COLUMNS)
    for name in ("config.resolved.toml", "run_info.json", "results.json", "fdt_deviation.csv", "fdt_deviation.png"):
        assert (a / name).is_file(), name
    assert full["qtb_segments"] == 240 // 32
    assert full["temperature_mean_K"] > 20.0  # zero-point motion: the kinetic temperature exceeds the bath's


@pytest.mark.slow  # default-budget trim (2026-12-02); run with -m slow
def test_npt_run_resumes_across_cell_changes_and_reports_pressure_and_volume(tmp_path):
    """Isotropic NPT (classical Langevin, fcc neon at 0.1 GPa, compressibility from the static bulk
    modulus): the cell changes, a run killed after its checkpoint resumes bit for bit (cell included),
    thermo.csv carries pressure, volume and cell lengths, results.json the target and the barostat."""
    data = json.loads(json.dumps(BASE))
    data["state"]["pressure_GPa"] = 0.1
    data["md"].update(ensemble="npt", thermostat="langevin", steps=120, checkpoint_every=60, barostat_time_ps=0.2)
    config = validate_config(data, MDRunConfig)
    full = run_md(config, tmp_path, tmp_path / "full", log_every=None)
    run_md(config, tmp_path, tmp_path / "part", log_every=None, stop_after=70)
    resumed = run_md(config, tmp_path, tmp_path / "part", resume=True, log_every=None)
    a, b = tmp_path / "full", tmp_path / "part"
    assert (a / "thermo.csv").read_text() == (b / "thermo.csv").read_text()
    timing = {"ns_per_day", "seconds_per_step", "wall_seconds"}
    assert {k: v for k, v in full.items() if k not in timing} == {k: v for k, v in resumed.items() if k not in timing}
    frames = ase.io.read(a / "trajectory.extxyz", index=":")
    volumes = [f.get_volume() for f in frames]
    assert np.ptp(volumes) > 1e-3 * volumes[0]  # the cell moved
    table = np.genfromtxt(a / "thermo.csv", delimiter=",", names=True)
    np.testing.assert_allclose(table["volume_A3_per_atom"][0], 4.464**3 / 4, rtol=1e-12)
    np.testing.assert_allclose(table["cell_a_A"] ** 3 / 4, table["volume_A3_per_atom"], rtol=1e-8)  # cubic stays cubic (10 printed digits)
    assert np.all(np.isfinite(table["pressure_GPa"]))
    assert full["target_pressure_GPa"] == 0.1 and full["barostat"] == "isotropic"
    assert 0.1 < 1.0 / full["barostat_compressibility_per_GPa"] < 10.0  # the static bulk modulus of LJ neon, GPa
    assert {"pressure_GPa", "pressure_stderr_GPa", "volume_A3_per_atom", "volume_stderr_A3_per_atom"} <= set(full)


def test_orthorhombic_barostat_refuses_a_skewed_cell(tmp_path):
    data = json.loads(json.dumps(BASE))
    data["state"]["pressure_GPa"] = 0.1
    data["structure"] = {"lattice": "hcp", "symbol": "Ne", "a_A": 3.16}
    data["md"].update(ensemble="npt", barostat="orthorhombic")
    with pytest.raises(ValueError, match="needs a cell with its axes along x, y, z"):
        run_md(validate_config(data, MDRunConfig), tmp_path, tmp_path / "r", log_every=None)


def test_triclinic_barostat_rotates_a_skewed_cell_and_moves_its_angles(tmp_path):
    """hcp neon (a = b along skewed axes) under the triclinic barostat: the cell is rotated into the
    lower-triangular standard form (same lengths and angles at step 0) and then both lengths and
    angles fluctuate while it stays lower triangular."""
    data = json.loads(json.dumps(BASE))
    data["state"]["pressure_GPa"] = 0.1
    data["structure"] = {"lattice": "hcp", "symbol": "Ne", "a_A": 3.16, "supercell": [2, 2, 2]}
    data["md"].update(ensemble="npt", barostat="triclinic", barostat_time_ps=0.2, steps=200, trajectory_every=10)
    run_md(validate_config(data, MDRunConfig), tmp_path, tmp_path / "r", log_every=None)
    frames = ase.io.read(tmp_path / "r" / "trajectory.extxyz", index=":")
    cells = np.array([f.cell.array for f in frames])
    np.testing.assert_allclose(cells[:, [0, 0, 1], [1, 2, 2]], 0.0, atol=1e-10)
    params = np.array([f.cell.cellpar() for f in frames])
    np.testing.assert_allclose(params[0], [6.32, 6.32, 2 * 3.16 * np.sqrt(8.0 / 3.0), 90.0, 90.0, 120.0], rtol=1e-6)
    assert np.ptp(params[:, 5]) > 1e-3 and np.ptp(params[:, 0]) > 1e-4  # gamma and a move


def test_resume_refuses_another_config(tmp_path):
    run_md(_config(steps=20, checkpoint_every=20, **EINSTEIN), tmp_path, tmp_path / "r", log_every=None)
    with pytest.raises(ConfigError, match="md.steps: the run has 20, this config 40"):
        run_md(_config(steps=40, checkpoint_every=20, **EINSTEIN), tmp_path, tmp_path / "r", resume=True, log_every=None)
    with pytest.raises(ConfigError, match="already holds a run"):
        run_md(_config(steps=20, checkpoint_every=20, **EINSTEIN), tmp_path, tmp_path / "r", log_every=None)


BAD = [
    ({"timestep_fs": 0.0}, "md.timestep_fs: Input should be greater than 0"),
    ({"thermostat": "nose"}, "md.thermostat"),
    ({"ensemble": "nve"}, "needs md.ensemble = 'nvt'"),
    ({"steps": 105}, "md.steps (105) must be a multiple of md.trajectory_every (10)"),
    ({"checkpoint_every": 15}, "md.checkpoint_every (15) must be a multiple"),
    ({"qtb_cutoff_THz": 150.0}, "below the Nyquist frequency 100 THz"),
    ({"qtb_filter_length": 33}, "md.qtb_filter_length must be even"),
    ({"friction_per_ps": -1.0}, "md.friction_per_ps: Input should be greater than 0"),
    ({"friction_per_ps": float("inf")}, "md.friction_per_ps: Input should be a finite number"),
    ({"unknown_field": 1}, "md.unknown_field: Extra inputs are not permitted"),
    ({"adqtb_rate_per_ps": 10.0}, "the adaptation overshoots"),
    ({"barostat": "monoclinic"}, "md.barostat"),
    ({"barostat_time_ps": 0.05, "ensemble": "npt"}, "md.barostat_time_ps (0.05) must be at least 20 timesteps"),
    ({"compressibility_per_GPa": 0.0}, "md.compressibility_per_GPa: Input should be greater than 0"),
]


@pytest.mark.parametrize("md, message", BAD, ids=[next(iter(c[0])) + f"[{i}]" for i, c in enumerate(BAD)])
def test_bad_md_config_names_the_field(md, message):
    with pytest.raises(ConfigError) as info:
        _config(**md)
    assert message in str(info.value)


def test_pressure_goes_with_the_npt_ensemble():
    data = json.loads(json.dumps(BASE))
    data["state"]["pressure_GPa"] = 1.0
    with pytest.raises(ConfigError, match="state.pressure_GPa: nve/nvt molecular dynamics runs at the structure's fixed cell; remove it or set md.ensemble = 'npt'"):
        validate_config(data, MDRunConfig)
    data["md"]["ensemble"] = "npt"
    validate_config(data, MDRunConfig)
    del data["state"]["pressure_GPa"]
    with pytest.raises(ConfigError, match="state.pressure_GPa is required at constant pressure"):
        validate_config(data, MDRunConfig)


def test_cli_md_runs_and_reports_bad_values(tmp_path):
    """``thermoflow md CONFIG --out DIR --set ...``: a classical NVT run finishes; a bad value is one error line, exit 2."""
    path = tmp_path / "md.toml"
    path.write_text(tomli_w.dumps(BASE))
    runner = CliRunner()
    ok = runner.invoke(app, ["md", str(path), "--out", str(tmp_path / "run"), "--set", "md.thermostat='langevin'",
                             "--set", "md.steps=40", "--set", "md.checkpoint_every=20"])
    assert ok.exit_code == 0, ok.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["completed"] and results["thermostat"] == "langevin"
    bad = runner.invoke(app, ["md", str(path), "--out", str(tmp_path / "bad"), "--set", "md.timestep_fs=-1"])
    assert bad.exit_code == 2
    assert "md.timestep_fs" in bad.output
