"""Peak memory of the quadratic flow's training computations at large D (the fcc 108 / bcc 128 cells).

Run by hand from the repository root, one D per process (the peak resident memory is the process's):

    python benchmarks/quadratic_flow_memory.py 321

Compiles and runs one gradient of a loss made of the parts of an NCT step that involve the flow
(the jet kinetic energy of a batch of 128 in chunks of 16 at frozen parameters, ln|Psi| of the
batch with its gradient, the inverse flow on a few samples), 2 pairs of orderings, K = 10, and
prints the peak resident memory of the process and the wall time (compilation included). The
parameters alone are 4 D^3 doubles (1.06 GB at D = 321).
"""

from __future__ import annotations

import platform
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import thermoflow  # noqa: F401  (float64)
from thermoflow.nct.hamiltonian import make_jet_kinetic_energy
from thermoflow.nct.quadratic import make_quadratic_flow
from thermoflow.nct.wavefunction import make_log_psi


def main() -> None:
    dim = int(sys.argv[1]) if len(sys.argv) > 1 else 321
    flow = make_quadratic_flow(dim, 2)
    params = flow.init(None)
    rng = np.random.default_rng(0)
    eps = jnp.asarray(rng.uniform(0.003, 0.007, size=dim))
    s = jnp.asarray(rng.normal(size=(128, dim)))
    levels = jnp.asarray(rng.integers(0, 2, size=(128, dim)))
    kinetic = make_jet_kinetic_energy(flow, 10, eps)
    log_psi = make_log_psi(flow, 10)

    def loss(p):
        frozen = jax.lax.stop_gradient(p)
        kin = jax.lax.map(lambda a: kinetic(frozen, a[0], a[1], None), (levels, s), batch_size=16)
        z = jax.vmap(flow.inverse, in_axes=(None, 0))(frozen, s[:4])
        return jnp.mean(kin) + jnp.mean(jax.vmap(log_psi, in_axes=(None, 0, 0))(p, levels, s)) + jnp.sum(z)

    t = time.perf_counter()
    jax.block_until_ready(jax.jit(jax.grad(loss))(params))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"# {platform.machine()}, JAX {jax.__version__} on {jax.default_backend()}")
    print("| D | parameters (GB) | peak resident memory (GB) | compile + first call (s) |")
    print(f"| {dim} | {4 * dim**3 * 8 / 1e9:.2f} | {peak:.2f} | {time.perf_counter() - t:.0f} |")


if __name__ == "__main__":
    main()
