"""Large-cell harmonic reference: Hessian by chunked autodiff vs phonopy's symmetry-reduced displacements.

Run by hand from the repository root (needs ../shared and the deepmd extra):

    python benchmarks/harmonic_reference.py                       # bcc 128 (dp4), cI16 432 (dp0)
    python benchmarks/harmonic_reference.py --cases bcc-54 bcc-128

Each (case, method) runs in its own Python process, so the peak resident memory (ru_maxrss of the
child) is that method's alone; wall times include JIT compilation (what a run pays once). The
potentials are the compressed Deep Potentials of the production runs (``compress = true``; their
derivatives, and so both Hessians, go through the network). ``autodiff`` is
``thermoflow.potentials.base.hessian`` (forward-over-reverse, 16 columns per vmapped chunk, 3N
columns; ``--chunk``); ``phonopy`` is ``thermoflow.phonons.finite_displacement.phonopy_hessian`` (plus-minus
displacements of 0.001 A of the symmetry-distinct atoms, forces in vmapped batches of 8). The table
compares the phonon energies of the two Hessians (translations removed) and the harmonic zero-point
energy per atom.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared"
CASES = {  # name: (structure file, supercell, volume per atom A^3, model)
    "bcc-54": ("bcc.vasp", 3, 19.2, "lithium_dp4.dp"),
    "bcc-128": ("bcc.vasp", 4, 19.2, "lithium_dp4.dp"),
    "cI16-128": ("cI16.vasp", 2, 7.353, "lithium_dp0.dp"),
    "cI16-432": ("cI16.vasp", 3, 7.353, "lithium_dp0.dp"),
}


def partial_hessian(energy_fn, positions, cell, chunk: int, columns: int):
    """A jitted call computing the first ``columns`` Hessian columns, exactly as ``thermoflow.potentials.base.hessian``
    computes all 3N (forward-over-reverse, ``chunk`` at a time): its time per column and memory."""
    import jax
    import jax.numpy as jnp

    n = positions.shape[0]
    flat = jnp.ravel(positions)

    @jax.jit
    def run(flat):
        def column(tangent):
            return jax.jvp(lambda x: jnp.ravel(jax.grad(energy_fn)(x.reshape(n, 3), cell)), (flat,), (tangent,))[1]

        return jax.lax.map(column, jnp.eye(3 * n, dtype=flat.dtype)[:columns], batch_size=chunk)

    return lambda: run(flat)


def run_one(case: str, method: str, out: Path, chunk: int, columns: int | None) -> None:
    """Child process: build the case, compute the Hessian with ``method``, save it, print JSON."""
    import jax
    import jax.numpy as jnp
    from ase.io import read

    import thermoflow  # noqa: F401  (float64)
    from thermoflow.phonons.finite_displacement import phonopy_hessian
    from thermoflow.potentials.base import hessian
    from thermoflow.potentials.deepmd_compress import make_compressed_deepmd_energy_fn
    from thermoflow.structures import scale_to_volume

    structure, repeat, volume, model = CASES[case]
    atoms = scale_to_volume(read(SHARED / "structures" / "lithium" / structure) * ((repeat,) * 3), volume)
    pos, cell = atoms.get_positions(), atoms.cell.array
    energy_fn = make_compressed_deepmd_energy_fn(SHARED / "models" / "lithium" / model, cell)
    start = time.perf_counter()
    if method == "autodiff" and columns:  # compile on a first call, time a second one, add the compile time once
        h, evaluations = None, columns
        call = partial_hessian(energy_fn, jnp.asarray(pos), jnp.asarray(cell), chunk, columns)
        jax.block_until_ready(call())
        first = time.perf_counter() - start
        start = time.perf_counter()
        jax.block_until_ready(call())
        compile_s = first - (time.perf_counter() - start)
    elif method == "autodiff":
        h = np.asarray(jax.block_until_ready(hessian(energy_fn, jnp.asarray(pos), jnp.asarray(cell), chunk_size=chunk)))
        evaluations = 3 * len(atoms)
    else:
        result = phonopy_hessian(energy_fn, pos, cell, atoms.numbers)
        h, evaluations = result.hessian, result.n_displacements
    seconds = time.perf_counter() - start
    if h is None:  # timing of the first columns only: the whole Hessian's time is extrapolated
        seconds = compile_s + seconds * 3 * len(atoms) / columns
    else:
        np.savez(out, hessian=h, masses=atoms.get_masses())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_MB": peak_mb, "evaluations": evaluations, "atoms": len(atoms)}))


def phonon_energies_meV(path: Path) -> np.ndarray:
    from thermoflow.phonons.modes import dynamical_matrix
    from thermoflow.units import HBAR_EV

    data = np.load(path)
    w2 = np.linalg.eigvalsh(dynamical_matrix(data["hessian"], data["masses"]))
    return 1e3 * HBAR_EV * np.sqrt(np.abs(np.sort(w2)[3:])) * np.sign(np.sort(w2)[3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["bcc-128", "cI16-432"], choices=sorted(CASES))
    parser.add_argument("--methods", nargs="+", default=["phonopy", "autodiff"], choices=["phonopy", "autodiff"])
    parser.add_argument("--chunk", type=int, default=16, help="autodiff: Hessian columns per vmapped chunk (memory ~ chunk)")
    parser.add_argument("--columns", type=int, default=None, help="autodiff: time only this many columns (a multiple of "
                        "--chunk) and extrapolate to 3N; no Hessian, so no frequency comparison")
    parser.add_argument("--one", nargs=3, metavar=("CASE", "METHOD", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], args.one[1], Path(args.one[2]), args.chunk, args.columns)
        return
    if not SHARED.is_dir():
        sys.exit(f"shared data directory {SHARED} not found: this benchmark needs the lithium models")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX on CPU, float64; autodiff chunk {args.chunk}")
    print(f"{'case':>9} {'method':>9} {'evals':>6} {'wall s':>8} {'peak MB':>8} {'hw range meV':>16} {'max |dhw| meV':>13} {'ZPE meV/atom':>12}")
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            energies = {}
            for method in args.methods:
                out = Path(tmp) / f"{case}-{method}.npz"
                proc = subprocess.run([sys.executable, __file__, "--one", case, method, str(out), "--chunk", str(args.chunk)] + (["--columns", str(args.columns)] if args.columns else []), capture_output=True, text=True)
                if proc.returncode:
                    print(f"{case:>9} {method:>9} FAILED: {proc.stderr.strip().splitlines()[-1]}")
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                if not out.is_file():
                    print(f"{case:>9} {method:>9} {row['evaluations']:>6} {row['seconds']:>8.1f} {row['peak_MB']:>8.0f} "
                          f"(first {row['evaluations']} columns timed; wall s extrapolated to all {3 * row['atoms']})", flush=True)
                    continue
                energies[method] = phonon_energies_meV(out)
                e = energies[method]
                diff = np.max(np.abs(e - energies["phonopy"])) if method != "phonopy" and "phonopy" in energies else float("nan")
                zpe = 0.5 * np.sum(np.abs(e)) / row["atoms"]
                print(f"{case:>9} {method:>9} {row['evaluations']:>6} {row['seconds']:>8.1f} {row['peak_MB']:>8.0f} "
                      f"{e.min():>7.2f}-{e.max():>7.2f} {diff:>13.2e} {zpe:>12.4f}", flush=True)


if __name__ == "__main__":
    main()
