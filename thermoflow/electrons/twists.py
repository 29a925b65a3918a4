"""Twisted boundary conditions and twist averaging for electrons in a periodic cell (Hartree units).

With a twist k_s the many-electron wavefunction obeys

    psi(..., r_i + L, ...) = exp(i k_s . L) psi(..., r_i, ...)   for every lattice vector L = n @ cell,

and the plane-wave orbitals become exp(i (G + k_s) . r) over reciprocal lattice vectors G. Twists
are given here in fractional coordinates t of the reciprocal lattice, k_s = t @ B with
B = 2 pi inv(cell)^T (rows b_a, a_a . b_b = 2 pi delta_ab), so k_s . L = 2 pi t . n; t and t + m
(m integer) are the same boundary condition (the occupied G relabel), so t in [-1/2, 1/2)^3 (a unit
cell of the reciprocal lattice, equivalent to the first Brillouin zone of the simulation cell)
covers every twist once.

Occupation (canonical: N fixed per spin at every twist). Each spin occupies the n_per_spin vectors
G + k_s of lowest |G + k_s|: the determinant is then the lowest-kinetic-energy (aufbau) determinant
of the twisted cell. Plane waves solve the Hartree-Fock equations of a uniform system at any twist
(the Fock operator is diagonal in G + k_s), so it is a self-consistent restricted HF state whose
energy :func:`thermoflow.electrons.plane_waves.hartree_fock_energy` gives exactly, and, when the
Fermi level is not degenerate, the unique such aufbau state: the HF reference of the twisted
finite gas (not proven to be the global HF minimum: symmetry-broken HF states, A. W. Overhauser,
Phys. Rev. 128, 1437 (1962), doi:10.1103/PhysRev.128.1437, can lie lower). Closed shells do not
exist at most twists: when the last occupied level |G + k_s| is degenerate with an unoccupied one
the choice is ambiguous and :func:`twisted_kvectors` refuses it by default; with
``degeneracy="lowest_exchange"`` it takes, among the choices of the degenerate Fermi-level states,
the one of lowest exchange energy (kinetic and Madelung terms are equal for all of them), i.e. the
lowest Hartree-Fock energy of the N-lowest-|G + k_s| determinants. On Monkhorst-Pack grids of a
cubic cell most twists are degenerate at N = 7 per spin (55 of 64 on a Gamma-centred 4x4x4 grid,
24 of 64 on the shifted one), so twist averaging needs the tie-break.

Twist averaging: the energy of a real Hamiltonian obeys E(k_s) = E(-k_s) (time reversal:
psi_{-k} = psi_k^*), so a grid symmetric under t -> -t is reduced to one twist of each +-t pair with
weight 2 (:func:`monkhorst_pack_twists`); averages of energies, pressures or any per-twist
estimate carry combined error bars (:func:`twist_average`). Twist averaging reduces the kinetic
shell effect of the finite cell; the finite-size error of the exchange (potential) energy
remains (measured in tests/electrons/test_twists.py and docs/electrons.md).

References: C. Lin, F. H. Zong and D. M. Ceperley, Phys. Rev. E 64, 016702 (2001),
doi:10.1103/PhysRevE.64.016702 (twist-averaged boundary conditions); H. J. Monkhorst and
J. D. Pack, Phys. Rev. B 13, 5188 (1976), doi:10.1103/PhysRevB.13.5188 (special-point grids).
"""

from __future__ import annotations

import itertools
from math import comb
from typing import NamedTuple

import numpy as np

#: relative tolerance of |G + k_s| ties (degenerate levels)
DEGENERACY_RTOL = 1e-9
#: most choices of degenerate Fermi-level states that ``degeneracy="lowest_exchange"`` enumerates
MAX_FERMI_CHOICES = 100_000


def reciprocal_basis(cell: np.ndarray) -> np.ndarray:
    """B = 2 pi inv(cell)^T, (3, 3), rows are the reciprocal lattice vectors b_a, 1/bohr."""
    return 2.0 * np.pi * np.linalg.inv(np.asarray(cell, dtype=np.float64)).T


def twist_vector(cell: np.ndarray, twist: np.ndarray) -> np.ndarray:
    """The Cartesian twist k_s = t @ B (3,), 1/bohr, of a fractional twist t (3,)."""
    return np.asarray(twist, dtype=np.float64) @ reciprocal_basis(cell)


def _candidates(cell: np.ndarray, twist: np.ndarray, n_states: int) -> np.ndarray:
    """All G + k_s (m, 3) that can be among the n_states lowest, sorted by |G + k_s| (stable in G order)."""
    basis = reciprocal_basis(cell)
    twist = twist - np.round(twist)  # the same set {G + k_s}; now |t_a| <= 1/2
    shortest = np.linalg.svd(basis, compute_uv=False).min()  # |x @ B| >= shortest |x|
    m_max = 2
    while True:
        m = np.arange(-m_max, m_max + 1)
        grid = (np.stack(np.meshgrid(m, m, m, indexing="ij"), axis=-1).reshape(-1, 3) + twist) @ basis
        norms = np.linalg.norm(grid, axis=1)
        order = np.argsort(norms, kind="stable")
        # points outside the box have max_a |m_a + t_a| >= m_max + 1/2, so |G + k_s| >= shortest x that
        if norms[order[n_states]] < shortest * (m_max + 0.5):
            return grid[order]
        m_max += 1


def unoccupied_kvectors(cell: np.ndarray, occupied: np.ndarray, twist: np.ndarray, n_extra: int) -> np.ndarray:
    """The lowest unoccupied wavevectors G + k_s beyond ``occupied``, (m, 3) 1/bohr, m >= n_extra: the
    ``n_extra`` lowest by |G + k_s|, completed to the end of their shell (every vector of the last
    |G + k_s| taken), so that at zero twist the set is +-k symmetric (the extra orbitals of a geminal,
    :func:`thermoflow.electrons.network.make_periodic_network`).

    Raises:
        ValueError: ``n_extra`` < 1.
    """
    if n_extra < 1:
        raise ValueError(f"n_extra must be >= 1, got {n_extra}")
    occupied = np.asarray(occupied, dtype=np.float64).reshape(-1, 3)
    candidates = _candidates(cell, np.asarray(twist, dtype=np.float64), len(occupied) + n_extra + 64)
    taken = {tuple(np.round(k, 8)) for k in occupied}
    free = np.array([k for k in candidates if tuple(np.round(k, 8)) not in taken])
    norms = np.linalg.norm(free, axis=1)
    last = norms[n_extra - 1]
    return free[norms <= last * (1.0 + DEGENERACY_RTOL) + 1e-300]


def twisted_kvectors(cell: np.ndarray, n_per_spin: int, twist: np.ndarray, *, degeneracy: str = "raise") -> np.ndarray:
    """The occupied wavevectors G + k_s of one spin at a twist, (n_per_spin, 3), 1/bohr, by increasing |G + k_s|.

    The n_per_spin vectors of lowest |G + k_s| (module docstring). At t = 0 and a closed shell this
    is :func:`thermoflow.electrons.plane_waves.closed_shell_kvectors` (same order).

    Args:
        cell: (3, 3) lattice vectors as rows, bohr.
        n_per_spin: electrons of this spin.
        twist: (3,) fractional twist t (k_s = t @ B).
        degeneracy: ``"raise"`` (refuse a degenerate Fermi level) or ``"lowest_exchange"`` (take the
            choice of degenerate Fermi-level states of lowest exchange energy; equivalent choices of
            equal exchange give the same HF energy and the first is returned).

    Raises:
        ValueError: ``n_per_spin`` < 1, an unknown ``degeneracy``, a degenerate Fermi level with
            ``degeneracy="raise"`` (the message gives the fix), or more than ``MAX_FERMI_CHOICES`` choices.

    References: doi:10.1103/PhysRevE.64.016702.
    """
    if n_per_spin < 1:
        raise ValueError(f"need at least one electron per spin, got {n_per_spin}")
    if degeneracy not in ("raise", "lowest_exchange"):
        raise ValueError(f"degeneracy must be 'raise' or 'lowest_exchange', got {degeneracy!r}")
    kvectors = _candidates(cell, np.asarray(twist, dtype=np.float64), n_per_spin)
    norms = np.linalg.norm(kvectors, axis=1)
    fermi = norms[n_per_spin - 1]
    tie = np.abs(norms - fermi) <= DEGENERACY_RTOL * max(fermi, 1e-300)
    if not tie[n_per_spin]:
        return kvectors[:n_per_spin]
    core, level = kvectors[norms < fermi - DEGENERACY_RTOL * fermi], kvectors[tie]
    n_free = n_per_spin - len(core)
    if degeneracy == "raise":
        raise ValueError(f"the Fermi level at twist {np.asarray(twist).tolist()} is degenerate: {n_free} of {len(level)} "
                         "states of equal |G + k_s| must be chosen; use another twist or N, or degeneracy='lowest_exchange'")
    if comb(len(level), n_free) > MAX_FERMI_CHOICES:
        raise ValueError(f"{comb(len(level), n_free)} choices of degenerate Fermi-level states exceed {MAX_FERMI_CHOICES}")
    best, best_sum = None, -np.inf
    for choice in itertools.combinations(range(len(level)), n_free):
        ks = np.concatenate([core, level[list(choice)]])
        q2 = np.sum((ks[:, None, :] - ks[None, :, :]) ** 2, axis=-1)
        inverse_sum = np.sum(1.0 / q2[~np.eye(len(ks), dtype=bool)])  # exchange = -(2 pi / V) x this
        if inverse_sum > best_sum * (1.0 + 1e-12):
            best, best_sum = ks, inverse_sum
    return best


class TwistGrid(NamedTuple):
    """``twists`` (n_t, 3) fractional twists in [-1/2, 1/2); ``weights`` (n_t,) summing to one."""

    twists: np.ndarray
    weights: np.ndarray


def monkhorst_pack_twists(n_grid: int, *, shifted: bool = True, reduce: bool = True) -> TwistGrid:
    """An n x n x n grid of fractional twists, reduced by t -> -t (E(k) = E(-k) for a real Hamiltonian).

    Args:
        n_grid: points per direction.
        shifted: ``True``: t_a = (i + 1/2) / n (Monkhorst and Pack's grid for even n: no Gamma point);
            ``False``: t_a = i / n (Gamma-centred). Folded into [-1/2, 1/2).
        reduce: keep one twist of each +-t pair with twice the weight (a twist equal to its own
            negative modulo the lattice, e.g. t = 0 or 1/2, keeps its single weight).

    Raises:
        ValueError: ``n_grid`` < 1.

    References: doi:10.1103/PhysRevB.13.5188; doi:10.1103/PhysRevE.64.016702.
    """
    if n_grid < 1:
        raise ValueError(f"the twist grid needs n_grid >= 1, got {n_grid}")
    offset = 0.5 if shifted else 0.0
    # integer labels in units of 1/(2n): twice (i + offset) folded into [-n, n)
    labels = [tuple((2 * np.array(i) + int(2 * offset) + n_grid) % (2 * n_grid) - n_grid)
              for i in itertools.product(range(n_grid), repeat=3)]
    counts: dict[tuple, int] = {}
    for label in labels:
        partner = tuple((-np.array(label) + n_grid) % (2 * n_grid) - n_grid)
        key = partner if (reduce and partner in counts) else label
        counts[key] = counts.get(key, 0) + 1
    twists = np.array(list(counts), dtype=np.float64) / (2 * n_grid)
    weights = np.array(list(counts.values()), dtype=np.float64) / len(labels)
    return TwistGrid(twists, weights)


class TwistAverage(NamedTuple):
    """``mean`` and ``stderr`` of a twist average (units of the averaged quantity)."""

    mean: float
    stderr: float


def twist_average(values: np.ndarray, weights: np.ndarray, stderrs: np.ndarray | None = None) -> TwistAverage:
    """The weighted twist average sum_t w_t v_t / sum_t w_t and its standard error
    sqrt(sum_t w_t^2 sigma_t^2) / sum_t w_t (independent runs per twist; zero without ``stderrs``).

    Args:
        values: (n_t,) per-twist estimates (energies, pressures, ...).
        weights: (n_t,) twist weights (:class:`TwistGrid`), non-negative.
        stderrs: (n_t,) their standard errors, or ``None`` for exact values.

    Raises:
        ValueError: mismatched shapes, negative weights or a zero total weight.

    References: doi:10.1103/PhysRevE.64.016702.
    """
    values, weights = np.asarray(values, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    errors = np.zeros_like(values) if stderrs is None else np.asarray(stderrs, dtype=np.float64)
    if not (values.shape == weights.shape == errors.shape and values.ndim == 1):
        raise ValueError(f"values, weights and stderrs must be equal 1-D shapes, got {values.shape}, {weights.shape}, {errors.shape}")
    if np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError("twist weights must be non-negative with a positive sum")
    total = weights.sum()
    return TwistAverage(float(weights @ values / total), float(np.sqrt(weights**2 @ errors**2) / total))
