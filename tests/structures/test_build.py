import numpy as np
import pytest

from thermoflow.structures import build_lattice, make_supercell, read_structure, scale_to_volume, to_arrays


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
