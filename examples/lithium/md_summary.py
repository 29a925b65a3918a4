"""Table and plots of lithium MD runs (classical Langevin / QTB / adQTB) next to NCT.

    python examples/lithium/md_summary.py RUNS_DIR [--nct docs/results/lithium] [--include OLD/md_summary.json]
        [--extra-rows ROWS.json]

RUNS_DIR holds `thermoflow md` run directories named ``b<N>-<T>-<thermostat>`` (N atoms, T in K),
e.g. made by the commands in docs/results/lithium_md.md. For each run: the total energy per atom
(blocking error), E/(3 k_B) above the static lattice energy (the "energy temperature": T for a
classical harmonic crystal, ZPE/(3 k_B) as T -> 0 with quantum nuclei), the kinetic temperature,
and the mean-square displacement <u^2> of the atoms from their mean positions over the averaged
frames (centre of mass removed). NCT rows (16 atoms) come from the results files
``bcc_<T>K_scha_results.json`` in --nct; --include adds the MD rows of an earlier summary (runs
no longer on disk) for the other cell sizes; --extra-rows adds rows already in the summary format (e.g.
quantum references of other cells, each with a "source" naming the run that made it). Writes RUNS_DIR/md_summary.json and
RUNS_DIR/energy_temperature.png.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import ase.io
import jax.numpy as jnp
import numpy as np

from thermoflow.units import KB_EV_PER_K
from thermoflow.workflows.build import build_potential, build_structure
from thermoflow.workflows.config import load_config
from thermoflow.workflows.md_config import MDRunConfig

NAME = re.compile(r"b(\d+)-(\d+)-(langevin|qtb|adqtb)$")


def static_energy_per_atom(run: Path) -> float:
    """The potential energy per atom of the run's perfect crystal (its structure at step 0), eV."""
    config, base = load_config(run / "config.resolved.toml", None, model=MDRunConfig)
    base = Path(json.loads((run / "run_info.json").read_text())["config_base_dir"])
    atoms = build_structure(config.structure, base)
    energy_fn = build_potential(config, atoms, base)
    return float(energy_fn(jnp.asarray(atoms.get_positions()), jnp.asarray(atoms.cell.array))) / len(atoms)


def mean_square_displacement(run: Path, averaging_fraction: float) -> float:
    """<|u|^2> per atom, A^2: positions minus their mean over the averaged frames (unwrapped; COM removed)."""
    frames = ase.io.read(run / "trajectory.extxyz", index=":")
    frames = frames[int(len(frames) * (1.0 - averaging_fraction)):]
    positions = np.array([f.get_positions() for f in frames])
    masses = frames[0].get_masses()
    positions -= (np.einsum("i,tia->ta", masses, positions) / masses.sum())[:, None, :]
    u = positions - positions.mean(axis=0)
    return float(np.mean(np.sum(u**2, axis=-1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("--nct", type=Path, default=Path(__file__).resolve().parents[2] / "docs" / "results" / "lithium")
    parser.add_argument("--include", type=Path, nargs="*", default=[], help="earlier md_summary.json files whose MD rows are added")
    parser.add_argument("--extra-rows", type=Path, nargs="*", default=[], help="JSON lists of rows in this summary's format, added as they are")
    args = parser.parse_args()
    rows, statics = [], {}
    for path in args.include:
        rows.extend(r for r in json.loads(path.read_text()) if r["method"] not in ("nct", "gaussian") and "source" not in r)
    for path in args.extra_rows:
        rows.extend(json.loads(path.read_text()))
    for run in sorted(p for p in args.runs.iterdir() if NAME.match(p.name) and (p / "results.json").is_file()):
        n_atoms, temperature, thermostat = NAME.match(run.name).groups()
        results = json.loads((run / "results.json").read_text())
        if not results.get("completed"):
            continue
        if n_atoms not in statics:
            statics[n_atoms] = static_energy_per_atom(run)
        table = np.genfromtxt(run / "thermo.csv", delimiter=",", names=True)
        fraction = results["averaged_rows"] / len(table)
        energy = results["total_energy_eV_per_atom"]
        rows.append({
            "n_atoms": int(n_atoms), "T_K": float(temperature), "method": thermostat,
            "E_eV_per_atom": energy, "E_stderr_eV_per_atom": results["total_energy_stderr_eV_per_atom"],
            "E_over_3kB_K": (energy - statics[n_atoms]) / (3.0 * KB_EV_PER_K),
            "E_over_3kB_stderr_K": results["total_energy_stderr_eV_per_atom"] / (3.0 * KB_EV_PER_K),
            "kinetic_T_K": results["temperature_mean_K"], "msd_A2": mean_square_displacement(run, fraction),
        })
    for path in sorted(args.nct.glob("bcc_*K_scha_results.json")):
        res = json.loads(path.read_text())
        static = res["static_energy_eV_per_atom"]
        rows.append({"n_atoms": res["n_atoms"], "T_K": res["temperature_K"], "method": "nct",
                     "E_eV_per_atom": res["energy_eV_per_atom"], "E_stderr_eV_per_atom": res["energy_stderr_eV_per_atom"],
                     "E_over_3kB_K": (res["energy_eV_per_atom"] - static) / (3.0 * KB_EV_PER_K),
                     "E_over_3kB_stderr_K": res["energy_stderr_eV_per_atom"] / (3.0 * KB_EV_PER_K),
                     "kinetic_T_K": None, "msd_A2": None})
    # A row of RUNS_DIR (added later) replaces an included row of the same cell, temperature and method.
    rows = list({(r["n_atoms"], r["T_K"], r["method"]): r for r in rows}.values())
    rows.sort(key=lambda r: (r["n_atoms"], r["T_K"], r["method"]))
    (args.runs / "md_summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("| atoms | T (K) | method | E (eV/atom) | E/(3 k_B) above static (K) | kinetic T (K) | <u^2> (A^2) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        kin = "-" if r["kinetic_T_K"] is None else f"{r['kinetic_T_K']:.1f}"
        msd = "-" if r["msd_A2"] is None else f"{r['msd_A2']:.4f}"
        print(f"| {r['n_atoms']} | {r['T_K']:g} | {r['method']} | {r['E_eV_per_atom']:.5f} +- {r['E_stderr_eV_per_atom']:.5f} | "
              f"{r['E_over_3kB_K']:.1f} +- {r['E_over_3kB_stderr_K']:.1f} | {kin} | {msd} |")
    _plot(args.runs, rows)


def _plot(out: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.5))
    markers = {16: "o", 54: "s"}
    for i, method in enumerate(("langevin", "qtb", "adqtb", "nct", "gaussian")):
        for n_atoms in sorted({r["n_atoms"] for r in rows}):
            sel = [r for r in rows if r["method"] == method and r["n_atoms"] == n_atoms]
            if sel:
                ax.errorbar([r["T_K"] for r in sel], [r["E_over_3kB_K"] for r in sel], yerr=[r["E_over_3kB_stderr_K"] for r in sel],
                            marker=markers.get(n_atoms, "^"), ls="-" if n_atoms == 54 else ":", color=f"C{i}", capsize=2,
                            label=f"{method} ({n_atoms} atoms)")
    top = max(r["T_K"] for r in rows)
    ax.plot([0, top], [0, top], color="k", lw=0.5, label="classical harmonic: E/(3 k_B) = T")
    ax.set_xlabel("bath temperature (K)")
    ax.set_ylabel("(E - E_static) / (3 k_B) (K)")
    ax.set_title("bcc lithium, lithium_dp4, 19.2 A^3/atom")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "energy_temperature.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
