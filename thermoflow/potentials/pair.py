"""Periodic pair potentials (Lennard-Jones, Morse) as pure JAX energy functions.

The energy is the lattice sum E = 1/2 sum_{i,j,n}' phi(|R_j - R_i + n h|) over a fixed set of
lattice translations n, chosen from the reference cell so that every pair within the cutoff is
counted even when the cutoff exceeds half the cell (small supercells). Pair vectors are first
wrapped to the minimum image in fractional coordinates; then |n_a| <= floor(r_c / d_a + 1/2)
suffices, with d_a the spacing of lattice planes a. phi is shifted to zero at the cutoff.

jax-md offers similar pair sums, but with a displacement/neighbor-list API built around a fixed
box; thermoflow's contract takes the cell as an argument (needed for virials and NPT), and the
dense image sum below is a dozen lines, so it is written here.

The dense sum costs O(n_atoms^2 x n_images) time and memory. For MD of 10^3-10^4 atoms,
:func:`make_pair_energy_fn_neighbors` evaluates the same shifted sum on a cell-list neighbour
list (:mod:`thermoflow.potentials.neighbors`): ``energy_fn(positions, cell, neighbors)``, equal to
the dense sum to round-off while the list is fresh, NaN when it is stale or overflowed.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.potentials.base import EnergyFn
from thermoflow.potentials.neighbors import NeighborList, NeighborListFns, inverse_3x3, needs_rebuild, pair_vectors


def lattice_images(cell: np.ndarray, cutoff_A: float, strain_margin: float = 0.1) -> np.ndarray:
    """Integer lattice translations needed for a cutoff, shape (n_images, 3).

    Args:
        cell: (3, 3) reference cell, rows are lattice vectors, Angstrom.
        cutoff_A: interaction cutoff, Angstrom.
        strain_margin: relative shrinkage of the plane spacings the set must still cover.

    Raises:
        ValueError: for a singular cell or non-positive cutoff.
    """
    cell = np.asarray(cell, dtype=np.float64)
    if not cutoff_A > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff_A}")
    volume = abs(np.linalg.det(cell))
    if volume < 1e-8:
        raise ValueError("cell is singular (zero volume)")
    recip = np.linalg.inv(cell).T  # rows b_a with a_i . b_j = delta_ij
    spacing = 1.0 / np.linalg.norm(recip, axis=1)
    n_max = np.floor(cutoff_A / (spacing * (1.0 - strain_margin)) + 0.5).astype(int)
    ranges = [np.arange(-m, m + 1) for m in n_max]
    return np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float64)


def make_pair_energy_fn(
    pair_fn: Callable[[jnp.ndarray], jnp.ndarray], cutoff_A: float, reference_cell: np.ndarray
) -> EnergyFn:
    """Periodic lattice sum of a pair potential, shifted to zero at the cutoff.

    Args:
        pair_fn: phi(r), elementwise on an array of distances (Angstrom) -> eV.
        cutoff_A: cutoff radius, Angstrom.
        reference_cell: (3, 3) cell used to choose the lattice translations; call-time cells
            may differ by up to 10 % in plane spacing.

    Returns:
        ``energy_fn(positions (n, 3), cell (3, 3)) -> eV``; NaN for a call-time cell whose plane
        spacings need more lattice translations than the fixed set holds (a traced cell cannot
        raise; NaN is caught by thermoflow's finite-energy checks and rollbacks, a silently
        wrong lattice sum would not be).
    """
    image_array = lattice_images(reference_cell, cutoff_A)
    images = jnp.asarray(image_array)
    n_max = jnp.asarray(np.abs(image_array).max(axis=0))
    shift = pair_fn(jnp.asarray(cutoff_A))

    def covered(cell):
        volume = jnp.abs(jnp.linalg.det(cell))
        cross = jnp.cross(jnp.roll(cell, -1, axis=0), jnp.roll(cell, -2, axis=0))
        spacing = volume / jnp.linalg.norm(cross, axis=1)
        return jnp.all(jnp.floor(cutoff_A / spacing + 0.5) <= n_max)

    def energy_fn(positions, cell):
        inv_cell = jnp.linalg.inv(cell)
        frac = positions @ inv_cell
        dfrac = frac[None, :, :] - frac[:, None, :]
        dfrac = dfrac - jnp.round(dfrac)  # minimum image; piecewise constant, so grad-safe
        vec = (dfrac[:, :, None, :] + images[None, None, :, :]) @ cell  # (n, n, n_img, 3)
        r2 = jnp.sum(vec**2, axis=-1)
        inside = (r2 > 1e-12) & (r2 < cutoff_A**2)
        r = jnp.sqrt(jnp.where(inside, r2, cutoff_A**2))
        energy = 0.5 * jnp.sum(jnp.where(inside, pair_fn(r) - shift, 0.0))
        return jnp.where(covered(cell), energy, jnp.nan)

    return energy_fn


def make_lennard_jones_energy_fn(
    epsilon_eV: float, sigma_A: float, cutoff_A: float, reference_cell: np.ndarray
) -> EnergyFn:
    """Lennard-Jones phi(r) = 4 eps [(sigma/r)^12 - (sigma/r)^6], shifted at the cutoff.

    References: J. E. Lennard-Jones, Proc. R. Soc. Lond. A 106, 463 (1924),
    doi:10.1098/rspa.1924.0082.
    """

    return make_pair_energy_fn(lennard_jones_pair_fn(epsilon_eV, sigma_A), cutoff_A, reference_cell)


def make_morse_energy_fn(
    depth_eV: float, alpha_per_A: float, r0_A: float, cutoff_A: float, reference_cell: np.ndarray
) -> EnergyFn:
    """Morse phi(r) = D [exp(-2 a (r - r0)) - 2 exp(-a (r - r0))], shifted at the cutoff.

    References: P. M. Morse, Phys. Rev. 34, 57 (1929), doi:10.1103/PhysRev.34.57.
    """

    return make_pair_energy_fn(morse_pair_fn(depth_eV, alpha_per_A, r0_A), cutoff_A, reference_cell)


def lennard_jones_pair_fn(epsilon_eV: float, sigma_A: float) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """phi(r) = 4 eps [(sigma/r)^12 - (sigma/r)^6], r in Angstrom -> eV, elementwise (unshifted)."""

    def phi(r):
        x6 = (sigma_A / r) ** 6
        return 4.0 * epsilon_eV * (x6 * x6 - x6)

    return phi


def morse_pair_fn(depth_eV: float, alpha_per_A: float, r0_A: float) -> Callable[[jnp.ndarray], jnp.ndarray]:
    """phi(r) = D [exp(-2 a (r - r0)) - 2 exp(-a (r - r0))], r in Angstrom -> eV, elementwise (unshifted)."""

    def phi(r):
        x = jnp.exp(-alpha_per_A * (r - r0_A))
        return depth_eV * (x * x - 2.0 * x)

    return phi


def make_pair_energy_fn_neighbors(pair_fn: Callable[[jnp.ndarray], jnp.ndarray], cutoff_A: float, skin_A: float):
    """The shifted pair sum of :func:`make_pair_energy_fn` on a neighbour list (O(n_atoms)).

    E = 1/2 sum_i sum_{(j, n) in list(i)} u(|r_ij|), u = phi - phi(r_c) inside r_c, over the
    pairs of a full (symmetric) list from :func:`thermoflow.potentials.neighbors.make_neighbor_list`,
    r_ij = R_j - R_i + n @ cell recomputed from the call-time positions and cell.

    Derivatives: a custom JVP, dE = sum_i g_i . dR_i + sum_ab G_ab dh_ab with
    g_i = -sum_k u'(r_ik) r_ik / r_ik (a sum over atom i's own row: the list holds every pair in
    both directions, so the reverse pass needs no scatter-add over neighbours, which measured
    5-10x slower than the energy itself on CPU) and G = 1/2 sum_ik u'(r_ik) n_ik (x) r_ik / r_ik.
    With n_ik = (r_ik - R_j + R_i) h^-1 and the list's symmetry, G = 1/2 h^-T (P - 2 R^T g),
    P = sum_ik u'(r_ik) r_ik (x) r_ik / r_ik (the pair virial): no product with the integer shifts
    over the whole list (measured 3x slower). g and G are ordinary JAX expressions, so Hessians
    (forward over reverse) still work; forces and the virial (strain derivative,
    :func:`thermoflow.potentials.base.energy_forces_virial`) equal the dense sum's to round-off.

    Args:
        pair_fn: phi(r), elementwise on distances (Angstrom) -> eV.
        cutoff_A: cutoff radius r_c, Angstrom.
        skin_A: the skin the lists are built with, Angstrom (for the staleness check).

    Returns:
        ``energy_fn(positions (n, 3) A, cell (3, 3) A, neighbors: NeighborList) -> eV``; NaN if
        the list overflowed or is stale at these positions and cell
        (:func:`thermoflow.potentials.neighbors.needs_rebuild`): never a silently incomplete sum.
        Build the list with :func:`thermoflow.potentials.neighbors.allocate_neighbor_list`
        (``cutoff_A``, ``skin_A``) and its ``build`` / ``update``.

    Raises:
        ValueError: for a non-positive cutoff or skin.
    """
    if not (cutoff_A > 0 and skin_A > 0):
        raise ValueError(f"need cutoff > 0 and skin > 0, got {cutoff_A} and {skin_A} Angstrom")
    shift = pair_fn(jnp.asarray(cutoff_A))

    def pairs(positions, cell, neighbors):
        """(u, u'/r, pair vectors (3, n, M), inside mask) of every slot."""
        vec, filled = pair_vectors(neighbors, positions, cell)
        r2 = vec[0] ** 2 + vec[1] ** 2 + vec[2] ** 2
        inside = filled & (r2 > 1e-12) & (r2 < cutoff_A**2)
        r = jnp.sqrt(jnp.where(inside, r2, cutoff_A**2))
        u, du = jax.jvp(pair_fn, (r,), (jnp.ones_like(r),))
        return jnp.where(inside, u - shift, 0.0), jnp.where(inside, du / r, 0.0), vec

    def energy_fn(positions, cell, neighbors: NeighborList):
        @jax.custom_jvp
        def energy(x, h):
            return _total(pairs(x, h, neighbors)[0])

        @energy.defjvp
        def _row_sum_jvp(primals, tangents):
            (x, h), (dx, dh) = primals, tangents
            u, du_over_r, vec = pairs(x, h, neighbors)
            weighted = du_over_r[None] * vec  # (3, n, M): u'(r) r_vec / r
            g = -jnp.sum(weighted, axis=2).T  # (n, 3)
            # pair virial P = sum_ik u'/r r (x) r, by rows first (cheaper on CPU than whole-array sums)
            pair_virial = jnp.sum(jnp.stack([jnp.sum(vec[a][None] * weighted, axis=2) for a in range(3)]), axis=2)
            big_g = 0.5 * inverse_3x3(h).T @ (pair_virial - 2.0 * x.T @ g)
            return _total(u), jnp.sum(g * dx) + jnp.sum(big_g * dh)

        stale = needs_rebuild(neighbors, positions, cell, cutoff_A, skin_A)
        return jnp.where(stale, jnp.nan, energy(positions, cell))

    return energy_fn


def _total(pair_energies):
    """1/2 sum of (n, M) pair energies, by rows first (see the virial note above)."""
    return 0.5 * jnp.sum(jnp.sum(pair_energies, axis=1))


def with_fresh_neighbors(energy_fn, neighbor_fns: NeighborListFns) -> EnergyFn:
    """The contract ``energy_fn(positions, cell) -> eV`` from a neighbour-list energy function,
    building the list at every call (O(n_atoms); for set-up computations such as the static bulk
    modulus of a large cell, where the dense sum would not fit in memory). NaN when the
    allocation's capacities or grid do not fit the call's structure."""

    def fresh(positions, cell):
        return energy_fn(positions, cell, neighbor_fns.build(positions, cell))

    return fresh
