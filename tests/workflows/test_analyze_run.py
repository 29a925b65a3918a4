"""``thermoflow analyze``: a short LJ crystal MD run analysed end to end by the CLI."""

import json
import tomllib
from pathlib import Path

import ase.io
import numpy as np
import pytest
from typer.testing import CliRunner

from thermoflow.cli.main import app
from thermoflow.workflows.config import validate_config
from thermoflow.workflows.md_config import MDRunConfig
from thermoflow.workflows.md_run import run_md

#: the documented MD example (fcc neon, LJ, 20 K), shrunk: conventional cell (4 atoms), 5 A cutoff,
#: classical Langevin, 400 steps of 5 fs with a frame every 2 steps (10 fs) for the VDOS
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "md" / "neon_qtb.toml"


def _tiny_md_config():
    data = tomllib.loads(EXAMPLE.read_text())
    del data["structure"]["supercell"]
    data["potential"]["cutoff_A"] = 5.0
    data["md"].update(thermostat="langevin", steps=400, trajectory_every=2, checkpoint_every=400)
    return validate_config(data, MDRunConfig)


FILES = ("msd.csv", "vacf.csv", "vdos.csv", "rdf.csv", "analysis.json", "msd.png", "vdos.png", "rdf.png")


@pytest.fixture(scope="module")
def md_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    run_md(_tiny_md_config(), root, root / "run", log_every=None)
    return root


def _csv(path):
    return np.genfromtxt(path, delimiter=",", names=True)


def test_cli_analyzes_an_md_run(md_run):
    """All files are written; the crystal's atoms stay on their sites (MSD' = MSD well below the
    squared half neighbour distance), the VDOS lies at the phonon frequencies (0.5-3 THz, far
    below the frames' Nyquist 50 THz) and integrates to 3N, g(r) has its first peak at the
    neighbour distance; a wrapped copy of the trajectory given as a bare file with --timestep-fs
    gives the same MSD, MSD' and VDOS."""
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", str(md_run / "run"), "--skip", "10", "--r-max", "6.0", "--rdf-frames", "40", "--origins", "4"])
    assert result.exit_code == 0, result.output
    out = md_run / "run" / "analysis"
    for name in FILES:
        assert (out / name).is_file(), name
    res = json.loads((out / "analysis.json").read_text())
    assert res["n_frames"] == 191 and res["frame_interval_ps"] == pytest.approx(0.01)
    assert res["velocities"].startswith("velocities stored")
    msd, vdos, rdf = _csv(out / "msd.csv"), _csv(out / "vdos.csv"), _csv(out / "rdf.csv")
    assert msd.dtype.names == ("time_ps", "msd_Ne_A2", "msd_reordered_Ne_A2")
    nn = 4.464 / np.sqrt(2)
    assert 0.0 < msd["msd_Ne_A2"].max() < (nn / 2) ** 2
    assert res["msd_reordered_in_fit_window_A2"]["Ne"] == pytest.approx(res["msd_in_fit_window_A2"]["Ne"], rel=0.3)
    assert np.trapezoid(vdos["vdos_Ne_per_THz"], vdos["frequency_THz"]) == pytest.approx(12.0, rel=1e-8)
    assert np.trapezoid(vdos["vdos_total_per_meV"], vdos["energy_meV"]) == pytest.approx(12.0, rel=1e-8)
    assert 0.5 < res["vdos_median_frequency_THz"]["Ne"] < 3.0 and res["vdos_fraction_near_nyquist"] < 0.01
    first = rdf["r_A"] < 0.5 * (nn + 4.464)  # (beyond: an atom's own images at a, a sharp peak in a 4-atom cell)
    assert abs(rdf["r_A"][first][np.argmax(rdf["g_Ne_Ne"][first])] - nn) < 0.2
    assert rdf["n_Ne_Ne"][first][-1] == pytest.approx(12.0, abs=0.5)
    assert "D Ne (A^2/ps)" in result.output

    frames = ase.io.read(md_run / "run" / "trajectory.extxyz", index=":")
    for f in frames:
        f.wrap()
        del f.info["time_ps"]
    bare = md_run / "wrapped.extxyz"
    ase.io.write(bare, frames)
    result = runner.invoke(app, ["analyze", str(bare), "--skip", "10", "--timestep-fs", "5", "--r-max", "6.0", "--rdf-frames", "40", "--origins", "4"])
    assert result.exit_code == 0, result.output
    other = md_run / "wrapped_analysis"
    for name in ("msd.csv", "vdos.csv"):
        for column, values in zip(_csv(out / name).dtype.names, zip(*_csv(other / name))):
            np.testing.assert_allclose(values, _csv(out / name)[column], rtol=1e-6, atol=1e-8)


def test_cli_analyze_reports_bad_input(md_run):
    runner = CliRunner()
    bad = runner.invoke(app, ["analyze", str(md_run / "run"), "--fit-window", "0.1", "5.0"])
    assert bad.exit_code == 1 and "must lie within one block's duration" in bad.output
    missing = runner.invoke(app, ["analyze", str(md_run / "nowhere")])
    assert missing.exit_code == 1 and "no trajectory" in missing.output
    frames = ase.io.read(md_run / "run" / "trajectory.extxyz", index=":")
    for f in frames:
        f.info.pop("time_ps")
        f.info.pop("step")
    ase.io.write(md_run / "untimed.extxyz", frames)
    untimed = runner.invoke(app, ["analyze", str(md_run / "untimed.extxyz")])
    assert untimed.exit_code == 1 and "--timestep-fs" in untimed.output
