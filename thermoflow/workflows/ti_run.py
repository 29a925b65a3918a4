"""The thermodynamic-integration workflow: config -> run directory (``thermoflow ti CONFIG``).

Run directory layout::

    config.resolved.toml      the validated config, defaults filled in
    run_info.json             the directory the config's relative file names refer to
    nodes/node_XX.json        one finished lambda node: lambda, weight, <U - U_ref> with its blocking error bar
    nodes/node_XX.npz         its sampled series U - U_ref (eV, every production step)
    ti.csv                    lambda, weight, <U - U_ref> per atom and its error bar, one row per node
    results.json              classical F per atom with error bar, F_ref, the integral, COM term, settings
    ti_integrand.png          <U - U_ref>_lambda against lambda

Every node is an independent Langevin run from the reference positions (seed fold_in(seed, i)); a
finished node's file is read back on ``--resume`` and an unfinished node runs again from its start,
so a resumed run gives the uninterrupted run's numbers. Physics in
:mod:`thermoflow.md.thermodynamic_integration`.
"""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.io.atomic import atomic_write_bytes, atomic_write_text
from thermoflow.md import thermodynamic_integration as ti
from thermoflow.md.integrators import maxwell_boltzmann_velocities
from thermoflow.phonons.thermo import harmonic_thermodynamics
from thermoflow.units import KB_EV_PER_K
from thermoflow.workflows.build import build_modes
from thermoflow.workflows.run_dir import start_run_dir
from thermoflow.workflows.ti_config import TIRunConfig

log = logging.getLogger(__name__)

TI_COLUMNS = ("lambda", "weight", "du_dlambda_eV_per_atom", "du_dlambda_stderr_eV_per_atom", "block_size", "n_samples")


def _node_path(out_dir: Path, index: int) -> Path:
    return out_dir / "nodes" / f"node_{index:02d}.json"


def _run_node(sampler: ti.TISampler, config: TIRunConfig, reference: ti.TIReference, index: int, lam: float, kT: float) -> dict:
    """Equilibrate and sample node ``index`` at ``lam`` from R0; the node's summary and series."""
    cfg = config.ti
    key, velocity_key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(config.seed), index))
    masses = jnp.asarray(reference.masses)
    velocities = maxwell_boltzmann_velocities(velocity_key, masses, kT, remove_drift=reference.fix_centre_of_mass)
    t0 = time.perf_counter()
    state = sampler.init_fn(key, jnp.asarray(reference.reference_positions), velocities, lam)
    for _ in range(cfg.equilibration_steps // cfg.block_steps):
        state, _ = sampler.block_fn(state, lam)
    series = []
    for _ in range(cfg.production_steps // cfg.block_steps):
        state, du = sampler.block_fn(state, lam)
        series.append(np.asarray(du))
    series = np.concatenate(series)
    b = blocking_stderr(series)
    seconds = time.perf_counter() - t0
    return {"index": index, "lambda": lam, "du_dlambda_eV": b.mean, "du_dlambda_stderr_eV": b.stderr,
            "block_size": b.block_size, "n_samples": b.n_samples, "seconds": seconds,
            "seconds_per_step": seconds / (cfg.equilibration_steps + cfg.production_steps)}, series


def run_ti(config: TIRunConfig, base: Path, out_dir: Path, *, resume: bool = False, stop_after_nodes: int | None = None) -> dict:
    """Thermodynamic integration from the reference crystal to the potential; writes the run directory.

    Args:
        config: validated TI run config.
        base: directory relative file names in the config refer to.
        out_dir: run directory (created).
        resume: read back the finished nodes in ``out_dir`` and run the others; the config must be the same.
        stop_after_nodes: stop after this many nodes run by this invocation (an interruption, for tests).

    Returns:
        The results dictionary also written to ``results.json`` (``{"completed": False, ...}`` when stopped early).

    Raises:
        ConfigError: resuming with a different config, or a directory that already holds a run.
        ValueError: a potential that is not finite at the structure; imaginary modes with the harmonic reference.
    """
    cfg = config.ti
    out_dir = Path(out_dir)
    start_run_dir(out_dir, config, base, resume, markers=("nodes", "ti.csv"))
    atoms, energy_fn, modes = build_modes(config, base, cache_dir=out_dir)
    kT = KB_EV_PER_K * config.state.temperature_K
    if cfg.reference == "harmonic":
        reference = ti.make_harmonic_reference(modes)
    else:
        spring = cfg.einstein_spring_eV_per_A2 or ti.matching_einstein_spring(modes)
        reference = ti.make_einstein_reference(modes, spring)
    cell = jnp.asarray(atoms.cell.array)
    sampler = ti.make_ti_sampler(energy_fn, reference, cell, kT, cfg.timestep_fs, cfg.friction_per_ps, cfg.block_steps)
    lambdas, weights = ti.gauss_legendre(cfg.n_lambda)
    n = len(atoms)
    nodes, ran, t_start = [], 0, time.perf_counter()
    for i, lam in enumerate(lambdas):
        path = _node_path(out_dir, i)
        if path.is_file():
            nodes.append(json.loads(path.read_text()))
            continue
        if stop_after_nodes is not None and ran >= stop_after_nodes:
            return {"completed": False, "nodes_done": len(nodes)}
        node, series = _run_node(sampler, config, reference, i, float(lam), kT)
        path.parent.mkdir(exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, du_dlambda_eV=series)
        atomic_write_bytes(path.with_suffix(".npz"), buffer.getvalue())
        atomic_write_text(path, json.dumps(node, indent=2) + "\n")
        nodes.append(node)
        ran += 1
        log.info("node %d/%d  lambda = %.4f  <U - U_ref> = %.6f +- %.6f eV/atom  %.3g s/step", i + 1, cfg.n_lambda, lam,
                 node["du_dlambda_eV"] / n, node["du_dlambda_stderr_eV"] / n, node["seconds_per_step"])
    means = np.array([node["du_dlambda_eV"] for node in nodes])
    stderrs = np.array([node["du_dlambda_stderr_eV"] for node in nodes])
    _write_table(out_dir, lambdas, weights, means / n, stderrs / n, nodes)
    results = _results(config, atoms, modes, reference, kT, weights, means, stderrs, nodes, time.perf_counter() - t_start)
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    from thermoflow.workflows.plots import plot_ti_integrand

    plot_ti_integrand(out_dir / "ti_integrand.png", lambdas, 1000.0 * means / n, 1000.0 * stderrs / n,
                      1000.0 * results["integral_eV_per_atom"], 1000.0 * results["integral_stderr_eV_per_atom"])
    return results


def _write_table(out_dir: Path, lambdas, weights, means, stderrs, nodes) -> None:
    rows = [f"{lam:.15g},{w:.15g},{m:.12g},{s:.6g},{node['block_size']},{node['n_samples']}\n"
            for lam, w, m, s, node in zip(lambdas, weights, means, stderrs, nodes)]
    atomic_write_text(out_dir / "ti.csv", ",".join(TI_COLUMNS) + "\n" + "".join(rows))


def _results(config, atoms, modes, reference: ti.TIReference, kT, weights, means, stderrs, nodes, wall) -> dict:
    cfg, n = config.ti, len(atoms)
    integral, integral_err = ti.integrate_nodes(weights, means, stderrs)
    f_ref = reference.free_energy(kT)
    free_energy = f_ref + integral
    com = ti.centre_of_mass_free_energy(modes.masses, abs(float(np.linalg.det(atoms.cell.array))), kT)
    harmonic = None if modes.imaginary.any() else modes.energy0_eV + ti.classical_harmonic_free_energy(modes.omega, kT)
    quantum_harmonic = modes.energy0_eV + harmonic_thermodynamics(modes.phonon_energies_eV, kT).free_energy_eV
    results = {
        "completed": True, "n_atoms": n, "temperature_K": config.state.temperature_K,
        "centre_of_mass_fixed": reference.fix_centre_of_mass, "n_degrees_of_freedom": int(reference.omega.size),
        "free_energy_eV_per_atom": free_energy / n, "free_energy_stderr_eV_per_atom": integral_err / n,
        "reference_free_energy_eV_per_atom": f_ref / n,
        "integral_eV_per_atom": integral / n, "integral_stderr_eV_per_atom": integral_err / n,
        "static_energy_eV_per_atom": modes.energy0_eV / n,
        "harmonic_free_energy_classical_eV_per_atom": None if harmonic is None else harmonic / n,
        "anharmonic_free_energy_eV_per_atom": None if harmonic is None else (free_energy - harmonic) / n,
        "harmonic_free_energy_quantum_eV_per_atom": quantum_harmonic / n,
        "reference": reference.kind, "einstein_spring_eV_per_A2": reference.spring_eV_per_A2,
        "n_lambda": cfg.n_lambda, "equilibration_steps": cfg.equilibration_steps, "production_steps": cfg.production_steps,
        "timestep_fs": cfg.timestep_fs, "friction_per_ps": cfg.friction_per_ps,
        "seconds_per_step": float(np.mean([node["seconds_per_step"] for node in nodes])), "wall_seconds": wall,
    }
    if reference.fix_centre_of_mass:
        results["centre_of_mass_free_energy_eV_per_atom"] = com / n
        results["free_energy_free_centre_of_mass_eV_per_atom"] = (free_energy + com) / n
    results["notes"] = (
        "classical nuclei; free_energy is the internal F with the centre of mass fixed (3N - 3 degrees of freedom, the "
        "convention of thermoflow's harmonic and NCT F) when the potential is translation invariant; add "
        "centre_of_mass_free_energy = -kT ln(V / Lambda_M^3) for a free centre of mass. The error bar is statistical "
        "(blocking per node, propagated through the quadrature weights); the quadrature error is not included"
    )
    return results
