"""Markdown table (and plots) of the lithium runs written by run_all.sh.

    python examples/lithium/summarize.py [RUNS_DIR] [--before DIR] [--collect DOCS_DIR]

Reads RUNS_DIR/li-{bcc,fcc}-{300,100}K/{results.json,metrics.csv} (the self-consistent Gaussian
and the NCT flow trained on it) and, for "before", the earlier runs on the Hessian's harmonic
basis kept in --before (default docs/results/lithium: <case>_results.json, flow trained, and
<case>-frozen_results.json, harmonic wavefunctions). "Gaussian at K" is the mean F of the first
20 training steps: the identity flow with Boltzmann occupations in the K-level basis, i.e. the
Gaussian truncated to K levels per mode, the state NCT starts from. With --collect, the runs'
plots and results.json go to DOCS_DIR as <case>_scha_*.
"""

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from thermoflow.analysis.statistics import blocking_stderr

MEV = 1000.0
CASES = [(phase, temperature) for temperature in (300, 100) for phase in ("bcc", "fcc")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", default="runs", type=Path)
    parser.add_argument("--before", type=Path, default=Path("docs/results/lithium"))
    parser.add_argument("--collect", type=Path, default=None)
    args = parser.parse_args()
    print("| phase | T (K) | F harm | F before: frozen / flow (harmonic basis) | F Gaussian (SCHA) | F Gaussian at K | F NCT on the Gaussian "
          "| NCT - Gaussian (meV/atom) | NCT - before flow (meV/atom) | S Gaussian / NCT (k_B/atom) | K, truncation (meV/atom) | s/step |")
    print("| --- " * 12 + "|")
    for phase, temperature in CASES:
        name = f"{phase}_{temperature}K"
        run = args.runs / f"li-{phase}-{temperature}K"
        if not (run / "results.json").is_file():
            print(f"| {phase} | {temperature} | (not run) |" + " |" * 9)
            continue
        r = json.loads((run / "results.json").read_text())
        free = np.genfromtxt(run / "metrics.csv", delimiter=",", names=True)["free_energy_eV_per_atom"]
        start = blocking_stderr(free[:20])
        before_flow = json.loads((args.before / f"{name}_results.json").read_text())
        before_frozen = json.loads((args.before / f"{name}-frozen_results.json").read_text())
        f, e = r["free_energy_eV_per_atom"], r["free_energy_stderr_eV_per_atom"]
        fg, eg = r["gaussian_free_energy_eV_per_atom"], r["gaussian_free_energy_stderr_eV_per_atom"]
        fb, eb = before_flow["free_energy_eV_per_atom"], before_flow["free_energy_stderr_eV_per_atom"]
        print(
            f"| {phase} | {temperature} | {r['harmonic_free_energy_eV_per_atom']:.5f} "
            f"| {before_frozen['free_energy_eV_per_atom']:.5f} / {fb:.5f} | {fg:.5f} +- {eg:.5f} "
            f"| {start.mean:.5f} +- {start.stderr:.5f} | {f:.5f} +- {e:.5f} "
            f"| {(f - fg) * MEV:+.2f} +- {np.hypot(e, eg) * MEV:.2f} | {(f - fb) * MEV:+.2f} +- {np.hypot(e, eb) * MEV:.2f} "
            f"| {r['gaussian_entropy_kB_per_atom']:.3f} / {r['entropy_kB_per_atom']:.3f} "
            f"| {r['n_levels']}, {r['basis_truncation_error_eV_per_atom'] * MEV:.3f} | {r['seconds_per_step']:.2f} |"
        )
        if args.collect is not None:
            args.collect.mkdir(parents=True, exist_ok=True)
            for item in ("free_energy.png", "occupations.png", "results.json"):
                shutil.copyfile(run / item, args.collect / f"{name}_scha_{item}")


if __name__ == "__main__":
    main()
