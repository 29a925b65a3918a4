"""Harmonic and self-consistent Gaussian analysis of a config's crystal (no NCT training)."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from thermoflow.phonons.modes import HarmonicModes
from thermoflow.phonons.qmesh import InterpolatedPhonons, interpolated_phonons
from thermoflow.phonons.scha import GaussianReference, centroid_in_basis, curvature_in_basis, optimise_gaussian
from thermoflow.phonons.thermo import harmonic_thermodynamics
from thermoflow.units import KB_EV_PER_K, MEV_PER_EV, omega_to_thz
from thermoflow.workflows.build import build_modes, build_potential, build_structure, relax_positions
from thermoflow.workflows.config import ConfigError, RunConfig, resolve_path

log = logging.getLogger(__name__)


def harmonic_results(modes: HarmonicModes, kT_eV: float) -> dict:
    """Per-atom harmonic F, E, S, ZPE of ``modes`` (static energy included), or None for each with
    ``harmonic_undefined_reason`` when a mode is imaginary: an unstable harmonic crystal has no
    partition function, and |omega| (which the NCT basis uses) would invent one."""
    n = modes.n_atoms
    keys = ("harmonic_free_energy_eV_per_atom", "harmonic_vibrational_free_energy_eV_per_atom", "harmonic_energy_eV_per_atom",
            "harmonic_entropy_kB_per_atom", "harmonic_zero_point_energy_eV_per_atom")
    if modes.imaginary.any():
        return {
            **dict.fromkeys(keys),
            "harmonic_undefined_reason": f"{int(modes.imaginary.sum())} imaginary harmonic mode(s): the harmonic crystal is "
            "unstable and has no free energy (the NCT basis uses |omega|; the self-consistent Gaussian does not need it)",
        }
    th = harmonic_thermodynamics(modes.phonon_energies_eV, kT_eV)
    values = ((modes.energy0_eV + th.free_energy_eV) / n, th.free_energy_eV / n, (modes.energy0_eV + th.energy_eV) / n,
              th.entropy_kB / n, th.zero_point_energy_eV / n)
    return dict(zip(keys, values))


def _write_frequencies(path: Path, modes: HarmonicModes) -> np.ndarray:
    """frequencies.csv (THz, meV; imaginary modes flagged with negative THz); returns the THz."""
    freq_thz = np.where(modes.imaginary, -1.0, 1.0) * omega_to_thz(modes.omega)
    with open(path, "w") as fh:
        fh.write("mode,frequency_THz,phonon_energy_meV,imaginary\n")
        for k, (f, e, im) in enumerate(zip(freq_thz, modes.phonon_energies_eV * MEV_PER_EV, modes.imaginary)):
            fh.write(f"{k},{f:.6f},{e:.6f},{int(im)}\n")
    return freq_thz


def run_phonons(config: RunConfig, base: Path, out_dir: Path) -> dict:
    """Write ``phonons.json`` and ``frequencies.csv`` (THz, meV; imaginary modes flagged) to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atoms, _, modes = build_modes(config, base, cache_dir=out_dir)
    n = len(atoms)
    kT = KB_EV_PER_K * config.state.temperature_K
    freq_thz = _write_frequencies(out_dir / "frequencies.csv", modes)
    result = {
        "n_atoms": n,
        "n_modes": modes.n_modes,
        "n_translations_removed": modes.n_translations_removed,
        "n_imaginary_modes": int(modes.imaginary.sum()),
        "static_energy_eV_per_atom": modes.energy0_eV / n,
        "temperature_K": config.state.temperature_K,
        **harmonic_results(modes, kT),
        "frequency_min_THz": float(freq_thz.min()),
        "frequency_max_THz": float(freq_thz.max()),
    }
    if config.phonons.mesh is not None:
        result["mesh"] = _mesh_analysis(config, base, out_dir, modes)
    (out_dir / "phonons.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def unit_cell_phonons(config: RunConfig, base: Path, force_constants_supercell: list[int] | None = None, *,
                      min_atoms: int | None = None, displacement_A: float = 1e-3) -> InterpolatedPhonons:
    """Force constants of the config's crystal (its structure section with ``supercell = [1, 1, 1]``,
    relaxed like the run's if ``structure.relax_positions``) from ``force_constants_supercell``
    repetitions, or from the smallest cubic repetition n x n x n with at least ``min_atoms`` atoms."""
    unit = build_structure(config.structure.model_copy(update={"supercell": (1, 1, 1)}), base)
    if config.structure.relax_positions:
        unit = relax_positions(build_potential(config, unit, base), unit)
    if force_constants_supercell is None:
        if min_atoms is None:
            raise ValueError("give force_constants_supercell or min_atoms")
        n = int(np.ceil((min_atoms / len(unit)) ** (1.0 / 3.0) - 1e-9))
        force_constants_supercell = [n, n, n]
    return interpolated_phonons(lambda atoms: build_potential(config, atoms, base), unit, force_constants_supercell,
                                displacement_A=displacement_A)


def _mesh_analysis(config: RunConfig, base: Path, out_dir: Path, modes: HarmonicModes) -> dict:
    """``[phonons] mesh``: the infinite crystal's harmonic F, E, S per atom on a q-point mesh
    (:mod:`thermoflow.phonons.qmesh`) next to the run supercell's own (Gamma-point) values; their
    difference is the supercell's harmonic finite-size correction. Writes ``mesh_thermodynamics.csv``."""
    mesh_cfg = config.phonons
    temps = np.asarray(mesh_cfg.temperatures_K or [config.state.temperature_K], dtype=np.float64)
    phonons = unit_cell_phonons(config, base, mesh_cfg.force_constants_supercell or list(config.structure.supercell),
                                displacement_A=mesh_cfg.displacement_A)
    dense = phonons.mesh_thermodynamics(mesh_cfg.mesh, temps)
    on_cell = phonons.commensurate_thermodynamics(np.diag(config.structure.supercell), temps)
    n = modes.n_atoms
    cell_values = [harmonic_results(modes, KB_EV_PER_K * t) for t in temps]
    cell_f = np.array([np.nan if r["harmonic_vibrational_free_energy_eV_per_atom"] is None else r["harmonic_vibrational_free_energy_eV_per_atom"] for r in cell_values])
    cell_s = np.array([np.nan if r["harmonic_entropy_kB_per_atom"] is None else r["harmonic_entropy_kB_per_atom"] for r in cell_values])
    correction = dense.free_energy_eV_per_atom - cell_f
    with open(out_dir / "mesh_thermodynamics.csv", "w") as fh:
        fh.write("temperature_K,mesh_free_energy_eV_per_atom,mesh_energy_eV_per_atom,mesh_entropy_kB_per_atom,"
                 "cell_free_energy_eV_per_atom,cell_entropy_kB_per_atom,finite_size_correction_eV_per_atom\n")
        for k, t in enumerate(temps):
            fh.write(f"{t:g},{dense.free_energy_eV_per_atom[k]:.9f},{dense.energy_eV_per_atom[k]:.9f},{dense.entropy_kB_per_atom[k]:.6f},"
                     f"{cell_f[k]:.9f},{cell_s[k]:.6f},{correction[k]:.9f}\n")
    as_list = lambda a: [None if not np.isfinite(x) else float(x) for x in a]  # noqa: E731
    return {
        "mesh": list(mesh_cfg.mesh),
        "n_irreducible_qpoints": dense.n_qpoints,
        "force_constants_supercell": np.diag(phonons.supercell_matrix).tolist(),
        "force_constants_atoms": phonons.n_supercell_atoms,
        "n_displacements": phonons.n_displacements,
        "space_group": phonons.space_group,
        "temperatures_K": temps.tolist(),
        "vibrational_free_energy_eV_per_atom": as_list(dense.free_energy_eV_per_atom),
        "energy_eV_per_atom": as_list(dense.energy_eV_per_atom),
        "entropy_kB_per_atom": as_list(dense.entropy_kB_per_atom),
        "zero_point_energy_eV_per_atom": None if dense.undefined_reason else dense.zero_point_energy_eV_per_atom,
        "frequency_min_THz": dense.frequency_min_THz,
        "undefined_reason": dense.undefined_reason,
        "cell_atoms": n,
        "cell_vibrational_free_energy_eV_per_atom": as_list(cell_f),
        # the run cell's Gamma point from these force constants: equal to the cell's own value when the
        # force-constant supercell is a multiple of the run's (else interpolated); a check of the interpolation
        "cell_from_force_constants_free_energy_eV_per_atom": as_list(on_cell.free_energy_eV_per_atom),
        "finite_size_correction_eV_per_atom": as_list(correction),
        "seconds": phonons.seconds,
    }


def load_gaussian_basis(path: Path, reference: HarmonicModes) -> HarmonicModes:
    """The Gaussian basis stored in a run directory's ``gaussian_reference.npz`` (frequencies and
    polarisation vectors) on the crystal of ``reference``.

    Raises:
        ConfigError: the file is missing or unreadable, or holds another crystal's modes.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"stored Gaussian {path} not found (nct.reference.start)")
    try:
        with np.load(path) as data:
            omega, vectors = np.asarray(data["omega"]), np.asarray(data["modes"])
            # the centroid (files written before it was stored: the reference positions)
            centroid = np.asarray(data["reference_positions"]) if "reference_positions" in data.files else None
            energy0 = float(data["energy0_eV"]) if "energy0_eV" in data.files else reference.energy0_eV
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read the stored Gaussian {path}: {exc}") from None
    if vectors.shape != reference.modes.shape:
        raise ConfigError(f"the stored Gaussian {path} has modes {vectors.shape}, this crystal {reference.modes.shape}: not the same structure")
    if centroid is None:
        centroid = reference.reference_positions
    elif centroid.shape != reference.reference_positions.shape:
        raise ConfigError(f"the stored Gaussian {path} has {len(centroid)} atoms, this crystal {len(reference.reference_positions)}")
    return dataclasses.replace(reference, omega=omega, modes=vectors, imaginary=np.zeros(len(omega), dtype=bool),
                               reference_positions=centroid, energy0_eV=energy0)


def gaussian_from_config(config: RunConfig, energy_fn, modes: HarmonicModes, kT_eV: float, base: Path, mesh=None,
                         progress_path: Path | None = None) -> GaussianReference:
    """:func:`optimise_gaussian` with the settings of ``[nct.reference]`` and the run's seed;
    ``nct.reference.start`` (relative to ``base``) gives a stored Gaussian to start from; the
    samples are split over the devices of ``mesh`` (None: one device); ``progress_path``: the
    iterations' resumable state (see :func:`optimise_gaussian`)."""
    ref = config.nct.reference
    start, centroid = None, None
    if ref.start is not None:
        try:
            stored = load_gaussian_basis(resolve_path(base, ref.start), modes)
            start = curvature_in_basis(stored, modes)
        except ValueError as exc:
            raise ConfigError(f"nct.reference.start: {exc}") from None
        if ref.relax_centroid:
            centroid = centroid_in_basis(stored, modes)
        log.info("self-consistent Gaussian started from %s", ref.start)
    return optimise_gaussian(
        energy_fn, modes, kT_eV, n_samples=ref.n_samples, n_iterations=ref.iterations, mixing=ref.mixing,
        averaging_fraction=ref.averaging_fraction, n_eval_samples=ref.eval_samples, seed=config.seed,
        chunk_size=config.nct.chunk_size, initial_curvature=start, symmetrise=ref.symmetrise,
        relax_centroid=ref.relax_centroid, initial_centroid=centroid, mesh=mesh, progress_path=progress_path,
    )


def _centroid_structure(config: RunConfig, atoms, g: GaussianReference, out_dir: Path) -> dict:
    """With ``nct.reference.relax_centroid``: the Gaussian's centre as ``centroid.extxyz`` (ASE) and
    its space group (spglib), and cI16's Wyckoff 16c x of the centre and of the structure."""
    if not config.nct.reference.relax_centroid:
        return {}
    from ase.io import write

    from thermoflow.analysis.structure import I43D_NUMBER, space_group, wyckoff_x_16c

    centre = atoms.copy()
    centre.set_positions(g.modes.reference_positions)
    write(out_dir / "centroid.extxyz", centre)
    numbers, cell = atoms.get_atomic_numbers(), atoms.cell.array
    symbol, number = space_group(g.modes.reference_positions, cell, numbers)
    out = {"centroid_space_group": symbol, "centroid_space_group_number": number}
    if number == I43D_NUMBER:
        out["centroid_wyckoff_x_16c"] = wyckoff_x_16c(g.modes.reference_positions, cell, numbers)
        out["structure_wyckoff_x_16c"] = wyckoff_x_16c(atoms.get_positions(), cell, numbers)
    return out


def run_scha(config: RunConfig, base: Path, out_dir: Path) -> dict:
    """The self-consistent Gaussian alone (settings from ``[nct.reference]``, temperature from
    ``[nct]``): writes ``scha.json`` (F, E, S per atom with error bars, next to the harmonic
    values) and ``frequencies.csv`` of the renormalised modes to ``out_dir``; with
    ``nct.reference.relax_centroid`` also ``centroid.extxyz``, the Gaussian's centre (the quantum
    average structure), with its space group (and cI16's Wyckoff x) in ``scha.json``.

    Raises:
        GaussianInstabilityError: no stable Gaussian (see :func:`optimise_gaussian`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atoms, energy_fn, modes = build_modes(config, base, cache_dir=out_dir)
    n = len(atoms)
    kT = KB_EV_PER_K * config.state.temperature_K
    t0 = time.perf_counter()
    g = gaussian_from_config(config, energy_fn, modes, kT, base)
    freq_thz = _write_frequencies(out_dir / "frequencies.csv", g.modes)
    result = {
        "n_atoms": n,
        "n_modes": modes.n_modes,
        "temperature_K": config.state.temperature_K,
        "gaussian_free_energy_eV_per_atom": g.free_energy_eV / n,
        "gaussian_free_energy_stderr_eV_per_atom": g.free_energy_stderr_eV / n,
        "gaussian_energy_eV_per_atom": g.energy_eV / n,
        "gaussian_energy_stderr_eV_per_atom": g.energy_stderr_eV / n,
        "gaussian_entropy_kB_per_atom": g.entropy_kB / n,
        **harmonic_results(modes, kT),
        "static_energy_eV_per_atom": modes.energy0_eV / n,
        "frequency_min_THz": float(freq_thz.min()),
        "frequency_max_THz": float(freq_thz.max()),
        "final_residual": float(g.history["residual"][-1]),
        "centroid_shift_max_A": float(np.linalg.norm(g.centroid_shift_A, axis=1).max()),
        **_centroid_structure(config, atoms, g, out_dir),
        "seconds": time.perf_counter() - t0,
    }
    (out_dir / "scha.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
