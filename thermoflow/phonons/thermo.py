"""Exact thermodynamics of independent quantum harmonic oscillators.

For one mode of energy quantum e = hbar omega at kT:
F = e/2 + kT ln(1 - exp(-e/kT)), E = e/2 + e / (exp(e/kT) - 1), S = (E - F)/T.
With the spectrum truncated to K levels (what an NCT run with K levels per mode can reach),
F_K = -kT ln sum_{n<K} exp(-e (n + 1/2)/kT).

References: e.g. D. C. Wallace, Thermodynamics of Crystals (Wiley, 1972), ch. 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import logsumexp


@dataclasses.dataclass(frozen=True)
class HarmonicThermo:
    """Totals over modes (eV; entropy in units of k_B)."""

    free_energy_eV: float
    energy_eV: float
    entropy_kB: float
    zero_point_energy_eV: float


def harmonic_thermodynamics(phonon_energies_eV: np.ndarray, kT_eV: float, n_levels: int | None = None) -> HarmonicThermo:
    """Vibrational F, E, S and ZPE of independent oscillators (static energy excluded).

    Args:
        phonon_energies_eV: (n_modes,) hbar omega_k > 0, eV.
        kT_eV: thermal energy, eV (0 allowed: the ground state).
        n_levels: if given, truncate each mode to its lowest ``n_levels`` levels.

    Raises:
        ValueError: for non-positive phonon energies, negative kT or n_levels < 1.
    """
    e = np.asarray(phonon_energies_eV, dtype=np.float64)
    if (e <= 0).any():
        raise ValueError("phonon energies must be positive")
    if kT_eV < 0:
        raise ValueError("kT must be non-negative")
    zpe = 0.5 * e.sum()
    if kT_eV == 0:
        return HarmonicThermo(zpe, zpe, 0.0, zpe)
    x = e / kT_eV
    if n_levels is None:
        f = 0.5 * e + kT_eV * np.log1p(-np.exp(-x))
        en = 0.5 * e + e / np.expm1(x)
    else:
        if n_levels < 1:
            raise ValueError("n_levels must be >= 1")
        levels = np.arange(n_levels) + 0.5
        logw = -x[:, None] * levels[None, :]
        logz = logsumexp(logw, axis=1)
        p = np.exp(logw - logz[:, None])
        f = -kT_eV * logz
        en = (p * e[:, None] * levels[None, :]).sum(axis=1)
    return HarmonicThermo(float(f.sum()), float(en.sum()), float(((en - f) / kT_eV).sum()), float(zpe))
