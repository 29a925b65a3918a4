"""End-to-end runs on a tiny crystal: outputs, exact resume, NaN rollback, CLI."""

import csv
import json

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from thermoflow.cli.main import app
from thermoflow.nct.train import NonFiniteError
from thermoflow.units import GPA_PER_EV_PER_A3
from thermoflow.workflows.config import ConfigError, load_config
from thermoflow.workflows.finished_run import load_finished_run
from thermoflow.workflows.nct_run import run_nct

TINY = [
    "structure.supercell=[1, 1, 1]",
    "nct.steps=6",
    "nct.batch_size=16",
    "nct.checkpoint_every=2",
    "nct.flow.hidden=8",
    "nct.flow.n_layers=2",
    "nct.n_levels=3",
    "nct.reference.n_samples=128",
    "nct.reference.iterations=5",
    "nct.reference.eval_samples=256",
    "nct.eval_batches=2",
    "nct.flow.cubic_samples=32",
]
PHYSICS_COLUMNS = ["step", "free_energy_eV_per_atom", "energy_eV_per_atom", "kinetic_eV_per_atom", "potential_eV_per_atom", "entropy_kB_per_atom"]


def _rows(path):
    with open(path) as fh:
        return [{k: row[k] for k in PHYSICS_COLUMNS} for row in csv.DictReader(fh)]


@pytest.mark.parametrize("flow", ["quadratic", pytest.param("realnvp", marks=pytest.mark.slow)])
def test_resume_reproduces_uninterrupted_run(tmp_path, flow):
    cfg, base = load_config(None, TINY + [f"nct.flow.kind={flow}", "nct.flow.trainable=true"])  # a trained flow resumes too
    full = run_nct(cfg, base, tmp_path / "full", progress=False)
    assert full["completed"] and full["steps"] == 6
    partial = run_nct(cfg, base, tmp_path / "split", progress=False, stop_after=3)
    assert partial == {"completed": False, "steps_done": 3}
    assert len(_rows(tmp_path / "split" / "metrics.csv")) == 3
    resumed = run_nct(cfg, base, tmp_path / "split", resume=True, progress=False)
    assert _rows(tmp_path / "split" / "metrics.csv") == _rows(tmp_path / "full" / "metrics.csv")
    assert resumed["free_energy_eV_per_atom"] == full["free_energy_eV_per_atom"]

    res = json.loads((tmp_path / "full" / "results.json").read_text())
    for key in ["free_energy_eV_per_atom", "free_energy_stderr_eV_per_atom", "energy_eV_per_atom", "entropy_kB_per_atom",
                "harmonic_free_energy_eV_per_atom", "temperature_K", "n_atoms", "n_modes", "steps", "seconds_per_step"]:
        assert key in res
    assert res["n_atoms"] == 4 and res["n_modes"] == 9
    assert res["reference"] == "scha" and res["gaussian_free_energy_eV_per_atom"] > res["harmonic_free_energy_eV_per_atom"] - 1e-3
    for name in ["config.resolved.toml", "free_energy.png", "occupations.png", "checkpoints/state.npz", "gaussian_reference.npz"]:
        assert (tmp_path / "full" / name).is_file()
    assert res["flow"] == flow
    assert res["pressure_stderr_GPa"] > 0 and abs(res["pressure_GPa"]) < 10
    stress = np.asarray(res["stress_GPa"])
    assert stress.shape == (3, 3) and np.allclose(stress, stress.T)
    # -tr(sigma)/3 is an independent estimator of the same pressure (tiny batches: loose)
    assert abs(-np.trace(stress) / 3 - res["pressure_GPa"]) < 5 * np.hypot(res["pressure_stderr_GPa"], np.mean(np.diag(res["stress_stderr_GPa"])))

    # the anharmonic spectrum of the finished run, from the run directory alone
    spec = CliRunner().invoke(app, ["spectrum", str(tmp_path / "full"), "--samples", "32", "--batch", "16"])
    assert spec.exit_code == 0, spec.output
    out = json.loads((tmp_path / "full" / "spectrum.json").read_text())
    with open(tmp_path / "full" / "spectrum.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 9 and (tmp_path / "full" / "phonon_dos.png").is_file()
    assert 0 < out["zero_point_energy_anharmonic_eV_per_atom"] < 2 * out["zero_point_energy_basis_eV_per_atom"]
    assert ((tmp_path / "full" / "cubic_force_constants.npz").is_file()) == (flow == "quadratic")
    # the stages' progress files are superseded by the stored stages
    assert not (tmp_path / "full" / "cubic_progress").exists() and not (tmp_path / "full" / "gaussian_progress.npz").exists()
    if flow == "quadratic":
        assert res["gaussian_plus_bubble_free_energy_eV_per_atom"] == pytest.approx(
            res["gaussian_free_energy_eV_per_atom"] + res["bubble_free_energy_eV_per_atom"])
        assert 0 <= res["perturbative_map_dropped_fraction"] <= 1

    with pytest.raises(ConfigError, match="already holds a run"):
        run_nct(cfg, base, tmp_path / "full", progress=False)

    # interrupted after its stages, before the first training step: only the starting state is
    # checkpointed (the first rollback target); the resume reuses the stored Gaussian (and cubic
    # force constants) and trains from step 0
    assert run_nct(cfg, base, tmp_path / "early", progress=False, stop_after=0) == {"completed": False, "steps_done": 0}
    with np.load(tmp_path / "early" / "checkpoints" / "state.npz") as data:
        assert json.loads(bytes(data["metadata_json"]).decode())["next_step"] == 0
    stages = ["gaussian_reference.npz"] + (["cubic_force_constants.npz"] if flow == "quadratic" else [])
    stamps = {name: (tmp_path / "early" / name).stat().st_mtime_ns for name in stages}
    with pytest.raises(ConfigError, match="already holds a run"):  # its stored stages are a run's: not overwritten
        run_nct(cfg, base, tmp_path / "early", progress=False)
    early = run_nct(cfg, base, tmp_path / "early", resume=True, progress=False)
    assert {name: (tmp_path / "early" / name).stat().st_mtime_ns for name in stages} == stamps
    assert _rows(tmp_path / "early" / "metrics.csv") == _rows(tmp_path / "full" / "metrics.csv")
    assert early["free_energy_eV_per_atom"] == full["free_energy_eV_per_atom"]
    other, _ = load_config(None, TINY + ["state.temperature_K=30"])
    with pytest.raises(ConfigError, match=r"state.temperature_K: the run has \S+, this config 30"):
        run_nct(other, base, tmp_path / "full", resume=True, progress=False)


def test_non_finite_training_rolls_back_then_stops_with_clear_error(tmp_path):
    cfg, base = load_config(None, TINY + ["potential={kind='python', target='anharmonic_models:make_nan_potential'}", "nct.max_rollbacks=2", "nct.reference.kind='harmonic'"])
    with pytest.raises(NonFiniteError, match="after 2 rollbacks"):
        run_nct(cfg, base, tmp_path / "nan", progress=False)
    assert (tmp_path / "nan" / "config.resolved.toml").is_file()


def test_cli_phonons_and_invalid_config(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ph"
    result = runner.invoke(app, ["phonons", "--out", str(out), "--set", "structure.supercell=[1,1,1]", "--set", "phonons.mesh=[16,16,16]",
                                 "--set", "phonons.force_constants_supercell=[2,2,2]", "--set", "phonons.temperatures_K=[10, 40]"])
    assert result.exit_code == 0, result.output
    ph = json.loads((out / "phonons.json").read_text())
    assert ph["n_modes"] == 9 and ph["n_imaginary_modes"] == 0
    # the 4-atom cell's own Gamma point equals its commensurate q-points from the 32-atom force constants
    mesh = ph["mesh"]
    assert mesh["force_constants_atoms"] == 32 and (out / "mesh_thermodynamics.csv").is_file()
    for own, interpolated in zip(mesh["cell_vibrational_free_energy_eV_per_atom"], mesh["cell_from_force_constants_free_energy_eV_per_atom"]):
        assert abs(own - interpolated) < 1e-7
    assert all(abs(c) > 1e-4 for c in mesh["finite_size_correction_eV_per_atom"])  # a 4-atom cell is far from converged
    bad_mesh = runner.invoke(app, ["phonons", "--out", str(tmp_path / "bad"), "--set", "phonons.mesh=[0,4,4]"])
    assert bad_mesh.exit_code == 2 and "phonons.mesh" in bad_mesh.output
    res = runner.invoke(app, ["scha", "--out", str(tmp_path / "g"), "--set", "structure.supercell=[1,1,1]",
                              "--set", "nct.reference.iterations=10", "--set", "nct.reference.n_samples=256"])
    assert res.exit_code == 0, res.output
    g = json.loads((tmp_path / "g" / "scha.json").read_text())
    assert g["gaussian_free_energy_eV_per_atom"] > ph["harmonic_free_energy_eV_per_atom"]  # neon: hardened by anharmonicity
    assert g["frequency_min_THz"] > ph["frequency_min_THz"]
    bad = runner.invoke(app, ["run", "--out", str(tmp_path / "x"), "--set", "state.temperature_K=-1"])
    assert bad.exit_code == 2 and "state.temperature_K" in bad.output


def test_ase_calculator_kind_gives_the_same_phonons_as_native_potential(tmp_path):
    """kind = "ase" (host callback + finite-difference Hessian) vs the JAX-native Lennard-Jones."""
    from thermoflow.workflows.build import build_modes

    base_overrides = ["structure.supercell=[1, 1, 1]"]
    native, base = load_config(None, base_overrides + ["potential.cutoff_A=7.0"])
    ase_cfg, _ = load_config(None, base_overrides + [
        "potential={kind='ase', calculator='ase.calculators.lj:LennardJones', "
        "options={epsilon=0.0031, sigma=2.74, rc=7.0, smooth=false}, hessian_displacement_A=0.002}"
    ])
    _, _, m_native = build_modes(native, base)
    _, _, m_ase = build_modes(ase_cfg, base)
    import numpy as np

    np.testing.assert_allclose(np.sort(m_ase.omega), np.sort(m_native.omega), rtol=1e-4)
    np.testing.assert_allclose(m_ase.energy0_eV, m_native.energy0_eV, rtol=1e-10)


@pytest.mark.slow  # default-budget trim (2026-12-02); the resume itself is tested by the test above
def test_damaged_newest_checkpoint_resumes_from_the_previous_one(tmp_path, caplog):
    cfg, base = load_config(None, TINY)
    full = run_nct(cfg, base, tmp_path / "full", progress=False)
    run_nct(cfg, base, tmp_path / "split", progress=False, stop_after=4)  # checkpoints at steps 2 and 4
    newest = tmp_path / "split" / "checkpoints" / "state.npz"
    assert (tmp_path / "split" / "checkpoints" / "state.prev.npz").is_file()
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated, as by a crash
    with caplog.at_level("WARNING"):
        resumed = run_nct(cfg, base, tmp_path / "split", resume=True, progress=False)
    assert "resuming from the previous one" in caplog.text
    assert _rows(tmp_path / "split" / "metrics.csv") == _rows(tmp_path / "full" / "metrics.csv")
    assert resumed["free_energy_eV_per_atom"] == full["free_energy_eV_per_atom"]


@pytest.mark.slow  # default-budget trim (2026-12-03): progress output and the per-step stress columns
def test_progress_lines_and_per_step_stress(tmp_path, caplog):
    """Off a terminal: a progress line every --log-every steps. nct.training_stress: metrics.csv
    holds the stress tensor of every step, whose -trace/3 estimates the same pressure as the
    virial column (same samples; the kinetic parts are two estimators of one expectation)."""
    cfg, base = load_config(None, TINY + ["nct.training_stress=true", "nct.steps=12"])
    with caplog.at_level("INFO"):
        run_nct(cfg, base, tmp_path / "lines", progress=False, log_every=4)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [line.split()[1] for line in lines] == ["4/12", "8/12", "12/12"]
    assert all("meV/atom" in line and "s/step" in line and "left" in line for line in lines)
    with open(tmp_path / "lines" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12
    stress = np.array([[float(r[f"stress_{c}_GPa"]) for c in ("xx", "yy", "zz", "yz", "xz", "xy")] for r in rows])
    pressure = np.array([float(r["pressure_GPa"]) for r in rows])
    assert np.isfinite(stress).all() and np.abs(pressure).max() > 0
    difference = -stress[:, :3].mean(axis=1) - pressure
    assert abs(difference.mean()) < 5 * difference.std(ddof=1) / np.sqrt(len(rows)) + 1e-6
    assert np.abs(difference).max() < 0.2 * np.abs(pressure).max()  # an error in units or sign would not be


def test_imaginary_modes_leave_the_harmonic_free_energy_undefined(tmp_path):
    """One imaginary harmonic mode: no harmonic F, E, S is invented from |omega|; the run still
    works (NCT basis with |omega|) and the self-consistent Gaussian is stable (quartic term)."""
    well = ["structure={lattice='sc', symbol='H', a_A=6.0}", "potential={kind='python', target='anharmonic_models:make_double_well_atom'}",
            "state.temperature_K=300"]
    cfg, base = load_config(None, TINY[1:] + well)
    res = run_nct(cfg, base, tmp_path / "well", progress=False)
    assert res["n_imaginary_modes"] == 1 and res["n_modes"] == 3
    assert res["harmonic_free_energy_eV_per_atom"] is None and res["anharmonic_correction_eV_per_atom"] is None
    assert "imaginary" in res["harmonic_undefined_reason"]
    assert res["gaussian_free_energy_eV_per_atom"] is not None
    ph = CliRunner().invoke(app, ["phonons", "--out", str(tmp_path / "ph")] + sum((["--set", o] for o in well), []))
    assert ph.exit_code == 0, ph.output
    assert json.loads((tmp_path / "ph" / "phonons.json").read_text())["harmonic_free_energy_eV_per_atom"] is None


@pytest.mark.slow  # default-budget trim (2026-12-02): NPT physics stays in tests/nct/test_npt.py
def test_npt_run_reports_gibbs_free_energy_and_resumes_exactly(tmp_path):
    """[state] pressure_GPa: the strain is trained with the state, checkpointed with it, and the
    run reports G = F + P V, the volume and the cell."""
    npt = TINY + ["nct.flow.kind=realnvp", "state.pressure_GPa=0.5", "nct.strain_learning_rate=3e-3"]
    cfg, base = load_config(None, npt)
    full = run_nct(cfg, base, tmp_path / "full", progress=False)
    run_nct(cfg, base, tmp_path / "split", progress=False, stop_after=3)
    resumed = run_nct(cfg, base, tmp_path / "split", resume=True, progress=False)
    assert resumed["gibbs_free_energy_eV_per_atom"] == full["gibbs_free_energy_eV_per_atom"]
    assert resumed["strain"] == full["strain"]
    with open(tmp_path / "full" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {"gibbs_free_energy_eV_per_atom", "volume_A3_per_atom", "pressure_GPa"} <= set(rows[0])
    assert full["strain"] < 0  # compressed towards 0.5 GPa from the ~zero-pressure volume
    assert full["volume_A3_per_atom"] < full["reference_volume_A3_per_atom"]
    volume = abs(np.linalg.det(np.asarray(full["cell_A"]))) / full["n_atoms"]
    assert volume == pytest.approx(full["volume_A3_per_atom"])
    g = full["free_energy_eV_per_atom"] + 0.5 / GPA_PER_EV_PER_A3 * full["volume_A3_per_atom"]
    assert full["gibbs_free_energy_eV_per_atom"] == pytest.approx(g, rel=1e-9)
    # the spectrum of an NPT run compares with the harmonic modes of the trained cell
    spec = CliRunner().invoke(app, ["spectrum", str(tmp_path / "full"), "--samples", "16", "--batch", "16"])
    assert spec.exit_code == 0, spec.output
    out = json.loads((tmp_path / "full" / "spectrum.json").read_text())
    assert out["harmonic_reference_volume_A3_per_atom"] == pytest.approx(full["volume_A3_per_atom"], rel=1e-12)
    assert out["harmonic_reference_volume_A3_per_atom"] < full["reference_volume_A3_per_atom"]


def test_orthorhombic_npt_run_reports_the_cell_per_direction(tmp_path):
    """nct.cell_strain = "orthorhombic" (Gaussian level): three strains trained, the cell and the
    pressure per direction reported; the spectrum reads the strained cell; an unknown cell strain
    is refused."""
    ortho = TINY + ["nct.freeze_flow=true", "nct.cell_strain=orthorhombic", "state.pressure_GPa=0.5", "nct.strain_learning_rate=3e-3"]
    cfg, base = load_config(None, ortho)
    res = run_nct(cfg, base, tmp_path / "run", progress=False)
    strain = np.asarray(res["strain"])
    assert strain.shape == (3,) and np.all(strain < 0)  # compressed towards 0.5 GPa in every direction
    cell = np.asarray(res["cell_A"])
    assert np.allclose(cell, np.diag(np.diag(cell)))
    assert abs(np.linalg.det(cell)) / res["n_atoms"] == pytest.approx(res["volume_A3_per_atom"])
    # F at the trained cell is not compared with the references at the reference cell
    assert res["flow_minus_gaussian_eV_per_atom"] is None and res["anharmonic_correction_eV_per_atom"] is None
    with open(tmp_path / "run" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {"pressure_x_GPa", "pressure_y_GPa", "pressure_z_GPa", "pressure_GPa"} <= set(rows[0])
    # harmonic wavefunctions: the flow is the parameter-free identity, nothing of it trained or checkpointed
    assert load_finished_run(tmp_path / "run").params["flow"] == {}
    spec = CliRunner().invoke(app, ["spectrum", str(tmp_path / "run"), "--samples", "16", "--batch", "16"])
    assert spec.exit_code == 0, spec.output
    out = json.loads((tmp_path / "run" / "spectrum.json").read_text())
    assert out["harmonic_reference_volume_A3_per_atom"] == pytest.approx(res["volume_A3_per_atom"], rel=1e-12)
    with pytest.raises(ConfigError, match="cell_strain"):
        load_config(None, TINY + ["nct.cell_strain=triclinic", "state.pressure_GPa=0.5"])


def test_relaxed_centroid_is_the_basis_of_the_run_and_is_read_back(tmp_path):
    """nct.reference.relax_centroid on an atom in an asymmetric well: the run's basis sits at the
    Gaussian's centre (shifted along x only), gaussian_reference.npz stores it, a warm start reads
    it back and a finished run's spectrum is rebuilt on it."""
    well = ["structure={lattice='sc', symbol='H', a_A=6.0}", "potential={kind='python', target='anharmonic_models:make_asymmetric_atom'}",
            "state.temperature_K=100", "nct.reference.relax_centroid=true", "nct.reference.n_samples=512", "nct.reference.iterations=12",
            "nct.freeze_flow=true"]
    cfg, base = load_config(None, TINY[1:] + well)
    res = run_nct(cfg, base, tmp_path / "a", progress=False)
    with np.load(tmp_path / "a" / "gaussian_reference.npz") as data:
        shift = data["reference_positions"] - np.zeros(3)
    # hydrogen's zero-point motion pushes it towards the soft side (+x; 0.032 A for mass 2, tests/phonons)
    assert 0.03 < shift[0, 0] < 0.06 and np.abs(shift[0, 1:]).max() < 1e-3 * shift[0, 0]
    assert res["centroid_shift_max_A"] == pytest.approx(np.linalg.norm(shift), rel=1e-9)
    cfg_b, _ = load_config(None, TINY[1:] + well + [f"nct.reference.start='{tmp_path / 'a' / 'gaussian_reference.npz'}'", "nct.reference.iterations=1"])
    res_b = run_nct(cfg_b, base, tmp_path / "b", progress=False)
    assert res_b["centroid_shift_max_A"] == pytest.approx(res["centroid_shift_max_A"], rel=0.05)  # one more step from the stored centre
    spectrum = CliRunner().invoke(app, ["spectrum", str(tmp_path / "a"), "--samples", "64"])
    assert spectrum.exit_code == 0, spectrum.output
    scha = CliRunner().invoke(app, ["scha", "--out", str(tmp_path / "s")] + sum((["--set", o] for o in TINY[1:] + well), []))
    assert scha.exit_code == 0, scha.output
    out = json.loads((tmp_path / "s" / "scha.json").read_text())
    from ase.io import read

    centre = read(tmp_path / "s" / "centroid.extxyz")
    assert out["centroid_shift_max_A"] == pytest.approx(np.linalg.norm(centre.get_positions()[0]), rel=1e-6)  # extxyz: 8 decimals
    assert out["centroid_shift_max_A"] == pytest.approx(res["centroid_shift_max_A"], rel=1e-9)  # same settings and seed


def test_held_quadratic_flow_stays_at_its_perturbative_start(tmp_path):
    """The perturbative quadratic flow is held by default (nct.flow.trainable unset): the finished
    run's flow parameters are the perturbative start bit for bit while the occupations trained;
    the run directory serves `thermoflow spectrum` (its checkpoint holds optimiser moments for the
    occupations only)."""
    from thermoflow.nct.train import TrainState
    from thermoflow.workflows.finished_run import load_finished_run

    cfg, base = load_config(None, TINY + ["structure.supercell=[2, 1, 1]"])  # 1x1x1: Phi3 = 0 by inversion
    res = run_nct(cfg, base, tmp_path / "held", progress=False)
    assert res["completed"] and res["flow_trained"] is False
    run = load_finished_run(tmp_path / "held")
    start = TrainState.create(run.model, run.setup.optimizer, cfg.seed)
    start_flow, final_flow = (jax.tree_util.tree_leaves(p["flow"]) for p in (start.params, run.params))
    assert any(np.abs(leaf).max() > 0 for leaf in start_flow)  # the perturbative map, not the identity
    for a, b in zip(start_flow, final_flow):
        np.testing.assert_array_equal(a, b)
    name = run.model.occupations.param_name
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(start.params[name]), jax.tree_util.tree_leaves(run.params[name])))
    spec = CliRunner().invoke(app, ["spectrum", str(tmp_path / "held"), "--samples", "32", "--batch", "16"])
    assert spec.exit_code == 0, spec.output


def test_finished_harmonic_wavefunction_run_with_a_stored_flow_is_still_read(tmp_path):
    """nct.freeze_flow runs written before 2026-12-05 checkpointed the configured flow's unused
    identity parameters and their Adam moments; `thermoflow spectrum` and `structure` still read
    them: the occupations come back unchanged, the flow as the parameter-free identity."""
    import dataclasses

    from thermoflow.io.checkpoint import save_checkpoint
    from thermoflow.nct.train import TrainState
    from thermoflow.workflows.nct_setup import configured_flow

    # trainable = true: every flow trained by default then, so the optimiser held moments for it
    cfg, base = load_config(None, TINY + ["nct.freeze_flow=true", "nct.flow.trainable=true"])
    assert run_nct(cfg, base, tmp_path / "run", progress=False)["completed"]
    run = load_finished_run(tmp_path / "run")
    legacy = dataclasses.replace(run.setup, flow=configured_flow(cfg, run.setup.basis.n_modes)).build_model()
    start = TrainState.create(legacy, run.setup.optimizer, cfg.seed)
    assert jax.tree_util.tree_leaves(start.params["flow"])  # the old layout: a flow with parameters
    ckpt = tmp_path / "run" / "checkpoints" / "state.npz"
    for path in ckpt.parent.iterdir():
        path.unlink()
    save_checkpoint(ckpt, {"params": {**start.params, **{k: v for k, v in run.params.items() if k != "flow"}},
                           "opt_state": start.opt_state}, {})
    again = load_finished_run(tmp_path / "run")
    assert again.params["flow"] == {} and again.params.keys() == run.params.keys()
    for a, b in zip(jax.tree_util.tree_leaves(run.params), jax.tree_util.tree_leaves(again.params)):
        np.testing.assert_array_equal(a, b)
