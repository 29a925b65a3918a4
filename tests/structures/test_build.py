import json
import re
from pathlib import Path

import numpy as np
import pytest

from thermoflow.structures import build_lattice, make_supercell, read_structure, scale_to_volume, to_arrays
from thermoflow.structures.build import build_from_wyckoff


@pytest.mark.parametrize("lattice, n_atoms", [("fcc", 4), ("bcc", 2), ("hcp", 2), ("diamond", 8), ("sc", 1)])
def test_lattices_have_requested_volume(lattice, n_atoms):
    atoms = build_lattice("Li", lattice, volume_per_atom_A3=19.2)
    assert len(atoms) == n_atoms
    assert atoms.get_volume() / len(atoms) == pytest.approx(19.2, rel=1e-12)


def test_fcc_lattice_constant_and_nearest_neighbour():
    atoms = build_lattice("Ne", "fcc", a_A=4.464)
    d = atoms.get_all_distances(mic=True)
    assert d[d > 0].min() == pytest.approx(4.464 / np.sqrt(2), rel=1e-12)


def test_supercell_and_rescale():
    atoms = make_supercell(build_lattice("Ne", "fcc", a_A=4.464), (2, 1, 3))
    assert len(atoms) == 24
    general = make_supercell(build_lattice("Ne", "fcc", a_A=4.464), [[1, 1, 0], [0, 1, 0], [0, 0, 2]])
    assert len(general) == 8
    scaled = scale_to_volume(atoms, 30.0)
    assert scaled.get_volume() / len(scaled) == pytest.approx(30.0)
    pos, cell, masses = to_arrays(scaled)
    assert pos.shape == (24, 3) and cell.shape == (3, 3) and masses.dtype == np.float64
    with pytest.raises(ValueError):
        make_supercell(atoms, (0, 1, 1))
    with pytest.raises(ValueError):
        scale_to_volume(atoms, -1.0)
    with pytest.raises(ValueError, match="unknown lattice"):
        build_lattice("Ne", "bct", a_A=3.0)


def test_read_shared_lithium_structures(shared_dir):
    counts = {"bcc": 2, "fcc": 4, "cI16": 16}
    for name, n in counts.items():
        atoms = read_structure(shared_dir / "structures" / "lithium" / f"{name}.vasp")
        assert len(atoms) == n and set(atoms.get_chemical_symbols()) == {"Li"}


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_structure(tmp_path / "missing.vasp")
    junk = tmp_path / "junk.xyz"
    junk.write_text("this is not a structure\n")
    with pytest.raises(ValueError):
        read_structure(junk)
    mol = tmp_path / "mol.xyz"
    mol.write_text("1\n\nH 0 0 0\n")
    with pytest.raises(ValueError, match="periodic"):
        read_structure(mol)


def test_lah10_from_its_wyckoff_positions_via_the_example_config():
    """examples/md/lah10_200GPa.toml builds LaH10 from space group 225 and three Wyckoff orbits
    (La 4a, H 8c, H 32f): 44 atoms, La4H40, spglib finds Fm-3m, the H32 cages' distances (La-H 2.12 A,
    H-H 1.13 A); invalid structure sections are refused naming the field."""
    import spglib

    from thermoflow.workflows.build import build_structure
    from thermoflow.workflows.config import ConfigError, validate_config
    from thermoflow.workflows.md_config import MDRunConfig, load_md_config

    root = Path(__file__).resolve().parents[2]
    config, base = load_md_config(root / "examples" / "md" / "lah10_200GPa.toml")
    atoms = build_structure(config.structure, base)
    assert len(atoms) == 44 and atoms.get_chemical_formula() == "H40La4"
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    assert spglib.get_spacegroup(cell, symprec=1e-5) == "Fm-3m (225)"
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, 3.0)
    symbols = np.array(atoms.get_chemical_symbols())
    assert abs(d[(symbols[i] == "La") & (symbols[j] == "H")].min() - 2.1191) < 1e-3
    assert abs(d[(symbols[i] == "H") & (symbols[j] == "H")].min() - 1.1307) < 1e-3
    data = config.model_dump(mode="json", exclude_none=True)
    for change, message in (({"sites": None}, "structure.sites is required"),
                            ({"file": "x.vasp"}, "exactly one of structure.file, structure.lattice or structure.spacegroup"),
                            ({"cell_parameters": [5.1, 5.1, 5.1, 90, 90, 90]}, "exactly one of structure.a_A (cubic) or structure.cell_parameters"),
                            ({"sites": [["Xx", [0, 0, 0]]]}, "unknown chemical symbol 'Xx'")):
        bad = json.loads(json.dumps(data))
        bad["structure"].update(change)
        bad["structure"] = {k: v for k, v in bad["structure"].items() if v is not None}
        with pytest.raises(ConfigError, match=re.escape(message)):
            validate_config(bad, MDRunConfig)
    with pytest.raises(ValueError, match="cannot build space group 225"):
        build_from_wyckoff([("H", (0.0, 0.0, 0.0)), ("H", (0.5, 0.5, 0.5)), ("H", (0.0, 0.0, 0.0))], 225, (5.0, 5.0, 5.0, 90, 90, 90))
