"""Reference positions relaxed at fixed cell (structure.relax_positions)."""

import numpy as np
import pytest
from ase.spacegroup import crystal

from thermoflow.analysis.structure import space_group, wyckoff_x_16c
from thermoflow.potentials.base import forces
from thermoflow.workflows.build import build_modes
from thermoflow.workflows.config import validate_config

LJ = {"kind": "lennard_jones", "epsilon_eV": 0.0031, "sigma_A": 2.74, "cutoff_A": 8.2}


def config(structure):
    return validate_config({"state": {"temperature_K": 20.0}, "structure": structure, "potential": LJ, "nct": {}})


def test_relaxation_keeps_the_space_group_and_moves_the_free_parameter(tmp_path):
    """cI16 (I-43d, 16c x = 0.055) on a Lennard-Jones potential: x is free and not at the LJ
    minimum; the relaxed structure is still I-43d, force-free, with another x."""
    atoms = crystal("Ne", [(0.055, 0.055, 0.055)], spacegroup=220, cellpar=[7.2, 7.2, 7.2, 90, 90, 90])
    atoms.write(tmp_path / "cI16.vasp", format="vasp", direct=True)
    structure = {"file": "cI16.vasp", "relax_positions": True}
    relaxed, energy_fn, modes = build_modes(config(structure), tmp_path)
    unrelaxed, _, _ = build_modes(config({**structure, "relax_positions": False}), tmp_path)
    f = np.asarray(forces(energy_fn, relaxed.get_positions(), relaxed.cell.array))
    x0 = wyckoff_x_16c(unrelaxed.get_positions(), unrelaxed.cell.array, unrelaxed.numbers)
    x = wyckoff_x_16c(relaxed.get_positions(), relaxed.cell.array, relaxed.numbers)
    print("x", x0, "->", x, "largest force", np.abs(f).max())
    assert np.abs(f).max() < 1e-5
    assert space_group(relaxed.get_positions(), relaxed.cell.array, relaxed.numbers, 1e-5)[1] == 220
    assert x0 == pytest.approx(0.055, abs=1e-9) and abs(x - x0) > 1e-3
    np.testing.assert_allclose(relaxed.cell.array, unrelaxed.cell.array)
    np.testing.assert_allclose(modes.reference_positions, relaxed.get_positions())
    assert not modes.imaginary.any()
