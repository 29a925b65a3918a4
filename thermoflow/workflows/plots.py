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


def plot_rdf(path: Path, rdf, reference_rdf, shells: dict, reference_label: str, label: str = "NCT state") -> None:
    """g(r) per species pair (:class:`thermoflow.analysis.structure.RadialDistribution`, ``label``) with its
    error band, a reference g(r) (``reference_label``; None: none) dashed, and the static lattice's shells as
    sticks (right axis: neighbours per shell)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    twin = ax.twinx() if shells else None
    for p, (a, b) in enumerate(rdf.pairs):
        colour = f"C{p}"
        pair = f"{a}-{b}" if len(rdf.pairs) > 1 else ""
        err = np.nan_to_num(rdf.g_stderr[p])
        ax.plot(rdf.r_A, rdf.g[p], color=colour, lw=1.2, label=f"{label} {pair}".strip())
        ax.fill_between(rdf.r_A, rdf.g[p] - err, rdf.g[p] + err, color=colour, alpha=0.3, lw=0)
        if reference_rdf is not None:
            ax.plot(reference_rdf.r_A, reference_rdf.g[p], color=colour, ls="--", lw=0.9, label=f"{reference_label} {pair}".strip())
        if (a, b) in shells:
            radii, counts = np.array(shells[(a, b)]).reshape(-1, 2).T
            twin.vlines(radii, 0, counts, color=colour, alpha=0.5, lw=2)
            ax.plot([], [], color=colour, alpha=0.5, lw=2, label=f"static lattice shells {pair}".strip())  # legend entry
    if twin is not None:
        twin.set_ylabel("neighbours per shell (static lattice)")
        twin.set_ylim(bottom=0)
    ax.set_xlim(0, rdf.edges_A[-1])
    _finish(fig, ax, path, "r (A)", "g(r)")


def plot_msd(path: Path, time_ps: np.ndarray, curves: dict[str, tuple[np.ndarray, np.ndarray]],
             diffusion: dict[str, tuple[float, float]], window_ps: tuple[float, float]) -> None:
    """MSD and permutation-reordered MSD' per species (label -> ((n,), (n,)) A^2) against time (n,) ps,
    with the Einstein fit's D (label -> (D, stderr) A^2/ps) in the legend and the fit window shaded."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, (msd, reordered)) in enumerate(curves.items()):
        d, err = diffusion[label]
        ax.plot(time_ps, msd, color=f"C{i}", lw=1.2, label=f"MSD {label}: D = {d:.3g} +- {err:.2g} A^2/ps")
        ax.plot(time_ps, reordered, color=f"C{i}", ls="--", lw=1.0, label=f"MSD' {label} (permutation-reordered)")
    ax.axvspan(*window_ps, color="0.85", zorder=0, label="fit window")
    ax.set_xlim(0, time_ps[-1])
    ax.set_ylim(bottom=0.0)
    _finish(fig, ax, path, "time (ps)", "mean-square displacement (A^2)")


def plot_vdos(path: Path, frequency_THz: np.ndarray, curves: dict[str, np.ndarray], meV_per_THz: float) -> None:
    """Vibrational DOS per species (label -> (n,) states/THz) and their sum against frequency (n,) THz;
    the top axis in meV."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, (label, dos) in enumerate(curves.items()):
        ax.plot(frequency_THz, dos, color=f"C{i}", lw=1.0, label=label)
    if len(curves) > 1:
        ax.plot(frequency_THz, sum(curves.values()), color="k", lw=1.2, label="total")
    total = np.cumsum(np.abs(sum(curves.values())))
    ax.set_xlim(0, min(frequency_THz[-1], 1.3 * frequency_THz[np.searchsorted(total, 0.995 * total[-1])]))
    top = ax.secondary_xaxis("top", functions=(lambda f: f * meV_per_THz, lambda e: e / meV_per_THz))
    top.set_xlabel("energy (meV)")
    _finish(fig, ax, path, "frequency (THz)", "vibrational DOS (states/THz, integral 3N)")


def plot_ti_integrand(path: Path, lambdas: np.ndarray, du_dlambda_meV: np.ndarray, stderr_meV: np.ndarray,
                      integral_meV: float, integral_stderr_meV: float) -> None:
    """Thermodynamic integration: <U - U_ref>_lambda per atom (n,) meV with error bars at the nodes (n,),
    and the integral's value in the legend."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.errorbar(lambdas, du_dlambda_meV, yerr=stderr_meV, fmt="o-", ms=4, capsize=3, color="C0",
                label=f"Gauss-Legendre nodes; integral {integral_meV:.4f} +- {integral_stderr_meV:.4f} meV/atom")
    ax.axhline(integral_meV, color="C1", ls="--", lw=0.8)
    ax.set_xlim(0.0, 1.0)
    _finish(fig, ax, path, "lambda", "<U - U_ref>_lambda (meV/atom)")


def plot_fdt_deviation(path: Path, spectra: dict, symbols: list[str], friction_per_ps: float, cutoff_THz: float) -> None:
    """QTB fluctuation-dissipation deviation and gamma_r per species against frequency (``spectra`` of
    :func:`thermoflow.md.qtb.deviation_spectrum`)."""
    freq = spectra["frequency_THz"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(6.4, 6.0), sharex=True)
    for i, s in enumerate(symbols):
        ax1.plot(freq, spectra["relative_deviation"][i], lw=0.8, label=s)
        ax2.plot(freq, spectra["gamma_ratio"][i] * friction_per_ps, lw=0.8, label=s)
    ax1.axhline(0.0, color="k", lw=0.5)
    ax1.set_ylabel("relative FDT deviation\n(I - (gamma_r/gamma) D) / D")
    ax2.axhline(friction_per_ps, color="k", lw=0.5)
    ax2.set_xlim(0.0, 1.1 * cutoff_THz)
    ax1.set_title("QTB fluctuation-dissipation deviation (running mean over segments)")
    ax2.set_ylabel("gamma_r (1/ps)")
    ax2.set_xlabel("frequency (THz)")
    ax1.legend(title="species")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_training_trace(path: Path, steps: np.ndarray, values: np.ndarray, final: float, final_stderr: float, ylabel: str,
                        unit: str) -> None:
    """A training trace (``values`` per step) with the final evaluation's value and error band."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ax.plot(steps, values, lw=0.8, label="walkers' mean (training)")
    ax.axhspan(final - final_stderr, final + final_stderr, color="C1", alpha=0.4, label=f"final: {final:.5f} +- {final_stderr:.5f} {unit}")
    _finish(fig, ax, path, "step", ylabel)


def plot_scan(path: Path, rs_bohr: np.ndarray, panels: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Quantities with error bars against r_s, one panel each (``panels``: label -> (values, errors))."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.7 * len(panels), 3.6), squeeze=False)
    for ax, (label, (values, errors)) in zip(axes[0], panels.items()):
        ax.errorbar(rs_bohr, values, yerr=errors, marker="o", capsize=3)
        ax.set_xlabel("r_s (bohr)")
        ax.set_ylabel(label)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str) -> None:
    """Several (x, y) curves on one axis, labelled by the keys of ``curves``."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for label, (x, y) in curves.items():
        ax.plot(x, y, lw=1.0, label=label)
    _finish(fig, ax, path, xlabel, ylabel)
