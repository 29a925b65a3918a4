"""Classical bcc-fcc crossing of lithium (lithium_dp4) at fixed pressure: NPT MD + TI + Gibbs-Helmholtz.

For each phase:
1. classical Langevin NPT MD (`thermoflow md`, stochastic cell rescaling) at every temperature of
   the grid: the mean volume and the enthalpy H = <U> + <K> + P <V> per atom, blocking error bars;
2. thermodynamic integration (`thermoflow ti`) from the harmonic crystal at T0 and the mean NPT
   volume of T0: G(T0) = F(V, T0) + P V (the saddle-point G of the NCT NPT runs, same convention:
   centre of mass fixed, 3 modes dropped);
3. G(T) = T [G(T0) / T0 - int_T0^T H / T'^2 dT'] with a quadratic fit of H(T)
   (thermoflow.md.thermodynamic_integration.gibbs_along_isobar).
Then Delta G(T) = G(phase) - G(reference) and the crossing temperature with a propagated error.
Every run is a resumable run directory under OUT_DIR/<phase>/; finished runs are read back.

    python examples/lithium/classical_crossing.py OUT_DIR                  # bcc 16 / fcc 32 atoms
    python examples/lithium/classical_crossing.py OUT_DIR --supercells bcc=3,3,3 fcc=3,3,3

Paths of the shared model and structures are relative to this file (../../../shared).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.md.thermodynamic_integration import gibbs_along_isobar
from thermoflow.units import GPA_PER_EV_PER_A3
from thermoflow.workflows.config import validate_config
from thermoflow.workflows.md_config import MDRunConfig
from thermoflow.workflows.md_run import run_md
from thermoflow.workflows.ti_config import TIRunConfig
from thermoflow.workflows.ti_run import run_ti

HERE = Path(__file__).resolve().parent
SHARED = HERE / ".." / ".." / ".." / "shared"
POTENTIAL = {"kind": "deepmd", "model": str(SHARED / "models" / "lithium" / "lithium_dp4.dp"), "compress": True}
MD = {"ensemble": "npt", "thermostat": "langevin", "timestep_fs": 2.0, "steps": 6000, "friction_per_ps": 10.0,
      "barostat": "isotropic", "barostat_time_ps": 0.5, "trajectory_every": 50, "thermo_every": 5,
      "checkpoint_every": 1000, "averaging_fraction": 5.0 / 6.0}
TI = {"reference": "harmonic", "n_lambda": 6, "equilibration_steps": 1000, "production_steps": 5000, "block_steps": 500,
      "timestep_fs": 2.0, "friction_per_ps": 10.0}


def _finished(out: Path) -> bool:
    path = out / "results.json"
    return path.is_file() and json.loads(path.read_text()).get("completed", True)


def _structure(phase: str, supercell, volume: float) -> dict:
    return {"file": str(SHARED / "structures" / "lithium" / f"{phase}.vasp"), "supercell": list(supercell),
            "volume_per_atom_A3": volume}


def npt_point(out: Path, phase: str, supercell, temperature: float, pressure: float, seed: int) -> dict:
    """Run (or read back) the NPT MD of one temperature; mean volume and enthalpy per atom with errors."""
    config = validate_config({"seed": seed, "state": {"temperature_K": temperature, "pressure_GPa": pressure},
                              "structure": _structure(phase, supercell, 19.4), "potential": POTENTIAL, "md": MD}, MDRunConfig)
    if not _finished(out):
        run_md(config, HERE, out, resume=(out / "checkpoints" / "state.npz").is_file())
    table = np.genfromtxt(out / "thermo.csv", delimiter=",", names=True)
    window = table["step"] > MD["steps"] * (1.0 - MD["averaging_fraction"])
    p0 = pressure / GPA_PER_EV_PER_A3
    enthalpy = blocking_stderr(table["total_energy_eV_per_atom"][window] + p0 * table["volume_A3_per_atom"][window])
    volume = blocking_stderr(table["volume_A3_per_atom"][window])
    pressure_mean = blocking_stderr(table["pressure_GPa"][window])
    return {"T_K": temperature, "H_eV_per_atom": enthalpy.mean, "H_stderr_eV_per_atom": enthalpy.stderr,
            "V_A3_per_atom": volume.mean, "V_stderr_A3_per_atom": volume.stderr, "P_GPa": pressure_mean.mean,
            "P_stderr_GPa": pressure_mean.stderr}


def ti_point(out: Path, phase: str, supercell, temperature: float, volume: float, seed: int) -> dict:
    config = validate_config({"seed": seed, "state": {"temperature_K": temperature},
                              "structure": _structure(phase, supercell, volume), "potential": POTENTIAL, "ti": TI}, TIRunConfig)
    if not _finished(out):
        run_ti(config, HERE, out, resume=(out / "config.resolved.toml").is_file())
    return json.loads((out / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--pressure-GPa", type=float, default=1.0)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0])
    parser.add_argument("--t0", type=float, default=200.0, help="temperature of the TI anchor (one of --temperatures)")
    parser.add_argument("--supercells", nargs="+", default=["bcc=2,2,2", "fcc=2,2,2"], help="phase=n1,n2,n3; the first is the reference")
    parser.add_argument("--phases-only", nargs="*", default=None, help="run only these phases (the summary needs all)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; each temperature's NPT run uses seed + T in K, so "
                        "the barostat and thermostat noise of different temperatures is independent (the published "
                        "2026-12-02 table used seed 0 at every temperature: --same-seed)")
    parser.add_argument("--same-seed", action="store_true", help="use --seed unchanged at every temperature (as the published table)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.t0 not in args.temperatures:
        parser.error("--t0 must be one of --temperatures")
    phases = {item.split("=")[0]: tuple(int(n) for n in item.split("=")[1].split(",")) for item in args.supercells}
    summary = {"pressure_GPa": args.pressure_GPa, "T0_K": args.t0, "md": MD, "ti": TI, "phases": {}}
    curves = {}
    for phase, supercell in phases.items():
        if args.phases_only is not None and phase not in args.phases_only:
            continue
        points = [npt_point(args.out / phase / f"npt_{t:g}K", phase, supercell, t, args.pressure_GPa,
                            args.seed if args.same_seed else args.seed + int(round(t)))
                  for t in args.temperatures]
        anchor = next(p for p in points if p["T_K"] == args.t0)
        ti = ti_point(args.out / phase / f"ti_{args.t0:g}K", phase, supercell, args.t0, anchor["V_A3_per_atom"], args.seed)
        pv = args.pressure_GPa / GPA_PER_EV_PER_A3 * anchor["V_A3_per_atom"]
        g0, g0_err = ti["free_energy_eV_per_atom"] + pv, ti["free_energy_stderr_eV_per_atom"]
        curves[phase] = gibbs_along_isobar(args.t0, g0, g0_err, [p["T_K"] for p in points], [p["H_eV_per_atom"] for p in points],
                                           [p["H_stderr_eV_per_atom"] for p in points])
        g, g_err = curves[phase](np.array([p["T_K"] for p in points]))
        for p, gi, ei in zip(points, g, g_err):
            p.update(G_eV_per_atom=float(gi), G_stderr_eV_per_atom=float(ei))
        summary["phases"][phase] = {"supercell": supercell, "F_TI_eV_per_atom": ti["free_energy_eV_per_atom"], "G0_eV_per_atom": g0,
                                    "G0_stderr_eV_per_atom": g0_err, "points": points}
    names = list(phases)
    if all(name in curves for name in names) and len(names) >= 2:
        reference, other = names[0], names[1]
        grid = np.linspace(min(args.temperatures), max(args.temperatures), 601)
        g_ref, e_ref = curves[reference](grid)
        g_oth, e_oth = curves[other](grid)
        delta, delta_err = g_oth - g_ref, np.hypot(e_ref, e_oth)
        temps = np.array(args.temperatures)
        (a, a_err), (b, b_err) = curves[reference](temps), curves[other](temps)
        summary["delta_G_meV_per_atom"] = {f"{t:g} K": [round(1000.0 * float(d), 4), round(1000.0 * float(e), 4)]
                                           for t, d, e in zip(temps, b - a, np.hypot(a_err, b_err))}
        sign = np.sign(delta)
        roots = np.nonzero(np.diff(sign))[0]
        if roots.size:
            i = roots[0]
            t_cross = grid[i] - delta[i] * (grid[i + 1] - grid[i]) / (delta[i + 1] - delta[i])
            slope = (delta[i + 1] - delta[i]) / (grid[i + 1] - grid[i])
            summary["crossing_K"] = float(t_cross)
            summary["crossing_stderr_K"] = float(np.interp(t_cross, grid, delta_err) / abs(slope))
        else:
            summary["crossing_K"] = None
        _plot(args.out, grid, delta, delta_err, reference, other, args.pressure_GPa)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("md", "ti")}, indent=2))


def _plot(out: Path, grid, delta, delta_err, reference: str, other: str, pressure: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    ax.plot(grid, 1000.0 * delta, color="C0")
    ax.fill_between(grid, 1000.0 * (delta - delta_err), 1000.0 * (delta + delta_err), color="C0", alpha=0.3)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("temperature (K)")
    ax.set_ylabel(f"G({other}) - G({reference}) (meV/atom)")
    ax.set_title(f"classical MD + TI, lithium_dp4, {pressure:g} GPa")
    fig.tight_layout()
    fig.savefig(out / "classical_delta_G.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
