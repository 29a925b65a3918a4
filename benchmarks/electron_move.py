"""Cost of one all-electron Metropolis move of the hydrogen network wavefunction, and of its parts.

Run by hand from the repository root (pin it to one core for stable numbers):

    taskset -c 1 python benchmarks/electron_move.py                 # 16 protons, 64 walkers
    taskset -c 1 python benchmarks/electron_move.py --protons 32 --precision float32

The wavefunction is the one the joint proton-electron step samples (`thermoflow vfe` with [hydrogen]) at the
published code's network sizes (4 layers, widths 32/16, one singlet geminal over 57 plane waves; Xie et al.,
PRL 131, 126501 (2023)), r_s = 1.25, with randomly perturbed parameters; protons uniform in the cell, one
configuration per walker, electrons near them. Rows (milliseconds, median of --repeats timings of --calls
calls each, all walkers at once, jitted): ln|psi| of all walkers, its Jastrow factor alone, and one Metropolis
move (a block of 50 moves, divided by 50). float64 unless --precision float32 (the streams only).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from thermoflow.electrons import mcmc  # noqa: E402
from thermoflow.electrons.jastrow import log_jastrow  # noqa: E402
from thermoflow.electrons.plane_waves import cubic_cell_from_rs  # noqa: E402
from thermoflow.workflows.vmc_config import WavefunctionConfig  # noqa: E402
from thermoflow.workflows.vmc_run import build_wavefunction  # noqa: E402

PUBLISHED_GEMINAL_PLANE_WAVES = 57


def median_ms(fn, *args, calls: int, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn(*args)
        jax.block_until_ready(out)
        times.append((time.perf_counter() - start) / calls * 1e3)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protons", type=int, default=16)
    parser.add_argument("--walkers", type=int, default=64)
    parser.add_argument("--precision", default="float64", choices=["float64", "float32"])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, walkers = args.protons, args.walkers
    cell = cubic_cell_from_rs(1.25, n)
    config = WavefunctionConfig(kind="network", n_layers=4, one_body=32, two_body=16, antisymmetry="geminal",
                                geminal_extra_orbitals=PUBLISHED_GEMINAL_PLANE_WAVES - n // 2, network_precision=args.precision)
    _, wavefunction, _ = build_wavefunction(config, cell, n, n, np.zeros(3), seed=0)
    params = wavefunction.init()
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [x + 0.01 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    protons = jax.random.uniform(jax.random.PRNGKey(2), (walkers, n, 3)) @ jnp.asarray(cell)
    electrons = protons + 0.3 * jax.random.normal(jax.random.PRNGKey(3), protons.shape)

    log_abs = jax.jit(jax.vmap(lambda x, r: wavefunction.log_psi(params, x, r)[1]))
    jastrow = jax.jit(jax.vmap(lambda x, r: log_jastrow(params, x, r, n // 2, jnp.asarray(cell))))
    block = mcmc.make_metropolis_block(wavefunction.log_psi, 50, per_walker_protons=True)
    state = mcmc.WalkerState(electrons, log_abs(electrons, protons), jax.random.PRNGKey(4))
    move = lambda s: block(s, params, protons, 0.05)  # noqa: E731

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} on CPU; "
          f"{n} protons + {n} electrons, r_s 1.25, {walkers} walkers, {args.precision} streams")
    print(f"{'part':<34} {'ms':>8}")
    print(f"{'ln|psi| of all walkers':<34} {median_ms(log_abs, electrons, protons, calls=args.calls, repeats=args.repeats):>8.2f}")
    print(f"{'Jastrow factor alone':<34} {median_ms(jastrow, electrons, protons, calls=args.calls, repeats=args.repeats):>8.2f}")
    per_block = median_ms(move, state, calls=1, repeats=args.repeats)
    print(f"{'one Metropolis move (block / 50)':<34} {per_block / 50:>8.2f}")


if __name__ == "__main__":
    main()
