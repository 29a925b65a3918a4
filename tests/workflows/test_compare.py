"""Phase comparison on two Einstein "phases" with analytic free energies and crossing."""

import json
import logging

import numpy as np
import pytest
import scipy.optimize
from typer.testing import CliRunner

from thermoflow.cli.main import app
from thermoflow.units import HBAR_EV, KB_EV_PER_K
from thermoflow.workflows.compare import crossing_temperatures, run_compare
from thermoflow.workflows.config import ConfigError

MASS, SPRINGS, STATIC = 6.94, {"stiff": 2.0, "soft": 1.0}, {"stiff": 0.0, "soft": 0.018}
TEMPERATURES = [60.0, 120.0, 150.0]

COMPARE = """
seed = 0
[state]
temperature_K = 100.0
[potential]
kind = "python"
target = "anharmonic_models:make_einstein_phase"
[nct]
n_levels = 20
batch_size = 16
steps = 8
eval_batches = 2
freeze_flow = true
[nct.reference]
kind = "harmonic"
[nct.flow]
n_layers = 1
hidden = 4
[compare]
temperatures_K = {temps}
reference = "stiff"
{phases}
"""

PHASE = """[[compare.phases]]
name = "{name}"
structure = {{ lattice = "sc", symbol = "Li", a_A = 3.0, mass_amu = {mass} }}
potential = {{ kind = "python", target = "anharmonic_models:make_einstein_phase", options = {{ spring_eV_per_A2 = {k}, static_eV_per_atom = {e0} }} }}
"""


def analytic_free_energy(name, t):
    w = HBAR_EV * np.sqrt(SPRINGS[name] / MASS)
    kT = KB_EV_PER_K * t
    return STATIC[name] + 3 * (w / 2 + kT * np.log(1 - np.exp(-w / kT)))


def write(tmp_path, phases=None, temps=TEMPERATURES):
    phases = phases or "".join(PHASE.format(name=n, mass=MASS, k=SPRINGS[n], e0=STATIC[n]) for n in ("stiff", "soft"))
    path = tmp_path / "compare.toml"
    path.write_text(COMPARE.format(temps=list(temps), phases=phases))
    return path


def test_two_einstein_phases_cross_where_the_analytic_free_energies_do(tmp_path, caplog):
    path = write(tmp_path)
    summary = run_compare(path, tmp_path / "out")
    temps = np.array(TEMPERATURES)
    exact = {n: np.array([analytic_free_energy(n, t) for t in temps]) for n in SPRINGS}
    soft = summary["phases"]["soft"]
    np.testing.assert_allclose(summary["phases"]["stiff"]["value_eV_per_atom"], exact["stiff"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(soft["delta_eV_per_atom"], exact["soft"] - exact["stiff"], rtol=0, atol=1e-9)
    (crossing,) = soft["crossings"]
    t_exact = scipy.optimize.brentq(lambda t: analytic_free_energy("soft", t) - analytic_free_energy("stiff", t), 20, 300)
    d = exact["soft"] - exact["stiff"]
    interpolated = 120 + 30 * d[1] / (d[1] - d[2])
    print("crossing", crossing, "exact", t_exact, "linear interpolation of the exact values", interpolated)
    assert crossing["interval_K"] == [120.0, 150.0]
    assert crossing["temperature_K"] == pytest.approx(interpolated, abs=1e-4)
    assert abs(crossing["temperature_K"] - t_exact) < 2.0  # grid interpolation error
    assert crossing["stderr_K"] < 1e-6  # zero-variance free energies of harmonic states
    for name in ("summary.csv", "summary.json", "free_energies.png", "free_energy_differences.png", "soft/150K/results.json"):
        assert (tmp_path / "out" / name).is_file()
    # a second invocation reads the finished points back instead of rerunning them
    caplog.set_level(logging.INFO)
    again = run_compare(path, tmp_path / "out")
    assert caplog.text.count("finished, read back") == 2 * len(TEMPERATURES)
    assert again["phases"]["soft"]["crossings"] == soft["crossings"]


def test_crossing_error_bar_from_the_bootstrap():
    """Linear data through zero at T = 150 K with errors 1 meV and a slope of 0.1 meV/K: the
    crossing's error is about sqrt(2)/2 x 1 / 0.1 = 7 K."""
    temps = np.array([100.0, 200.0])
    out = crossing_temperatures(temps, np.array([0.005, -0.005]), np.array([0.001, 0.001]), n_bootstrap=20000)
    assert out[0]["temperature_K"] == pytest.approx(150.0)
    assert 6.0 < out[0]["stderr_K"] < 8.5


def test_invalid_comparison_names_the_field(tmp_path):
    bad = write(tmp_path, temps=[100.0]).read_text().replace('reference = "stiff"', 'reference = "nope"')
    (tmp_path / "bad.toml").write_text(bad)
    with pytest.raises(ConfigError, match="compare.reference"):
        run_compare(tmp_path / "bad.toml", tmp_path / "out")
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "o2")])
    assert result.exit_code != 0 and "compare.reference" in result.output
