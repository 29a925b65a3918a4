"""Cubic force constants averaged over a Gaussian density matrix, and the bubble free energy.

Beyond the best Gaussian (:mod:`thermoflow.phonons.scha`) the leading correction to the free
energy is second order in the cubic anharmonicity, with the cubic force constants averaged
over the Gaussian itself, Phi_abc = < d^3 V / dq_a dq_b dq_c >_{rho_G} (mass-weighted mode
coordinates q of the Gaussian's modes; the average renormalises them as the Gaussian renormalises
the frequencies). By Stein's lemma applied to the Hessian,

    Phi_abc = < H_ab(q) q_c > / sigma_c^2,      sigma_c^2 = <q_c^2>,

from samples drawn in antithetic pairs (q, -q), half-batch whitened: the even part of H (the
harmonic and quartic terms) cancels exactly and a purely cubic potential is reproduced exactly.

The bubble (second-order, thermal) free energy of V3 = (1/6) sum Phi_abc q_a q_b q_c about
oscillators omega_a with occupations n_a (A. A. Maradudin and A. E. Fein, Phys. Rev. 128, 2589
(1962), doi:10.1103/PhysRev.128.2589; R. A. Cowley, Rep. Prog. Phys. 31, 123 (1968),
doi:10.1088/0034-4885/31/1/303) is

    F3 = -(hbar^2 / 48) sum_abc Phi_abc^2 / (omega_a omega_b omega_c)
         x { [(1+n_a)(1+n_b)(1+n_c) - n_a n_b n_c] / (omega_a + omega_b + omega_c)
             + 3 [(1+n_a)(1+n_b) n_c - n_a n_b (1+n_c)] / (omega_a + omega_b - omega_c) },

(the second bracket is finite at omega_a + omega_b = omega_c: n_a n_b (1+n_c) hbar/kT). F_G + F3
is a perturbative estimate, not a bound. A plain plug-in of the noisy Phi in the square is biased
downwards by the sampling noise; :func:`cubic_force_constants` estimates Phi in independent groups,
projects each onto the tensors invariant under the crystal's space group (symmetry-breaking noise
removed), and F3 by the unbiased U-statistic over pairs of different groups, with a jackknife
error bar.

References: I. Errea, M. Calandra, F. Mauri, Phys. Rev. B 89, 064302 (2014),
doi:10.1103/PhysRevB.89.064302 and R. Bianco et al., Phys. Rev. B 96, 014111 (2017),
doi:10.1103/PhysRevB.96.014111 (Gaussian-averaged anharmonic force constants);
C. Stein, Ann. Stat. 9, 1135 (1981), doi:10.1214/aos/1176345632.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from thermoflow.io.progress import read_progress, save_progress
from thermoflow.parallel import map_samples
from thermoflow.phonons.modes import HarmonicModes
from thermoflow.phonons.scha import antithetic_normals, mode_to_cartesian, mode_variances
from thermoflow.phonons.symmetry import potential_has_symmetry, space_group_operations
from thermoflow.potentials.base import EnergyFn, hessian as cartesian_hessian
from thermoflow.units import HBAR_EV

log = logging.getLogger(__name__)

#: Hessian columns evaluated at once per sample (memory ~ chunk_size x this many reverse passes;
#: jax.hessian would hold all 3N at once, tens of GB for a Deep Potential)
_HESSIAN_COLUMNS = 8


@dataclasses.dataclass(frozen=True)
class CubicForceConstants:
    """Gaussian-averaged cubic force constants and the bubble free energy (totals).

    Attributes:
        phi3: (D, D, D) Phi_abc in the mass-weighted modes, eV / (amu^3/2 A^3), symmetric.
        bubble_free_energy_eV, bubble_free_energy_stderr_eV: F3 (unbiased, jackknife error).
        n_samples: samples used.
    """

    phi3: np.ndarray
    bubble_free_energy_eV: float
    bubble_free_energy_stderr_eV: float
    n_samples: int


def _symmetrise(t: np.ndarray) -> np.ndarray:
    return (t + t.transpose(0, 2, 1) + t.transpose(1, 0, 2) + t.transpose(1, 2, 0) + t.transpose(2, 0, 1) + t.transpose(2, 1, 0)) / 6.0


def symmetrise_cubic(phi3: np.ndarray, modes: HarmonicModes, operations=None) -> np.ndarray:
    """Project mode-basis cubic force constants onto the space-group-invariant ones.

    Phi is taken to Cartesian (mass-weighted) coordinates, averaged over the lattice translations
    and then over one operation per rotation (together, the average over the whole space group
    of a symmorphic or non-symmorphic crystal), and taken back. Sampling noise that breaks the
    symmetry is removed; an invariant tensor is unchanged.

    A translation-invariant tensor is fixed by its slices whose first atom is one per translation
    orbit (the primitive cell's atoms), so both averages are taken on those slices only and the
    whole tensor is rebuilt once at the end: about three passes over the (3N)^3 tensor instead of
    one per operation (fcc 108 atoms: 156 operations). The plain average over every operation is
    kept in the tests as the reference.

    Args:
        phi3: (D, D, D) in the mass-weighted modes of ``modes``.
        modes: the modes (reference positions, cell, masses, polarisation vectors).
        operations: from :func:`space_group_operations` (computed if None).

    Returns:
        (D, D, D) the projection.
    """
    translations, cosets = space_group_operations(modes) if operations is None else operations
    e = np.asarray(modes.modes)  # (3N, D)
    n = modes.n_atoms
    cart = np.einsum("ia,jb,kc,abc->ijk", e, e, e, np.asarray(phi3), optimize=True).reshape(n, 3, n, 3, n, 3)
    rep, which = _translation_orbits(translations, n)
    inverse = [np.argsort(perm) for _, perm in translations]

    def translated(reduced, atom):
        # slice [atom] of the translation-invariant tensor whose representative slices are `reduced`:
        # S[p(r), j, k] = S[r, p^-1(j), p^-1(k)] for the translation p with p(r) = atom
        inv = inverse[which[atom]]
        return reduced[rep[atom]][:, inv][:, :, :, inv]

    reps = np.unique(rep)
    # translation average of the representative slices: S_T[r] = mean_t cart[p_t^-1(r), p_t^-1(.), p_t^-1(.)]
    reduced = {r: sum(cart[inv[r]][:, inv][:, :, :, inv] for inv in inverse) / len(inverse) for r in reps}
    # coset average of the representative slices: S[r] = mean_g R R R S_T[g^-1(r), g^-1(.), g^-1(.)]
    averaged = {}
    for r in reps:
        acc = np.zeros((3, n, 3, n, 3))
        for rot, perm in cosets:
            inv = np.argsort(perm)
            t = translated(reduced, inv[r])[:, inv][:, :, :, inv]
            acc += np.einsum("xa,yb,zc,ajbkc->xjykz", rot, rot, rot, t, optimize=True)
        averaged[r] = acc / len(cosets)
    full = np.stack([translated(averaged, a) for a in range(n)]).reshape(3 * n, 3 * n, 3 * n)
    return np.einsum("ia,jb,kc,ijk->abc", e, e, e, full, optimize=True)


def _translation_orbits(translations, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every atom a: its orbit's representative r (the orbit's lowest index) and the index of a
    translation whose permutation maps r to a. The pure translations of a crystal's cell form a group
    acting freely on the atoms, so each orbit meets every translation once."""
    rep = np.full(n, -1)
    which = np.full(n, -1)
    for a in range(n):
        if rep[a] >= 0:
            continue
        for index, (_, perm) in enumerate(translations):
            if rep[perm[a]] < 0:
                rep[perm[a]], which[perm[a]] = a, index
    if (rep < 0).any():
        raise ValueError("the translations do not include the identity")
    return rep, which


def bubble_weights(omega: np.ndarray, kT_eV: float) -> np.ndarray:
    """W (D, D, D) with F3 = sum_abc W_abc Phi_abc^2 (module docstring), eV per (eV/(amu^3/2 A^3))^2.

    Args:
        omega: (D,) frequencies, rad per ASE time unit (> 0).
        kT_eV: thermal energy, eV (> 0).

    Raises:
        ValueError: for non-positive frequencies or kT.
    """
    w = np.asarray(omega, dtype=np.float64)
    if not (w > 0).all():
        raise ValueError("the bubble free energy needs positive frequencies")
    if not kT_eV > 0:
        raise ValueError(f"kT must be positive, got {kT_eV}")
    n = 1.0 / np.expm1(HBAR_EV * w / kT_eV)
    wa, wb, wc = w[:, None, None], w[None, :, None], w[None, None, :]
    na, nb, nc = n[:, None, None], n[None, :, None], n[None, None, :]
    total = wa + wb + wc
    summed = ((1 + na) * (1 + nb) * (1 + nc) - na * nb * nc) / total
    diff = wa + wb - wc
    resonant = np.abs(diff) < 1e-8 * total
    numerator = (1 + na) * (1 + nb) * nc - na * nb * (1 + nc)
    difference = np.where(resonant, na * nb * (1 + nc) * HBAR_EV / kT_eV, numerator / np.where(resonant, 1.0, diff))
    return -(HBAR_EV**2 / 48.0) * (summed + 3.0 * difference) / (wa * wb * wc)


def bubble_free_energy(phi3: np.ndarray, omega: np.ndarray, kT_eV: float) -> float:
    """F3 of a given (noise-free) Phi, eV (the plug-in formula of the module docstring)."""
    return float(np.sum(bubble_weights(omega, kT_eV) * np.asarray(phi3) ** 2))


def cubic_force_constants(
    energy_fn: EnergyFn,
    modes: HarmonicModes,
    kT_eV: float,
    *,
    n_samples: int = 512,
    n_groups: int = 8,
    seed: int = 0,
    chunk_size: int | None = 32,
    symmetrise: bool = True,
    mesh: Mesh | None = None,
    progress_dir: str | Path | None = None,
) -> CubicForceConstants:
    """Phi_abc = < d^3 V >_G over the thermal Gaussian of ``modes`` and the bubble F3.

    Args:
        energy_fn: potential ``(positions (N, 3) A, cell (3, 3) A) -> eV``.
        modes: the Gaussian's modes (frequencies > 0); samples q_c ~ N(0, <q_c^2>) of thermal
            oscillators at kT.
        kT_eV: thermal energy, eV.
        n_samples: samples in all; each costs one Hessian (D Hessian-vector products).
        n_groups: independent groups for the unbiased F3 and its error bar (>= 3).
        seed: random seed.
        chunk_size: Hessians of at most this many samples at once (None: all at once), each
            built 8 columns at a time.
        symmetrise: project each group's estimate onto the space-group-invariant tensors
            (:func:`symmetrise_cubic`): on fcc neon (32 atoms) this removes most of the noise of
            512 samples (the perturbative flow built on it reaches the F of 2048 raw samples).
        mesh: split the samples' Hessians over this device mesh (:mod:`thermoflow.parallel`;
            None: one device).
        progress_dir: a directory where each group's estimate is written (atomically,
            ``group_NNN.npz``) once done; a call with the same settings reads the groups found
            there and computes only the others (the groups are independent, so the result is
            the uninterrupted one). None: nothing written.

    Raises:
        ValueError: for invalid arguments (n_samples not a multiple of 2 n_groups, fewer than
            3 groups, non-positive frequencies), a potential that is not finite on the samples,
            or a group file in ``progress_dir`` written with other settings.
    """
    if n_groups < 3:
        raise ValueError(f"n_groups must be >= 3 (unbiased estimate with an error bar), got {n_groups}")
    if n_samples < 2 * n_groups or n_samples % (2 * n_groups):
        raise ValueError(f"n_samples must be a positive multiple of 2 n_groups = {2 * n_groups}, got {n_samples}")
    if (modes.imaginary.any()) or not (modes.omega > 0).all():
        raise ValueError("cubic force constants need a stable Gaussian (real, positive frequencies)")
    dim = modes.n_modes
    sigma = np.sqrt(mode_variances(modes.omega, kT_eV))
    r0 = jnp.asarray(modes.reference_positions)
    cell = jnp.asarray(modes.cell)
    to_cartesian = jnp.asarray(mode_to_cartesian(modes))

    def hessian(q):
        h = cartesian_hessian(energy_fn, r0 + (to_cartesian @ q).reshape(r0.shape), cell, chunk_size=_HESSIAN_COLUMNS)
        return to_cartesian.T @ h @ to_cartesian

    @jax.jit
    def hessians(q):
        return map_samples(hessian, q, chunk_size=chunk_size, mesh=mesh)

    operations = space_group_operations(modes) if symmetrise else None
    if operations is not None and not potential_has_symmetry(energy_fn, modes, operations):
        log.warning(
            "the potential does not have the symmetry of the structure (its energy is not invariant under the "
            "space group found by spglib): cubic force constants left unsymmetrised"
        )
        operations, symmetrise = None, False
    per_group = n_samples // n_groups
    key = jax.random.PRNGKey(seed)
    groups = []
    t_start = time.perf_counter()
    settings = {"seed": seed, "kT_eV": kT_eV, "n_samples": n_samples, "n_groups": n_groups, "n_modes": dim, "symmetrise": symmetrise}
    for i in range(n_groups):
        stored = None if progress_dir is None else Path(progress_dir) / f"group_{i:03d}.npz"
        if stored is not None and stored.is_file():
            groups.append(read_progress(stored, settings, f"group {i + 1} of cubic force constants")[1]["phi3"])
            log.info("cubic force constants: group %d/%d read from %s", i + 1, n_groups, stored)
            continue
        xi = np.asarray(antithetic_normals(jax.random.fold_in(key, i), per_group, dim))
        h = np.asarray(hessians(jnp.asarray(xi * sigma)))
        if not np.all(np.isfinite(h)):
            raise ValueError("the potential's Hessian is not finite on samples of the Gaussian (atoms too close?)")
        estimate = _symmetrise(np.einsum("sab,sc->abc", h, xi / sigma) / per_group)
        groups.append(symmetrise_cubic(estimate, modes, operations) if symmetrise else estimate)
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            save_progress(stored, settings, i + 1, {"phi3": groups[-1]})
        log.info("cubic force constants: group %d/%d (%d Hessians) done, %.0f s", i + 1, n_groups, per_group, time.perf_counter() - t_start)
    groups = np.asarray(groups)
    weights = bubble_weights(modes.omega, kT_eV)
    total = groups.sum(axis=0)
    own = np.array([np.sum(weights * g * g) for g in groups])
    all_pairs = np.sum(weights * total * total)
    m = n_groups
    estimate = (all_pairs - own.sum()) / (m * (m - 1))
    leave_one_out = np.array(
        [(np.sum(weights * (total - g) ** 2) - (own.sum() - own[i])) / ((m - 1) * (m - 2)) for i, g in enumerate(groups)]
    )
    stderr = float(np.sqrt((m - 1) / m * np.sum((leave_one_out - leave_one_out.mean()) ** 2)))
    return CubicForceConstants(
        phi3=total / m, bubble_free_energy_eV=float(estimate), bubble_free_energy_stderr_eV=stderr, n_samples=n_samples
    )
