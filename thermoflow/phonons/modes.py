"""Harmonic reference: Hessian -> dynamical matrix -> phonon modes and frequencies.

The Cartesian Hessian of the potential at the reference positions R0 is mass-weighted,
D = M^-1/2 H M^-1/2, and diagonalised, D e_k = omega_k^2 e_k. If the three uniform
translations are zero modes of D (any translation-invariant potential) they are projected out
exactly, leaving 3N - 3 modes; otherwise (e.g. an Einstein crystal) all 3N modes are kept.

Phonon coordinates q_k = e_k . (M^1/2 u), u = R - R0 (sqrt(amu) Angstrom). thermoflow's NCT works
in the dimensionless coordinates s_k = q_k sqrt(omega_k / hbar), in which the harmonic
Hamiltonian of mode k is (hbar omega_k / 2)(-d^2/ds_k^2 + s_k^2).

References: M. Born and K. Huang, Dynamical Theory of Crystal Lattices (Oxford, 1954);
A. Togo and I. Tanaka, Scr. Mater. 108, 1 (2015), doi:10.1016/j.scriptamat.2015.07.021.
"""

from __future__ import annotations

import dataclasses
import logging

import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.optimize

from thermoflow.potentials.base import EnergyFn, hessian
from thermoflow.units import HBAR_EV

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class HarmonicModes:
    """Phonon modes of a crystal at its reference positions (all NumPy, float64).

    Attributes:
        reference_positions: (n_atoms, 3) R0, Angstrom.
        cell: (3, 3) lattice vectors as rows, Angstrom.
        masses: (n_atoms,) amu.
        energy0_eV: static energy V(R0), eV.
        omega: (n_modes,) angular frequencies |omega_k| > 0, rad per ASE time unit.
        modes: (3 n_atoms, n_modes) orthonormal mass-weighted eigenvectors e_k (columns).
        imaginary: (n_modes,) True where omega_k^2 < 0 (the basis then uses |omega_k|).
        n_translations_removed: 3 if the uniform translations were projected out, else 0.
    """

    reference_positions: np.ndarray
    cell: np.ndarray
    masses: np.ndarray
    energy0_eV: float
    omega: np.ndarray
    modes: np.ndarray
    imaginary: np.ndarray
    n_translations_removed: int

    @property
    def n_atoms(self) -> int:
        return int(self.masses.shape[0])

    @property
    def n_modes(self) -> int:
        return int(self.omega.shape[0])

    @property
    def phonon_energies_eV(self) -> np.ndarray:
        """hbar omega_k, shape (n_modes,), eV."""
        return HBAR_EV * self.omega

    def displacement_matrix(self) -> np.ndarray:
        """B (3 n_atoms, n_modes) with u = B s for dimensionless mode coordinates s, Angstrom.

        B = M^-1/2 E diag(sqrt(hbar / omega)).
        """
        inv_sqrt_m = np.repeat(1.0 / np.sqrt(self.masses), 3)
        return inv_sqrt_m[:, None] * self.modes * np.sqrt(HBAR_EV / self.omega)[None, :]


def translation_vectors(masses: np.ndarray) -> np.ndarray:
    """Orthonormal mass-weighted uniform translations, shape (3 n_atoms, 3)."""
    n = masses.shape[0]
    t = np.zeros((3 * n, 3))
    for a in range(3):
        t[a::3, a] = np.sqrt(masses)
    return t / np.linalg.norm(t, axis=0, keepdims=True)


def dynamical_matrix(hessian_eV_per_A2: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Mass-weighted Hessian M^-1/2 H M^-1/2, (3N, 3N), eV / (Angstrom^2 amu)."""
    inv_sqrt_m = np.repeat(1.0 / np.sqrt(np.asarray(masses, dtype=np.float64)), 3)
    d = inv_sqrt_m[:, None] * np.asarray(hessian_eV_per_A2) * inv_sqrt_m[None, :]
    return 0.5 * (d + d.T)


def modes_from_hessian(
    hessian_eV_per_A2: np.ndarray,
    masses: np.ndarray,
    reference_positions: np.ndarray,
    cell: np.ndarray,
    energy0_eV: float,
    *,
    zero_tolerance: float = 1e-6,
    sum_rule_tolerance: float = 1e-2,
) -> HarmonicModes:
    """Phonon modes from a Cartesian Hessian.

    If the uniform translations are zero modes up to ``sum_rule_tolerance`` (relative), the
    acoustic sum rule is imposed: D is projected onto the complement of the translations,
    exactly as for a translation-invariant potential, and the 3N - 3 internal modes are kept. A
    Hessian from finite differences (the ``ase`` potential kind) or from a noisy model breaks the
    sum rule slightly; without the projection its translations become soft or imaginary modes
    whose sampled amplitudes are unphysically large. A violation above round-off is logged.

    Args:
        hessian_eV_per_A2: (3N, 3N) Hessian, eV/Angstrom^2.
        masses: (N,) amu.
        reference_positions: (N, 3) Angstrom.
        cell: (3, 3) Angstrom.
        energy0_eV: V(R0), eV.
        zero_tolerance: relative size (to the largest |omega^2|) below which an eigenvalue
            counts as zero.
        sum_rule_tolerance: relative size of D acting on the translations below which they are
            taken as zero modes and projected out (an Einstein crystal, D = k/m, is at 1).

    Raises:
        ValueError: if a mode other than the uniform translations has zero frequency (the
            harmonic basis is undefined: the structure is not a local minimum or saddle of
            finite curvature, e.g. isolated or unbound atoms).
    """
    masses = np.asarray(masses, dtype=np.float64)
    dyn = dynamical_matrix(hessian_eV_per_A2, masses)
    scale = max(np.abs(np.linalg.eigvalsh(dyn)).max(), 1e-300)
    trans = translation_vectors(masses)
    violation = np.linalg.norm(dyn @ trans) / (scale * np.sqrt(3.0))
    translation_invariant = violation < sum_rule_tolerance
    if translation_invariant and violation > 1e-8:
        log.warning(
            "the Hessian breaks translation invariance by %.1e (relative): acoustic sum rule imposed, "
            "translations projected out", violation,
        )
    if translation_invariant:
        basis = scipy.linalg.null_space(trans.T)  # (3N, 3N-3) orthonormal complement
        w2, vec = np.linalg.eigh(basis.T @ dyn @ basis)
        vec = basis @ vec
    else:
        w2, vec = np.linalg.eigh(dyn)
    tiny = np.abs(w2) < zero_tolerance * scale
    if tiny.any():
        raise ValueError(
            f"{int(tiny.sum())} phonon mode(s) with zero frequency besides the uniform "
            "translations: the harmonic basis is undefined. Check that the structure is a "
            "bound crystal at a stationary point of the potential (cutoff, volume, positions)."
        )
    return HarmonicModes(
        reference_positions=np.asarray(reference_positions, dtype=np.float64),
        cell=np.asarray(cell, dtype=np.float64),
        masses=masses,
        energy0_eV=float(energy0_eV),
        omega=np.sqrt(np.abs(w2)),
        modes=vec,
        imaginary=w2 < 0,
        n_translations_removed=3 if translation_invariant else 0,
    )


def degenerate_subspaces(omega: np.ndarray, rtol: float = 1e-6) -> list[np.ndarray]:
    """Index groups of (numerically) degenerate modes: runs of ascending ``omega`` (n_modes,) whose
    neighbours differ by less than ``rtol`` x omega. Returns the index arrays in ascending order."""
    order = np.argsort(omega)
    groups, current = [], [order[0]]
    for a, b in zip(order[:-1], order[1:]):
        if abs(omega[b] - omega[a]) <= rtol * max(abs(omega[b]), abs(omega[a])):
            current.append(b)
        else:
            groups.append(np.array(current))
            current = [b]
    groups.append(np.array(current))
    return groups


def align_modes(new: HarmonicModes, old: HarmonicModes, *, rtol: float = 1e-6) -> HarmonicModes:
    """``new``'s modes reordered and rotated so that mode k continues ``old``'s mode k.

    ``eigh`` returns an arbitrary orthonormal basis of a degenerate subspace (and an arbitrary
    sign of every vector), and after a change of the cell or of the potential, shells of
    different symmetry may also cross in frequency: mode k of the new basis need not be mode k of
    the old one, and a flow trained in the old coordinates would see them scrambled. Here each
    old mode is first assigned to a degenerate subspace G of ``new`` (relative tolerance
    ``rtol``) holding as much of it as possible (a linear assignment with |G| slots per subspace,
    scipy.optimize.linear_sum_assignment, maximising the summed squared projections); then within
    each subspace the orthogonal R minimising ||E_new[:, G] R - E_old[:, S]||_F over the old modes
    S assigned to it (orthogonal Procrustes, scipy.linalg.orthogonal_procrustes) is applied and the
    rotated vectors are put at the positions S. A rotation inside a degenerate subspace leaves every
    vector an eigenvector with the same frequency, so the result is the same set of modes, listed in
    ``old``'s order (``omega`` is then no longer sorted).

    Args:
        new: modes to align (e.g. recomputed at a strained cell), (3 n_atoms, n_modes).
        old: the modes whose order and orientation to follow, same shape.
        rtol: relative frequency difference below which modes count as degenerate.

    Returns:
        ``new`` with permuted ``omega``/``imaginary`` and rotated, permuted ``modes``.

    Raises:
        ValueError: if the two bases have different shapes.

    References: P. H. Schoenemann, Psychometrika 31, 1 (1966), doi:10.1007/BF02289451
    (orthogonal Procrustes problem); H. W. Kuhn, Naval Res. Logist. Q. 2, 83 (1955),
    doi:10.1002/nav.3800020109 (assignment problem).
    """
    if new.modes.shape != old.modes.shape:
        raise ValueError(f"cannot align modes of shape {new.modes.shape} to {old.modes.shape}")
    groups = degenerate_subspaces(new.omega, rtol)
    overlap = old.modes.T @ new.modes  # (old k, new i)
    weight = np.stack([np.sum(overlap[:, g] ** 2, axis=1) for g in groups], axis=1)  # (old k, group j)
    slots = np.concatenate([np.full(len(g), j) for j, g in enumerate(groups)])
    old_index, slot = scipy.optimize.linear_sum_assignment(-weight[:, slots])
    vectors = np.empty_like(new.modes)
    omega = np.empty_like(new.omega)
    imaginary = np.empty_like(new.imaginary)
    for j, g in enumerate(groups):
        targets = np.sort(old_index[slots[slot] == j])
        rotation, _ = scipy.linalg.orthogonal_procrustes(new.modes[:, g], old.modes[:, targets])
        vectors[:, targets] = new.modes[:, g] @ rotation
        omega[targets] = new.omega[g[0]]
        imaginary[targets] = new.imaginary[g[0]]
    return dataclasses.replace(new, omega=omega, modes=vectors, imaginary=imaginary)


def compute_harmonic_modes(
    energy_fn: EnergyFn, positions: np.ndarray, cell: np.ndarray, masses: np.ndarray, **kwargs
) -> HarmonicModes:
    """Phonon modes of ``energy_fn`` at ``positions``; Hessian by automatic differentiation.

    Shapes and errors as in :func:`modes_from_hessian`.
    """
    pos = jnp.asarray(positions, dtype=jnp.float64)
    cel = jnp.asarray(cell, dtype=jnp.float64)
    h = np.asarray(hessian(energy_fn, pos, cel))
    e0 = float(energy_fn(pos, cel))
    return modes_from_hessian(h, masses, positions, cell, e0, **kwargs)
