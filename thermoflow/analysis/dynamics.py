"""Dynamics of MD trajectories: mean-square displacements, diffusion, velocity autocorrelation, VDOS.

Pure NumPy functions of arrays (no files): positions (n_frames, n_atoms, 3) Angstrom, velocities
(n_frames, n_atoms, 3) Angstrom/ps, cell (3, 3) Angstrom with lattice vectors as rows (fixed:
NVE/NVT), species labels (n_atoms,), masses (n_atoms,) amu, frames equally spaced by ``dt_ps``.
Per-species results follow the species' order of first appearance.

* :func:`minimum_image`: exact minimum-image vectors in any (triclinic) cell, via a
  Minkowski-reduced basis (ASE) and the 27 neighbouring images.
* :func:`unwrap_positions`, :func:`remove_drift`: continuous trajectories (minimum-image frame
  increments) without centre-of-mass motion.
* :func:`mean_square_displacement`: MSD per species averaged over all time origins by the FFT
  algorithm of Calandrini et al. (O(M log M) per atom).
* :func:`diffusion_coefficient`: D from the Einstein relation MSD = 6 D t + c, a least-squares
  line over a time window, with an error bar from independent blocks of the trajectory.
* :func:`reordered_msd`: the permutation-reordered MSD' of Qin et al., by linear assignment.
* :func:`velocity_autocorrelation`, :func:`vibrational_dos`: VACF per species and its Fourier
  transform, normalised to 3 N_s modes per species.

References: V. Calandrini, E. Pellegrini, P. Calligari, K. Hinsen and G. R. Kneller, JDN 12,
201 (2011), doi:10.1051/sfn/201112010 (FFT MSD, nMOLDYN); A. Einstein, Ann. Phys. 322, 549
(1905), doi:10.1002/andp.19053220806; H. Flyvbjerg and H. G. Petersen, J. Chem. Phys. 91, 461
(1989), doi:10.1063/1.457480 (block errors); H. Qin et al., Phys. Rev. B 108, 064102 (2023),
doi:10.1103/PhysRevB.108.064102 (MSD'); H. W. Kuhn, Naval Res. Logist. Q. 2, 83 (1955),
doi:10.1002/nav.3800020109 (assignment); J. M. Dickey and A. Paskin, Phys. Rev. 188, 1407
(1969), doi:10.1103/PhysRev.188.1407 (VDOS from the VACF); M. P. Allen and D. J. Tildesley,
Computer Simulation of Liquids, 2nd ed. (2017), secs. 2.7 and 8.1.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Sequence

import numpy as np
from ase.geometry import minkowski_reduce
from scipy.optimize import linear_sum_assignment

#: 1 A^2/ps in cm^2/s
CM2_PER_S_PER_A2_PER_PS = 1e-4

_IMAGES = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=float)  # (27, 3)
_CHUNK = 65536


def species_kinds(species: Sequence) -> list:
    """Distinct labels of ``species`` (n_atoms,) in order of first appearance."""
    return list(dict.fromkeys(np.asarray(species).tolist()))


def minimum_image(vectors: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """The shortest periodic image of each vector, exact in any cell shape.

    The cell is Minkowski-reduced first (``ase.geometry.minkowski_reduce``); in a reduced basis
    the shortest image of a vector wrapped to fractional coordinates in [-1/2, 1/2) is among it
    and its 26 neighbours, which are all compared.

    Args:
        vectors: (..., 3) difference vectors, Angstrom.
        cell: (3, 3) lattice vectors as rows, Angstrom (fully periodic).

    Returns:
        (..., 3) minimum-image vectors, Angstrom.

    References:
        ASE ``ase.geometry.find_mic`` (same construction); H. Minkowski, J. Reine Angew. Math.
        129, 220 (1905) (reduced bases).
    """
    return _minimum_image_reduced(vectors, minkowski_reduce(np.asarray(cell, dtype=float))[0])


def _minimum_image_reduced(vectors: np.ndarray, reduced: np.ndarray) -> np.ndarray:
    """:func:`minimum_image` in an already Minkowski-reduced cell (3, 3)."""
    images = _IMAGES @ reduced  # (27, 3)
    vectors = np.asarray(vectors, dtype=float)
    flat = vectors.reshape(-1, 3)
    out = np.empty_like(flat)
    for start in range(0, len(flat), _CHUNK):  # bounded memory for long trajectories
        frac = np.linalg.solve(reduced.T, flat[start:start + _CHUNK].T).T
        wrapped = (frac - np.round(frac)) @ reduced  # (n, 3)
        # |w + L|^2 - |w|^2 = 2 w.L + |L|^2 for the 27 candidate images L
        best = np.argmin(2.0 * wrapped @ images.T + np.sum(images**2, axis=1), axis=1)
        out[start:start + _CHUNK] = wrapped + images[best]
    return out.reshape(vectors.shape)


def unwrap_positions(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Continuous trajectories: the first frame plus the cumulated minimum-image increments.

    Unwrapped input is returned unchanged as long as no atom moves more than half the cell's
    shortest width between frames (wrapped input becomes unwrapped under the same condition).

    Args:
        positions: (n_frames, n_atoms, 3) Angstrom.
        cell: (3, 3) lattice vectors as rows, Angstrom.

    Returns:
        (n_frames, n_atoms, 3) unwrapped positions, Angstrom.
    """
    positions = np.asarray(positions, dtype=float)
    steps = minimum_image(np.diff(positions, axis=0), cell)
    return np.concatenate([positions[:1], positions[:1] + np.cumsum(steps, axis=0)])


def remove_drift(positions: np.ndarray, masses: np.ndarray | None = None) -> np.ndarray:
    """Subtract the centre-of-mass displacement from every atom (unwrapped positions).

    Args:
        positions: (n_frames, n_atoms, 3) unwrapped positions (or velocities), any unit.
        masses: (n_atoms,) amu; None for equal masses.

    Returns:
        (n_frames, n_atoms, 3) with the mass-weighted centre fixed at its first-frame value.
    """
    positions = np.asarray(positions, dtype=float)
    weights = np.ones(positions.shape[1]) if masses is None else np.asarray(masses, dtype=float)
    centre = np.einsum("mia,i->ma", positions, weights / weights.sum())
    return positions - (centre - centre[:1])[:, None, :]


def _autocorrelation(x: np.ndarray) -> np.ndarray:
    """sum_a <x_ia(k) x_ia(k + m)>_k for lags m = 0..M-1, averaged over the M - m origins (FFT).

    x: (M, n, 3) -> (M, n)."""
    n_frames = x.shape[0]
    size = 2 ** int(np.ceil(np.log2(2 * n_frames)))  # zero padding: a linear, not circular, correlation
    f = np.fft.rfft(x, n=size, axis=0)
    corr = np.fft.irfft(np.abs(f) ** 2, n=size, axis=0)[:n_frames].sum(axis=-1)
    return corr / (n_frames - np.arange(n_frames))[:, None]


def atom_msd(positions: np.ndarray) -> np.ndarray:
    """Per-atom MSD(m) = <|r_i(k + m) - r_i(k)|^2>_k over all M - m time origins (FFT algorithm).

    MSD(m) = S1(m) - 2 S2(m) with S2 the position autocorrelation (FFT) and
    S1(m) = <|r(k)|^2 + |r(k + m)|^2>_k from cumulative sums.

    Args:
        positions: (n_frames, n_atoms, 3) unwrapped positions, Angstrom.

    Returns:
        (n_frames, n_atoms) MSD at lags 0..n_frames-1, Angstrom^2.

    References:
        V. Calandrini et al., JDN 12, 201 (2011), doi:10.1051/sfn/201112010, sec. 4.2.
    """
    x = np.asarray(positions, dtype=float)
    x = x - x.mean(axis=0)  # translation invariant; improves the FFT's round-off
    n_frames = x.shape[0]
    d = np.sum(x**2, axis=-1)  # (M, n)
    cum = np.concatenate([np.zeros((1, d.shape[1])), np.cumsum(d, axis=0)])  # cum[k] = sum_{j<k} d[j]
    lags = np.arange(n_frames)
    s1 = (cum[n_frames] - cum[lags]) + cum[n_frames - lags]  # sum_{k>=m} d[k] + sum_{k<M-m} d[k]
    s1 = s1 / (n_frames - lags)[:, None]
    return np.maximum(s1 - 2.0 * _autocorrelation(x), 0.0)


def _per_species(values: np.ndarray, species: Sequence) -> np.ndarray:
    """(M, n_atoms) -> (n_species, M): the mean over each species' atoms."""
    species = np.asarray(species)
    return np.stack([values[:, species == s].mean(axis=1) for s in species_kinds(species)])


def mean_square_displacement(positions: np.ndarray, species: Sequence) -> np.ndarray:
    """MSD per species averaged over atoms and all time origins.

    Args:
        positions: (n_frames, n_atoms, 3) unwrapped, drift-free positions, Angstrom
            (:func:`unwrap_positions`, :func:`remove_drift`).
        species: (n_atoms,) labels.

    Returns:
        (n_species, n_frames) MSD at lags 0..n_frames-1 frames, Angstrom^2.

    References:
        V. Calandrini et al., JDN 12, 201 (2011), doi:10.1051/sfn/201112010.
    """
    return _per_species(atom_msd(positions), species)


@dataclasses.dataclass(frozen=True)
class DiffusionResult:
    """Diffusion coefficients per species from the Einstein relation.

    Attributes:
        D_A2_per_ps: (n_species,) slope / 6 of the MSD of the whole trajectory in the window, A^2/ps.
        D_stderr_A2_per_ps: (n_species,) standard error from the spread of the blocks' D, A^2/ps.
        block_D_A2_per_ps: (n_blocks, n_species) D of each independent block, A^2/ps.
        window_ps: (t_start, t_end) of the fit, ps.
        n_blocks: number of blocks.
    """

    D_A2_per_ps: np.ndarray
    D_stderr_A2_per_ps: np.ndarray
    block_D_A2_per_ps: np.ndarray
    window_ps: tuple[float, float]
    n_blocks: int

    @property
    def D_cm2_per_s(self) -> np.ndarray:
        return self.D_A2_per_ps * CM2_PER_S_PER_A2_PER_PS

    @property
    def D_stderr_cm2_per_s(self) -> np.ndarray:
        return self.D_stderr_A2_per_ps * CM2_PER_S_PER_A2_PER_PS


def _slopes(msd: np.ndarray, dt_ps: float, window_ps: tuple[float, float]) -> np.ndarray:
    t = np.arange(msd.shape[-1]) * dt_ps
    sel = (t >= window_ps[0] - 1e-9 * dt_ps) & (t <= window_ps[1] + 1e-9 * dt_ps)
    if sel.sum() < 2:
        raise ValueError(f"the fit window {window_ps[0]:g}-{window_ps[1]:g} ps holds {sel.sum()} MSD points "
                         f"(frames every {dt_ps:g} ps, {msd.shape[-1]} lags per block): widen it or use more frames")
    return np.polyfit(t[sel], msd[:, sel].T, 1)[0]


def diffusion_coefficient(positions: np.ndarray, species: Sequence, dt_ps: float, window_ps: tuple[float, float] | None = None,
                          n_blocks: int = 5) -> DiffusionResult:
    """D per species from a linear fit MSD(t) = 6 D t + c over a window, with a block error bar.

    The trajectory is also cut into ``n_blocks`` contiguous blocks; each block's MSD (all its
    time origins) gives its own D over the same window, and the standard error is
    std(D_block) / sqrt(n_blocks) (independent blocks when a block is much longer than the
    window; the whole-trajectory D uses the same data, its variance is at most the blocks' mean's).

    Args:
        positions: (n_frames, n_atoms, 3) unwrapped, drift-free positions, Angstrom.
        species: (n_atoms,) labels.
        dt_ps: time between frames, ps.
        window_ps: (t_start, t_end) of the fit, ps; within a block's duration. Default: 20-80 %
            of a block's duration.
        n_blocks: blocks for the error bar (>= 2).

    Returns:
        A :class:`DiffusionResult`.

    Raises:
        ValueError: fewer than 2 lags in the window, n_blocks < 2, or a window beyond a block.

    References:
        A. Einstein (1905); H. Flyvbjerg and H. G. Petersen, J. Chem. Phys. 91, 461 (1989).
    """
    positions = np.asarray(positions, dtype=float)
    n_frames = positions.shape[0]
    block = n_frames // n_blocks if n_blocks >= 2 else 0
    if block < 3:
        raise ValueError(f"need n_blocks >= 2 blocks of >= 3 frames, got {n_blocks} blocks of {n_frames} frames")
    duration = (block - 1) * dt_ps
    if window_ps is None:
        window_ps = (0.2 * duration, 0.8 * duration)
    window_ps = (float(window_ps[0]), float(window_ps[1]))
    if not 0 <= window_ps[0] < window_ps[1] <= duration + 1e-9 * dt_ps:
        raise ValueError(f"fit window {window_ps[0]:g}-{window_ps[1]:g} ps must lie within one block's duration "
                         f"0-{duration:g} ps ({n_blocks} blocks): shorten it or use fewer blocks")
    whole = _slopes(mean_square_displacement(positions, species), dt_ps, window_ps) / 6.0
    blocks = np.stack([_slopes(mean_square_displacement(positions[b * block:(b + 1) * block], species), dt_ps, window_ps) / 6.0
                       for b in range(n_blocks)])
    stderr = blocks.std(axis=0, ddof=1) / np.sqrt(n_blocks)
    return DiffusionResult(whole, stderr, blocks, window_ps, n_blocks)


def reordered_msd(positions: np.ndarray, cell: np.ndarray, species: Sequence, n_origins: int = 8) -> np.ndarray:
    """Permutation-reordered MSD'(t) = < (1/N_s) min_P sum_i |r_P(i)(t0 + t) - r_i(t0)|^2 >_t0 per species.

    For each time origin t0 and lag, the permutation P among the atoms of one species that
    minimises the summed squared minimum-image distances between the atoms at t0 + t and the
    sites they occupied at t0 is found by linear assignment (scipy ``linear_sum_assignment``,
    exact). MSD' stays at the vibrational value when atoms merely exchange sites and grows only
    when the arrangement of occupied sites changes (diffusion through interstitials, vacancies,
    melting); minimum-image distances keep it below the cell's size squared.

    Args:
        positions: (n_frames, n_atoms, 3) Angstrom (drift-free; wrapped or not).
        cell: (3, 3) lattice vectors as rows, Angstrom, any shape.
        species: (n_atoms,) labels; permutations stay within a species.
        n_origins: time origins t0 evenly spaced over the first half of the trajectory, so that every
            lag up to half the trajectory averages over all of them (cost ~ n_frames x n_origins assignments).

    Returns:
        (n_species, n_frames) MSD' at lags 0..n_frames-1 frames, Angstrom^2 (each lag averaged
        over the origins that reach it).

    References:
        H. Qin et al., Phys. Rev. B 108, 064102 (2023), doi:10.1103/PhysRevB.108.064102;
        H. W. Kuhn, Naval Res. Logist. Q. 2, 83 (1955); D. F. Crouse, IEEE Trans. Aerosp.
        Electron. Syst. 52, 1679 (2016), doi:10.1109/TAES.2016.140952 (scipy's algorithm).
    """
    positions = np.asarray(positions, dtype=float)
    species = np.asarray(species)
    n_frames = positions.shape[0]
    origins = np.unique(np.linspace(0, n_frames // 2, max(1, n_origins), endpoint=False).astype(int))
    reduced = minkowski_reduce(np.asarray(cell, dtype=float))[0]
    kinds = species_kinds(species)
    total = np.zeros((len(kinds), n_frames))
    count = np.zeros(n_frames)
    for t0 in origins:
        for s, kind in enumerate(kinds):
            x = positions[:, species == kind]
            for m in range(n_frames - t0):
                d = _minimum_image_reduced(x[t0 + m][None, :, :] - x[t0][:, None, :], reduced)  # (i at t0, j at t0 + t, 3)
                cost = np.sum(d**2, axis=-1)
                rows, cols = linear_sum_assignment(cost)
                total[s, m] += cost[rows, cols].mean()
        count[: n_frames - t0] += 1
    return total / count


def finite_difference_velocities(positions: np.ndarray, dt_ps: float) -> np.ndarray:
    """Central-difference velocities (r(k + 1) - r(k - 1)) / (2 dt) of an unwrapped trajectory.

    A mode of frequency nu appears with amplitude sin(2 pi nu dt) / (2 pi nu dt): exact peak
    positions, damped high frequencies (frames must be much closer than the periods).

    Args:
        positions: (n_frames, n_atoms, 3) unwrapped positions, Angstrom.
        dt_ps: time between frames, ps.

    Returns:
        (n_frames - 2, n_atoms, 3) velocities at frames 1..n_frames-2, Angstrom/ps.
    """
    positions = np.asarray(positions, dtype=float)
    return (positions[2:] - positions[:-2]) / (2.0 * dt_ps)


def velocity_autocorrelation(velocities: np.ndarray, species: Sequence) -> np.ndarray:
    """C_s(t) = <v_i(t0) . v_i(t0 + t)> per species, over the species' atoms and all time origins.

    Args:
        velocities: (n_frames, n_atoms, 3) Angstrom/ps (drift-free: :func:`remove_drift` works on them too).
        species: (n_atoms,) labels.

    Returns:
        (n_species, n_frames) VACF at lags 0..n_frames-1, (Angstrom/ps)^2 (not normalised;
        C_s(0) = <|v|^2>).

    References:
        M. P. Allen and D. J. Tildesley, Computer Simulation of Liquids, 2nd ed. (2017), sec. 2.7.
    """
    return _per_species(_autocorrelation(np.asarray(velocities, dtype=float)), species)


@dataclasses.dataclass(frozen=True)
class VibrationalDOS:
    """Vibrational density of states per species from the VACF.

    Attributes:
        frequency_THz: (n_freq,) frequencies nu from 0 to the Nyquist frequency 1 / (2 dt), THz.
        dos_per_THz: (n_species, n_freq) g_s(nu), states per THz; trapezoidal integral 3 N_s.
        max_lag_ps: the VACF's truncation (Hann window), ps; resolution about 1 / max_lag_ps THz.
    """

    frequency_THz: np.ndarray
    dos_per_THz: np.ndarray
    max_lag_ps: float


def vibrational_dos(vacf: np.ndarray, dt_ps: float, n_atoms_per_species: Sequence[int], max_lag: int | None = None) -> VibrationalDOS:
    """g_s(nu) = 3 N_s x 2 int C_s(t) w(t) cos(2 pi nu t) dt / C_s(0), the VACF's one-sided spectrum.

    The VACF is multiplied by the half Hann window w(t) = cos^2(pi t / (2 t_max)) (w(0) = 1) and
    transformed as an even function by a discrete Fourier transform; dividing by C_s(0) makes
    the trapezoidal integral over 0..nu_Nyquist exactly 3 N_s (the discrete inverse transform at
    t = 0). Classically (equipartition) every mode then counts once; mass-weighted totals equal
    the sum of the partials. Peaks above the Nyquist frequency of the frames alias.

    Args:
        vacf: (n_species, n_lags) C_s(t) at lags 0, dt, 2 dt, ...
        dt_ps: time between frames, ps.
        n_atoms_per_species: (n_species,) N_s.
        max_lag: lags kept (default half the available ones).

    Returns:
        A :class:`VibrationalDOS`.

    References:
        J. M. Dickey and A. Paskin, Phys. Rev. 188, 1407 (1969), doi:10.1103/PhysRev.188.1407.
    """
    vacf = np.atleast_2d(np.asarray(vacf, dtype=float))
    n_lags = vacf.shape[1] // 2 if max_lag is None else min(int(max_lag), vacf.shape[1])
    if n_lags < 2:
        raise ValueError(f"the VACF needs at least 2 lags, got {n_lags}")
    window = np.cos(0.5 * np.pi * np.arange(n_lags) / n_lags) ** 2
    c = vacf[:, :n_lags] * window
    even = np.concatenate([c, np.zeros((c.shape[0], 1)), c[:, :0:-1]], axis=1)  # length 2 n_lags
    spectrum = np.fft.rfft(even, axis=1).real * dt_ps  # two-sided C(nu), nu_k = k / (2 n_lags dt)
    frequency = np.fft.rfftfreq(even.shape[1], d=dt_ps)
    dos = 2.0 * spectrum / vacf[:, :1] * 3.0 * np.asarray(n_atoms_per_species, dtype=float)[:, None]
    return VibrationalDOS(frequency_THz=frequency, dos_per_THz=dos, max_lag_ps=n_lags * dt_ps)
