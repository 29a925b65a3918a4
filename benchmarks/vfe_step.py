"""Joint training step of the deep variational free energy of hydrogen (`thermoflow vfe` with a [hydrogen] section).

Run by hand from the repository root:

    python benchmarks/vfe_step.py                                   # 16 protons, the published settings below
    python benchmarks/vfe_step.py --protons 16 32 --precision float32 --sparse

Equal settings to the published code's side-by-side timing (github.com/fermiflow/hydrogen @ 23b475be,
Xie et al., PRL 131, 126501 (2023); docs/benchmarks.md): r_s = 1.25, T = 6000 K, Gamma point, 8 proton
walkers x 8 electron walkers (64 electron configurations per step), 50 proton + 500 electron Metropolis
moves per step, Adam for both networks; electron network 4 layers, widths 32/16, one singlet geminal over
the 57 plane waves of the first five shells; proton flow 3 layers, widths 32/16 (the published
``--flow_depth 3 --flow_h1size 32 --flow_h2size 16``).

Each row runs in its own process (peak resident memory ru_maxrss of that process): the run stops after
``--repeats`` + 1 steps (no final evaluation); the step time is the median of the steps after the first
(which compiles), from the run's metrics.csv, float64 unless ``--precision float32``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

PUBLISHED_GEMINAL_PLANE_WAVES = 57


def run_one(n: int, repeats: int, walkers: int, electron_walkers: int, proton_moves: int, electron_moves: int, precision: str,
            sparse: bool) -> None:
    import jax
    import numpy as np

    from thermoflow.workflows.config import validate_config
    from thermoflow.workflows.vfe_config import VFEElectronsRunConfig
    from thermoflow.workflows.vfe_hydrogen_run import run_vfe_hydrogen

    config = validate_config({
        "state": {"temperature_K": 6000.0},
        "hydrogen": {"rs_bohr": 1.25, "n_protons": n},
        "flow": {"n_layers": 3, "one_body": 32, "two_body": 16},
        "wavefunction": {"kind": "network", "n_layers": 4, "one_body": 32, "two_body": 16, "antisymmetry": "geminal",
                         "geminal_extra_orbitals": PUBLISHED_GEMINAL_PLANE_WAVES - n // 2, "network_precision": precision},
        "vfe": {"walkers": walkers, "electron_walkers": electron_walkers, "steps": repeats + 2, "proton_mcmc_steps": proton_moves,
                "electron_mcmc_steps": electron_moves, "equilibration_blocks": 0, "sparse_laplacian": sparse,
                "checkpoint_every": 1000},
    }, VFEElectronsRunConfig)
    with tempfile.TemporaryDirectory() as tmp:
        run_vfe_hydrogen(config, Path(tmp), Path(tmp) / "run", log_every=None, stop_after=repeats + 1)
        with open(Path(tmp) / "run" / "metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
    seconds = [float(r["seconds"]) for r in rows]
    print(json.dumps({"step_s": float(np.median(seconds[1:])), "first_step_s": seconds[0], "jax": jax.__version__,
                      "peak_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protons", nargs="+", type=int, default=[16])
    parser.add_argument("--walkers", type=int, default=8, help="proton walkers")
    parser.add_argument("--electron-walkers", type=int, default=8, help="electron walkers per proton walker")
    parser.add_argument("--proton-moves", type=int, default=50)
    parser.add_argument("--electron-moves", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="float64", choices=["float64", "float32"], help="dtype of the electron network's streams")
    parser.add_argument("--sparse", action="store_true", help="folx with sparse jets")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one, args.repeats, args.walkers, args.electron_walkers, args.proton_moves, args.electron_moves, args.precision, args.sparse)
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, JAX on CPU; r_s 1.25, 6000 K, Gamma; "
          f"{args.walkers} proton x {args.electron_walkers} electron walkers, {args.proton_moves} proton + {args.electron_moves} electron "
          f"moves per step, Adam; {args.precision} network streams, {'sparse' if args.sparse else 'dense'} folx jets")
    print(f"{'protons':>7} {'s/step':>8} {'first step s':>12} {'peak MB':>8}")
    for n in args.protons:
        cmd = [sys.executable, __file__, "--one", str(n), "--walkers", str(args.walkers), "--electron-walkers", str(args.electron_walkers),
               "--proton-moves", str(args.proton_moves), "--electron-moves", str(args.electron_moves), "--repeats", str(args.repeats),
               "--precision", args.precision] + (["--sparse"] if args.sparse else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"{n:>7} FAILED: {proc.stderr.strip().splitlines()[-1]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{n:>7} {r['step_s']:>8.2f} {r['first_step_s']:>12.1f} {r['peak_MB']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
