"""The perturbative quadratic flow on a finished lithium run's Gaussian basis, without training.

    python examples/lithium/perturbative_flow.py RUNS_DIR bcc_300K [--samples 256]

Reads RUNS_DIR/li-<phase>-<T>/gaussian_reference.npz (from examples/lithium/run_all.sh), estimates
the Gaussian-averaged cubic force constants (--samples Hessians of the Deep Potential) and the
bubble free energy, and evaluates F at the identity flow (the Gaussian, truncated to the run's K
levels) and at the first-order perturbative quadratic flow (2 pairs of orderings) on the same
exact samples (16 batches x 128; the paired difference has the smaller error bar).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

import thermoflow  # noqa: F401  (float64)
from thermoflow.nct import train as nct_train
from thermoflow.nct.loss import make_free_energy_model
from thermoflow.nct.quadratic import dimensionless_cubic_map, make_quadratic_flow, mode_orderings, perturbative_parameters
from thermoflow.phonons.cubic import cubic_force_constants
from thermoflow.units import KB_EV_PER_K, MEV_PER_EV
from thermoflow.workflows.build import build_modes
from thermoflow.workflows.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("case", help="e.g. bcc_300K (examples/lithium/<case>.toml)")
    parser.add_argument("--samples", type=int, default=256)
    args = parser.parse_args()
    config, base = load_config(Path(__file__).parent / f"{args.case}.toml")
    atoms, energy_fn, modes = build_modes(config, base)
    n = len(atoms)
    kT = KB_EV_PER_K * config.state.temperature_K
    run = args.runs / ("li-" + args.case.replace("_", "-"))
    with np.load(run / "gaussian_reference.npz") as d:
        basis = dataclasses.replace(modes, omega=d["omega"], modes=d["modes"], imaginary=np.zeros(modes.n_modes, bool))
        f_g = float(d["free_energy_eV"]) / n
    previous = json.loads((run / "results.json").read_text())
    t0 = time.perf_counter()
    cubic = cubic_force_constants(energy_fn, basis, kT, n_samples=args.samples, seed=0, chunk_size=4)
    print(f"{args.case}: cubic force constants {time.perf_counter() - t0:.0f} s; bubble F3 = "
          f"{cubic.bubble_free_energy_eV / n * MEV_PER_EV:.4f} +- {cubic.bubble_free_energy_stderr_eV / n * MEV_PER_EV:.4f} meV/atom")
    flow = make_quadratic_flow(basis.n_modes, 2)
    model = make_free_energy_model(energy_fn, basis, flow, kT_eV=kT, n_levels=config.nct.n_levels, batch_size=128, chunk_size=16)
    logits = model.init(None)["logits"]
    init = perturbative_parameters(mode_orderings(basis.n_modes, 2), dimensionless_cubic_map(cubic.phi3, basis.omega))
    f = {}
    for label, params in (("identity (Gaussian at K)", flow.init(None)), ("perturbative flow", init.params)):
        f[label] = nct_train.evaluate(model, {"flow": params, "logits": logits}, seed=3, n_batches=16)["free_energy"] / n * MEV_PER_EV
        print(f"  {label}: F = {f[label].mean():.4f} +- {f[label].std(ddof=1) / 4:.4f} meV/atom")
    gain = f["identity (Gaussian at K)"] - f["perturbative flow"]
    print(f"  gain (paired) {gain.mean():.4f} +- {gain.std(ddof=1) / 4:.4f} meV/atom; Gaussian F (run) {f_g * MEV_PER_EV:.4f}; "
          f"NCT F (run, RealNVP) {previous['free_energy_eV_per_atom'] * MEV_PER_EV:.4f}; "
          f"Gaussian + bubble {(f_g + cubic.bubble_free_energy_eV / n) * MEV_PER_EV:.4f}; map held {100 * (1 - init.dropped_fraction):.1f} %")


if __name__ == "__main__":
    main()
