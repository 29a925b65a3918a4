"""PNG plots of a run (matplotlib, non-interactive backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_free_energy(
    path: Path,
    steps: np.ndarray,
    free_energy_meV_per_atom: np.ndarray,
    harmonic_meV_per_atom: float,
    final_meV_per_atom: float,
    final_stderr_meV_per_atom: float,
    window_start: int,
) -> None:
    """Training curve of F per atom with the harmonic reference and the final error band."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(steps, free_energy_meV_per_atom, lw=0.8, color="C0", label="NCT batch estimate")
    ax.axhline(harmonic_meV_per_atom, color="C3", ls="--", label="harmonic (exact)")
    lo, hi = final_meV_per_atom - final_stderr_meV_per_atom, final_meV_per_atom + final_stderr_meV_per_atom
    ax.fill_between([window_start, steps[-1]], [lo, lo], [hi, hi], color="C1", alpha=0.4, label="final +- 1 s.e.")
    ax.axhline(final_meV_per_atom, color="C1", lw=1)
    spread = max(4 * abs(final_meV_per_atom - harmonic_meV_per_atom), 20 * final_stderr_meV_per_atom, 0.05)
    centre = 0.5 * (final_meV_per_atom + harmonic_meV_per_atom)
    ax.set_ylim(centre - spread, centre + spread)
    ax.set_xlabel("training step")
    ax.set_ylabel("free energy (meV/atom)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_occupations(path: Path, phonon_energies_meV: np.ndarray, mean_level: np.ndarray, harmonic_mean_level: np.ndarray) -> None:
    """Mean excitation level <n_k> of each mode, learned vs harmonic Boltzmann (same truncation)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    order = np.argsort(phonon_energies_meV)
    ax.plot(phonon_energies_meV[order], harmonic_mean_level[order], "-", color="C3", label="harmonic")
    ax.plot(phonon_energies_meV[order], mean_level[order], "o", ms=3, color="C0", label="NCT (learned)")
    ax.set_xlabel("harmonic phonon energy (meV)")
    ax.set_ylabel("mean occupation <n_k>")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
