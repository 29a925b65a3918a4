"""Float32 flow networks (nct.flow.network_precision): the bias they put in F, and the step time.

Run by hand from the repository root (the lithium examples need ../shared and the deepmd extra):

    python benchmarks/flow_precision.py --out /tmp/flow-precision            # bcc lithium 16 atoms, 100 K
    python benchmarks/flow_precision.py --config examples/lithium/bcc_300K.toml --steps 300 --out DIR

1. Trains the config with float64 networks for ``--steps`` steps (``DIR/float64``; a finished run there
   is reused), then evaluates its trained parameters twice on the *same* ``--batches`` batches of exact
   samples: with the float64 networks and with float32 networks. The per-batch difference F32 - F64
   (paired: the samples are drawn in the harmonic basis and do not depend on the network) is the
   precision bias of the estimator at fixed parameters, with its standard error.
2. Trains the same config from the same seed with float32 networks (``DIR/float32``) and compares
   its final-evaluation F with the float64 run's (independent estimates: the bias of training in
   float32, within the two error bars).
3. Times one jitted training step (loss and gradients) with each precision, median of ``--repeats``.

On a CPU float32 mostly saves memory bandwidth; the speed that motivates the option is a GPU's
(float32 matmuls 2-64x faster than float64 on most GPUs), which this benchmark cannot measure here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import jax
import numpy as np

import thermoflow  # noqa: F401  (float64)
from timing import seconds
from thermoflow.nct.train import evaluate
from thermoflow.workflows.config import load_config
from thermoflow.workflows.finished_run import load_finished_run
from thermoflow.workflows.nct_run import run_nct
from thermoflow.workflows.nct_setup import prepare_nct

ROOT = Path(__file__).resolve().parents[1]


def finished(run_dir: Path) -> bool:
    results = run_dir / "results.json"
    return results.is_file() and json.loads(results.read_text()).get("completed", False)


def train(config_path: Path, overrides: list[str], run_dir: Path) -> dict:
    config, base = load_config(config_path, overrides)
    if not finished(run_dir):
        resume = (run_dir / "checkpoints" / "state.npz").is_file()
        run_nct(config, base, run_dir, resume=resume, progress=False)
    return json.loads((run_dir / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "lithium" / "bcc_100K.toml")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batches", type=int, default=16, help="evaluation batches of nct.batch_size exact samples")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True, help="directory for the two run directories")
    args = parser.parse_args()
    overrides = [f"nct.steps={args.steps}", f"nct.eval_batches={args.batches}"]
    runs = {p: args.out / p for p in ("float64", "float32")}

    r64 = train(args.config, overrides, runs["float64"])
    run = load_finished_run(runs["float64"])
    n_atoms = len(run.setup.atoms)
    config32, base = load_config(args.config, overrides + ["nct.flow.network_precision='float32'"])
    setup32 = prepare_nct(config32, base, runs["float64"], resume=True)  # same stored Gaussian basis
    models = {"float64": run.model, "float32": setup32.build_model()}
    batches = {p: evaluate(m, run.params, seed=run.config.seed, n_batches=args.batches) for p, m in models.items()}
    diff = (batches["float32"]["free_energy"] - batches["float64"]["free_energy"]) / n_atoms * 1e3
    f64 = batches["float64"]["free_energy"] / n_atoms

    r32 = train(args.config, overrides + ["nct.flow.network_precision='float32'"], runs["float32"])

    key = jax.random.PRNGKey(0)
    step_time = {}
    for p, m in models.items():
        grad = jax.jit(jax.value_and_grad(m.loss, has_aux=True))
        step_time[p] = seconds(grad, run.params, key, repeats=args.repeats)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; JAX {jax.__version__} on CPU")
    print(f"config: {args.config} ({n_atoms} atoms, {run.config.state.temperature_K:g} K, batch {run.config.nct.batch_size}, "
          f"{args.steps} steps, flow {run.config.nct.flow.n_layers} layers x {run.config.nct.flow.hidden})")
    print(f"F at the float64-trained parameters, float64 networks: {f64.mean():.6f} +- {f64.std(ddof=1) / np.sqrt(len(f64)):.6f} eV/atom")
    print(f"paired F32 - F64 at those parameters ({args.batches} batches): {diff.mean():+.2e} +- {diff.std(ddof=1) / np.sqrt(len(diff)):.1e} meV/atom"
          f" (largest |batch difference| {np.abs(diff).max():.1e})")
    d = (r32["free_energy_eV_per_atom"] - r64["free_energy_eV_per_atom"]) * 1e3
    e = np.hypot(r32["free_energy_stderr_eV_per_atom"], r64["free_energy_stderr_eV_per_atom"]) * 1e3
    print(f"trained in float32 vs float64 (final evaluations): F = {r32['free_energy_eV_per_atom']:.6f} vs "
          f"{r64['free_energy_eV_per_atom']:.6f} eV/atom, difference {d:+.4f} +- {e:.4f} meV/atom")
    print(f"{'networks':>9} {'step s':>8}")
    for p, t in step_time.items():
        print(f"{p:>9} {t:>8.3f}")


if __name__ == "__main__":
    main()
