"""Anharmonic phonon spectrum of a finished NCT run: ``thermoflow spectrum RUN_DIR``.

Reads the run directory (config.resolved.toml, the stored Gaussian basis and cubic force
constants, the final checkpoint), evaluates the single-phonon excitation energies
w_k = E(e_k) - E(0) of the trained state (:mod:`thermoflow.nct.spectrum`) and writes into it::

    spectrum.csv      one row per basis mode: basis and anharmonic energies (meV) with errors
    spectrum.json     zero-point energies (harmonic, basis, anharmonic) per atom, E(0), settings;
                      the harmonic reference of an NPT run is recomputed at its trained cell
    phonon_dos.png    broadened harmonic and anharmonic densities of states
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path

import numpy as np

from thermoflow.io.atomic import atomic_write_text
from thermoflow.nct.spectrum import excitation_energies
from thermoflow.units import MEV_PER_EV
from thermoflow.phonons.modes import HarmonicModes
from thermoflow.workflows import plots
from thermoflow.workflows.build import harmonic_modes
from thermoflow.workflows.finished_run import load_finished_run

log = logging.getLogger(__name__)


def _harmonic_reference_at_trained_cell(run) -> HarmonicModes:
    """The harmonic modes the anharmonic spectrum is compared with: the run's, or for an NPT run
    those recomputed at the trained cell (Cartesian components of positions and cell scaled by
    1 + the strain, isotropic or per direction), so that the zero-point lowering is not a volume
    effect."""
    strain = np.asarray(run.params.get("strain", 0.0), dtype=float)
    if not strain.any():
        return run.setup.modes
    modes = run.setup.modes
    scale = 1.0 + strain
    log.info("harmonic reference recomputed at the trained cell (linear strain %s)", np.array2string(strain, precision=4))
    return harmonic_modes(run.config, run.setup.energy_fn, modes.reference_positions * scale, modes.cell * scale, modes.masses,
                          run.setup.atoms.numbers)


def run_spectrum(run_dir: Path, *, n_samples: int = 1024, seed: int = 0, batch_size: int = 256,
                 base: Path | None = None, dos_width_meV: float | None = None) -> dict:
    """Excitation energies, anharmonic ZPE and phonon DOS of the trained state in ``run_dir``.

    Args:
        run_dir: a finished NCT run directory.
        n_samples: exact samples per state (the cost is (modes + 1) x n_samples local energies).
        seed: sampling seed.
        batch_size: samples per evaluation call.
        base: the directory the run's config file names are relative to (default: recorded in
            the run directory).
        dos_width_meV: Gaussian broadening of the DOS plot (default: 5 % of the largest energy).

    Returns:
        The dictionary written to spectrum.json.

    Raises:
        ConfigError: no finished run in ``run_dir``, or its stored basis is missing
            (:func:`thermoflow.workflows.finished_run.load_finished_run`).
    """
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    run = load_finished_run(run_dir, base)
    setup, model = run.setup, run.model
    log.info("%d modes x %d samples", setup.basis.n_modes, n_samples)
    spectrum = excitation_energies(model, run.params, n_samples=n_samples, seed=seed, batch_size=batch_size)

    n_atoms = setup.modes.n_atoms
    reference = _harmonic_reference_at_trained_cell(run)
    harmonic = np.where(reference.imaginary, np.nan, reference.phonon_energies_eV)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["mode", "basis_meV", "anharmonic_meV", "anharmonic_stderr_meV", "harmonic_meV_same_rank"])
    # rows: the basis modes by increasing basis energy; the harmonic column is the harmonic
    # spectrum sorted alike (the self-consistent basis need not map mode by mode onto it)
    order = np.argsort(spectrum.basis_energies_eV)
    for rank, k in enumerate(order):
        writer.writerow([int(k), spectrum.basis_energies_eV[k] * MEV_PER_EV, spectrum.excitation_energies_eV[k] * MEV_PER_EV,
                         spectrum.excitation_stderr_eV[k] * MEV_PER_EV, np.sort(harmonic)[rank] * MEV_PER_EV])
    atomic_write_text(run_dir / "spectrum.csv", buffer.getvalue())
    zpe_harm = None if reference.imaginary.any() else float(0.5 * reference.phonon_energies_eV.sum() / n_atoms)
    out = {
        "zero_point_energy_harmonic_eV_per_atom": zpe_harm,
        "harmonic_reference_volume_A3_per_atom": float(abs(np.linalg.det(reference.cell))) / n_atoms,
        "zero_point_energy_basis_eV_per_atom": float(0.5 * spectrum.basis_energies_eV.sum() / n_atoms),
        "zero_point_energy_anharmonic_eV_per_atom": spectrum.zero_point_energy_eV / n_atoms,
        "zero_point_energy_anharmonic_stderr_eV_per_atom": spectrum.zero_point_energy_stderr_eV / n_atoms,
        "zero_point_energy_lowering_eV_per_atom": None if zpe_harm is None else zpe_harm - spectrum.zero_point_energy_eV / n_atoms,
        "ground_state_energy_eV_per_atom": spectrum.ground_state_energy_eV / n_atoms,
        "ground_state_energy_stderr_eV_per_atom": spectrum.ground_state_energy_stderr_eV / n_atoms,
        "excitation_energy_range_meV": [float(spectrum.excitation_energies_eV.min() * MEV_PER_EV), float(spectrum.excitation_energies_eV.max() * MEV_PER_EV)],
        "n_atoms": n_atoms,
        "n_modes": setup.basis.n_modes,
        "n_samples_per_state": n_samples,
        "seed": seed,
        "method": "w_k = E(e_k) - E(0) of the trained NCT states, correlated sampling (same uniforms for both states)",
        "wall_seconds": time.perf_counter() - t0,
    }
    atomic_write_text(run_dir / "spectrum.json", json.dumps(out, indent=2) + "\n")
    curves = {"anharmonic (NCT)": spectrum.excitation_energies_eV * MEV_PER_EV}
    if zpe_harm is not None:
        curves["harmonic"] = reference.phonon_energies_eV * MEV_PER_EV
    if setup.gaussian is not None:
        curves["self-consistent Gaussian"] = spectrum.basis_energies_eV * MEV_PER_EV
    width = dos_width_meV or 0.05 * float(max(np.max(c) for c in curves.values()))
    plots.plot_phonon_dos(run_dir / "phonon_dos.png", curves, width)
    return out
