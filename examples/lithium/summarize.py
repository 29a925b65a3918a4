"""Markdown table (and comparison plots) of the lithium runs written by run_all.sh.

    python examples/lithium/summarize.py [RUNS_DIR] [--collect DOCS_DIR]

Reads runs/li-{bcc,fcc}-{100,300}K[-frozen]/{results.json,metrics.csv}. The "drift" column is
the mean F of the second half of the averaging window minus that of the first half (blocking
error bars): a non-zero drift means the optimisation was still lowering F. With --collect,
the runs' plots and results.json and a flow-vs-frozen figure per case are copied to DOCS_DIR.
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.workflows.plots import plot_free_energy_comparison

MEV = 1000.0


def load(run: Path):
    res = json.loads((run / "results.json").read_text())
    data = np.genfromtxt(run / "metrics.csv", delimiter=",", names=True)
    return res, data["step"], data["free_energy_eV_per_atom"] * MEV


def drift(res, free):
    """Second-half minus first-half mean of the averaging window, meV/atom, with its error."""
    window = free[-int(res["averaging_window_steps"]):]
    a, b = blocking_stderr(window[: len(window) // 2]), blocking_stderr(window[len(window) // 2:])
    return b.mean - a.mean, float(np.hypot(a.stderr, b.stderr))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", default="runs", type=Path)
    parser.add_argument("--collect", type=Path, default=None)
    args = parser.parse_args()
    print("| phase | T (K) | F flow (eV/atom) | F frozen (eV/atom) | F flow - F frozen (meV/atom) | F flow - F harm (meV/atom) "
          "| drift flow / frozen (meV/atom) | E flow (eV/atom) | S flow (k_B/atom) | F harm (eV/atom) "
          "| steps flow / frozen | s/step flow / frozen |")
    print("| --- " * 12 + "|")
    for temperature in (300, 100):
        for phase in ("bcc", "fcc"):
            name = f"{phase}_{temperature}K"
            flow_dir = args.runs / f"li-{phase}-{temperature}K"
            frozen_dir = args.runs / f"li-{phase}-{temperature}K-frozen"
            if not (flow_dir / "results.json").is_file() or not (frozen_dir / "results.json").is_file():
                print(f"| {phase} | {temperature} | (not run) |" + " |" * 9)
                continue
            (a, sa, fa_curve), (b, sb, fb_curve) = load(flow_dir), load(frozen_dir)
            fa, ea = a["free_energy_eV_per_atom"], a["free_energy_stderr_eV_per_atom"]
            fb, eb = b["free_energy_eV_per_atom"], b["free_energy_stderr_eV_per_atom"]
            diff, err = (fa - fb) * MEV, float(np.hypot(ea, eb)) * MEV
            (da, dea), (db, deb) = drift(a, fa_curve), drift(b, fb_curve)
            print(
                f"| {phase} | {temperature} | {fa:.5f} +- {ea:.5f} | {fb:.5f} +- {eb:.5f} | {diff:+.2f} +- {err:.2f} "
                f"| {(fa - a['harmonic_free_energy_eV_per_atom']) * MEV:+.2f} +- {ea * MEV:.2f} "
                f"| {da:+.2f} +- {dea:.2f} / {db:+.2f} +- {deb:.2f} "
                f"| {a['energy_eV_per_atom']:.5f} +- {a['energy_stderr_eV_per_atom']:.5f} | {a['entropy_kB_per_atom']:.3f} "
                f"| {a['harmonic_free_energy_eV_per_atom']:.5f} | {len(sa)} / {len(sb)} "
                f"| {a['seconds_per_step']:.2f} / {b['seconds_per_step']:.2f} |"
            )
            if args.collect is not None:
                args.collect.mkdir(parents=True, exist_ok=True)
                for run, tag in ((flow_dir, name), (frozen_dir, f"{name}-frozen")):
                    for item in ("free_energy.png", "occupations.png", "results.json"):
                        suffix = "_results.json" if item == "results.json" else f"_{item}"
                        shutil.copyfile(run / item, args.collect / f"{tag}{suffix}")
                plot_free_energy_comparison(
                    args.collect / f"{name}_flow_vs_frozen.png",
                    {"flow trained": (sa, fa_curve), "flow frozen": (sb, fb_curve)},
                )


if __name__ == "__main__":
    main()
