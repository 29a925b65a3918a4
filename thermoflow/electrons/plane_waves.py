"""Plane-wave Slater determinants of the homogeneous electron gas in a periodic cell (Hartree units).

The closed-shell ground state of N free electrons in a cell fills, per spin, the lowest shells of
reciprocal lattice vectors k (|k| ordered). With zero twist the occupied set is symmetric under
k -> -k, so the complex orbitals exp(i k.r) can be replaced by the real ones 1, cos(k.r),
sin(k.r) (one of each +-k pair): the same determinant up to a constant, hence a real
wavefunction with a sign. This is the starting point of electronic VMC in a periodic cell (the
orbitals a backflow or a neural network modifies) and an exact reference: the determinant is an
eigenstate of the kinetic energy, T = sum_k k^2 / 2, and its Coulomb energy with the neutralising
background is known in closed form (:func:`hartree_fock_energy`). With a twist k_s
(:mod:`thermoflow.electrons.twists`) the orbitals are exp(i (G + k_s) . r), the occupied set is no
longer +-k symmetric and the determinant is complex (:func:`make_twisted_determinant`).

References: e.g. R. M. Martin, L. Reining and D. M. Ceperley, Interacting Electrons (Cambridge,
2016), chapters 5 and 23; C. Lin, F. H. Zong and D. M. Ceperley, Phys. Rev. E 64, 016702 (2001),
doi:10.1103/PhysRevE.64.016702 (closed shells, twists).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.electrons.ewald import make_ewald_sum


def cubic_cell_from_rs(rs_bohr: float, n_electrons: int) -> np.ndarray:
    """The cubic cell (3, 3), bohr, holding ``n_electrons`` at density parameter r_s
    (volume per electron 4 pi r_s^3 / 3).

    Raises:
        ValueError: non-positive r_s or electron count.
    """
    if not (rs_bohr > 0 and n_electrons > 0):
        raise ValueError(f"r_s and the number of electrons must be positive, got {rs_bohr} and {n_electrons}")
    return (4.0 * np.pi * rs_bohr**3 * n_electrons / 3.0) ** (1.0 / 3.0) * np.eye(3)


def closed_shell_kvectors(cell: np.ndarray, n_per_spin: int) -> np.ndarray:
    """The ``n_per_spin`` reciprocal lattice vectors of lowest |k| (1/bohr), shape (n_per_spin, 3),
    k = 0 first; the set must fill complete shells.

    Raises:
        ValueError: ``n_per_spin`` does not close a shell (the message lists the closed-shell numbers).
    """
    recip = 2.0 * np.pi * np.linalg.inv(np.asarray(cell, dtype=np.float64)).T
    m = np.arange(-4, 5)
    grid = np.stack(np.meshgrid(m, m, m, indexing="ij"), axis=-1).reshape(-1, 3) @ recip
    norms = np.linalg.norm(grid, axis=1)
    order = np.argsort(norms, kind="stable")
    grid, norms = grid[order], norms[order]
    shells = np.unique(np.round(norms, 8), return_counts=True)[1].cumsum()
    if n_per_spin not in shells:
        raise ValueError(f"{n_per_spin} electrons per spin do not fill closed shells in this cell; closed shells hold "
                         f"{', '.join(str(int(s)) for s in shells[:8])}, ... electrons per spin")
    return grid[:n_per_spin]


def real_orbitals(kvectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(k (n, 3), phase_shift (n,))``: the real orbitals cos(k.r - phase_shift) spanning the same space as
    exp(i k.r) over a +-k symmetric set: 1 for k = 0, cos(k.r) and sin(k.r) = cos(k.r - pi/2) for one k of
    each +-k pair.

    Raises:
        ValueError: a set that is not symmetric under k -> -k.
    """
    kvectors = np.asarray(kvectors, dtype=np.float64)
    keys = {tuple(np.round(k, 8)) for k in kvectors}
    rows, shifts = [], []
    seen = set()
    for k in kvectors:
        key, minus = tuple(np.round(k, 8)), tuple(np.round(-k, 8))
        if minus not in keys:
            raise ValueError("the k set must be symmetric under k -> -k (closed shells, zero twist)")
        if key in seen:
            continue
        seen.update({key, minus})
        if np.allclose(k, 0.0):
            rows.append(k)
            shifts.append(0.0)
        else:
            rows += [k, k]
            shifts += [0.0, np.pi / 2.0]
    return np.array(rows), np.array(shifts)


def inversion_symmetric(kvectors: np.ndarray) -> bool:
    """Whether a k set (n, 3) is symmetric under k -> -k (then real orbitals span it: :func:`real_orbitals`)."""
    keys = {tuple(np.round(k, 8)) for k in np.asarray(kvectors, dtype=np.float64)}
    return all(tuple(np.round(-np.array(k), 8)) in keys for k in keys)


def make_slater_determinant(kvectors_up: np.ndarray, kvectors_down: np.ndarray) -> Callable:
    """``log_psi(electrons (n_up + n_down, 3) bohr) -> (sign, ln|psi|)``: the product of the spin-up
    determinant (first n_up electrons) and the spin-down one of real plane-wave orbitals
    (:func:`real_orbitals`). One configuration; vmap over walkers. As a wavefunction for
    :mod:`thermoflow.electrons.hamiltonian` and :mod:`thermoflow.electrons.mcmc` (which take
    ``log_psi(params, electrons, protons)``): ``lambda params, x, protons: log_psi(x)``.

    Raises:
        ValueError: k sets that are not +-k symmetric.
    """
    k_up, shift_up = (jnp.asarray(a) for a in real_orbitals(kvectors_up))
    k_down, shift_down = (jnp.asarray(a) for a in real_orbitals(kvectors_down))
    n_up = k_up.shape[0]

    def log_psi(electrons):
        sign_up, log_up = jnp.linalg.slogdet(jnp.cos(electrons[:n_up] @ k_up.T - shift_up[None, :]))
        sign_down, log_down = jnp.linalg.slogdet(jnp.cos(electrons[n_up:] @ k_down.T - shift_down[None, :]))
        return sign_up * sign_down, log_up + log_down

    return log_psi


def make_twisted_determinant(kvectors_up: np.ndarray, kvectors_down: np.ndarray) -> Callable:
    """``log_psi(electrons (n_up + n_down, 3) bohr) -> (phase, ln|psi|)``: the product of the spin-up
    determinant (first n_up electrons) and the spin-down one of complex plane waves exp(i k . r), for any
    k sets (twisted: k = G + k_s, :func:`thermoflow.electrons.twists.twisted_kvectors`). ``phase`` is the
    complex unit psi / |psi|; ln psi = ln|psi| + i arg(phase). Moving an electron by a lattice vector L
    multiplies psi by exp(i k_s . L) when all its spin's k are G + k_s. One configuration; vmap over walkers.

    References: doi:10.1103/PhysRevE.64.016702.
    """
    k_up, k_down = jnp.asarray(np.asarray(kvectors_up, dtype=np.float64)), jnp.asarray(np.asarray(kvectors_down, dtype=np.float64))
    n_up = k_up.shape[0]

    def log_psi(electrons):
        phase, log_abs = jnp.asarray(1.0 + 0.0j), jnp.asarray(0.0)
        for x, k in ((electrons[:n_up], k_up), (electrons[n_up:], k_down)):
            if k.shape[0] > 0:
                p, l = jnp.linalg.slogdet(jnp.exp(1j * (x @ k.T)))
                phase, log_abs = phase * p, log_abs + l
        return phase, log_abs

    return log_psi


@functools.lru_cache(maxsize=64)
def _madelung_potential(cell_entries: tuple) -> float:
    """v_M (Hartree) of a cell given as its 9 entries: twice the Ewald energy of one charge in its own images
    and the background (jitted once per cell: twist averages call this for many twists of one cell)."""
    single = make_ewald_sum(np.array(cell_entries).reshape(3, 3), 1)
    return 2.0 * float(jax.jit(single.energy)(jnp.zeros((1, 3)), jnp.array([1.0])))


def hartree_fock_energy(cell: np.ndarray, kvectors_up: np.ndarray, kvectors_down: np.ndarray) -> dict:
    """Exact energy of the plane-wave determinant of electrons in a uniform background, Hartree (totals).

    ``kinetic`` = sum_k k^2 / 2; ``madelung`` = (N / 2) v_M with v_M twice the Ewald energy of one
    charge in its own periodic images and the background; ``exchange`` =
    -(1 / 2V) sum_spin sum_{k != k' occupied} 4 pi / |k - k'|^2 (from <rho_q rho_-q> of a determinant);
    ``total`` their sum. The energy of the finite periodic system (no finite-size correction). The same
    formula holds at a twist (k = G + k_s, :mod:`thermoflow.electrons.twists`): <rho_q rho_-q> of a
    determinant pairs occupied k, k' with k - k' = q, and differences of twisted wavevectors are reciprocal
    lattice vectors, so the twist enters only through |k|^2 and the occupied set (tested against VMC at a twist).

    References: e.g. L. M. Fraser et al., Phys. Rev. B 53, 1814 (1996), doi:10.1103/PhysRevB.53.1814.
    """
    cell = np.asarray(cell, dtype=np.float64)
    volume = abs(np.linalg.det(cell))
    n_electrons = len(kvectors_up) + len(kvectors_down)
    v_madelung = _madelung_potential(tuple(cell.ravel()))
    exchange = 0.0
    for ks in (np.asarray(kvectors_up), np.asarray(kvectors_down)):
        q2 = np.sum((ks[:, None, :] - ks[None, :, :]) ** 2, axis=-1)
        off = ~np.eye(len(ks), dtype=bool)
        exchange -= np.sum(4.0 * np.pi / q2[off]) / (2.0 * volume)
    kinetic = 0.5 * (np.sum(np.asarray(kvectors_up) ** 2) + np.sum(np.asarray(kvectors_down) ** 2))
    madelung = 0.5 * n_electrons * v_madelung
    return {"kinetic": float(kinetic), "madelung": madelung, "exchange": float(exchange),
            "total": float(kinetic + madelung + exchange)}
