"""Trajectory analysis of an MD run: ``thermoflow analyze RUN_DIR_OR_TRAJ``.

Reads ``trajectory.extxyz`` of a ``thermoflow md`` run directory (the frame interval from its
``config.resolved.toml`` and the frames' ``step``) or any extxyz file ASE reads (frame interval
from ``--timestep-fs`` times the frames' ``step`` difference, or their ``time_ps``), drops
``skip`` frames, keeps every ``every``-th, and writes into ``RUN_DIR/analysis/`` (a bare file:
``<file stem>_analysis/`` beside it, or ``out``)::

    msd.csv        time_ps, msd_<s>_A2 and msd_reordered_<s>_A2 per species s
    vacf.csv       time_ps, vacf_<s>_A2_per_ps2 per species (velocities of the frames, or central
                   differences of the positions when the file has none)
    vdos.csv       frequency_THz, energy_meV, vdos_<s>_per_THz per species, vdos_total_per_THz, vdos_total_per_meV
    rdf.csv        r_A, g_<a>_<b>, g_<a>_<b>_stderr, n_<a>_<b> per ordered species pair (from at most
                   rdf_frames frames, evenly spaced; the stderr treats them as independent)
    analysis.json  D per species (A^2/ps, cm^2/s) with block error bars, MSD' in the fit window,
                   settings, the VDOS's peak and median frequencies, its Nyquist frequency and its weight near it (aliasing check)
    msd.png, vdos.png, rdf.png

Positions are unwrapped by minimum-image frame increments and the centre-of-mass drift is
removed before MSD, MSD' and the VACF (``thermoflow.analysis.dynamics``); g(r) is
``thermoflow.analysis.structure.radial_distribution``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import tomllib
from pathlib import Path

import ase.io
import numpy as np

from thermoflow.analysis import dynamics
from thermoflow.analysis.structure import default_rdf_range, radial_distribution
from thermoflow.io.atomic import atomic_write_text
from thermoflow.units import ASE_TIME_PER_PS, omega_to_mev, thz_to_omega
from thermoflow.workflows import plots
from thermoflow.workflows.run_dir import write_csv, write_rdf_csv

log = logging.getLogger(__name__)

#: meV per THz (E = h nu)
MEV_PER_THZ = float(omega_to_mev(thz_to_omega(1.0)))


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """Frames of a fixed-cell trajectory as arrays.

    Attributes:
        positions: (n_frames, n_atoms, 3) as stored, Angstrom.
        velocities: (n_frames, n_atoms, 3) Angstrom/ps, or None if the file has none.
        cell: (3, 3) lattice vectors as rows, Angstrom.
        symbols: (n_atoms,) chemical symbols.
        masses: (n_atoms,) amu.
        dt_ps: time between the kept frames, ps.
        source: the file read.
    """

    positions: np.ndarray
    velocities: np.ndarray | None
    cell: np.ndarray
    symbols: np.ndarray
    masses: np.ndarray
    dt_ps: float
    source: Path


def load_trajectory(path: Path, *, timestep_fs: float | None = None, skip: int = 0, every: int = 1) -> Trajectory:
    """Read an MD run directory's ``trajectory.extxyz`` or an extxyz file into arrays.

    Args:
        path: a ``thermoflow md`` run directory, or a trajectory file ASE reads.
        timestep_fs: MD timestep, fs: the frame interval is it times the frames' ``step``
            difference (or it is the frame interval if frames carry no ``step``). Default: the run
            directory's ``md.timestep_fs``, else the frames' ``time_ps``.
        skip: frames dropped at the start (equilibration).
        every: keep every this many frames after ``skip``.

    Raises:
        FileNotFoundError: no trajectory at ``path``.
        ValueError: fewer than 8 frames kept, frames unequally spaced or of different cells, or
            no way to know the frame interval.
    """
    path = Path(path)
    run_dir = path if path.is_dir() else None
    file = path / "trajectory.extxyz" if run_dir else path
    if not file.is_file():
        raise FileNotFoundError(f"no trajectory at {file}: give a thermoflow md run directory or an extxyz file")
    if skip < 0 or every < 1 or (timestep_fs is not None and not timestep_fs > 0):
        raise ValueError(f"need --skip >= 0, --every >= 1 and --timestep-fs > 0, got {skip}, {every} and {timestep_fs}")
    frames = ase.io.read(file, index=":")
    if timestep_fs is None and run_dir is not None and (run_dir / "config.resolved.toml").is_file():
        timestep_fs = tomllib.loads((run_dir / "config.resolved.toml").read_text())["md"]["timestep_fs"]
    steps = [f.info.get("step") for f in frames]
    times = [f.info.get("time_ps") for f in frames]
    if timestep_fs is not None:
        marks = np.asarray(steps, float) * timestep_fs / 1000.0 if None not in steps else np.arange(len(frames)) * timestep_fs / 1000.0
    elif None not in times:
        marks = np.asarray(times, float)
    else:
        raise ValueError(f"{file}: frames carry no time_ps; give the MD timestep with --timestep-fs")
    kept = list(range(skip, len(frames), every))
    if len(kept) < 8:
        raise ValueError(f"{len(kept)} frames left of {len(frames)} after --skip {skip} --every {every}; need at least 8")
    intervals = np.diff(marks[kept])
    if not np.allclose(intervals, intervals[0], rtol=1e-6) or intervals[0] <= 0:
        raise ValueError(f"{file}: frames are not equally spaced in time ({intervals.min():g}-{intervals.max():g} ps)")
    cells = np.array([frames[k].cell.array for k in kept])
    if np.abs(cells - cells[0]).max() > 1e-8 * np.abs(cells[0]).max():
        raise ValueError(f"{file}: the cell changes between frames; MSD and VACF need a fixed cell (NVE/NVT)")
    has_v = all("momenta" in frames[k].arrays for k in kept)
    return Trajectory(
        positions=np.array([frames[k].get_positions() for k in kept]),
        velocities=np.array([frames[k].get_velocities() for k in kept]) * ASE_TIME_PER_PS if has_v else None,
        cell=cells[0], symbols=np.asarray(frames[0].get_chemical_symbols()), masses=frames[0].get_masses(),
        dt_ps=float(intervals[0]), source=file,
    )


def _median_frequency(frequency_THz: np.ndarray, dos: np.ndarray) -> float:
    """The frequency below which half the (trapezoidal) VDOS weight lies, THz (robust against the
    Lorentzian tails a Langevin friction gives the spectrum, unlike the mean)."""
    cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (dos[1:] + dos[:-1]) * np.diff(frequency_THz))])
    return float(np.interp(0.5 * cumulative[-1], cumulative, frequency_THz))


def run_analyze(path: Path, out: Path | None = None, *, timestep_fs: float | None = None, skip: int = 0, every: int = 1,
                fit_window_ps: tuple[float, float] | None = None, n_blocks: int = 5, r_max_A: float | None = None,
                n_bins: int = 200, n_origins: int = 8, rdf_frames: int = 100) -> dict:
    """MSD, D, MSD', VACF, VDOS and g(r) of a trajectory; writes the files of the module docstring.

    Args:
        path: MD run directory or trajectory file (:func:`load_trajectory`).
        out: output directory (default ``RUN_DIR/analysis`` or ``<file stem>_analysis``).
        timestep_fs, skip, every: as in :func:`load_trajectory`.
        fit_window_ps: (start, end) of the MSD fit, ps (default 20-80 % of a block's duration).
        n_blocks: independent blocks for D's error bar.
        r_max_A: largest g(r) distance, Angstrom (default 2.5 nearest-neighbour distances of the first frame, short of the shortest lattice translation).
        n_bins: g(r) bins.
        n_origins: time origins of MSD'.
        rdf_frames: g(r) from at most this many frames, evenly spaced (consecutive frames are correlated).

    Returns:
        The dictionary written to ``analysis.json``.

    Raises:
        FileNotFoundError, ValueError: from :func:`load_trajectory` and the fit window.
    """
    t_start = time.perf_counter()
    path = Path(path)
    traj = load_trajectory(path, timestep_fs=timestep_fs, skip=skip, every=every)
    out = Path(out) if out is not None else (path / "analysis" if path.is_dir() else path.with_name(f"{path.stem}_analysis"))
    out.mkdir(parents=True, exist_ok=True)
    kinds = dynamics.species_kinds(traj.symbols)
    counts = [int(np.sum(traj.symbols == s)) for s in kinds]
    n_frames, n_atoms = traj.positions.shape[:2]
    dt = traj.dt_ps
    time_ps = np.arange(n_frames) * dt

    unwrapped = dynamics.remove_drift(dynamics.unwrap_positions(traj.positions, traj.cell), traj.masses)
    msd = dynamics.mean_square_displacement(unwrapped, traj.symbols)
    diffusion = dynamics.diffusion_coefficient(unwrapped, traj.symbols, dt, fit_window_ps, n_blocks)
    msd_reordered = dynamics.reordered_msd(unwrapped, traj.cell, traj.symbols, n_origins)
    write_csv(out / "msd.csv", ["time_ps"] + [f"msd_{s}_A2" for s in kinds] + [f"msd_reordered_{s}_A2" for s in kinds],
               [time_ps, *msd, *msd_reordered])

    if traj.velocities is not None:
        velocities, velocity_source = dynamics.remove_drift(traj.velocities, traj.masses), "velocities stored in the trajectory"
    else:
        velocities = dynamics.finite_difference_velocities(unwrapped, dt)
        velocity_source = "central differences of the unwrapped positions (no velocities in the trajectory)"
    vacf = dynamics.velocity_autocorrelation(velocities, traj.symbols)
    write_csv(out / "vacf.csv", ["time_ps"] + [f"vacf_{s}_A2_per_ps2" for s in kinds], [np.arange(vacf.shape[1]) * dt, *vacf])
    vdos = dynamics.vibrational_dos(vacf, dt, counts)
    total = vdos.dos_per_THz.sum(axis=0)
    write_csv(out / "vdos.csv", ["frequency_THz", "energy_meV"] + [f"vdos_{s}_per_THz" for s in kinds] + ["vdos_total_per_THz", "vdos_total_per_meV"],
               [vdos.frequency_THz, vdos.frequency_THz * MEV_PER_THZ, *vdos.dos_per_THz, total, total / MEV_PER_THZ])
    nyquist = float(vdos.frequency_THz[-1])
    top = vdos.frequency_THz >= 0.9 * nyquist
    near_nyquist = float(np.trapezoid(np.clip(total[top], 0, None), vdos.frequency_THz[top]) / (3 * n_atoms))
    if near_nyquist > 0.01:
        log.warning("%.1f %% of the VDOS lies within 10 %% of the Nyquist frequency %.3g THz: frames are too far apart "
                    "(aliasing); write frames more often (md.trajectory_every) or drop --every", 100 * near_nyquist, nyquist)

    if r_max_A is None:
        r_max_A = default_rdf_range(traj.positions[0], traj.cell)
    rdf_kept = np.unique(np.linspace(0, n_frames - 1, min(max(1, rdf_frames), n_frames)).astype(int))
    rdf = radial_distribution(traj.positions[rdf_kept], traj.cell, traj.symbols, r_max_A, n_bins)
    write_rdf_csv(out / "rdf.csv", rdf)

    window = (time_ps >= diffusion.window_ps[0]) & (time_ps <= diffusion.window_ps[1])
    results = {
        "source": str(traj.source), "output": str(out), "n_atoms": n_atoms, "species": {s: c for s, c in zip(kinds, counts)},
        "n_frames": n_frames, "frame_interval_ps": dt, "duration_ps": float(time_ps[-1]),
        "skip": skip, "every": every, "fit_window_ps": list(diffusion.window_ps), "n_blocks": n_blocks,
        "diffusion": {s: {"D_A2_per_ps": float(diffusion.D_A2_per_ps[i]), "D_stderr_A2_per_ps": float(diffusion.D_stderr_A2_per_ps[i]),
                          "D_cm2_per_s": float(diffusion.D_cm2_per_s[i]), "D_stderr_cm2_per_s": float(diffusion.D_stderr_cm2_per_s[i]),
                          "block_D_A2_per_ps": diffusion.block_D_A2_per_ps[:, i].tolist()} for i, s in enumerate(kinds)},
        "msd_in_fit_window_A2": {s: float(msd[i, window].mean()) for i, s in enumerate(kinds)},
        "msd_reordered_in_fit_window_A2": {s: float(msd_reordered[i, window].mean()) for i, s in enumerate(kinds)},
        "msd_reordered_origins": n_origins,
        "velocities": velocity_source,
        "vdos_nyquist_THz": nyquist, "vdos_resolution_THz": 1.0 / vdos.max_lag_ps,
        "vdos_fraction_near_nyquist": near_nyquist,
        "vdos_median_frequency_THz": {s: _median_frequency(vdos.frequency_THz, vdos.dos_per_THz[i]) for i, s in enumerate(kinds)},
        "vdos_peak_frequency_THz": {s: float(vdos.frequency_THz[np.argmax(vdos.dos_per_THz[i])]) for i, s in enumerate(kinds)},
        "r_max_A": r_max_A, "n_bins": n_bins, "rdf_frames": len(rdf_kept),
        "method": "unwrapped (minimum-image increments), centre-of-mass drift removed; MSD over all time origins (FFT); "
                  "D = slope/6 of a least-squares line over the fit window, error = std of the blocks' D / sqrt(n_blocks); "
                  "MSD' by linear assignment on minimum-image squared distances within each species",
    }
    plots.plot_msd(out / "msd.png", time_ps, {s: (msd[i], msd_reordered[i]) for i, s in enumerate(kinds)},
                   {s: (results["diffusion"][s]["D_A2_per_ps"], results["diffusion"][s]["D_stderr_A2_per_ps"]) for s in kinds},
                   diffusion.window_ps)
    plots.plot_vdos(out / "vdos.png", vdos.frequency_THz, dict(zip(kinds, vdos.dos_per_THz)), MEV_PER_THZ)
    plots.plot_rdf(out / "rdf.png", rdf, None, {}, "", label="MD")
    results["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_text(out / "analysis.json", json.dumps(results, indent=2) + "\n")
    return results
