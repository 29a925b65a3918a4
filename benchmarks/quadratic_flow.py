"""Kinetic energy of the quadratic flow: analytic jet against folx's forward Laplacian.

Run by hand from the repository root (no data needed):

    python benchmarks/quadratic_flow.py                  # D = 45, 93, 159 modes, batch 128
    python benchmarks/quadratic_flow.py --modes 93 --pairs 3 --repeats 5

Times the local kinetic energy of a batch (the part of an NCT step that depends on the flow),
jitted, after compilation, median of --repeats calls, chunks of --chunk-size samples as the
default job evaluates them. Parameters are random and small (a perturbed identity); the cost does
not depend on their values. The two methods agree to round-off (tests/nct/test_quadratic.py).
"""

from __future__ import annotations

import argparse
import os
import platform

import jax
import jax.numpy as jnp
import numpy as np

import thermoflow  # noqa: F401  (float64)
from timing import seconds
from thermoflow.nct.hamiltonian import make_jet_kinetic_energy, make_kinetic_energy
from thermoflow.nct.quadratic import make_quadratic_flow
from thermoflow.nct.wavefunction import make_log_psi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", type=int, nargs="+", default=[45, 93, 159])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} on {jax.default_backend()}")
    print(f"# quadratic flow, {args.pairs} pairs ({2 * args.pairs} layers), batch {args.batch}, chunks of {args.chunk_size}, K = {args.levels}")
    print(f"{'modes':>6} {'jet (s)':>9} {'folx (s)':>9} {'folx / jet':>10}")
    for dim in args.modes:
        flow = make_quadratic_flow(dim, args.pairs)
        rng = np.random.default_rng(0)
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(1e-3 * rng.normal(size=x.shape)), flow.init(None))
        eps = jnp.asarray(rng.uniform(0.003, 0.007, size=dim))
        s = jnp.asarray(rng.normal(size=(args.batch, dim)))
        levels = jnp.asarray(rng.integers(0, 2, size=(args.batch, dim)))
        row = []
        for kinetic in (make_jet_kinetic_energy(flow, args.levels, eps), make_kinetic_energy(make_log_psi(flow, args.levels), eps, "folx")):
            fn = jax.jit(lambda p, n, x, k=kinetic: jax.lax.map(lambda a: k(p, a[0], a[1], None), (n, x), batch_size=args.chunk_size))
            row.append(seconds(fn, params, levels, s, repeats=args.repeats))
        print(f"{dim:>6} {row[0]:>9.3f} {row[1]:>9.3f} {row[1] / row[0]:>10.1f}")


if __name__ == "__main__":
    main()
