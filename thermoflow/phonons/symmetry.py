"""Space-group symmetry of a crystal's modes: its operations and the projection of force constants.

The average of a tensor over a crystal's space group is the orthogonal projection onto the
tensors the crystal's symmetry allows. An estimate made from random samples (stochastic
self-consistent harmonic approximation, Gaussian-averaged cubic force constants) is unbiased but
noisy; its symmetry-breaking part is pure noise, and projecting it out removes most of the
noise of a high-symmetry supercell (a factor ~ the group order in variance) at no cost in bias.
The operations come from spglib (a well-kept library; no symmetry search of our own); the
averages are plain permutations and rotations of Cartesian blocks.

References: A. Togo, K. Shinohara, I. Tanaka, Sci. Technol. Adv. Mater. Meth. 4, 2384822 (2024),
doi:10.1080/27660400.2024.2384822 (spglib); L. Monacelli et al., J. Phys.: Condens. Matter 33,
363001 (2021), doi:10.1088/1361-648X/ac066b (symmetrised stochastic SCHA).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import spglib

from thermoflow.phonons.modes import HarmonicModes
from thermoflow.potentials.base import EnergyFn

Operations = list[list[tuple[np.ndarray, np.ndarray]]]


def space_group_operations(modes: HarmonicModes, symprec: float = 1e-4) -> Operations:
    """Two groups of operations whose successive averages are the space-group projector: the pure
    lattice translations of the cell, then one operation per point-group rotation (coset
    representatives); each operation is (Cartesian rotation (3, 3), atom permutation (N,)). Found by spglib (all atoms treated as
    one species when masses agree: symmetry of the reference positions and masses).

    Raises:
        ValueError: if an operation does not map the atoms onto atoms (within ``symprec``, A).
    """
    cell = np.asarray(modes.cell)
    pos = np.asarray(modes.reference_positions)
    frac = pos @ np.linalg.inv(cell)
    _, species = np.unique(np.round(modes.masses, 6), return_inverse=True)
    sym = spglib.get_symmetry((cell, frac, species), symprec=symprec)
    to_cart = cell.T
    ops, seen = [], set()

    def permutation(rot, trans):
        image = frac @ rot.T + trans
        diff = image[:, None, :] - frac[None, :, :]
        diff -= np.round(diff)
        dist = np.linalg.norm(diff @ cell, axis=-1)
        perm = np.argmin(dist, axis=1)
        if np.max(dist[np.arange(len(perm)), perm]) > 10 * symprec or len(set(perm)) != len(perm):
            raise ValueError("a symmetry operation does not map the atoms onto atoms")
        return perm

    identity = np.eye(3, dtype=int)
    translations = [(r, t) for r, t in zip(sym["rotations"], sym["translations"]) if np.array_equal(r, identity)]
    cosets = []
    for r, t in zip(sym["rotations"], sym["translations"]):
        key = r.tobytes()
        if key not in seen:
            seen.add(key)
            cosets.append((r, t))
    for group in (translations, cosets):
        ops.append([(to_cart @ r @ np.linalg.inv(to_cart), permutation(r, t)) for r, t in group])
    return ops


def potential_has_symmetry(energy_fn: EnergyFn, modes: HarmonicModes, operations, amplitude_A: float = 0.05, seed: int = 0) -> bool:
    """Whether ``energy_fn`` is invariant under the operations: V(R0 + u) = V(R0 + g u) for a
    random displacement u (``amplitude_A`` per component), within 1e-6 of the displacement
    energy. A potential of the atoms alone is; one with an external field (or a toy model with
    direction-dependent springs) need not be."""
    r0 = np.asarray(modes.reference_positions)
    cell = jnp.asarray(modes.cell)
    u = amplitude_A * np.random.default_rng(seed).normal(size=r0.shape)
    images = []
    for group in operations:
        for rot, perm in group:
            moved = np.empty_like(u)
            moved[perm] = u @ rot.T
            images.append(r0 + moved)
    energies = np.asarray(jax.jit(jax.vmap(lambda r: energy_fn(r, cell)))(jnp.asarray(np.stack([r0, r0 + u] + images))))
    scale = max(abs(energies[1] - energies[0]), 1e-12)
    return bool(np.all(np.abs(energies[2:] - energies[1]) < 1e-6 * scale))


def symmetrise_force_constants(phi: np.ndarray, modes: HarmonicModes, operations: Operations | None = None) -> np.ndarray:
    """Project a mode-basis force-constant (curvature) matrix onto the space-group-invariant ones.

    Phi is taken to (mass-weighted) Cartesian coordinates, Phi_c = E Phi E^T, averaged over the
    lattice translations and then over one operation per rotation, Phi_c <- R Phi_c(p^-1 i, p^-1 j) R^T
    (together, the average over the whole space group), and taken back, E^T Phi_c E. An invariant
    matrix is unchanged; symmetric stays symmetric.

    Args:
        phi: (D, D) in the mass-weighted modes of ``modes`` (any units).
        modes: the modes (reference positions, cell, masses, polarisation vectors E (3N, D)).
        operations: from :func:`space_group_operations` (computed if None).

    Returns:
        (D, D) projected matrix, units of ``phi``.
    """
    ops = space_group_operations(modes) if operations is None else operations
    e = np.asarray(modes.modes)
    n = modes.n_atoms
    cart = (e @ np.asarray(phi) @ e.T).reshape(n, 3, n, 3)
    for group in ops:
        acc = np.zeros_like(cart)
        for rot, perm in group:
            inv = np.argsort(perm)
            acc += np.einsum("xa,iajb,yb->ixjy", rot, cart[inv][:, :, inv], rot, optimize=True)
        cart = acc / len(group)
    cart = cart.reshape(3 * n, 3 * n)
    return e.T @ cart @ e


def symmetrise_vector(v: np.ndarray, modes: HarmonicModes, operations: Operations | None = None) -> np.ndarray:
    """Project a mode-basis vector (a mean force or a centroid shift) onto the space-group-invariant
    ones: taken to mass-weighted Cartesian coordinates, u = E v (N, 3), averaged over the lattice
    translations and then over one operation per rotation, u_(p(i)) <- R u_i, and taken back,
    E^T u. Positions that the symmetry fixes (bcc, fcc sites) get exactly zero; a free Wyckoff
    coordinate (cI16's x) keeps its symmetric part.

    Args:
        v: (D,) in the mass-weighted modes of ``modes`` (any units).
        modes: the modes (reference positions, cell, masses, polarisation vectors E (3N, D)).
        operations: from :func:`space_group_operations` (computed if None).

    Returns:
        (D,) projected vector, units of ``v``.
    """
    ops = space_group_operations(modes) if operations is None else operations
    e = np.asarray(modes.modes)
    cart = (e @ np.asarray(v)).reshape(modes.n_atoms, 3)
    for group in ops:
        acc = np.zeros_like(cart)
        for rot, perm in group:
            acc[perm] += cart @ rot.T
        cart = acc / len(group)
    return e.T @ cart.reshape(-1)
