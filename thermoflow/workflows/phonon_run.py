"""Harmonic analysis of a config's crystal: frequencies, imaginary modes, harmonic thermodynamics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from thermoflow.phonons.thermo import harmonic_thermodynamics
from thermoflow.units import KB_EV_PER_K, MEV_PER_EV, omega_to_thz
from thermoflow.workflows.build import build_modes
from thermoflow.workflows.config import RunConfig


def run_phonons(config: RunConfig, base: Path, out_dir: Path) -> dict:
    """Write ``phonons.json`` and ``frequencies.csv`` (THz, meV; imaginary modes flagged) to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atoms, _, modes = build_modes(config, base)
    n = len(atoms)
    kT = KB_EV_PER_K * config.nct.temperature_K
    th = harmonic_thermodynamics(modes.phonon_energies_eV, kT)
    freq_thz = np.where(modes.imaginary, -1.0, 1.0) * omega_to_thz(modes.omega)
    with open(out_dir / "frequencies.csv", "w") as fh:
        fh.write("mode,frequency_THz,phonon_energy_meV,imaginary\n")
        for k, (f, e, im) in enumerate(zip(freq_thz, modes.phonon_energies_eV * MEV_PER_EV, modes.imaginary)):
            fh.write(f"{k},{f:.6f},{e:.6f},{int(im)}\n")
    result = {
        "n_atoms": n,
        "n_modes": modes.n_modes,
        "n_translations_removed": modes.n_translations_removed,
        "n_imaginary_modes": int(modes.imaginary.sum()),
        "static_energy_eV_per_atom": modes.energy0_eV / n,
        "temperature_K": config.nct.temperature_K,
        "harmonic_free_energy_eV_per_atom": (modes.energy0_eV + th.free_energy_eV) / n,
        "harmonic_vibrational_free_energy_eV_per_atom": th.free_energy_eV / n,
        "harmonic_energy_eV_per_atom": (modes.energy0_eV + th.energy_eV) / n,
        "harmonic_entropy_kB_per_atom": th.entropy_kB / n,
        "harmonic_zero_point_energy_eV_per_atom": th.zero_point_energy_eV / n,
        "frequency_min_THz": float(freq_thz.min()),
        "frequency_max_THz": float(freq_thz.max()),
    }
    (out_dir / "phonons.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
