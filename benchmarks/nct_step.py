"""Seconds per NCT training step on lithium (bcc, lithium_dp4), split by stage, and peak memory.

Run by hand from the repository root (needs ../shared and the deepmd extra):

    python benchmarks/nct_step.py                     # bcc 2x2x2 (16 atoms) and 3x3x3 (54 atoms)
    python benchmarks/nct_step.py --supercells 2 --batch 64 --repeats 3
    python benchmarks/nct_step.py --n-layers 6 --hidden 128 --chunk-size 16   # the published code's flow size

Each stage is its own jitted function, timed after compilation (median of --repeats calls):
sampling (occupations + exact Hermite sampling + inverse flow), potential energy (DeePMD on the
batch), kinetic energy (folx forward Laplacian through the flow), both over the batch as the
step evaluates them (one vmap, or ``--chunk-size`` samples at a time), gradient (the whole loss and
its gradient, which includes the three stages above) and update (optax Adam). "train step" is
the jitted step the driver runs.

Comparing with another code: run both side by side on one machine in one session (interleaved),
at equal flow size (--n-layers, --hidden), levels (--levels) and batch (--batch). Measured so on
this project's 2-core CPU (2026-11-22; bcc lithium_dp4, batch 128, flow 6 x 128 in both): the
published NCT code takes 2.9 s/step at 16 atoms and 34 s/step at 54 atoms, thermoflow 0.87 s
(chunks of 16) / 1.16 s (whole batch) and 7.8 s: 2.5-3.4x and 4.4x. Its Metropolis chain moves
walkers on |Psi|^2 of the flow alone and evaluates one DP energy per sample per step, as
thermoflow does; an earlier figure of 6.7 s/step for it was taken on an overloaded machine and
does not reproduce.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

import thermoflow  # noqa: F401  (float64)
from thermoflow.nct.flow import make_realnvp
from thermoflow.nct.loss import make_free_energy_model
from thermoflow.nct.train import TrainState, make_optimizer, make_train_step
from thermoflow.phonons import compute_harmonic_modes
from thermoflow.potentials.deepmd import make_deepmd_energy_fn
from thermoflow.structures import make_supercell, read_structure, scale_to_volume
from thermoflow.units import KB_EV_PER_K

SHARED = Path(__file__).resolve().parents[2] / "shared"


def timed(fn, *args, repeats):
    """Median wall time (s) of fn(*args) after one warm-up (compilation) call, and that call's time."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), compile_s


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def xla_temp_gb(fn, *args) -> float:
    """XLA's temporary buffer size (GB) of the compiled fn(*args): the peak working memory."""
    return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes / 1e9


def bench(model_path: Path, repeat: int, batch: int, repeats: int, temperature_K: float, freeze_flow: bool, chunk_size: int | None,
          n_layers: int, hidden: int, n_levels: int, compress: bool = False) -> dict:
    atoms = scale_to_volume(make_supercell(read_structure(SHARED / "structures/lithium/bcc.vasp"), (repeat,) * 3), 19.2)
    n = len(atoms)
    if compress:
        from thermoflow.potentials.deepmd_compress import make_compressed_deepmd_energy_fn

        energy_fn = make_compressed_deepmd_energy_fn(model_path, atoms.cell.array, type_map_symbols=atoms.get_chemical_symbols())
    else:
        energy_fn = make_deepmd_energy_fn(model_path, atoms.cell.array, type_map_symbols=atoms.get_chemical_symbols())
    t0 = time.perf_counter()
    modes = compute_harmonic_modes(energy_fn, atoms.get_positions(), atoms.cell.array, atoms.get_masses())
    hessian_s = time.perf_counter() - t0
    flow = make_realnvp(modes.n_modes, n_layers, hidden)
    kT = KB_EV_PER_K * temperature_K
    model = make_free_energy_model(
        energy_fn, modes, flow, kT_eV=kT, n_levels=n_levels, batch_size=batch, laplacian="folx", freeze_flow=freeze_flow, chunk_size=chunk_size
    )
    optimizer = make_optimizer("adam", 1e-3)
    params = model.init(jax.random.PRNGKey(0))
    opt_state = optimizer.init(params)
    key = jax.random.PRNGKey(1)
    levels, s = jax.jit(model.sample, static_argnums=2)(params, key, batch)
    keys = jax.random.split(key, batch)

    sample = jax.jit(model.sample, static_argnums=2)
    r0 = jnp.asarray(modes.reference_positions)
    disp = jnp.asarray(modes.displacement_matrix())
    cell = jnp.asarray(modes.cell)

    def over_batch(f):
        """f mapped over the batch as the training step maps it: vmap, or lax.map in chunks."""
        if chunk_size is None:
            return jax.jit(jax.vmap(f))
        return jax.jit(lambda *xs: jax.lax.map(lambda x: f(*x), xs, batch_size=chunk_size))

    potential = over_batch(lambda x: energy_fn(r0 + (disp @ x).reshape(r0.shape), cell))
    kinetic = over_batch(lambda lv, x, k: model.local_energy(params, lv, x, k)[0])
    grad = jax.jit(jax.grad(model.loss, has_aux=True))
    update = jax.jit(lambda g, st, p: optimizer.update(g, st, p))
    step = make_train_step(model, optimizer)
    g, _ = grad(params, key)

    rows = {}
    rows["sampling"] = timed(sample, params, key, batch, repeats=repeats)
    rows["potential energy"] = timed(potential, s, repeats=repeats)
    rows["kinetic energy"] = timed(kinetic, levels, s, keys, repeats=repeats)
    rows["loss + gradient (all above)"] = timed(grad, params, key, repeats=repeats)
    rows["optimizer update"] = timed(update, g, opt_state, params, repeats=repeats)
    state = TrainState(params, opt_state, jnp.asarray(0, dtype=jnp.int32), key, jnp.asarray(1.0))
    rows["train step"] = timed(step, state, repeats=repeats)
    single = jax.jit(energy_fn)
    rows["DP energy, 1 config"] = timed(single, jnp.asarray(atoms.get_positions()), cell, repeats=max(repeats, 10))
    memory = {"train step": xla_temp_gb(step, state)}
    return {"n_atoms": n, "n_modes": modes.n_modes, "hessian_s": hessian_s, "rows": rows, "peak_rss_GB": peak_rss_gb(), "memory": memory}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=SHARED / "models/lithium/lithium_dp4.dp")
    parser.add_argument("--supercells", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--temperature-K", type=float, default=300.0)
    parser.add_argument("--freeze-flow", action="store_true", help="harmonic wavefunctions (analytic kinetic energy)")
    parser.add_argument("--chunk-size", type=int, default=None, help="local energies of this many samples at once (default: whole batch)")
    parser.add_argument("--n-layers", type=int, default=4, help="coupling layers of the flow")
    parser.add_argument("--hidden", type=int, default=64, help="hidden width of each coupling conditioner")
    parser.add_argument("--levels", type=int, default=4, help="harmonic-oscillator levels K per mode")
    parser.add_argument("--compress", action="store_true", help="tabulated embedding networks (potential.compress = true)")
    args = parser.parse_args()
    if not args.model.is_file():
        sys.exit(f"model not found: {args.model} (the benchmark reads ../shared/models/lithium)")
    print(f"# machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"JAX {jax.__version__} on {jax.default_backend()}; Python {platform.python_version()}")
    print(f"# lithium bcc at 19.2 A^3/atom, {args.model.name}, batch {args.batch}, flow {args.n_layers} layers x {args.hidden} hidden, "
          f"K = {args.levels} levels, laplacian folx, freeze_flow={args.freeze_flow}, chunk_size={args.chunk_size}, "
          f"compress={args.compress}; "
          f"medians of {args.repeats} calls after compilation")
    for rep in args.supercells:
        res = bench(args.model, rep, args.batch, args.repeats, args.temperature_K, args.freeze_flow, args.chunk_size,
                    args.n_layers, args.hidden, args.levels, args.compress)
        print(f"\n## bcc {rep}x{rep}x{rep}: {res['n_atoms']} atoms, {res['n_modes']} modes "
              f"(Hessian by autodiff {res['hessian_s']:.1f} s; process peak RSS so far {res['peak_rss_GB']:.2f} GB; "
              f"XLA temporaries of the train step {res['memory']['train step']:.2f} GB)")
        print(f"{'stage':34s} {'seconds':>10s} {'compile s':>10s}")
        for name, (sec, comp) in res["rows"].items():
            print(f"{name:34s} {sec:10.4f} {comp:10.1f}")
        dp = res["rows"]["potential energy"][0] / args.batch
        print(f"{'DP energy per config in batch':34s} {dp:10.5f}")


if __name__ == "__main__":
    main()
