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
    harmonic_meV_per_atom: float | None,
    final_meV_per_atom: float,
    final_stderr_meV_per_atom: float,
    window_start: int,
    gaussian_meV_per_atom: float | None = None,
) -> None:
    """Training curve of F per atom with the harmonic reference, the self-consistent Gaussian's F
    (if given) and the final error band."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(steps, free_energy_meV_per_atom, lw=0.8, color="C0", label="NCT batch estimate")
    if harmonic_meV_per_atom is not None:
        ax.axhline(harmonic_meV_per_atom, color="C3", ls="--", label=f"harmonic (exact): {harmonic_meV_per_atom:.2f}")
    if gaussian_meV_per_atom is not None:
        ax.axhline(gaussian_meV_per_atom, color="C2", ls=":", label=f"self-consistent Gaussian: {gaussian_meV_per_atom:.3f}")
    lo, hi = final_meV_per_atom - final_stderr_meV_per_atom, final_meV_per_atom + final_stderr_meV_per_atom
    ax.fill_between([window_start, steps[-1]], [lo, lo], [hi, hi], color="C1", alpha=0.4,
                    label=f"reported: {final_meV_per_atom:.3f} +- {final_stderr_meV_per_atom:.3f}")
    ax.axhline(final_meV_per_atom, color="C1", lw=1)
    # zoom on the training curve; the harmonic line shows only if it falls inside (its value is in the legend)
    p1, p99 = np.percentile(free_energy_meV_per_atom, [1, 99])
    margin = 0.3 * (p99 - p1) + 10 * final_stderr_meV_per_atom
    ax.set_ylim(p1 - margin, p99 + margin)
    _finish(fig, ax, path, "training step", "free energy (meV/atom)")


def plot_occupations(path: Path, phonon_energies_meV: np.ndarray, mean_level: np.ndarray, harmonic_mean_level: np.ndarray) -> None:
    """Mean excitation level <n_k> of each mode, learned vs harmonic Boltzmann (same truncation)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    order = np.argsort(phonon_energies_meV)
    ax.plot(phonon_energies_meV[order], harmonic_mean_level[order], "-", color="C3", label="harmonic")
    ax.plot(phonon_energies_meV[order], mean_level[order], "o", ms=3, color="C0", label="NCT (learned)")
    _finish(fig, ax, path, "harmonic phonon energy (meV)", "mean occupation <n_k>")


def plot_free_energy_comparison(
    path: Path,
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    harmonic_meV_per_atom: float | None = None,
    window: int = 20,
) -> None:
    """Training curves of several runs (e.g. flow trained vs frozen) on one axis.

    Args:
        path: output PNG.
        curves: label -> (steps (n,), free energy (n,) in meV/atom); each is drawn as a
            running mean over ``window`` steps.
        harmonic_meV_per_atom: exact harmonic F, drawn as a dashed line if given.
        window: running-mean width in steps.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, (steps, free)) in enumerate(curves.items()):
        w = max(1, min(window, len(free)))
        smooth = np.convolve(free, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], smooth, lw=1.2, color=f"C{i}", label=f"{label} ({w}-step mean)")
    if harmonic_meV_per_atom is not None:
        ax.axhline(harmonic_meV_per_atom, color="C3", ls="--", label=f"harmonic (exact): {harmonic_meV_per_atom:.2f}")
    _finish(fig, ax, path, "training step", "free energy (meV/atom)")


def broadened_dos(energies_meV: np.ndarray, grid_meV: np.ndarray, width_meV: float) -> np.ndarray:
    """Density of states sum_k N(E; e_k, width) / n_modes on ``grid_meV`` (Gaussian broadening of a
    supercell's discrete Gamma-point spectrum), 1/meV, normalised to 1."""
    x = (grid_meV[:, None] - np.asarray(energies_meV)[None, :]) / width_meV
    return np.exp(-0.5 * x**2).sum(axis=1) / (np.sqrt(2 * np.pi) * width_meV * len(energies_meV))


def plot_phonon_dos(path: Path, curves: dict[str, np.ndarray], width_meV: float) -> None:
    """Broadened phonon densities of states, one curve per label (energies in meV)."""
    top = max(float(np.max(e)) for e in curves.values())
    grid = np.linspace(0.0, 1.15 * top + 3 * width_meV, 600)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, energies) in enumerate(curves.items()):
        ax.plot(grid, broadened_dos(energies, grid, width_meV), color=f"C{i}", label=label)
    ax.set_ylim(bottom=0.0)
    _finish(fig, ax, path, f"phonon energy (meV; Gaussian broadening {width_meV:.2g} meV)", "density of states (1/meV)")


def plot_phase_curves(path: Path, temperatures_K: np.ndarray, curves: dict[str, tuple[np.ndarray, np.ndarray]],
                      ylabel: str, zero_line: bool = False) -> None:
    """Values with error bands against temperature, one curve per phase (label -> (values, errors))."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, (values, errors)) in enumerate(curves.items()):
        ax.plot(temperatures_K, values, "o-", ms=3, color=f"C{i}", label=label)
        ax.fill_between(temperatures_K, values - errors, values + errors, color=f"C{i}", alpha=0.3)
    if zero_line:
        ax.axhline(0.0, color="k", lw=0.8)
    _finish(fig, ax, path, "temperature (K)", ylabel)


def _finish(fig, ax, path: Path, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_run_free_energy(run_dir: Path) -> None:
    """Write ``free_energy.png`` of a finished run from its ``metrics.csv`` and ``results.json``."""
    import json

    run_dir = Path(run_dir)
    res = json.loads((run_dir / "results.json").read_text())
    data = np.genfromtxt(run_dir / "metrics.csv", delimiter=",", names=True)
    steps = data["step"]
    meV = 1000.0
    plot_free_energy(
        run_dir / "free_energy.png", steps, data["free_energy_eV_per_atom"] * meV,
        None if res["harmonic_free_energy_eV_per_atom"] is None else res["harmonic_free_energy_eV_per_atom"] * meV,
        res["free_energy_eV_per_atom"] * meV,
        res["free_energy_stderr_eV_per_atom"] * meV, int(steps[-1] + 1 - res["averaging_window_steps"]),
        res["gaussian_free_energy_eV_per_atom"] * meV if "gaussian_free_energy_eV_per_atom" in res else None,
    )
