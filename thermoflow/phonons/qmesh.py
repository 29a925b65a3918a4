"""Harmonic thermodynamics of the infinite crystal: force constants interpolated to a q-point mesh.

An NCT, Gaussian or Gamma-point harmonic calculation in a periodic supercell describes only the
phonons whose wavevectors q are commensurate with that supercell: its Gamma-point Hessian is
exactly the crystal's dynamical matrix at those q-points (images included). The free energy per
atom therefore carries a finite-size (q-point sampling) error, and it differs between the
supercells two phases are compared in. At the harmonic level that error is cheap to measure:
force constants from a large supercell (phonopy's symmetry-reduced finite displacements, forces
from the run's own potential) give the dynamical matrix at any q by Fourier interpolation, and a
dense mesh gives the infinite crystal's harmonic F, E, S, ZPE per atom. The difference to a
supercell's own Gamma-point value is its harmonic finite-size correction.

Phonopy (a well-kept library) builds the supercell, the displacements, the force constants and
the frequencies at each q; the thermodynamic sums are thermoflow's own
(:func:`thermoflow.phonons.thermo.harmonic_thermodynamics`, the formula every other harmonic
number here uses), so that a mesh of exactly the commensurate q-points reproduces the supercell's
Gamma-point value (tested). The 3 acoustic modes at q = 0 (uniform translations) are excluded, as
in the supercell calculations (a potential pinned to lattice sites, e.g. an Einstein crystal, has none).

References: K. Parlinski, Z. Q. Li, Y. Kawazoe, Phys. Rev. Lett. 78, 4063 (1997),
doi:10.1103/PhysRevLett.78.4063; A. Togo, L. Chaput, T. Tadano, I. Tanaka, J. Phys.: Condens.
Matter 35, 353001 (2023), doi:10.1088/1361-648X/acd831 (phonopy); A. A. Maradudin, E. W.
Montroll, G. H. Weiss, *Theory of Lattice Dynamics in the Harmonic Approximation* (1963) (mesh
sums over the Brillouin zone).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from typing import Callable, Sequence

import ase.units
import jax.numpy as jnp
import numpy as np
from ase import Atoms

from thermoflow.phonons.finite_displacement import displaced_forces
from thermoflow.phonons.thermo import harmonic_thermodynamics
from thermoflow.potentials.base import EnergyFn
from thermoflow.units import KB_EV_PER_K

log = logging.getLogger(__name__)

#: h in eV THz^-1 (phonopy's frequencies are nu in THz; phonon energy h nu)
PLANCK_EV_PER_THZ = float(ase.units._hplanck / ase.units._e * 1e12)
#: |nu| below this at q = 0 is a uniform translation (acoustic), THz
ACOUSTIC_THZ = 1e-3


@dataclasses.dataclass(frozen=True)
class MeshThermodynamics:
    """Harmonic thermodynamics per atom on a set of q-points (vibrational part: no static energy).

    Attributes:
        temperatures_K: (T,) temperatures, K.
        free_energy_eV_per_atom, energy_eV_per_atom: (T,) vibrational F and E, eV/atom (zero-point included).
        entropy_kB_per_atom: (T,) S, k_B/atom.
        zero_point_energy_eV_per_atom: sum of hbar omega / 2 per atom, eV.
        n_qpoints: q-points summed (irreducible points of a symmetric mesh count with their weights).
        frequency_min_THz: lowest frequency over the q-points (negative: imaginary, see ``undefined_reason``).
        undefined_reason: None, or why F, E, S are undefined (imaginary modes: no harmonic partition function;
            the arrays are then NaN).
    """

    temperatures_K: np.ndarray
    free_energy_eV_per_atom: np.ndarray
    energy_eV_per_atom: np.ndarray
    entropy_kB_per_atom: np.ndarray
    zero_point_energy_eV_per_atom: float
    n_qpoints: int
    frequency_min_THz: float
    undefined_reason: str | None = None


def thermodynamics_from_frequencies(frequencies_THz: np.ndarray, weights: np.ndarray, qpoints: np.ndarray,
                                    temperatures_K: Sequence[float]) -> MeshThermodynamics:
    """Weighted Brillouin-zone average of the harmonic F, E, S of each q-point's modes, per atom.

    Args:
        frequencies_THz: (Q, B) phonon frequencies nu (negative: imaginary), THz; B = 3 x atoms of the primitive cell.
        weights: (Q,) q-point weights (any normalisation).
        qpoints: (Q, 3) reduced q-points (q = 0 identifies the acoustic translations).
        temperatures_K: temperatures, K (> 0).

    Returns:
        :class:`MeshThermodynamics` (per atom of the primitive cell).

    Raises:
        ValueError: for mismatched shapes, non-positive weights or temperatures.
    """
    nu = np.asarray(frequencies_THz, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    q = np.asarray(qpoints, dtype=np.float64)
    temps = np.asarray(temperatures_K, dtype=np.float64).reshape(-1)
    if nu.ndim != 2 or w.shape != (nu.shape[0],) or q.shape != (nu.shape[0], 3):
        raise ValueError(f"expected frequencies (Q, B), weights (Q,), q-points (Q, 3); got {nu.shape}, {w.shape}, {q.shape}")
    if not np.all(w > 0) or not np.all(temps > 0):
        raise ValueError("q-point weights and temperatures must be positive")
    w = w / w.sum()
    n_atoms = nu.shape[1] // 3
    at_gamma = np.all(np.abs(q - np.round(q)) < 1e-10, axis=1)
    keep = ~(at_gamma[:, None] & (np.abs(nu) < ACOUSTIC_THZ))
    n_dropped = (~keep).sum(axis=1)
    if np.any(n_dropped > 3):
        raise ValueError(f"more than 3 modes below {ACOUSTIC_THZ} THz at q = 0 ({n_dropped.max()}): not a crystal's 3 translations")
    nan = np.full(len(temps), np.nan)
    kept = nu[keep]
    if np.any(kept <= 0):
        reason = (f"{int((kept <= 0).sum())} imaginary (or zero) mode(s) at the q-points, lowest {kept.min():.3f} THz: "
                  "the harmonic crystal is unstable and has no free energy")
        return MeshThermodynamics(temps, nan, nan, nan, float("nan"), len(w), float(kept.min()), reason)
    energies = [PLANCK_EV_PER_THZ * nu[i][keep[i]] for i in range(len(w))]
    zpe = sum(wi * 0.5 * e.sum() for wi, e in zip(w, energies)) / n_atoms
    f, u, s = (np.empty(len(temps)) for _ in range(3))
    for k, t in enumerate(temps):
        th = [harmonic_thermodynamics(e, KB_EV_PER_K * t) for e in energies]
        f[k] = sum(wi * h.free_energy_eV for wi, h in zip(w, th)) / n_atoms
        u[k] = sum(wi * h.energy_eV for wi, h in zip(w, th)) / n_atoms
        s[k] = sum(wi * h.entropy_kB for wi, h in zip(w, th)) / n_atoms
    return MeshThermodynamics(temps, f, u, s, float(zpe), len(w), float(kept.min()))


@dataclasses.dataclass
class InterpolatedPhonons:
    """Force constants of a supercell, ready to give frequencies at any q (phonopy object inside).

    Attributes:
        phonopy: the :class:`phonopy.Phonopy` object (force constants produced and symmetrised).
        supercell_matrix: (3, 3) integer repetition of the unit cell the force constants come from.
        n_displacements: displaced supercells whose forces were evaluated.
        n_supercell_atoms: atoms in the force-constant supercell.
        space_group: international symbol phonopy found.
        seconds: wall time of the forces and the force constants.
    """

    phonopy: object
    supercell_matrix: np.ndarray
    n_displacements: int
    n_supercell_atoms: int
    space_group: str
    seconds: float

    def thermodynamics(self, qpoints: np.ndarray, weights: np.ndarray, temperatures_K: Sequence[float]) -> MeshThermodynamics:
        """Harmonic thermodynamics per atom summed over ``qpoints`` (Q, 3), reduced coordinates of the primitive cell."""
        self.phonopy.run_qpoints(np.asarray(qpoints, dtype=np.float64))
        nu = self.phonopy.qpoints.frequencies
        return thermodynamics_from_frequencies(nu, weights, qpoints, temperatures_K)

    def mesh_thermodynamics(self, mesh: Sequence[int], temperatures_K: Sequence[float]) -> MeshThermodynamics:
        """On a Gamma-centred ``mesh`` (3 ints) of the primitive cell's Brillouin zone, reduced by symmetry."""
        self.phonopy.run_mesh(list(mesh), is_gamma_center=True, is_mesh_symmetry=True)
        m = self.phonopy.mesh
        return thermodynamics_from_frequencies(m.frequencies, m.weights, m.qpoints, temperatures_K)

    def commensurate_thermodynamics(self, supercell_matrix: np.ndarray, temperatures_K: Sequence[float]) -> MeshThermodynamics:
        """On the q-points commensurate with ``supercell_matrix`` (3, 3) of the *unit cell* given to
        :func:`interpolated_phonons`: what a Gamma-point calculation in that supercell samples."""
        from phonopy.harmonic.dynmat_to_fc import get_commensurate_points

        to_primitive = np.asarray(self.phonopy.primitive_matrix, dtype=np.float64)  # unit cell -> primitive
        relative = np.linalg.inv(to_primitive) @ np.asarray(supercell_matrix, dtype=np.float64)
        integer = np.rint(relative).astype(int)
        if np.max(np.abs(relative - integer)) > 1e-8:
            raise ValueError(f"supercell {np.asarray(supercell_matrix).tolist()} is not a supercell of the primitive cell")
        q = get_commensurate_points(integer)
        return self.thermodynamics(q, np.ones(len(q)), temperatures_K)


def interpolated_phonons(
    make_energy_fn: Callable[[Atoms], EnergyFn],
    unitcell: Atoms,
    supercell_matrix: Sequence[int] | np.ndarray,
    *,
    displacement_A: float = 1e-3,
    symprec: float = 1e-5,
    batch_size: int = 4,
) -> InterpolatedPhonons:
    """Force constants of ``unitcell`` repeated by ``supercell_matrix`` from phonopy's plus-minus displacements.

    Args:
        make_energy_fn: builds ``energy_fn(positions (M, 3) A, cell (3, 3) A) -> eV`` for an ASE ``Atoms``
            (the supercell phonopy makes); only its forces (``jax.grad``) are used.
        unitcell: the crystal's unit cell (positions at the reference, e.g. the structure file's cell).
        supercell_matrix: 3 ints (diagonal) or a (3, 3) integer matrix, relative to ``unitcell``.
        displacement_A: displacement amplitude, Angstrom (error O(delta^2); see
            :mod:`thermoflow.phonons.finite_displacement`).
        symprec: symmetry tolerance, Angstrom.
        batch_size: displaced supercells per vmapped force call.

    Returns:
        :class:`InterpolatedPhonons`; the primitive cell is phonopy's ('auto').

    Raises:
        ValueError: for a non-positive displacement, or forces that are not finite.
    """
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    if not displacement_A > 0:
        raise ValueError(f"displacement_A must be positive, got {displacement_A}")
    start = time.perf_counter()
    unit = PhonopyAtoms(numbers=unitcell.get_atomic_numbers(), cell=unitcell.cell.array,
                        scaled_positions=unitcell.get_scaled_positions(), masses=unitcell.get_masses())
    smat = np.asarray(supercell_matrix, dtype=int)
    smat = np.diag(smat) if smat.ndim == 1 else smat
    with warnings.catch_warnings():  # phonopy warns that 'auto' finds a non-identity primitive cell: wanted here
        warnings.simplefilter("ignore")
        phonon = Phonopy(unit, supercell_matrix=smat, primitive_matrix="auto",
                         symprec=symprec, log_level=0)
    phonon.generate_displacements(distance=displacement_A, is_plusminus=True)
    sc = phonon.supercell
    atoms = Atoms(numbers=sc.numbers, cell=sc.cell, scaled_positions=sc.scaled_positions, masses=sc.masses, pbc=True)
    energy_fn = make_energy_fn(atoms)
    phonon.forces = displaced_forces(energy_fn, atoms.get_positions(), atoms.cell.array, phonon.displacements, batch_size=batch_size)
    phonon.produce_force_constants()
    # the acoustic sum rule only holds for a potential invariant under uniform translations (not,
    # e.g., one tied to lattice sites): impose it (with index symmetry) only then
    r0, cell_j = jnp.asarray(atoms.get_positions()), jnp.asarray(atoms.cell.array)
    e0, e1 = (float(energy_fn(r, cell_j)) for r in (r0, r0 + jnp.asarray([0.13, -0.07, 0.05])))
    if abs(e1 - e0) <= 1e-8 * max(1.0, abs(e0)):
        phonon.symmetrize_force_constants()
    seconds = time.perf_counter() - start
    symbol = phonon.symmetry.get_international_table()
    log.info("force constants of a %d-atom supercell: %d displaced cells (space group %s) in %.1f s", len(atoms), len(phonon.displacements), symbol, seconds)
    return InterpolatedPhonons(phonon, smat, len(phonon.displacements), len(atoms), symbol, seconds)
