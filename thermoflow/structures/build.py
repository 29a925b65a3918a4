"""Crystal structures: read a file or build a standard lattice, make supercells, set volumes.

Thin wrappers over ASE (``ase.io.read``, ``ase.build.bulk``, ``Atoms.repeat``); their only job
is to give thermoflow one place where structures enter and where bad input is reported clearly.
Arrays leave this layer as ``positions`` (n_atoms, 3) Angstrom, ``cell`` (3, 3) Angstrom with
lattice vectors as rows, and ``masses`` (n_atoms,) amu.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from ase import Atoms
from ase.build import bulk

#: Lattices :func:`build_lattice` knows, with atoms per conventional cubic (or hcp) cell.
LATTICES = ("fcc", "bcc", "hcp", "diamond", "sc")


def read_structure(path: str | Path, index: int | str = -1) -> Atoms:
    """Read one structure from any ASE-readable file (POSCAR, CIF, extxyz, ...).

    Args:
        path: file name; the format is guessed by ASE from the name and content.
        index: which frame of a trajectory file to take (default: the last).

    Returns:
        The structure as ASE ``Atoms``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if ASE cannot read it or the structure has no periodic cell.
    """
    from ase.io import read

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"structure file not found: {path}")
    try:
        atoms = read(path, index=index)
    except Exception as exc:  # ASE raises many types for unreadable input
        raise ValueError(f"ASE could not read structure file {path}: {exc}") from exc
    if not atoms.pbc.all() or atoms.cell.rank < 3:
        raise ValueError(
            f"{path}: thermoflow needs a 3-D periodic crystal (pbc={atoms.pbc.tolist()}, "
            f"cell rank {atoms.cell.rank}); give a file with lattice vectors."
        )
    return atoms


def build_lattice(
    symbol: str,
    lattice: str,
    *,
    a_A: float | None = None,
    volume_per_atom_A3: float | None = None,
    c_over_a: float | None = None,
) -> Atoms:
    """Build the conventional cell of a standard lattice.

    Args:
        symbol: chemical symbol, e.g. ``"Ne"``.
        lattice: one of :data:`LATTICES`.
        a_A: cubic (or hcp basal) lattice constant, Angstrom.
        volume_per_atom_A3: alternatively, the volume per atom, Angstrom^3.
        c_over_a: hcp only; ideal sqrt(8/3) if omitted.

    Returns:
        ASE ``Atoms`` of the conventional cell (cubic for fcc/bcc/diamond/sc).

    Raises:
        ValueError: unknown lattice, or not exactly one of ``a_A`` / ``volume_per_atom_A3``.
    """
    if lattice not in LATTICES:
        raise ValueError(f"unknown lattice {lattice!r}; choose one of {', '.join(LATTICES)}")
    if (a_A is None) == (volume_per_atom_A3 is None):
        raise ValueError("give exactly one of a_A or volume_per_atom_A3")
    kwargs = {}
    if lattice == "hcp":
        kwargs["covera"] = c_over_a if c_over_a is not None else float(np.sqrt(8.0 / 3.0))
        atoms = bulk(symbol, "hcp", a=1.0, **kwargs)
    else:
        atoms = bulk(symbol, lattice, a=1.0, cubic=True)
    if a_A is not None:
        atoms.set_cell(atoms.cell * a_A, scale_atoms=True)
    else:
        atoms = scale_to_volume(atoms, volume_per_atom_A3)
    return atoms


def build_from_wyckoff(
    sites: Sequence[tuple[str, Sequence[float]]], spacegroup: int, cell_parameters: Sequence[float],
) -> Atoms:
    """The conventional cell of a crystal given by its space group and the representative position of
    each Wyckoff orbit (``ase.spacegroup.crystal`` generates the orbits).

    Args:
        sites: ``(symbol, (x, y, z))`` per orbit, fractional coordinates of one representative,
            e.g. LaH10 (Fm-3m, 225): La 4a (0, 0, 0), H 8c (1/4, 1/4, 1/4), H 32f (x, x, x).
        spacegroup: international space-group number, 1-230 (standard setting).
        cell_parameters: (a, b, c, alpha, beta, gamma), Angstrom and degrees.

    Returns:
        ASE ``Atoms`` of the conventional cell.

    Raises:
        ValueError: an invalid space group, site or cell (from ASE, with its message), or two orbits
            whose atoms coincide.
    """
    from ase.spacegroup import crystal

    try:
        return crystal(symbols=[s for s, _ in sites], basis=[list(p) for _, p in sites], spacegroup=spacegroup,
                       cellpar=list(cell_parameters), onduplicates="error")
    except Exception as error:  # ASE raises ValueError / SpacegroupError with a useful message
        raise ValueError(f"cannot build space group {spacegroup} with sites {list(sites)}: {error}") from error


def make_supercell(atoms: Atoms, repeat: Sequence[int] | np.ndarray) -> Atoms:
    """Supercell by repetition (3 integers) or a general 3x3 integer matrix.

    Raises:
        ValueError: for a non-positive repetition or a singular matrix.
    """
    rep = np.asarray(repeat, dtype=int)
    if rep.shape == (3,):
        if (rep < 1).any():
            raise ValueError(f"supercell repetitions must be >= 1, got {rep.tolist()}")
        return atoms.repeat(tuple(rep))
    if rep.shape == (3, 3):
        from ase.build import make_supercell as _make

        if round(abs(np.linalg.det(rep))) < 1:
            raise ValueError("supercell matrix is singular")
        return _make(atoms, rep)
    raise ValueError(f"supercell must be 3 integers or a 3x3 matrix, got shape {rep.shape}")


def scale_to_volume(atoms: Atoms, volume_per_atom_A3: float) -> Atoms:
    """Isotropically rescale cell and positions to a volume per atom (Angstrom^3).

    Raises:
        ValueError: if the volume is not positive.
    """
    if not volume_per_atom_A3 > 0:
        raise ValueError(f"volume_per_atom_A3 must be positive, got {volume_per_atom_A3}")
    out = atoms.copy()
    factor = (volume_per_atom_A3 * len(out) / out.get_volume()) ** (1.0 / 3.0)
    out.set_cell(out.cell * factor, scale_atoms=True)
    return out


def to_arrays(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(positions (n,3) A, cell (3,3) A rows, masses (n,) amu)`` as float64 NumPy arrays."""
    return (
        np.asarray(atoms.get_positions(), dtype=np.float64),
        np.asarray(atoms.cell.array, dtype=np.float64),
        np.asarray(atoms.get_masses(), dtype=np.float64),
    )


def closest_pair(atoms: Atoms) -> tuple[float, int, int]:
    """The shortest interatomic distance under periodic boundary conditions, Angstrom, and the
    two atom indices (a single atom's distance to its own periodic images counts too)."""
    from ase.neighborlist import neighbor_list

    cutoff = 4.0
    while True:
        i, j, d = neighbor_list("ijd", atoms, cutoff)
        if len(d):
            k = int(np.argmin(d))
            return float(d[k]), int(i[k]), int(j[k])
        cutoff *= 2


def check_distances(atoms: Atoms, min_distance_A: float) -> None:
    """Raise ValueError if two atoms are closer than ``min_distance_A`` (overlapping atoms:
    a wrong lattice constant, unit or duplicated site)."""
    d, i, j = closest_pair(atoms)
    if d < min_distance_A:
        raise ValueError(
            f"atoms {i} ({atoms[i].symbol}) and {j} ({atoms[j].symbol}) are {d:.3f} A apart, closer than "
            f"structure.min_distance_A = {min_distance_A} A: check the lattice constant / volume (Angstrom) and "
            "the structure file (lower structure.min_distance_A if this is intended)"
        )
