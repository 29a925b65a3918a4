"""Ewald summation of the Coulomb energy of point charges in a periodic cell (Hartree atomic units).

For charges q_i at r_i in a cell h (rows are lattice vectors, bohr) of volume V, with Q = sum_i q_i,

    E = 1/2 sum_{i,j,n}' q_i q_j erfc(alpha |r_j - r_i + n h|) / |r_j - r_i + n h|         (real space)
      + (2 pi / V) sum_{G != 0} exp(-G^2 / 4 alpha^2) / G^2 |sum_i q_i exp(i G . r_i)|^2  (reciprocal space)
      - (alpha / sqrt(pi)) sum_i q_i^2                                                   (self interaction)
      - pi Q^2 / (2 V alpha^2)                                                           (uniform neutralising background)

(the prime drops i = j at n = 0). The result does not depend on alpha; the background term makes
it the energy of the charges in a uniform compensating background when Q != 0 (the jellium
convention, e.g. for the Wigner crystal), and vanishes for neutral systems. The real-space sum
runs over a FIXED set of lattice translations and the reciprocal sum over a fixed set of G
vectors, both chosen once from the cell and the tolerance, so the energy is a pure JAX function
of the positions and charges (jit, vmap over walkers, grad for forces). The same cell must be
used at call time (the sums are built for it).

Parameters (:func:`ewald_parameters`): alpha = sqrt(pi) (n_charges / V^2)^(1/6) balances the two
sums (about equal numbers of terms); the real-space cutoff r_c = sqrt(-ln eps) / alpha and the
reciprocal cutoff G_c = 2 alpha sqrt(-ln eps) make both truncation errors of relative order eps
(erfc(x) ~ exp(-x^2)). Validated against Madelung constants (rock salt, CsCl) and the Wigner-crystal
energies of the bcc, fcc and simple cubic lattices in tests/electrons/test_ewald.py.

pymatgen's ``EwaldSummation`` and ASE do not give a JAX-differentiable, jittable sum over moving
electrons, so the few lines are written here.

References: P. P. Ewald, Ann. Phys. 369, 253 (1921), doi:10.1002/andp.19213690304; S. W. de Leeuw,
J. W. Perram and E. R. Smith, Proc. R. Soc. Lond. A 373, 27 (1980), doi:10.1098/rspa.1980.0135
(the conditionally convergent sum and its background term); M. P. Allen and D. J. Tildesley,
Computer Simulation of Liquids, 2nd ed. (Oxford, 2017), section 6.2 (parameter choice).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erfc

from thermoflow.potentials.pair import lattice_images


class EwaldSum(NamedTuple):
    """The Ewald sum of one cell.

    ``energy(positions (n, 3) bohr, charges (n,) e) -> Hartree``: the Coulomb energy (formula in the
    module docstring), pure JAX. ``alpha`` (1/bohr), ``real_cutoff`` (bohr), ``reciprocal_cutoff``
    (1/bohr), ``n_images`` and ``n_reciprocal`` (terms of the two sums) describe the choice made.
    """

    energy: Callable
    alpha: float
    real_cutoff: float
    reciprocal_cutoff: float
    n_images: int
    n_reciprocal: int


def ewald_parameters(cell: np.ndarray, n_charges: int, tolerance: float = 1e-12) -> tuple[float, float, float]:
    """``(alpha 1/bohr, real-space cutoff bohr, reciprocal cutoff 1/bohr)`` for a relative accuracy ``tolerance``.

    Raises:
        ValueError: a singular cell, fewer than one charge, or a tolerance outside (0, 1).
    """
    cell = np.asarray(cell, dtype=np.float64)
    volume = abs(np.linalg.det(cell))
    if volume < 1e-10:
        raise ValueError("the cell is singular (zero volume)")
    if n_charges < 1:
        raise ValueError(f"need at least one charge, got {n_charges}")
    if not 0 < tolerance < 1:
        raise ValueError(f"the Ewald tolerance must lie in (0, 1), got {tolerance}")
    alpha = float(np.sqrt(np.pi) * (n_charges / volume**2) ** (1.0 / 6.0))
    log_tol = np.sqrt(-np.log(tolerance))
    return alpha, float(log_tol / alpha), float(2.0 * alpha * log_tol)


def reciprocal_vectors(cell: np.ndarray, cutoff: float) -> np.ndarray:
    """Reciprocal lattice vectors G = 2 pi m B (B = inverse cell transposed) with 0 < |G| <= ``cutoff``,
    shape (n_G, 3), 1/bohr."""
    cell = np.asarray(cell, dtype=np.float64)
    recip = 2.0 * np.pi * np.linalg.inv(cell).T  # rows b_a with a_i . b_j = 2 pi delta_ij
    m_max = np.ceil(cutoff * np.linalg.norm(cell, axis=1) / (2.0 * np.pi)).astype(int)  # |G . a_a| = 2 pi |m_a|
    ranges = [np.arange(-m, m + 1) for m in m_max]
    m = np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)
    g = m @ recip
    norm = np.linalg.norm(g, axis=1)
    return g[(norm > 0) & (norm <= cutoff)]


def make_ewald_sum(cell: np.ndarray, n_charges: int, tolerance: float = 1e-12, alpha: float | None = None) -> EwaldSum:
    """The Ewald sum of ``n_charges`` point charges in ``cell`` (module docstring).

    Args:
        cell: (3, 3) lattice vectors as rows, bohr (any shape; fixed).
        n_charges: number of charges (sets the default alpha).
        tolerance: relative truncation error of each sum (default 1e-12).
        alpha: Ewald splitting parameter, 1/bohr; default :func:`ewald_parameters`' (the cutoffs
            follow from it and ``tolerance`` either way).

    Returns:
        An :class:`EwaldSum`.

    Raises:
        ValueError: as :func:`ewald_parameters`, or a non-positive alpha.

    References: de Leeuw, Perram and Smith, doi:10.1098/rspa.1980.0135.
    """
    cell = np.asarray(cell, dtype=np.float64)
    default_alpha, _, _ = ewald_parameters(cell, n_charges, tolerance)
    alpha = default_alpha if alpha is None else float(alpha)
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    log_tol = float(np.sqrt(-np.log(tolerance)))
    real_cutoff, reciprocal_cutoff = log_tol / alpha, 2.0 * alpha * log_tol
    images = lattice_images(cell, real_cutoff, strain_margin=0.0)
    shifts = jnp.asarray(images @ cell)  # (n_img, 3) bohr
    is_origin = jnp.asarray(np.all(images == 0, axis=1))
    g = reciprocal_vectors(cell, reciprocal_cutoff)
    g_norm2 = np.sum(g**2, axis=1)
    volume = abs(np.linalg.det(cell))
    weights = jnp.asarray(2.0 * np.pi / volume * np.exp(-g_norm2 / (4.0 * alpha**2)) / g_norm2)
    g = jnp.asarray(g)
    inverse_cell = jnp.asarray(np.linalg.inv(cell))
    cell_j = jnp.asarray(cell)

    def energy(positions, charges):
        positions, charges = jnp.asarray(positions), jnp.asarray(charges, dtype=positions.dtype)
        n = positions.shape[0]
        frac = (positions[None, :, :] - positions[:, None, :]) @ inverse_cell
        frac = frac - jnp.round(frac)  # minimum image; piecewise constant, so grad-safe
        vectors = (frac @ cell_j)[:, :, None, :] + shifts[None, None, :, :]  # (n, n, n_img, 3)
        excluded = jnp.eye(n, dtype=bool)[:, :, None] & is_origin[None, None, :]
        r2 = jnp.sum(vectors**2, axis=-1)
        r = jnp.sqrt(jnp.where(excluded, 1.0, r2))
        pair = jnp.where(excluded | (r > real_cutoff), 0.0, erfc(alpha * r) / r)
        real = 0.5 * jnp.einsum("i,j,ijk->", charges, charges, pair)
        phase = positions @ g.T  # (n, n_G)
        structure = jnp.sum(charges[:, None] * jnp.cos(phase), axis=0) ** 2 + jnp.sum(charges[:, None] * jnp.sin(phase), axis=0) ** 2
        reciprocal = jnp.sum(weights * structure)
        self_term = -alpha / np.sqrt(np.pi) * jnp.sum(charges**2)
        background = -np.pi * jnp.sum(charges) ** 2 / (2.0 * volume * alpha**2)
        return real + reciprocal + self_term + background

    return EwaldSum(energy=energy, alpha=alpha, real_cutoff=real_cutoff, reciprocal_cutoff=reciprocal_cutoff,
                    n_images=int(images.shape[0]), n_reciprocal=int(g.shape[0]))
