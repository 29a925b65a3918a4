"""Markdown table of the lithium runs written by run_all.sh (reads runs/li-*/results.json).

    python examples/lithium/summarize.py [RUNS_DIR]
"""

import json
import sys
from pathlib import Path

runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
meV = 1000.0
print("| phase | T (K) | F flow (eV/atom) | F frozen (eV/atom) | F flow - F frozen (meV/atom) | F flow - F harm (meV/atom) | E flow (eV/atom) | S flow (k_B/atom) | F harm (eV/atom) | s/step flow |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for temperature in (100, 300):
    for phase in ("bcc", "fcc"):
        flow_file = runs / f"li-{phase}-{temperature}K" / "results.json"
        frozen_file = runs / f"li-{phase}-{temperature}K-frozen" / "results.json"
        if not flow_file.is_file() or not frozen_file.is_file():
            print(f"| {phase} | {temperature} | (not run) | | | | | | | |")
            continue
        a, b = json.loads(flow_file.read_text()), json.loads(frozen_file.read_text())
        fa, ea = a["free_energy_eV_per_atom"], a["free_energy_stderr_eV_per_atom"]
        fb, eb = b["free_energy_eV_per_atom"], b["free_energy_stderr_eV_per_atom"]
        diff, err = (fa - fb) * meV, (ea**2 + eb**2) ** 0.5 * meV
        print(
            f"| {phase} | {temperature} | {fa:.5f} +- {ea:.5f} | {fb:.5f} +- {eb:.5f} | {diff:+.2f} +- {err:.2f} "
            f"| {(fa - a['harmonic_free_energy_eV_per_atom']) * meV:+.2f} +- {ea * meV:.2f} "
            f"| {a['energy_eV_per_atom']:.5f} +- {a['energy_stderr_eV_per_atom']:.5f} | {a['entropy_kB_per_atom']:.3f} "
            f"| {a['harmonic_free_energy_eV_per_atom']:.5f} | {a['seconds_per_step']:.2f} |"
        )
