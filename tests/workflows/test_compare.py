"""Phase comparison on two Einstein "phases" with analytic free energies and crossing."""

import logging

import numpy as np
import pytest
import scipy.optimize
from typer.testing import CliRunner

from thermoflow.cli.main import app
from thermoflow.phonons.thermo import harmonic_thermodynamics
from thermoflow.units import HBAR_EV, KB_EV_PER_K
from thermoflow.workflows.compare import PhaseConfig, crossing_temperatures, load_comparison, point_config, run_compare
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
kind = "scha"
n_samples = 64
iterations = 6
eval_samples = 64
[nct.flow]
n_layers = 1
hidden = 4
[compare]
temperatures_K = {temps}
reference = "stiff"
warm_start_iterations = 2
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
    """Harmonic "phases" with the self-consistent Gaussian basis (exact here): analytic F and
    crossing; each temperature after the first starts its Gaussian from the same phase's stored
    Gaussian at the previous temperature (compare.warm_start_iterations); the NCT entropy equals
    the harmonic one."""
    import tomllib

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
    for name in ("summary.csv", "summary.json", "free_energies.png", "free_energy_differences.png", "entropies.png", "soft/150K/results.json"):
        assert (tmp_path / "out" / name).is_file()
    for name in SPRINGS:
        references = [tomllib.loads((tmp_path / "out" / name / f"{t:g}K" / "config.resolved.toml").read_text())["nct"]["reference"]
                      for t in TEMPERATURES]
        assert "start" not in references[0] and references[0]["iterations"] == 6
        for previous, ref in zip(TEMPERATURES, references[1:]):
            assert ref["start"] == str((tmp_path / "out" / name / f"{previous:g}K" / "gaussian_reference.npz").resolve())
            assert ref["iterations"] == 2
        entry = summary["phases"][name]
        w = HBAR_EV * np.sqrt(SPRINGS[name] / MASS)
        truncated = [harmonic_thermodynamics(np.full(3, w), KB_EV_PER_K * t, 20).entropy_kB for t in TEMPERATURES]  # nct.n_levels
        # F is stationary at the optimum, S is not: Adam moves the logits by ~lr per step even on
        # round-off gradients, 8 steps change S by up to ~4e-5 relative
        np.testing.assert_allclose(entry["entropy_kB_per_atom"], truncated, rtol=1e-4)
        np.testing.assert_allclose(entry["harmonic_entropy_kB_per_atom"], [harmonic_thermodynamics(np.full(3, w), KB_EV_PER_K * t).entropy_kB for t in TEMPERATURES], rtol=1e-12)
        # -T (S - S_harm): only the level truncation here, plus the Adam drift of S above (rtol 1e-4 of
        # S ~ 1 k_B at 150 K is ~1e-3 meV/atom; measured 1.05e-3 on one machine, < 1e-3 on another)
        temps = np.array(TEMPERATURES)
        expected = -KB_EV_PER_K * temps * (np.array(entry["entropy_kB_per_atom"]) - entry["harmonic_entropy_kB_per_atom"]) * 1e3
        np.testing.assert_allclose(entry["anharmonic_entropy_term_meV_per_atom"], expected, rtol=1e-9)
        truncation = -KB_EV_PER_K * temps * (np.array(truncated) - entry["harmonic_entropy_kB_per_atom"]) * 1e3
        drift = KB_EV_PER_K * temps * 1e-4 * np.abs(truncated) * 1e3  # the rtol of the entropy check above
        assert np.all(np.abs(expected - truncation) <= drift + 1e-9)
        assert np.all(np.abs(expected) < 1e-2)
    # a second invocation reads the finished points back instead of rerunning them; with the
    # harmonic finite-size correction: none for Einstein crystals (no dispersion, no translations)
    caplog.set_level(logging.INFO)
    again = run_compare(path, tmp_path / "out", overrides=["compare.harmonic_correction={mesh=[4, 4, 4], force_constants_min_atoms=8}"])
    assert caplog.text.count("finished, read back") == 2 * len(TEMPERATURES)
    assert again["phases"]["soft"]["crossings"] == soft["crossings"]
    for name in SPRINGS:
        # to phonopy's unit conversion (its own physical constants) and the O(delta^2) displacements
        np.testing.assert_allclose(again["phases"][name]["harmonic_finite_size_correction_eV_per_atom"], 0.0, atol=1e-7)
        assert (tmp_path / "out" / name / "harmonic_mesh.json").is_file()
    assert again["phases"]["soft"]["corrected_crossings"][0]["temperature_K"] == pytest.approx(crossing["temperature_K"], abs=1e-3)


def test_harmonic_correction_shifts_each_phase_by_mesh_minus_cell(tmp_path):
    """The corrected values are G + F_harm(mesh) - F_harm(cell) per phase, the corrected
    difference and crossing follow from them (synthetic points and mesh values)."""
    from thermoflow.workflows.compare import _summarise, load_comparison

    section, shared, _ = load_comparison(write(tmp_path))
    temps = np.array(TEMPERATURES)
    f = {"stiff": np.array([0.0, 0.0, 0.0]), "soft": np.array([2.0, 1.0, -1.0]) * 1e-3}
    harm = {"stiff": np.array([10.0, 9.0, 8.0]) * 1e-3, "soft": np.array([7.0, 6.0, 5.0]) * 1e-3}
    results = [{"free_energy_eV_per_atom": f[n][i], "free_energy_stderr_eV_per_atom": 1e-5, "harmonic_vibrational_free_energy_eV_per_atom": harm[n][i]}
               for i in range(len(temps)) for n in ("stiff", "soft")]
    mesh = {"stiff": harm["stiff"] + 1e-3, "soft": harm["soft"] - 0.5e-3}  # corrections +1 and -0.5 meV/atom
    summary = _summarise(section, shared, tmp_path, temps, results, mesh)
    soft = summary["phases"]["soft"]
    np.testing.assert_allclose(soft["harmonic_finite_size_correction_eV_per_atom"], -0.5e-3, atol=1e-15)
    np.testing.assert_allclose(soft["corrected_delta_eV_per_atom"], f["soft"] - 1.5e-3, atol=1e-15)
    # corrected difference 0.5, -0.5, -2.5 meV/atom: the crossing moves from 135 K to 90 K
    assert soft["crossings"][0]["temperature_K"] == pytest.approx(135.0)
    assert soft["corrected_crossings"][0]["temperature_K"] == pytest.approx(90.0)
    assert (tmp_path / "corrected_free_energy_differences.png").is_file()
    assert "corrected_delta_eV_per_atom" in (tmp_path / "summary.csv").read_text()


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



def test_a_phase_overrides_the_shared_nct_settings_table_by_table(tmp_path):
    """A phase's own [nct] keys replace the shared ones for that phase only; nested tables merge
    key by key (the other phase and the other keys keep the shared values); a bad value is
    reported with its field before anything runs."""
    phases = PHASE.format(name="stiff", mass=MASS, k=SPRINGS["stiff"], e0=0.0) + PHASE.format(
        name="soft", mass=MASS, k=SPRINGS["soft"], e0=STATIC["soft"]) + 'nct = { steps = 12, reference = { iterations = 2 } }\n'
    section, shared, _ = load_comparison(write(tmp_path, phases=phases))
    stiff, soft = (point_config(shared, phase, 100.0).nct for phase in section.phases)
    assert (stiff.steps, stiff.reference.iterations) == (8, 6)
    assert (soft.steps, soft.reference.iterations) == (12, 2)
    assert soft.reference.n_samples == stiff.reference.n_samples == 64 and soft.batch_size == 16
    assert shared["nct"]["steps"] == 8  # the shared settings are not modified
    bad = write(tmp_path, phases=phases.replace("steps = 12", "steps = -3"))
    with pytest.raises(ConfigError, match="nct.steps"):
        load_comparison(bad)
    assert PhaseConfig.model_validate({"name": "x", "structure": {"lattice": "sc", "symbol": "Li", "a_A": 3.0}}).nct is None
