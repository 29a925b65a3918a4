"""Structure of periodic configurations: pair distributions, quenches, space groups, Wyckoff x.

Functions of arrays (positions (n_atoms, 3) A, cell (3, 3) A with lattice vectors as rows,
species labels or atomic numbers (n_atoms,)); no files.

* :func:`radial_distribution`: partial radial distribution functions g_ab(r) and coordination
  numbers n_ab(r) of a set of configurations, with every periodic image up to r_max (any cell
  shape, r_max may exceed the cell). Pair distances come from ASE's neighbour list
  (``ase.neighborlist.primitive_neighbor_list``, binned search over all images);
  ``ase.geometry.rdf.get_rdf`` itself is not used because it refuses r_max beyond the sphere
  the cell encloses, which for the 16-54 atom cells of NCT runs is the first shell only.
* :func:`coordination_shells`: the shells (radius, count) of a static lattice.
* :func:`quench`: local minimisation with an ASE optimiser (FIRE or BFGS) at fixed cell.
* :func:`space_group`: international symbol and number from spglib at a stated tolerance.
* :func:`wyckoff_x_16c`: the free parameter x of Wyckoff position 16c (x, x, x) of I-43d (220),
  the cI16 structure of dense lithium, from spglib's standardised cell (any setting, origin,
  orientation or supercell of the input).

References: M. P. Allen and D. J. Tildesley, Computer Simulation of Liquids, 2nd ed. (Oxford,
2017), sec. 8.2, doi:10.1093/oso/9780198803195.001.0001 (g(r) estimator);
A. Togo, K. Shinohara and I. Tanaka, Sci. Technol. Adv. Mater. Meth. 4, 2384822 (2024),
doi:10.1080/27660400.2024.2384822, arXiv:1808.01590 (spglib);
E. Bitzek et al., Phys. Rev. Lett. 97, 170201 (2006), doi:10.1103/PhysRevLett.97.170201 (FIRE);
M. Hanfland et al., Nature 408, 174 (2000), doi:10.1038/35041515 (cI16 lithium).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Sequence

import numpy as np
import spglib
from ase import Atoms
from ase.neighborlist import primitive_neighbor_list


@dataclasses.dataclass(frozen=True)
class RadialDistribution:
    """Partial radial distribution functions averaged over configurations.

    Attributes:
        r_A: (n_bins,) bin centres, Angstrom.
        edges_A: (n_bins + 1,) bin edges, Angstrom (from 0 to r_max).
        pairs: ordered species pairs (a, b): centre species a, neighbour species b.
        g: (n_pairs, n_bins) g_ab(r), dimensionless (g_ab = g_ba).
        g_stderr: (n_pairs, n_bins) standard error of the mean over configurations (NaN for one).
        coordination: (n_pairs, n_bins) n_ab at each bin's upper edge: the mean number of b atoms
            within that distance of an a atom, = 4 pi rho_b int_0^r g_ab r'^2 dr'.
        density_A3: (n_pairs,) rho_b = (N_b - delta_ab) / V averaged over configurations, A^-3.
    """

    r_A: np.ndarray
    edges_A: np.ndarray
    pairs: tuple[tuple[Any, Any], ...]
    g: np.ndarray
    g_stderr: np.ndarray
    coordination: np.ndarray
    density_A3: np.ndarray


def pair_distances(positions: np.ndarray, cell: np.ndarray, r_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every ordered pair (i, j, image) with 0 < |R_j + image - R_i| < r_max in a periodic cell.

    Args:
        positions: (n_atoms, 3) Angstrom (atoms may sit outside the cell).
        cell: (3, 3) lattice vectors as rows, Angstrom, any shape (triclinic).
        r_max: cutoff, Angstrom; may exceed the cell (all images are searched).

    Returns:
        ``(i, j, d)``: (n_pairs,) centre and neighbour indices and distances, Angstrom; an
        atom's own periodic images are included (they are neighbours in the crystal).
    """
    i, j, d = primitive_neighbor_list("ijd", (True, True, True), np.asarray(cell, dtype=float),
                                      np.asarray(positions, dtype=float), float(r_max), self_interaction=False)
    return i, j, d



def nearest_neighbour_distance(positions: np.ndarray, cell: np.ndarray) -> float:
    """Shortest distance between two atoms (periodic images included), Angstrom.

    Args:
        positions: (n_atoms, 3) Angstrom.
        cell: (3, 3) lattice vectors as rows, Angstrom.
    """
    n_atoms = len(positions)
    search = 2.0 * (abs(np.linalg.det(np.asarray(cell, dtype=float))) / n_atoms) ** (1 / 3)  # the nearest lies below 2 (V/N)^(1/3)
    return float(pair_distances(positions, cell, search)[2].min())


def shortest_lattice_translation(cell: np.ndarray) -> float:
    """Length of the shortest non-zero lattice vector of ``cell`` (3, 3), Angstrom: the distance
    at which every atom meets its own periodic image (Minkowski-reduced basis, ase.geometry)."""
    from ase.geometry import minkowski_reduce

    reduced, _ = minkowski_reduce(np.asarray(cell, dtype=float))
    return float(np.linalg.norm(reduced, axis=1).min())


def default_rdf_range(positions: np.ndarray, cell: np.ndarray) -> float:
    """Default largest g(r) distance, Angstrom: 2.5 nearest-neighbour distances, but short of
    the shortest lattice translation of the (super)cell, where each atom's own periodic image (which
    never moves relative to it) would add a spurious delta peak."""
    return min(2.5 * nearest_neighbour_distance(positions, cell), 0.98 * shortest_lattice_translation(cell))


def _species_pairs(species: np.ndarray) -> tuple[list, tuple[tuple[Any, Any], ...]]:
    kinds = list(dict.fromkeys(species.tolist()))  # order of first appearance
    return kinds, tuple((a, b) for a in kinds for b in kinds)


def radial_distribution(positions: np.ndarray, cell: np.ndarray, species: Sequence, r_max: float,
                        n_bins: int = 200) -> RadialDistribution:
    """Partial radial distribution functions g_ab(r) and coordination numbers n_ab(r).

    For each configuration m, g_ab(r_k) = C_ab(k) / (N_a rho_b Delta V_k), where C_ab(k) counts
    ordered pairs (i in a, j in b, any periodic image) at distances in bin k,
    Delta V_k = 4 pi (r_{k+1}^3 - r_k^3) / 3 and rho_b = (N_b - delta_ab) / V is the density of
    the b atoms other than the centre (the convention of LAMMPS ``compute rdf``): uniform random
    positions give g = 1 in expectation for r below the cell's shortest lattice vector, and
    n_ab(r) = sum_{k: r_{k+1} <= r} C_ab(k) / N_a = 4 pi rho_b int g r^2 dr holds exactly. g is
    averaged over configurations (each with its own volume).

    Args:
        positions: (n_configs, n_atoms, 3) or (n_atoms, 3), Angstrom.
        cell: (3, 3) or (n_configs, 3, 3) lattice vectors as rows, Angstrom (any shape).
        species: (n_atoms,) labels (chemical symbols or atomic numbers).
        r_max: largest distance, Angstrom (may exceed the cell).
        n_bins: number of bins of width r_max / n_bins.

    Returns:
        A :class:`RadialDistribution`.

    Raises:
        ValueError: for inconsistent shapes, r_max <= 0 or n_bins < 1.

    References:
        M. P. Allen and D. J. Tildesley, Computer Simulation of Liquids, 2nd ed. (2017), sec. 8.2.
    """
    positions = np.asarray(positions, dtype=float)
    if positions.ndim == 2:
        positions = positions[None]
    n_configs, n_atoms = positions.shape[:2]
    cells = np.broadcast_to(np.asarray(cell, dtype=float), (n_configs, 3, 3))
    species = np.asarray(species)
    if positions.shape[2:] != (3,) or species.shape != (n_atoms,):
        raise ValueError(f"positions must be (n_configs, n_atoms, 3) with species (n_atoms,), got {positions.shape} and {species.shape}")
    if not r_max > 0 or n_bins < 1:
        raise ValueError(f"need r_max > 0 and n_bins >= 1, got {r_max} and {n_bins}")
    kinds, pairs = _species_pairs(species)
    code = np.array([kinds.index(s) for s in species.tolist()])
    n_kind = np.bincount(code, minlength=len(kinds))
    edges = np.linspace(0.0, r_max, n_bins + 1)
    shell_volume = 4.0 * np.pi / 3.0 * np.diff(edges**3)
    counts = np.zeros((n_configs, len(kinds), len(kinds), n_bins))
    volumes = np.abs(np.linalg.det(cells))
    for m in range(n_configs):
        i, j, d = pair_distances(positions[m], cells[m], r_max)
        k = np.minimum((d / r_max * n_bins).astype(int), n_bins - 1)
        np.add.at(counts[m], (code[i], code[j], k), 1.0)
    centre = n_kind[:, None]
    others = n_kind[None, :] - np.eye(len(kinds))  # N_b - delta_ab
    rho = others[None] / volumes[:, None, None]  # (M, a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        g_m = counts / (centre[None, :, :, None] * rho[..., None] * shell_volume)
    g_m = np.nan_to_num(g_m)  # a species alone in the cell has no like neighbours
    index = [(kinds.index(a), kinds.index(b)) for a, b in pairs]
    g = np.stack([g_m[:, a, b].mean(axis=0) for a, b in index])
    err = np.stack([g_m[:, a, b].std(axis=0, ddof=1) / np.sqrt(n_configs) if n_configs > 1 else np.full(n_bins, np.nan) for a, b in index])
    coordination = np.stack([np.cumsum(counts[:, a, b].mean(axis=0)) / n_kind[a] for a, b in index])
    density = np.array([rho[:, a, b].mean() for a, b in index])
    return RadialDistribution(r_A=0.5 * (edges[1:] + edges[:-1]), edges_A=edges, pairs=pairs, g=g, g_stderr=err,
                              coordination=coordination, density_A3=density)


def coordination_shells(positions: np.ndarray, cell: np.ndarray, species: Sequence, r_max: float,
                        tolerance_A: float = 1e-3) -> dict[tuple[Any, Any], list[tuple[float, float]]]:
    """Neighbour shells of a static structure: radius and mean count of b atoms around an a atom.

    Args:
        positions: (n_atoms, 3) Angstrom.
        cell: (3, 3) lattice vectors as rows, Angstrom.
        species: (n_atoms,) labels.
        r_max: largest shell radius, Angstrom.
        tolerance_A: distances closer than this belong to one shell, Angstrom.

    Returns:
        ``{(a, b): [(radius_A, count), ...]}`` for every ordered species pair, by increasing radius
        (bcc: 8 at sqrt(3) a / 2, then 6 at a).
    """
    species = np.asarray(species)
    kinds, pairs = _species_pairs(species)
    i, j, d = pair_distances(positions, cell, r_max)
    out = {}
    for a, b in pairs:
        sel = (species[i] == a) & (species[j] == b)
        dist = np.sort(d[sel])
        shells: list[tuple[float, float]] = []
        if dist.size:
            breaks = np.flatnonzero(np.diff(dist) > tolerance_A) + 1
            for group in np.split(dist, breaks):
                shells.append((float(group.mean()), group.size / int(np.sum(species == a))))
        out[(a, b)] = shells
    return out


@dataclasses.dataclass(frozen=True)
class QuenchResult:
    """A local minimum reached from one configuration.

    Attributes:
        positions: (n_atoms, 3) relaxed positions, Angstrom.
        energy_eV: potential energy there, eV.
        max_force_eV_per_A: largest atomic force there, eV/A.
        n_steps: optimiser steps taken.
        converged: whether the largest force fell below the requested ``fmax``.
    """

    positions: np.ndarray
    energy_eV: float
    max_force_eV_per_A: float
    n_steps: int
    converged: bool


def quench(calculator, positions: np.ndarray, cell: np.ndarray, numbers: Sequence[int], *, fmax_eV_per_A: float = 1e-4,
           max_steps: int = 3000, optimizer: str = "FIRE") -> QuenchResult:
    """Local minimisation of the energy over the positions at fixed cell (ASE optimiser).

    Args:
        calculator: an ASE calculator, e.g.
            :class:`thermoflow.potentials.ase_bridge.EnergyFnCalculator` (reuse one: it compiles once).
        positions: (n_atoms, 3) start, Angstrom.
        cell: (3, 3) lattice vectors as rows, Angstrom (periodic in all directions).
        numbers: (n_atoms,) atomic numbers.
        fmax_eV_per_A: stop when every atomic force is below this, eV/A.
        max_steps: optimiser step limit (``converged`` is False if reached).
        optimizer: ``"FIRE"`` or ``"BFGS"`` (``ase.optimize``).

    Returns:
        A :class:`QuenchResult`.

    Raises:
        ValueError: for an unknown optimizer.

    References:
        E. Bitzek et al., Phys. Rev. Lett. 97, 170201 (2006), doi:10.1103/PhysRevLett.97.170201.
    """
    from ase.optimize import BFGS, FIRE

    methods = {"FIRE": FIRE, "BFGS": BFGS}
    if optimizer not in methods:
        raise ValueError(f"optimizer must be one of {sorted(methods)}, got {optimizer!r}")
    atoms = Atoms(numbers=np.asarray(numbers), positions=np.asarray(positions, dtype=float), cell=np.asarray(cell, dtype=float), pbc=True)
    atoms.calc = calculator
    opt = methods[optimizer](atoms, logfile=None)
    converged = bool(opt.run(fmax=fmax_eV_per_A, steps=max_steps))
    max_force = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    return QuenchResult(positions=atoms.get_positions(), energy_eV=float(atoms.get_potential_energy()),
                        max_force_eV_per_A=max_force, n_steps=int(opt.nsteps), converged=converged)


def _dataset(positions: np.ndarray, cell: np.ndarray, numbers: Sequence[int], symprec_A: float):
    cell = np.asarray(cell, dtype=float)
    scaled = np.linalg.solve(cell.T, np.asarray(positions, dtype=float).T).T
    with warnings.catch_warnings():  # spglib 2.x announces its new error handling on every call
        warnings.simplefilter("ignore", DeprecationWarning)
        dataset = spglib.get_symmetry_dataset((cell, scaled, np.asarray(numbers, dtype=int)), symprec=symprec_A)
    if dataset is None:
        raise ValueError(f"spglib found no symmetry at symprec {symprec_A} A (overlapping atoms?)")
    return dataset


def space_group(positions: np.ndarray, cell: np.ndarray, numbers: Sequence[int], symprec_A: float = 1e-2) -> tuple[str, int]:
    """Space group of a periodic structure (spglib).

    Args:
        positions: (n_atoms, 3) Angstrom.
        cell: (3, 3) lattice vectors as rows, Angstrom.
        numbers: (n_atoms,) atomic numbers (or any integer species labels).
        symprec_A: distance tolerance, Angstrom.

    Returns:
        ``(international symbol, number)``, e.g. ``("Fm-3m", 225)``.

    Raises:
        ValueError: if spglib fails (e.g. overlapping atoms).

    References:
        A. Togo, K. Shinohara and I. Tanaka, arXiv:1808.01590 (spglib).
    """
    dataset = _dataset(positions, cell, numbers, symprec_A)
    return str(dataset.international), int(dataset.number)


#: I-43d (No. 220): Wyckoff 16c = (x, x, x) and equivalents
I43D_NUMBER = 220


def wyckoff_x_16c(positions: np.ndarray, cell: np.ndarray, numbers: Sequence[int], symprec_A: float = 1e-2) -> float:
    """Free parameter x of Wyckoff position 16c (x, x, x) of I-43d, e.g. cI16 lithium.

    spglib's standardised conventional cell (ITA setting of I-43d) is symmetrised at
    ``symprec_A``; for every atom there, the symmetry operations of the standard setting give its
    images, and an image on the body diagonal (x, x, x) gives x. The orbit of 16c holds
    (x, x, x), (x + 1/4, x + 1/4, x + 1/4) and (x + 1/2, ...), and the Euclidean normaliser of
    I-43d (Ia-3d) adds the inversion x -> -x, so x is reported as the convention-independent
    representative in [0, 1/8]: independent of the input's origin, orientation, setting and
    supercell. Assumes one 16c orbit (as in cI16).

    Args:
        positions: (n_atoms, 3) Angstrom.
        cell: (3, 3) lattice vectors as rows, Angstrom.
        numbers: (n_atoms,) atomic numbers.
        symprec_A: spglib distance tolerance, Angstrom.

    Returns:
        x in [0, 1/8] (fraction of the cubic lattice constant).

    Raises:
        ValueError: if the space group at ``symprec_A`` is not I-43d, no atom is on 16c, or the
            atoms on 16c give different x (more than one 16c orbit).

    References:
        M. Hanfland et al., Nature 408, 174 (2000), doi:10.1038/35041515;
        International Tables for Crystallography Vol. A (2016), doi:10.1107/97809553602060000114.
    """
    dataset = _dataset(positions, cell, numbers, symprec_A)
    if dataset.number != I43D_NUMBER:
        raise ValueError(f"space group {dataset.international} ({dataset.number}) at symprec {symprec_A} A, not I-43d (220)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ops = spglib.get_symmetry_from_database(dataset.hall_number)
    images = np.einsum("oab,nb->noa", ops["rotations"], dataset.std_positions) + ops["translations"][None]
    off_diagonal = images[..., 1:] - images[..., :1]
    on_diagonal = np.all(np.abs(off_diagonal - np.round(off_diagonal)) < 1e-6, axis=-1)  # (n_std_atoms, n_ops)
    xs = []
    for n in np.flatnonzero(on_diagonal.any(axis=1)):
        x = images[n, np.argmax(on_diagonal[n]), 0] % 0.25
        xs.append(min(x, 0.25 - x))
    if not xs:
        raise ValueError("no atom on Wyckoff position 16c (x, x, x) of I-43d")
    xs = np.asarray(xs)
    if np.ptp(xs) > 1e-6:
        raise ValueError(f"atoms on 16c give different x ({xs.min():.6f}-{xs.max():.6f}): more than one 16c orbit")
    return float(xs.mean())


@dataclasses.dataclass(frozen=True)
class MolecularCentres:
    """Molecules found by mutual nearest-neighbour pairing in one periodic configuration.

    Attributes:
        pairs: (n_molecules, 2) atom indices.
        bond_lengths_A: (n_molecules,) Angstrom.
        centres_A: (n_molecules, 3) bond midpoints (wrapped into the cell), Angstrom.
        paired_fraction: the fraction of atoms in a molecule.
    """

    pairs: np.ndarray
    bond_lengths_A: np.ndarray
    centres_A: np.ndarray
    paired_fraction: float


def molecular_centres(positions: np.ndarray, cell: np.ndarray, max_bond_A: float) -> MolecularCentres:
    """Diatomic molecules of a periodic configuration: atoms i and j form one when each is the other's nearest
    neighbour (any periodic image) and they are closer than ``max_bond_A``; the centre is the bond midpoint.

    Args:
        positions: (n_atoms, 3) Angstrom.
        cell: (3, 3) lattice vectors as rows, Angstrom.
        max_bond_A: longest bond counted, Angstrom (e.g. 1.0 for H2, whose bond is 0.74 A).

    Raises:
        ValueError: a non-positive ``max_bond_A`` or fewer than two atoms.

    References: the nearest-neighbour pairing of molecular centres in dense hydrogen, e.g. H. Xie et al.,
    Phys. Rev. Lett. 131, 126501 (2023), arXiv:2209.06095.
    """
    positions, cell = np.asarray(positions, dtype=float), np.asarray(cell, dtype=float)
    if not max_bond_A > 0 or len(positions) < 2:
        raise ValueError(f"molecular_centres needs max_bond_A > 0 and two atoms, got {max_bond_A} and {len(positions)}")
    i, j, d, vectors = primitive_neighbor_list("ijdD", (True, True, True), cell, positions, max_bond_A, self_interaction=False)
    n = len(positions)
    nearest = np.full(n, -1)
    best = np.full(n, np.inf)
    vector_to = np.zeros((n, 3))
    for a, b, dist, vec in zip(i, j, d, vectors):  # the ASE list holds each pair within the cutoff, every image
        if dist < best[a]:
            nearest[a], best[a], vector_to[a] = b, dist, vec
    pairs = np.array([(a, b) for a, b in enumerate(nearest) if b > a and nearest[b] == a], dtype=int).reshape(-1, 2)
    lengths = best[pairs[:, 0]] if len(pairs) else np.zeros(0)
    centres = positions[pairs[:, 0]] + 0.5 * vector_to[pairs[:, 0]] if len(pairs) else np.zeros((0, 3))
    frac = np.linalg.solve(cell.T, centres.T).T
    centres = (frac - np.floor(frac)) @ cell
    return MolecularCentres(pairs, lengths, centres, 2.0 * len(pairs) / n)


def powder_xrd(configurations: np.ndarray, cell: np.ndarray, symbol: str, *, wavelength_A: float = 0.4133,
               two_theta_deg: np.ndarray | None = None, width_deg: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Simulated powder X-ray diffraction pattern averaged over configurations (pymatgen's XRDCalculator:
    atomic scattering factors and the Lorentz-polarisation factor), each peak broadened by a Gaussian.

    Args:
        configurations: (n_configs, n_atoms, 3) or (n_atoms, 3) positions, Angstrom (one species).
        cell: (3, 3) lattice vectors as rows, Angstrom.
        symbol: the chemical symbol of the atoms.
        wavelength_A: X-ray wavelength, Angstrom (default 0.4133 A, a synchrotron wavelength of high-pressure
            experiments).
        two_theta_deg: (n,) grid of 2 theta, degrees (default 2-60 degrees in 0.02 steps).
        width_deg: Gaussian standard deviation of each peak, degrees.

    Returns:
        ``(two_theta_deg, intensity)``: the mean pattern scaled to a maximum of 100.

    Raises:
        ImportError: pymatgen is not installed (``pip install pymatgen``).

    References: pymatgen, S. P. Ong et al., Comput. Mater. Sci. 68, 314 (2013), doi:10.1016/j.commatsci.2012.10.028.
    """
    from pymatgen.analysis.diffraction.xrd import XRDCalculator
    from pymatgen.core import Lattice, Structure

    configurations = np.asarray(configurations, dtype=float)
    if configurations.ndim == 2:
        configurations = configurations[None]
    grid = np.arange(2.0, 60.0, 0.02) if two_theta_deg is None else np.asarray(two_theta_deg, dtype=float)
    calculator = XRDCalculator(wavelength=wavelength_A)
    lattice = Lattice(np.asarray(cell, dtype=float))
    total = np.zeros_like(grid)
    for x in configurations:
        pattern = calculator.get_pattern(Structure(lattice, [symbol] * len(x), x, coords_are_cartesian=True),
                                         scaled=False, two_theta_range=(float(grid[0]), float(grid[-1])))
        for angle, intensity in zip(pattern.x, pattern.y):
            total += intensity * np.exp(-0.5 * ((grid - angle) / width_deg) ** 2)
    total /= len(configurations)
    return grid, 100.0 * total / total.max() if total.max() > 0 else total
