"""The ``thermoflow vfe`` workflow: the deep variational free energy of classical particles on a potential.

Config (:mod:`thermoflow.workflows.vfe_config`) -> particles and cell from the structure, U from the
potential, the periodic flow (:mod:`thermoflow.flows.periodic`) on a uniform base or on the Boltzmann
density of a base potential (ln Z_b by annealed importance sampling, :mod:`thermoflow.flows.ais`) ->
optimisation on the shared driver (:mod:`thermoflow.optimize`, engine :mod:`thermoflow.flows.classical`)
-> final evaluation at the trained parameters. Run directory::

    config.resolved.toml, run_info.json
    metrics.csv            one row per step: F (eV/particle, the walkers' mean), its spread, E, U, S, acceptance, step size
    results.json           final evaluation: F, E, U, S (k_B/particle), the virial pressure (GPa), blocking error bars
                           over the evaluation's Metropolis blocks; the ideal-gas constant, ln Z_b and its error, the fraction of
                           samples whose Jacobian determinant was negative (the flow folds: F stays an upper
                           bound, a looser one)
    rdf.csv, rdf.png       g(r) of the final walkers (columns as in ``thermoflow analyze``)
    samples.extxyz         the final walkers (configurations sampled from the trained flow)
    checkpoints/state.npz  parameters, optimiser state, walkers, step size, step (exact resume)
    free_energy.png        the optimisation trace and the final estimate
    base_ais.json          the base's annealed importance sampling (with base.kind = 'potential'), reused on resume

References: H. Xie et al., Phys. Rev. Lett. 131, 126501 (2023), arXiv:2209.06095 (deep variational
free energy); R. M. Neal, Stat. Comput. 11, 125 (2001) (AIS).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import ase
import ase.io
import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.analysis.structure import default_rdf_range, radial_distribution
from thermoflow.flows import classical
from thermoflow.flows.ais import annealed_importance_sampling
from thermoflow.flows.periodic import make_periodic_flow
from thermoflow.io.atomic import atomic_write_text
from thermoflow.units import GPA_PER_EV_PER_A3, KB_EV_PER_K
from thermoflow.workflows.build import build_energy_fn, build_potential, build_structure
from thermoflow.workflows.config import ConfigError
from thermoflow.workflows.plots import plot_rdf, plot_training_trace
from thermoflow.workflows.run_dir import optimise_in_run_dir, start_run_dir, write_rdf_csv
from thermoflow.workflows.vfe_config import BaseSection, VFERunConfig

log = logging.getLogger(__name__)


#: metrics.csv columns: (history key, header with unit, conversion given N)
_METRIC_COLUMNS = [
    ("step", "step", lambda v, n: int(v)),
    ("free_energy", "free_energy_eV_per_particle", lambda v, n: v / n),
    ("free_energy_stderr", "free_energy_spread_eV_per_particle", lambda v, n: v / n),
    ("energy", "energy_eV_per_particle", lambda v, n: v / n),
    ("potential", "potential_energy_eV_per_particle", lambda v, n: v / n),
    ("entropy", "entropy_kB_per_particle", lambda v, n: v / n),
    ("negative_jacobians", "negative_jacobian_fraction", lambda v, n: v),
    ("jacobian_norm_max", "jacobian_norm_max", lambda v, n: v),
    ("acceptance", "acceptance", lambda v, n: v),
    ("step_size", "step_size_A", lambda v, n: v),
    ("lr_scale", "lr_scale", lambda v, n: v),
    ("seconds", "seconds", lambda v, n: v),
]


def _particles(config: VFERunConfig, base: Path) -> ase.Atoms:
    atoms = build_structure(config.structure, base)
    if len(set(atoms.get_chemical_symbols())) != 1:
        raise ConfigError("thermoflow vfe treats identical particles: the structure must hold one species, got "
                          f"{sorted(set(atoms.get_chemical_symbols()))}")
    if len(atoms) < 2:
        raise ConfigError("thermoflow vfe needs at least two particles in the structure")
    return atoms


def base_ais(bc: BaseSection, energy, atoms: ase.Atoms, kT: float, path: Path, resume: bool, *, seed: int, step_size_A: float) -> dict:
    """ln Z_b (lengths in Angstrom) of the base potential ``energy`` in the cell of ``atoms`` at k_B T = ``kT`` (eV) by annealed
    importance sampling (:func:`thermoflow.flows.ais.annealed_importance_sampling`, settings of ``bc``), stored in ``path``
    (with the final chains' positions, Angstrom) and read back on resume; ``{"ln_Z", "ln_Z_stderr", "positions", ...}``."""
    if resume and path.is_file():
        stored = json.loads(path.read_text())
        log.info("base ln Z read from %s", path)
        return {**stored, "positions": np.asarray(stored["positions_A"])}
    t0 = time.perf_counter()
    out = annealed_importance_sampling(energy, np.asarray(atoms.cell.array), len(atoms), kT_eV=kT, n_walkers=bc.ais_walkers,
                                       n_temperatures=bc.ais_temperatures, mcmc_steps=bc.ais_mcmc_steps,
                                       key=jax.random.PRNGKey(seed + 1), step_size=step_size_A)
    log.info("base ln Z = %.4f +- %.4f by AIS (%d chains, %d temperatures; effective sample size %.0f) in %.0f s",
             out["ln_Z"], out["ln_Z_stderr"], bc.ais_walkers, bc.ais_temperatures, out["effective_sample_size"], time.perf_counter() - t0)
    if out["effective_sample_size"] < 0.1 * bc.ais_walkers:
        log.warning("AIS effective sample size %.0f of %d chains: ln Z_b is unreliable; raise base.ais_temperatures",
                    out["effective_sample_size"], bc.ais_walkers)
    record = {"ln_Z": out["ln_Z"], "ln_Z_stderr": out["ln_Z_stderr"], "effective_sample_size": out["effective_sample_size"],
              "acceptance": out["acceptance"], "positions_A": np.asarray(out["positions"]).tolist(), "seconds": time.perf_counter() - t0}
    atomic_write_text(path, json.dumps(record) + "\n")
    return {**record, "positions": np.asarray(out["positions"])}


def run_vfe(config: VFERunConfig, base: Path, out_dir: Path, *, resume: bool = False, log_every: int | None = 0,
            stop_after: int | None = None) -> dict:
    """Train the flow and write the run directory (layout in the module docstring).

    Args:
        config: validated run config.
        base: directory relative file names in the config refer to.
        out_dir: run directory (created).
        resume: continue from ``out_dir/checkpoints/state.npz``; the config must be the same.
        log_every: a progress line every this many steps (0: about 20 per run; None: none).
        stop_after: stop after this many steps (an interruption, for tests).

    Returns:
        The results dictionary also written to ``results.json`` (``{"completed": False, ...}`` when stopped early).

    Raises:
        ConfigError: a structure with several species or one particle, resuming with another config, or a
            directory that already holds a run.
        FileNotFoundError: resuming without a checkpoint; a missing potential file.
        NonFiniteError: non-finite values after ``vfe.max_rollbacks`` rollbacks.
    """
    out_dir = Path(out_dir)
    vc = config.vfe
    start_run_dir(out_dir, config, base, resume, markers=("checkpoints/state.npz",))
    t_start = time.perf_counter()
    atoms = _particles(config, base)
    n, symbol, mass = len(atoms), atoms.get_chemical_symbols()[0], float(atoms.get_masses()[0])
    cell = np.asarray(atoms.cell.array)
    temperature = config.state.temperature_K
    kT = KB_EV_PER_K * temperature
    energy_fn = build_potential(config, atoms, base)
    ais, base_kwargs = None, {}
    if config.base.kind == "potential":
        base_energy = build_energy_fn(config.base.potential, atoms, base)
        ais = base_ais(config.base, base_energy, atoms, kT, out_dir / "base_ais.json", resume, seed=config.seed,
                       step_size_A=config.vfe.initial_step_size_A)
        base_kwargs = {"base_energy_fn": base_energy, "base_log_partition": ais["ln_Z"]}
    flow = make_periodic_flow(cell, n, n_layers=config.flow.n_layers, one_body=config.flow.one_body, two_body=config.flow.two_body)
    model = classical.make_classical_free_energy(energy_fn, flow, temperature_K=temperature, mass_amu=mass, clip_width=vc.clip_width,
                                                 lipschitz_bound=config.flow.lipschitz_bound, lipschitz_weight=config.flow.lipschitz_weight,
                                                 **base_kwargs)
    step, transform = classical.make_train_step(model, learning_rate=vc.learning_rate, n_mcmc_steps=vc.mcmc_steps,
                                                target_acceptance=vc.target_acceptance)
    start_positions = None if ais is None else jnp.asarray(ais["positions"][np.arange(vc.walkers) % len(ais["positions"])])
    state = classical.initial_state(model, transform, jax.random.PRNGKey(config.seed), vc.walkers, vc.initial_step_size_A,
                                    positions=start_positions)
    n_parameters = int(sum(np.size(x) for x in jax.tree.leaves(state.params)))
    log.info("VFE: %d %s (%.4f amu) in a cell of %.3f A^3 at %g K, %s base, flow with %d parameters, %d walkers",
             n, symbol, mass, flow.volume, temperature, config.base.kind, n_parameters, vc.walkers)

    columns = [(key, name, functools.partial(convert, n=n)) for key, name, convert in _METRIC_COLUMNS]
    result, completed = optimise_in_run_dir(
        step, state, out_dir, columns, steps=vc.steps, checkpoint_every=vc.checkpoint_every, resume=resume, max_rollbacks=vc.max_rollbacks,
        log_every=log_every, stop_after=stop_after,
        advice="lower vfe.learning_rate, or use a base potential (base.kind = 'potential') for dense systems",
        progress=lambda row: f"F = {row['free_energy'] / n:.5f} eV/particle, acceptance {row['acceptance']:.2f}, {row['seconds']:.2f} s/step")
    if not completed:
        return {"completed": False, "steps_done": len(result.history.get("step", ()))}

    t_eval = time.perf_counter()
    final = classical.evaluate(model, result.state.params, result.state.positions, jax.random.PRNGKey(config.seed + 2),
                               n_blocks=vc.eval_blocks, n_mcmc_steps=vc.eval_mcmc_steps, step_size=float(result.state.step_size),
                               return_positions=True)
    samples = np.asarray(final.pop("positions"))
    for name, series in final.pop("blocks").items():  # blocking error bars: the blocks may be correlated
        estimate = blocking_stderr(series)
        final[name], final[name + "_stderr"] = estimate.mean, estimate.stderr
    results = {
        "completed": True, "n_particles": n, "species": symbol, "mass_amu": mass, "temperature_K": temperature,
        "volume_A3_per_particle": flow.volume / n, "base": config.base.kind, "n_parameters": n_parameters,
        "steps": vc.steps, "walkers": vc.walkers, "seconds_per_step": result.seconds_per_step, "n_rollbacks": result.n_rollbacks,
    }
    ln_z_error_eV = 0.0 if ais is None else kT * ais["ln_Z_stderr"]
    for name, unit in (("free_energy", "eV"), ("energy", "eV"), ("potential", "eV")):
        key = "potential_energy" if name == "potential" else name
        results[f"{key}_{unit}_per_particle"] = final[name] / n
        results[f"{key}_stderr_{unit}_per_particle"] = final[name + "_stderr"] / n
    results["free_energy_stderr_eV_per_particle"] = float(np.hypot(final["free_energy_stderr"], ln_z_error_eV) / n)
    results["entropy_kB_per_particle"] = final["entropy"] / n
    results["entropy_stderr_kB_per_particle"] = float(np.hypot(final["entropy_stderr"], ln_z_error_eV / kT) / n)
    results["pressure_GPa"] = final["pressure"] * GPA_PER_EV_PER_A3
    results["pressure_stderr_GPa"] = final["pressure_stderr"] * GPA_PER_EV_PER_A3
    results["ideal_constant_eV_per_particle"] = model.constant_eV / n
    results["ideal_gas_free_energy_eV_per_particle"] = (model.constant_eV - kT * n * np.log(flow.volume)) / n
    if ais is not None:
        results["base_ln_Z"] = ais["ln_Z"]
        results["base_ln_Z_stderr"] = ais["ln_Z_stderr"]
        results["base_ais_effective_sample_size"] = ais["effective_sample_size"]
    results["acceptance"] = final["acceptance"]
    results["negative_jacobian_fraction"] = final["negative_jacobians"]
    results["estimate"] = (f"final evaluation at the trained parameters: {vc.eval_blocks} Metropolis blocks of {vc.eval_mcmc_steps} moves x "
                           f"{vc.walkers} walkers, blocking error bars over the blocks" + ("" if ais is None else "; F and S include the AIS error of ln Z_b"))
    results["pressure_note"] = "virial pressure (N k_B T + tr W / 3) / V of the flow's samples: exact at the Boltzmann density, biased otherwise"
    results["evaluation_seconds"] = time.perf_counter() - t_eval
    if final["negative_jacobians"] > 0:
        log.warning("%.2g of the evaluated samples have a negative Jacobian determinant: the flow folds, so its |det| density "
                    "has a mass above 1 and F is a looser upper bound (by k_B T ln of that mass; docs/electrons.md)",
                    final["negative_jacobians"])

    symbols = [symbol] * n
    rdf = radial_distribution(samples, cell, symbols, default_rdf_range(samples[0], cell))
    write_rdf_csv(out_dir / "rdf.csv", rdf)
    plot_rdf(out_dir / "rdf.png", rdf, None, {}, "", label="flow samples")
    ase.io.write(out_dir / "samples.extxyz", [ase.Atoms(symbols, positions=x, cell=cell, pbc=True) for x in samples])
    results["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    plot_training_trace(out_dir / "free_energy.png", result.history["step"], np.asarray(result.history["free_energy"]) / n,
                        results["free_energy_eV_per_particle"], results["free_energy_stderr_eV_per_particle"], "F (eV/particle)", "eV")
    return results
