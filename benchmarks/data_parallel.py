"""NCT training step with the batch split over 1, 2, ... devices (thermoflow.parallel).

Run by hand from the repository root; on a CPU the devices are emulated (the flag must be set
before JAX starts, which this script does):

    python benchmarks/data_parallel.py --devices 1 2             # the default neon job's crystal (32 atoms, LJ)
    python benchmarks/data_parallel.py --devices 1 2 --deepmd ../shared/models/lithium/lithium_dp4.dp

Emulated CPU devices share the machine's cores with each other (and a single CPU device already
uses them all through XLA's thread pool), so on a CPU this measures the overhead of the sharded
step and checks its result, not a speed-up: that needs real devices (GPUs). Each row: median of
--repeats jitted training steps (loss gradient) after compilation, quadratic flow 2 pairs, K = 4,
harmonic basis, and the largest difference of the gradient from the 1-device step.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

if __name__ == "__main__":  # before JAX is imported
    _n = max(int(a) for a in sys.argv[sys.argv.index("--devices") + 1:] if a.isdigit()) if "--devices" in sys.argv else 2
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={_n}"

import jax
import jax.numpy as jnp
import numpy as np

import thermoflow  # noqa: F401  (float64)
from npt_step import crystal
from timing import seconds
from thermoflow.nct.loss import make_free_energy_model
from thermoflow.nct.quadratic import make_quadratic_flow
from thermoflow.parallel import make_batch_mesh
from thermoflow.phonons import compute_harmonic_modes
from thermoflow.units import KB_EV_PER_K


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--deepmd", type=Path, default=None, help="a DP model: bcc lithium on it instead of the LJ neon crystal")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    name, atoms, energy_fn, temperature = crystal(args.deepmd)
    modes = compute_harmonic_modes(energy_fn, atoms.get_positions(), atoms.cell.array, atoms.get_masses())
    flow = make_quadratic_flow(modes.n_modes, 2)
    key = jax.random.PRNGKey(0)
    rng = np.random.default_rng(0)
    kw = dict(kT_eV=KB_EV_PER_K * temperature, n_levels=4, batch_size=args.batch, chunk_size=args.chunk_size)
    params = None
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} on {jax.default_backend()}")
    print(f"# {name}, {modes.n_modes} modes, quadratic flow 2 pairs, batch {args.batch}, chunks of {args.chunk_size} per device, K = 4")
    print(f"{'devices':>8} {'s / step':>10} {'/ 1 device':>11} {'max |grad - grad_1|':>20}")
    reference = base = None
    for n in args.devices:
        model = make_free_energy_model(energy_fn, modes, flow, mesh=make_batch_mesh(n), **kw)
        if params is None:
            params = model.init(key)
            params["flow"] = jax.tree_util.tree_map(lambda x: jnp.asarray(1e-3 * rng.normal(size=x.shape)), params["flow"])
        step = jax.jit(jax.grad(lambda p, k: model.loss(p, k)[0]))
        t = seconds(step, params, key, repeats=args.repeats)
        grad = jax.tree_util.tree_leaves(step(params, key))
        if reference is None:
            reference, base = grad, t
        diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(grad, reference))
        print(f"{n:>8} {t:10.3f} {t / base:11.2f} {diff:20.2e}")


if __name__ == "__main__":
    main()
