"""G(fcc) - G(bcc) of lithium at 1 GPa and the crossing temperature, gathered from several runs.

    python examples/lithium/crossing_1GPa.py COMPARE_OUT [COMPARE_OUT ...] \
        [--point PHASE,T_K,G_eV_per_atom,STDERR_eV_per_atom,CORRECTION_eV_per_atom ...]
        [--run PHASE,RUN_DIR,CORRECTION_eV_per_atom ...] [--replace PHASE,RUN_DIR ...] [--plot DELTA_G.png --label CELLS]

A comparison made in pieces (temperatures run in different sessions, into different output
directories of `thermoflow compare examples/lithium/compare_1GPa_gaussian.toml`) is put back
together here: each COMPARE_OUT/summary.json gives G, its error bar and the harmonic finite-size
correction per phase and temperature; ``--point`` adds one by hand (e.g. a point whose run directory
was lost; say where its numbers come from); ``--run`` adds the point of a single finished run directory (its
temperature, G and error bar) with its harmonic correction given by hand. ``--replace`` puts the G of a single run directory (e.g. the
same point rerun with a trained flow) in place of the point of its phase and temperature, which must
exist, keeping that point's harmonic correction (the correction depends on the cell and the harmonic
reference, not on the flow). Per temperature the script prints G of each phase, the
raw and the corrected difference, and the crossing temperatures of both (linear interpolation
between neighbouring temperatures, parametric-bootstrap error bar:
:func:`thermoflow.workflows.compare.crossing_temperatures`, as `thermoflow compare` does).

Raises SystemExit when a temperature lacks one of the phases or two sources disagree on a point.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

import numpy as np

from thermoflow.workflows.compare import crossing_temperatures

PHASES = ("bcc", "fcc")
MEV = 1e3


def run_point(run: Path) -> tuple[float, float, float]:
    """(T in K, G, its stderr in eV/atom) of a finished NPT run directory."""
    results = json.loads((run / "results.json").read_text())
    t = float(tomllib.loads((run / "config.resolved.toml").read_text())["state"]["temperature_K"])
    return t, results["gibbs_free_energy_eV_per_atom"], results["gibbs_free_energy_stderr_eV_per_atom"]


def gather(outs: list[Path], extra: list[str], replace: list[str] = (),
           runs: list[str] = ()) -> dict[tuple[str, float], tuple[float, float, float, str]]:
    """(phase, T) -> (G, stderr, correction, source), eV/atom."""
    points: dict[tuple[str, float], tuple[float, float, float, str]] = {}

    def add(key, value):
        if key in points and not np.allclose(points[key][:3], value[:3], rtol=0, atol=1e-9):
            raise SystemExit(f"{key}: {points[key][3]} and {value[3]} disagree")
        points[key] = value

    for out in outs:
        summary = json.loads((out / "summary.json").read_text())
        for phase, entry in summary["phases"].items():
            corrections = entry.get("harmonic_finite_size_correction_eV_per_atom") or [np.nan] * len(summary["temperatures_K"])
            for j, t in enumerate(summary["temperatures_K"]):
                add((phase, float(t)), (entry["value_eV_per_atom"][j], entry["stderr_eV_per_atom"][j],
                                        np.nan if corrections[j] is None else corrections[j], str(out)))
    for text in extra:
        phase, t, g, err, corr = text.split(",")
        add((phase, float(t)), (float(g), float(err), float(corr), "--point"))
    for text in runs:
        phase, run, corr = text.split(",")
        t, g, err = run_point(Path(run))
        add((phase, t), (g, err, float(corr), run))
    for text in replace:
        phase, run = text.split(",")
        t, g, err = run_point(Path(run))
        if (phase, t) not in points:
            raise SystemExit(f"--replace {text}: no point ({phase}, {t:g} K) to replace")
        points[(phase, t)] = (g, err, points[(phase, t)][2], run)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outs", nargs="*", type=Path, help="output directories of thermoflow compare")
    parser.add_argument("--point", action="append", default=[], help="PHASE,T_K,G,STDERR,CORRECTION (eV/atom)")
    parser.add_argument("--run", action="append", default=[], help="PHASE,RUN_DIR,CORRECTION (eV/atom): a point from a run directory")
    parser.add_argument("--replace", action="append", default=[], help="PHASE,RUN_DIR: this run's G replaces the point")
    parser.add_argument("--bootstrap", type=int, default=20000)
    parser.add_argument("--plot", type=Path, default=None, help="write Delta G(T), raw and corrected, with error bands")
    parser.add_argument("--label", default="", help="the cells, for the plot's legend (e.g. '54 / 108 atoms')")
    args = parser.parse_args()
    points = gather(args.outs, args.point, args.replace, args.run)
    temps = sorted({t for _, t in points})
    for t in temps:
        missing = [p for p in PHASES if (p, t) not in points]
        if missing:
            raise SystemExit(f"{t:g} K: no point for {missing}")
    g = {p: np.array([points[(p, t)][0] for t in temps]) for p in PHASES}
    err = {p: np.array([points[(p, t)][1] for t in temps]) for p in PHASES}
    corr = {p: np.array([points[(p, t)][2] for t in temps]) for p in PHASES}
    delta, delta_err = g["fcc"] - g["bcc"], np.hypot(err["fcc"], err["bcc"])
    fixed = delta + corr["fcc"] - corr["bcc"]
    print("| T (K) | G bcc | G fcc (meV/atom) | G(fcc) - G(bcc) raw | correction difference | corrected |")
    print("| --- | --- | --- | --- | --- | --- |")
    for j, t in enumerate(temps):
        print(f"| {t:g} | {g['bcc'][j] * MEV:.3f} +- {err['bcc'][j] * MEV:.3f} | {g['fcc'][j] * MEV:.3f} +- {err['fcc'][j] * MEV:.3f} "
              f"| {delta[j] * MEV:+.3f} +- {delta_err[j] * MEV:.3f} | {(corr['fcc'][j] - corr['bcc'][j]) * MEV:+.3f} "
              f"| {fixed[j] * MEV:+.3f} +- {delta_err[j] * MEV:.3f} |")
    t_arr = np.asarray(temps)
    if args.plot is not None:
        from thermoflow.workflows.plots import plot_phase_curves

        curves = {f"raw {args.label}".strip(): (delta * MEV, delta_err * MEV)}
        if np.all(np.isfinite(fixed)):
            curves[f"harmonic finite-size corrected {args.label}".strip()] = (fixed * MEV, delta_err * MEV)
        plot_phase_curves(args.plot, t_arr, curves, "G(fcc) - G(bcc) at 1 GPa (meV/atom)", zero_line=True)
    for label, values in (("raw", delta), ("corrected", fixed)):
        if not np.all(np.isfinite(values)):
            print(f"{label}: undefined (a correction is missing)")
            continue
        found = crossing_temperatures(t_arr, values, delta_err, n_bootstrap=args.bootstrap)
        text = ", ".join(f"{c['temperature_K']:.1f} +- {c['stderr_K']:.1f} K in {c['interval_K']}" for c in found) or "none on this grid"
        print(f"crossing ({label}): {text}")


if __name__ == "__main__":
    main()
