"""Electronic VMC step time and memory: `thermoflow vmc`'s jitted step, Adam vs minSR, 16 and 32 protons.

Run by hand from the repository root:

    python benchmarks/vmc_step.py                                  # 16 protons bcc, r_s 1.25, default network
    python benchmarks/vmc_step.py --electrons 16 54 --sizes default large --optimizers adam minsr
    python benchmarks/vmc_step.py --sizes published --walkers 64 --mcmc-steps 500 --optimizers adam

The last is the equal-settings row for the published hydrogen code (github.com/fermiflow/hydrogen,
Xie et al., PRL 131, 126501 (2023)): its production electron network (4 layers, widths 32/16, one
singlet geminal over the 57 plane waves of the first five shells) and 500 all-electron Metropolis
moves per step; timing that code itself is described in docs/benchmarks.md.

Each row runs in its own process (peak resident memory ru_maxrss of that process): protons on a bcc
lattice at r_s = 1.25 bohr, the periodic network (``default``: 2 layers, one-body 32, two-body 8;
``large``: 3 layers, one-body 64, two-body 16; ``published``: 4 layers, 32, 16 with a geminal over 57
plane waves), ``--walkers`` walkers, ``--mcmc-steps`` Metropolis moves per step (default 10),
the optimisation step of :func:`thermoflow.electrons.driver.make_train_step` (Metropolis block + local
energies by folx + update), median of ``--repeats`` steps after compilation, float64.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"default": (2, 32, 8), "large": (3, 64, 16), "published": (4, 32, 16)}
# The published code's pair function runs over 57 plane waves (shells 1 + 6 + 12 + 8 + 6 + 24 of the
# simple-cubic reciprocal lattice); with 8 electrons per spin occupied, 49 more complete it.
PUBLISHED_GEMINAL_PLANE_WAVES = 57


def run_one(n: int, size: str, optimizer: str, walkers: int, repeats: int, chunk: int | None, mcmc_steps: int,
            precision: str = "float64", sparse: bool = False) -> None:
    import jax
    import numpy as np

    from thermoflow.electrons import driver
    from thermoflow.workflows.config import validate_config
    from thermoflow.workflows.vmc_config import VMCRunConfig
    from thermoflow.workflows.vmc_run import initial_electrons, build_system

    layers, one, two = SIZES[size]
    wavefunction = {"kind": "network", "n_layers": layers, "one_body": one, "two_body": two, "network_precision": precision}
    if size == "published":
        wavefunction |= {"antisymmetry": "geminal", "geminal_extra_orbitals": PUBLISHED_GEMINAL_PLANE_WAVES - n // 2}
    config = validate_config({"system": {"rs_bohr": 1.25, "n_electrons": n, "protons": "bcc"},
                              "wavefunction": wavefunction,
                              "vmc": {"walkers": walkers, "optimizer": optimizer, "sparse_laplacian": sparse,
                                      "learning_rate": 1e-3 if optimizer == "adam" else 0.02}}, VMCRunConfig)
    cell, configurations, _, wf, local_energy = build_system(config, Path("."))
    protons = configurations[0]
    params = wf.init()
    n_params = int(sum(np.size(x) for x in jax.tree.leaves(params)))
    step, transform = driver.make_train_step(wf.log_psi, local_energy, jax.numpy.asarray(protons), optimizer=optimizer,
                                             learning_rate=config.vmc.learning_rate, n_mcmc_steps=mcmc_steps,
                                             chunk_size=chunk)
    electrons = initial_electrons(jax.random.PRNGKey(0), protons, cell, walkers, n)
    state = driver.initial_state(params, transform, electrons, jax.random.PRNGKey(1), 0.2)
    t0 = time.perf_counter()
    state, metrics, _ = step(state)
    jax.block_until_ready(state.params)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, metrics, _ = step(state)
        jax.block_until_ready(state.params)
        times.append(time.perf_counter() - t0)
    print(json.dumps({"n_params": n_params, "step_s": float(np.median(times)), "compile_s": compile_s,
                      "peak_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--electrons", nargs="+", type=int, default=[16])
    parser.add_argument("--sizes", nargs="+", default=["default"], choices=sorted(SIZES))
    parser.add_argument("--optimizers", nargs="+", default=["adam", "minsr"], choices=["adam", "minsr"])
    parser.add_argument("--walkers", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mcmc-steps", type=int, default=10, help="all-electron Metropolis moves per optimisation step")
    parser.add_argument("--precision", default="float64", choices=["float64", "float32"], help="dtype of the network's streams")
    parser.add_argument("--sparse", action="store_true", help="folx with sparse jets (vmc.sparse_laplacian)")
    parser.add_argument("--chunk", type=int, default=None, help="local energies of this many walkers at a time (default: all)")
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(int(args.one[0]), args.one[1], args.one[2], args.walkers, args.repeats, args.chunk, args.mcmc_steps, args.precision, args.sparse)
        return
    import jax

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__} on CPU, float64; "
          f"{args.walkers} walkers, {args.mcmc_steps} Metropolis moves per step, {args.precision} streams, {'sparse' if args.sparse else 'dense'} folx jets, local energies {args.chunk or 'all'} walkers at a time")
    print(f"{'protons':>7} {'network':>8} {'optimizer':>9} {'params':>7} {'s/step':>8} {'compile s':>9} {'peak MB':>8}")
    for n in args.electrons:
        for size in args.sizes:
            for opt in args.optimizers:
                cmd = [sys.executable, __file__, "--one", str(n), size, opt, "--walkers", str(args.walkers), "--repeats", str(args.repeats),
                       "--mcmc-steps", str(args.mcmc_steps), "--precision", args.precision] + (["--sparse"] if args.sparse else []) + (["--chunk", str(args.chunk)] if args.chunk else [])
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode:
                    print(f"{n:>7} {size:>8} {opt:>9} FAILED: {proc.stderr.strip().splitlines()[-1]}")
                    continue
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"{n:>7} {size:>8} {opt:>9} {r['n_params']:>7} {r['step_s']:>8.2f} {r['compile_s']:>9.1f} {r['peak_MB']:>8.0f}", flush=True)


if __name__ == "__main__":
    main()
