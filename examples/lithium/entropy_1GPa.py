"""Anharmonic vs harmonic entropy of NCT runs (the published paper's Fig. 2b: S, S_harm and -T (S - S_harm)).

    python examples/lithium/entropy_1GPa.py RUN_DIR [RUN_DIR ...] [--csv OUT.csv] [--plot OUT.png] [--base DIR]

Each RUN_DIR is a finished `thermoflow run` (NVT or NPT). The NCT entropy of the product spectrum
is exact for the trained state (results.json). The harmonic entropy it is compared with is that of
the *same cell at the run's own volume* (an NPT run ends at V(T), while its results.json holds the
harmonic reference of the starting cell): the structure is rebuilt from the run's resolved config at
``volume_A3_per_atom``, the Hessian computed afresh (phonopy's finite displacements) and
the harmonic entropy taken at the Gamma point of the supercell, the q-points NCT samples. The
reference-cell value, and -T (S - S_harm) against it (which includes the entropy of thermal expansion), are
printed beside it. Runs are grouped by phase name (the structure file's
stem) and cell size. Relative file names of the configs refer to the directory in each run's
run_info.json, or to ``--base`` (for copies of run directories, e.g. docs/results: examples/lithium).

Source of the comparison: Zhang et al., Phys. Rev. Lett. 134, 246101 (2025), arXiv:2409.09813, Fig. 2b.

A cell with imaginary harmonic modes at the run's volume (bcc lithium expanded at 300 K) has no harmonic
entropy there: it is reported as undefined, with the number of imaginary modes.

Raises SystemExit for a run directory without results.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from thermoflow.phonons.thermo import harmonic_thermodynamics
from thermoflow.units import KB_EV_PER_K, MEV_PER_EV
from thermoflow.workflows.build import build_modes
from thermoflow.workflows.config import load_config
from thermoflow.workflows.run_dir import config_base


def harmonic_entropy_at(run_dir: Path, base: Path | None, volume: float | None, temperature: float) -> tuple[float | None, int]:
    """Harmonic entropy (k_B/atom) of the run's cell at ``volume`` (A^3/atom; None: the config's) and
    the number of imaginary modes there (entropy None if any: no harmonic crystal to compare with)."""
    # phonopy's symmetry-reduced displacements: seconds instead of minutes for the 3N autodiff columns
    overrides = ["harmonic.hessian=phonopy"] + ([] if volume is None else [f"structure.volume_per_atom_A3={volume!r}"])
    config, _ = load_config(run_dir / "config.resolved.toml", overrides)
    base = config_base(run_dir, base)
    atoms, _, modes = build_modes(config, base)  # no cache: the stored Hessian is the reference cell's
    if modes.imaginary.any():
        return None, int(modes.imaginary.sum())
    return harmonic_thermodynamics(modes.phonon_energies_eV, KB_EV_PER_K * temperature).entropy_kB / len(atoms), 0


def row(run_dir: Path, base: Path | None) -> dict:
    path = run_dir / "results.json"
    if not path.is_file():
        raise SystemExit(f"{run_dir}: no results.json (an unfinished run?)")
    res = json.loads(path.read_text())
    config, _ = load_config(run_dir / "config.resolved.toml", [])
    temperature = res["temperature_K"]
    volume = res.get("volume_A3_per_atom")
    s_harm, n_imaginary = harmonic_entropy_at(run_dir, base, volume, temperature)
    s = res["entropy_kB_per_atom"]
    s_ref = res.get("harmonic_entropy_kB_per_atom")  # None when the starting cell has imaginary modes

    def entropy_term(s_harmonic):
        return None if s_harmonic is None else -KB_EV_PER_K * temperature * (s - s_harmonic) * MEV_PER_EV

    return {
        "phase": Path(config.structure.file).stem, "n_atoms": res["n_atoms"], "temperature_K": temperature,
        "volume_A3_per_atom": volume if volume is not None else res.get("reference_volume_A3_per_atom"),
        "entropy_kB_per_atom": s, "gaussian_entropy_kB_per_atom": res.get("gaussian_entropy_kB_per_atom"),
        "harmonic_entropy_kB_per_atom": s_harm,
        "harmonic_entropy_reference_cell_kB_per_atom": s_ref,
        "n_imaginary_modes_at_volume": n_imaginary,
        # -T (S - S_harm): the free energy the anharmonic entropy contributes
        "anharmonic_entropy_term_meV_per_atom": entropy_term(s_harm),
        # against the starting cell's harmonic crystal: includes the thermal expansion's (quasi-harmonic) entropy
        "entropy_term_vs_reference_cell_meV_per_atom": entropy_term(s_ref),
        "run": str(run_dir),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--base", type=Path, help="directory the configs' relative file names refer to")
    args = parser.parse_args()
    rows = sorted((row(r, args.base) for r in args.runs), key=lambda r: (r["phase"], r["n_atoms"], r["temperature_K"]))
    columns = ("phase", "n_atoms", "temperature_K", "volume_A3_per_atom", "entropy_kB_per_atom", "gaussian_entropy_kB_per_atom",
               "harmonic_entropy_kB_per_atom", "harmonic_entropy_reference_cell_kB_per_atom", "n_imaginary_modes_at_volume",
               "anharmonic_entropy_term_meV_per_atom", "entropy_term_vs_reference_cell_meV_per_atom")
    print("| phase | atoms | T (K) | V (A^3/atom) | S NCT | S Gaussian (reference cell) | S harm at V | S harm at reference cell | -T (S - S_harm at V) (meV/atom) | "
          "-T (S - S_harm at reference cell) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def fmt(value, spec=".4f", undefined=""):
        return undefined if value is None else format(value, spec)

    for r in rows:
        undefined = f"undefined ({r['n_imaginary_modes_at_volume']} imaginary modes)"
        print(f"| {r['phase']} | {r['n_atoms']} | {r['temperature_K']:g} | {r['volume_A3_per_atom']:.3f} | {r['entropy_kB_per_atom']:.4f} | "
              f"{fmt(r['gaussian_entropy_kB_per_atom'])} | {fmt(r['harmonic_entropy_kB_per_atom'], undefined=undefined)} | "
              f"{fmt(r['harmonic_entropy_reference_cell_kB_per_atom'], undefined='undefined')} | "
              f"{fmt(r['anharmonic_entropy_term_meV_per_atom'], '+.3f', undefined)} | "
              f"{fmt(r['entropy_term_vs_reference_cell_meV_per_atom'], '+.3f', 'undefined')} |")
    if args.csv:
        with open(args.csv, "w") as fh:
            fh.write(",".join(columns) + "\n")
            for r in rows:
                fh.write(",".join("" if r[c] is None else str(r[c]) for c in columns) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_s, ax_t) = plt.subplots(1, 2, figsize=(10, 4))
        for key in sorted({(r["phase"], r["n_atoms"]) for r in rows}):
            sel = [r for r in rows if (r["phase"], r["n_atoms"]) == key]
            t = np.array([r["temperature_K"] for r in sel])
            (line,) = ax_s.plot(t, [r["entropy_kB_per_atom"] for r in sel], "o-", label=f"{key[0]} {key[1]} NCT")
            nan = float("nan")  # undefined harmonic values leave gaps
            ax_s.plot(t, [nan if r["harmonic_entropy_kB_per_atom"] is None else r["harmonic_entropy_kB_per_atom"] for r in sel], "s--",
                      color=line.get_color(), label=f"{key[0]} {key[1]} harmonic")
            ax_t.plot(t, [nan if r["anharmonic_entropy_term_meV_per_atom"] is None else r["anharmonic_entropy_term_meV_per_atom"] for r in sel],
                      "o-", color=line.get_color(), label=f"{key[0]} {key[1]}")
        ax_s.set(xlabel="T (K)", ylabel="entropy (k_B/atom)")
        ax_t.set(xlabel="T (K)", ylabel="-T (S - S_harm at V) (meV/atom)")
        ax_t.axhline(0, color="k", lw=0.5)
        ax_s.legend(fontsize=8)
        ax_t.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)


if __name__ == "__main__":
    main()
