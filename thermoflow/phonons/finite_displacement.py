"""Large-cell Hessians by symmetry-reduced finite displacements (phonopy).

Automatic differentiation (:func:`thermoflow.potentials.base.hessian`) needs one
Hessian-vector product per Cartesian degree of freedom, 3N of them, whatever the symmetry. A
crystal with a few symmetry-distinct atoms needs far fewer: phonopy (a well-kept library; we
use it rather than our own symmetry code) picks the displacements of the symmetry-distinct
atoms, and rebuilds all N^2 force-constant blocks from the forces of those displaced cells
with the space group. For bcc (one distinct atom) that is 2 displaced cells whatever N,
against 3N columns by autodiff. The forces are evaluated by the run's own jitted ``energy_fn``
(a native JAX potential, or an ASE calculator through its bridge), batched with ``vmap``.

The error is the finite-difference one, O(delta^2) with central (plus-minus) displacements:
on lithium dp4 (bcc, 16 atoms) the largest Hessian element is off by 3.0e-3 (relative) at
delta = 0.01 A, 7.5e-4 at 0.005 A (measured against autodiff), hence the default 0.001 A
(~3e-5 by that delta^2 scaling, not measured): the forces of a float64 JAX potential are exact to round-off, so a small step costs
nothing. Tests: ``tests/phonons/test_finite_displacement.py``; timings and memory against
autodiff: ``benchmarks/harmonic_reference.py``.

References: K. Parlinski, Z. Q. Li, Y. Kawazoe, Phys. Rev. Lett. 78, 4063 (1997),
doi:10.1103/PhysRevLett.78.4063 (finite displacements); A. Togo, L. Chaput, T. Tadano,
I. Tanaka, J. Phys.: Condens. Matter 35, 353001 (2023), doi:10.1088/1361-648X/acd831 (phonopy).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.potentials.base import EnergyFn

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class DisplacementHessian:
    """A Hessian from finite displacements and how it was made.

    Attributes:
        hessian: (3N, 3N) d^2E/dR_ia dR_jb, eV/Angstrom^2, symmetric, float64.
        n_displacements: displaced cells whose forces were evaluated.
        displacement_A: the displacement amplitude, Angstrom.
        space_group: international symbol phonopy found for the cell.
        seconds: wall time of the force evaluations and the reconstruction.
    """

    hessian: np.ndarray
    n_displacements: int
    displacement_A: float
    space_group: str
    seconds: float


def phonopy_hessian(
    energy_fn: EnergyFn,
    positions: np.ndarray,
    cell: np.ndarray,
    numbers: np.ndarray,
    *,
    displacement_A: float = 1e-3,
    symprec: float = 1e-5,
    batch_size: int = 8,
) -> DisplacementHessian:
    """Cartesian Hessian of ``energy_fn`` at ``positions`` by phonopy's symmetry-reduced displacements.

    The cell is taken as it is (phonopy supercell matrix = identity): its own space group, lattice
    translations included, reduces the displacements. Plus-minus displacements are used always,
    so the error is O(delta^2). Phonopy's translational-invariance and index-permutation
    symmetrisation of the force constants is applied, then H is symmetrised, (H + H^T) / 2.

    Args:
        energy_fn: ``energy_fn(positions (N, 3) A, cell (3, 3) A) -> eV``; only ``jax.grad`` is used.
        positions: (N, 3) reference positions, Angstrom (a stationary point: the residual forces
            are not subtracted by phonopy unless they are symmetric).
        cell: (3, 3) lattice vectors as rows, Angstrom.
        numbers: (N,) atomic numbers (the symmetry sees species).
        displacement_A: displacement amplitude delta, Angstrom.
        symprec: phonopy/spglib symmetry tolerance, Angstrom.
        batch_size: displaced cells per vmapped force call (memory ~ batch_size forward+backward passes).

    Returns:
        :class:`DisplacementHessian` (``hessian`` indexed ``3 * atom + direction``).

    Raises:
        ValueError: for a non-positive displacement or batch size, or shapes that do not match.
        RuntimeError: if phonopy's cell does not keep the atom order (the indices would not match).
    """
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    numbers = np.asarray(numbers, dtype=int)
    n = positions.shape[0]
    if not displacement_A > 0:
        raise ValueError(f"displacement_A must be positive, got {displacement_A}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if positions.shape != (n, 3) or cell.shape != (3, 3) or numbers.shape != (n,):
        raise ValueError(f"expected positions (N, 3), cell (3, 3), numbers (N,); got {positions.shape}, {cell.shape}, {numbers.shape}")

    start = time.perf_counter()
    unit = PhonopyAtoms(numbers=numbers, cell=cell, scaled_positions=positions @ np.linalg.inv(cell))
    phonon = Phonopy(unit, supercell_matrix=np.eye(3, dtype=int), primitive_matrix="P", symprec=symprec, log_level=0)
    phonon.generate_displacements(distance=displacement_A, is_plusminus=True)
    shift = (np.asarray(phonon.supercell.scaled_positions) - positions @ np.linalg.inv(cell) + 0.5) % 1.0 - 0.5
    if np.max(np.abs(shift)) > 1e-8:
        raise RuntimeError("phonopy reordered the atoms of the cell; the Hessian's indices would not match")
    phonon.forces = displaced_forces(energy_fn, positions, cell, phonon.displacements, batch_size=batch_size)
    n_displaced = len(phonon.displacements)
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants()
    fc = np.asarray(phonon.force_constants)  # (N, N, 3, 3): d^2E / dR_ia dR_jb as fc[i, j, a, b]
    h = fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    h = 0.5 * (h + h.T)
    seconds = time.perf_counter() - start
    symbol = phonon.symmetry.get_international_table()
    log.info("phonopy Hessian: %d displaced cells (space group %s, delta %.3g A) in %.1f s", n_displaced, symbol, displacement_A, seconds)
    return DisplacementHessian(hessian=h, n_displacements=n_displaced, displacement_A=displacement_A, space_group=symbol, seconds=seconds)


def displaced_forces(energy_fn: EnergyFn, positions: np.ndarray, cell: np.ndarray, displacements, *, batch_size: int = 8) -> np.ndarray:
    """Forces of ``energy_fn`` on phonopy's displaced cells, (K, N, 3) eV/Angstrom.

    Each displacement ``(atom, dx, dy, dz)`` (phonopy's ``displacements``, Angstrom) is applied to
    our own ``positions`` (N, 3): phonopy wraps its displaced cells into the cell, and a potential
    tied to site positions (or one whose neighbour images were fixed for these positions) must see
    the same configuration as at the reference. Batched through one jitted ``vmap`` of
    ``batch_size`` cells (the last batch padded: one compiled shape).

    Raises:
        ValueError: if a force is not finite.
    """
    positions = np.asarray(positions, dtype=np.float64)
    displaced = np.repeat(positions[None], len(displacements), axis=0)
    for k, (atom, *step) in enumerate(displacements):
        displaced[k, atom] += np.asarray(step, dtype=np.float64)
    cell_j = jnp.asarray(cell)
    forces_fn = jax.jit(jax.vmap(lambda r: -jax.grad(energy_fn)(r, cell_j)))
    forces = []
    for lo in range(0, len(displaced), batch_size):
        chunk = displaced[lo : lo + batch_size]
        pad = batch_size - len(chunk)
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk
        forces.append(np.asarray(forces_fn(jnp.asarray(padded)))[: len(chunk)])
    forces = np.concatenate(forces)
    if not np.all(np.isfinite(forces)):
        raise ValueError("the potential's forces are not finite on the displaced cells")
    return forces
