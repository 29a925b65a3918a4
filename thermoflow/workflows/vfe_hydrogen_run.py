"""The ``thermoflow vfe`` workflow with quantum electrons: the deep variational free energy of dense hydrogen.

Config (:class:`thermoflow.workflows.vfe_config.VFEElectronsRunConfig`) -> cubic cell of r_s with N protons
and N electrons, the proton flow (:mod:`thermoflow.flows.periodic`; uniform base, or a base potential's Boltzmann
density with ln Z_b by annealed importance sampling), one trial wavefunction per
twist (:func:`thermoflow.workflows.vmc_run.build_wavefunction`) -> electron burn-in -> joint optimisation on the
shared driver (:mod:`thermoflow.optimize`, engine :mod:`thermoflow.flows.electronic`) -> final evaluation at
the trained parameters. Run directory::

    config.resolved.toml, run_info.json
    metrics.csv            one row per step: F, E (eV/atom), the electronic energy (Ha/atom), S (k_B/atom), the local-energy
                           variance, the fraction of negative flow Jacobians, acceptances and step sizes (bohr)
    results.json           final evaluation: F, E, S, P per atom in eV / Ry / Hartree, k_B and GPa with blocking error bars over
                           the evaluation blocks; the electrons' kinetic and potential energies; the ideal-gas constant
    rdf.csv, rdf.png       proton g(r) of the final walkers (Angstrom)
    samples.extxyz         the final proton walkers (Angstrom; configurations sampled from the trained flow)
    quenched.extxyz        those samples annealed on p(X)^beta (beta up to vfe.quench_beta): the structures p favours
    structure.json         per quenched configuration: molecules (mutual nearest neighbours within vfe.molecule_max_bond_A),
                           mean bond length, space groups of the protons and of the molecular centres (spglib)
    xrd.csv, xrd.png       powder X-ray pattern of the samples and of the quenched configurations (pymatgen)
    checkpoints/state.npz  flow and wavefunction parameters, optimiser states, proton and electron walkers, step sizes (exact resume)
    base_ais.json          base.kind = 'potential': ln Z_b of the base (lengths in Angstrom) with its error, the AIS chains
    free_energy.png        the optimisation trace and the final estimate

References: H. Xie, Z.-H. Li, H. Wang, L. Zhang and L. Wang, Phys. Rev. Lett. 131, 126501 (2023), arXiv:2209.06095.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path
from typing import Any

import ase
import ase.io
import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.analysis.structure import default_rdf_range, pair_distances, radial_distribution
from thermoflow.electrons.driver import STEP_SIZE_BOUNDS as ELECTRON_STEP_BOUNDS
from thermoflow.electrons.mcmc import tune_step_size
from thermoflow.electrons.plane_waves import cubic_cell_from_rs
from thermoflow.electrons.twists import monkhorst_pack_twists
from thermoflow.flows import electronic
from thermoflow.flows.periodic import make_periodic_flow
from thermoflow.io.atomic import atomic_write_text
from thermoflow.io.checkpoint import load_latest_checkpoint
from thermoflow.optimize import learning_rate_factor
from thermoflow.units import BOHR_A, EV_PER_HARTREE, GPA_PER_HARTREE_PER_BOHR3, KB_EV_PER_K
from thermoflow.workflows.build import build_energy_fn
from thermoflow.workflows.config import ConfigError
from thermoflow.workflows.plots import plot_curves, plot_rdf, plot_scan, plot_training_trace
from thermoflow.workflows.run_dir import config_base, optimise_in_run_dir, start_run_dir, write_csv, write_rdf_csv
from thermoflow.workflows.vfe_config import VFEElectronsRunConfig
from thermoflow.workflows.vfe_run import base_ais
from thermoflow.workflows.vmc_run import build_wavefunction, initial_electrons, random_protons

log = logging.getLogger(__name__)

_HA_TO_EV = EV_PER_HARTREE

#: metrics.csv columns: (history key, header with unit, conversion of a cell total given N and k_B T in Hartree)
_METRIC_COLUMNS = [
    ("step", "step", lambda v, n: int(v)),
    ("free_energy", "free_energy_eV_per_atom", lambda v, n: v * _HA_TO_EV / n),
    ("free_energy_stderr", "free_energy_spread_eV_per_atom", lambda v, n: v * _HA_TO_EV / n),
    ("energy", "energy_eV_per_atom", lambda v, n: v * _HA_TO_EV / n),
    ("electronic_energy", "electronic_energy_Ha_per_atom", lambda v, n: v / n),
    ("entropy", "entropy_kB_per_atom", lambda v, n: v / n),
    ("variance", "local_energy_variance_Ha2", lambda v, n: v),
    ("energy_imaginary", "energy_imaginary_Ha_per_atom", lambda v, n: v / n),
    ("negative_jacobians", "negative_jacobian_fraction", lambda v, n: v),
    ("jacobian_norm_max", "jacobian_norm_max", lambda v, n: v),
    ("proton_acceptance", "proton_acceptance", lambda v, n: v),
    ("electron_acceptance", "electron_acceptance", lambda v, n: v),
    ("proton_step_size", "proton_step_size_bohr", lambda v, n: v),
    ("electron_step_size", "electron_step_size_bohr", lambda v, n: v),
    ("lr_scale", "lr_scale", lambda v, n: v),
    ("seconds", "seconds", lambda v, n: v),
]


def run_vfe_hydrogen(config: VFEElectronsRunConfig, base: Path, out_dir: Path, *, resume: bool = False, log_every: int | None = 0,
                     stop_after: int | None = None, warm_start: tuple[Path, float] | None = None) -> dict:
    """Train the proton flow and the electrons' wavefunctions jointly and write the run directory (module docstring).

    Args:
        config: validated run config.
        base: directory relative file names in the config refer to.
        out_dir: run directory (created).
        resume: continue from ``out_dir/checkpoints/state.npz``; the config must be the same.
        log_every: a progress line every this many steps (0: about 20 per run; None: none).
        stop_after: stop after this many steps (an interruption, for tests).
        warm_start: ``(checkpoint, r_s of that run)`` of a finished run of the same system at another density: its flow
            and wavefunction parameters, and its walkers scaled to this cell (fractional coordinates kept), start this
            run (fresh optimiser states; ignored on resume).

    Returns:
        The results dictionary also written to ``results.json`` (``{"completed": False, ...}`` when stopped early).

    Raises:
        ConfigError: an invalid wavefunction for the system, random protons that cannot be placed, resuming with
            another config, or a directory that already holds a run.
        FileNotFoundError: resuming without a checkpoint.
        NonFiniteError: non-finite values after ``vfe.max_rollbacks`` rollbacks.
    """
    out_dir = Path(out_dir)
    hc, vc, wc = config.hydrogen, config.vfe, config.wavefunction
    start_run_dir(out_dir, config, base, resume, markers=("checkpoints/state.npz",))
    t_start = time.perf_counter()
    n = hc.n_protons
    temperature = config.state.temperature_K
    setup = build_joint_setup(config, base=base, run_dir=out_dir, resume=resume)
    cell, twists, model, step, init_opt, state = setup.cell, setup.twists, setup.model, setup.step, setup.init_opt, setup.state
    weights, volume = model.twist_weights, model.flow.volume
    k_burn, k_eval = setup.keys["burn_in"], setup.keys["evaluation"]
    if warm_start is not None and not resume:
        state = _warm_started(state, model, init_opt, *warm_start, hc.rs_bohr)
    if not resume and vc.equilibration_blocks:
        burn_in = electronic.make_electron_equilibration(model, electron_mcmc_steps=vc.electron_mcmc_steps)
        electrons, electron_steps = state.electrons, np.asarray(state.electron_step_size)
        for b in range(vc.equilibration_blocks):
            electrons, acceptance = burn_in(state.wavefunction_params, state.protons, electrons, jax.random.fold_in(k_burn, b),
                                            jnp.asarray(electron_steps))
            electron_steps = np.asarray([tune_step_size(s, float(a), vc.target_acceptance, ELECTRON_STEP_BOUNDS)
                                         for s, a in zip(electron_steps, np.asarray(acceptance))])
        log.info("electron burn-in: %d blocks of %d moves per configuration, step sizes %s bohr, acceptance %s", vc.equilibration_blocks,
                 vc.electron_mcmc_steps, np.round(electron_steps, 3).tolist(), np.round(np.asarray(acceptance), 2).tolist())
        state = dataclasses.replace(state, electrons=electrons, electron_step_size=jnp.asarray(electron_steps))
    n_flow = int(sum(np.size(x) for x in jax.tree.leaves(state.flow_params)))
    n_wf = int(sum(np.size(x) for x in jax.tree.leaves(state.wavefunction_params[0])))
    log.info("VFE (hydrogen): %d protons + %d electrons, r_s = %g bohr (L = %.4f bohr), %g K, %d twist(s); flow %d parameters, "
             "%s wavefunction %d parameters per twist (%s); %d proton walkers x %d electron walkers", n, n, hc.rs_bohr, cell[0, 0],
             temperature, len(twists), n_flow, wc.kind, n_wf, vc.optimizer, vc.walkers, vc.electron_walkers)

    columns = [(key, name, functools.partial(convert, n=n)) for key, name, convert in _METRIC_COLUMNS]
    result, completed = optimise_in_run_dir(
        step, state, out_dir, columns, steps=vc.steps, checkpoint_every=vc.checkpoint_every, resume=resume, max_rollbacks=vc.max_rollbacks,
        log_every=log_every, stop_after=stop_after, advice="lower vfe.flow_learning_rate and vfe.learning_rate, or raise vfe.electron_walkers",
        progress=lambda row: (f"F = {row['free_energy'] * _HA_TO_EV / n:.4f} eV/atom, E_el = {row['electronic_energy'] / n:.5f} Ha/atom, "
                              f"acceptance {row['proton_acceptance']:.2f} / {row['electron_acceptance']:.2f}, {row['seconds']:.2f} s/step"))
    if not completed:
        return {"completed": False, "steps_done": len(result.history.get("step", ()))}

    t_eval = time.perf_counter()
    s = result.state
    final = electronic.evaluate(model, s.flow_params, s.wavefunction_params, s.protons, s.electrons, k_eval, n_blocks=vc.eval_blocks,
                                proton_mcmc_steps=vc.proton_mcmc_steps, electron_mcmc_steps=vc.electron_mcmc_steps,
                                proton_step_size=float(s.proton_step_size), electron_step_sizes=np.asarray(s.electron_step_size),
                                chunk_size=vc.chunk_size)
    results = {
        "completed": True, "n_protons": n, "n_electrons": n, "rs_bohr": hc.rs_bohr, "temperature_K": temperature,
        "cell_length_bohr": float(cell[0, 0]), "volume_bohr3_per_atom": volume / n, "volume_A3_per_atom": volume * BOHR_A**3 / n,
        "twists": twists.tolist(), "twist_weights": weights.tolist(), "flow_parameters": n_flow, "wavefunction": wc.kind,
        "wavefunction_parameters_per_twist": n_wf, "optimizer": vc.optimizer, "steps": vc.steps, "walkers": vc.walkers,
        "electron_walkers": vc.electron_walkers, "seconds_per_step": result.seconds_per_step, "n_rollbacks": result.n_rollbacks,
    }
    if warm_start is not None:
        results["warm_start_from"] = {"checkpoint": str(warm_start[0]), "rs_bohr": warm_start[1]}
    results.update(_per_atom_results(final["blocks"], n, model.kT_Ha))
    results["base"] = config.base.kind
    if setup.ais is not None:  # ln Z_b's error adds to F's and S's
        results["base_ln_Z"], results["base_ln_Z_stderr"] = setup.ais["ln_Z"], setup.ais["ln_Z_stderr"]
        ln_z_error = setup.ais["ln_Z_stderr"] / n  # per atom, in units of k_B T
        for unit, kT_unit in (("eV", model.kT_Ha * EV_PER_HARTREE), ("Ry", 2.0 * model.kT_Ha), ("Ha", model.kT_Ha)):
            key = f"free_energy_stderr_{unit}_per_atom"
            results[key] = float(np.hypot(results[key], kT_unit * ln_z_error))
        results["entropy_stderr_kB_per_atom"] = float(np.hypot(results["entropy_stderr_kB_per_atom"], ln_z_error))
    results["ideal_constant_eV_per_atom"] = model.constant_Ha * _HA_TO_EV / n
    results["ideal_gas_free_energy_eV_per_atom"] = (model.constant_Ha - model.kT_Ha * n * np.log(volume)) * _HA_TO_EV / n
    for key in ("proton_acceptance", "electron_acceptance", "negative_jacobians"):
        results[key if key != "negative_jacobians" else "negative_jacobian_fraction"] = final[key]
    results["estimate"] = (f"final evaluation at the trained parameters: {vc.eval_blocks} blocks of {vc.proton_mcmc_steps} proton and "
                           f"{vc.electron_mcmc_steps} electron moves x {vc.walkers} x {vc.electron_walkers} walkers, blocking error bars")
    results["pressure_note"] = ("N k_B T / Omega + <(2 T_e + V) / (3 Omega)>: the ideal protons plus the electrons' virial at each "
                                "configuration; exact for the optimal density and exact eigenstates, biased otherwise")
    results["evaluation_seconds"] = time.perf_counter() - t_eval
    if final["negative_jacobians"] > 0:
        log.warning("%.2g of the evaluated samples have a negative flow Jacobian determinant: the flow folds, F is a looser upper bound",
                    final["negative_jacobians"])

    samples = np.asarray(final["protons"]) * BOHR_A
    cell_A = cell * BOHR_A
    symbols = ["H"] * n
    rdf = radial_distribution(samples, cell_A, symbols, default_rdf_range(samples[0], cell_A))
    write_rdf_csv(out_dir / "rdf.csv", rdf)
    results.update(_close_pairs(samples, cell_A))
    plot_rdf(out_dir / "rdf.png", rdf, None, {}, "", label="proton samples")
    ase.io.write(out_dir / "samples.extxyz", [ase.Atoms(symbols, positions=x, cell=cell_A, pbc=True) for x in samples])
    results["structure"] = structure_outputs(out_dir, model, s.flow_params, final["protons"], cell, jax.random.fold_in(k_eval, 1), vc,
                                             float(s.proton_step_size))
    results["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    plot_training_trace(out_dir / "free_energy.png", result.history["step"], np.asarray(result.history["free_energy"]) * _HA_TO_EV / n,
                        results["free_energy_eV_per_atom"], results["free_energy_stderr_eV_per_atom"], "F (eV/atom)", "eV")
    log.info("F = %.5f +- %.5f eV/atom, S = %.3f +- %.3f k_B/atom, P = %.1f +- %.1f GPa", results["free_energy_eV_per_atom"],
             results["free_energy_stderr_eV_per_atom"], results["entropy_kB_per_atom"], results["entropy_stderr_kB_per_atom"],
             results["pressure_GPa"], results["pressure_stderr_GPa"])
    return results


@dataclasses.dataclass(frozen=True)
class JointSetup:
    """The pieces of a hydrogen VFE run built from its config: ``cell`` (3, 3) bohr, ``twists`` (n_t, 3) fractional,
    the ``model``, the jitted training ``step`` and ``init_opt`` (:func:`thermoflow.flows.electronic.make_joint_train_step`),
    the initial ``state`` (before the electron burn-in) and the run's derived random ``keys``."""

    cell: np.ndarray
    twists: np.ndarray
    model: electronic.ElectronicFreeEnergy
    step: Any
    init_opt: Any
    state: electronic.JointState
    keys: dict
    ais: dict | None = None


def build_joint_setup(config: VFEElectronsRunConfig, *, base: Path | None = None, run_dir: Path | None = None,
                      resume: bool = True) -> JointSetup:
    """:class:`JointSetup` of ``config``: cubic cell of r_s, one wavefunction per twist, the proton flow (on its base), the
    joint step, initial protons with electrons near them: uniform random (at least ``hydrogen.min_proton_distance_bohr``
    apart), or with ``base.kind = "potential"`` the final chains of the base's annealed importance sampling, whose ln Z_b
    (``ais``) is computed into ``run_dir/base_ais.json`` or read back from it (``resume``).

    Args:
        config: a validated hydrogen VFE config.
        base: directory the base potential's relative file names refer to (base potentials only).
        run_dir: where ``base_ais.json`` is written or read (base potentials only).
        resume: read a stored ``base_ais.json`` instead of computing it.

    Raises:
        ConfigError: an invalid wavefunction for the system, random protons that cannot be placed, or a base potential
            without ``base`` and ``run_dir``.
        FileNotFoundError: a base potential's missing model file.
    """
    hc, vc, wc = config.hydrogen, config.vfe, config.wavefunction
    n = hc.n_protons
    cell = cubic_cell_from_rs(hc.rs_bohr, n)
    base_energy, ais = None, None
    if config.base.kind == "potential":
        if base is None or run_dir is None:
            raise ConfigError("base.kind = 'potential' needs the config's directory and the run directory (for base_ais.json)")
        atoms = ase.Atoms(["H"] * n, cell=cell * BOHR_A, pbc=True)
        base_energy = build_energy_fn(config.base.potential, atoms, base)
        ais = base_ais(config.base, base_energy, atoms, KB_EV_PER_K * config.state.temperature_K, Path(run_dir) / "base_ais.json", resume,
                       seed=config.seed, step_size_A=vc.initial_proton_step_bohr * BOHR_A)
    if wc.twist_grid is None:
        twists, weights = np.asarray([wc.twist], dtype=np.float64), np.ones(1)
    else:
        grid = monkhorst_pack_twists(wc.twist_grid)
        twists, weights = grid.twists, grid.weights
    wavefunctions, wf_params = [], []
    for twist in twists:
        _, wf, local_energy = build_wavefunction(wc, cell, n, n, twist, seed=config.seed, sparse_laplacian=vc.sparse_laplacian)
        wavefunctions.append(electronic.Wavefunction(wf.log_psi, local_energy))
        wf_params.append(wf.init())
    flow = make_periodic_flow(cell, n, n_layers=config.flow.n_layers, one_body=config.flow.one_body, two_body=config.flow.two_body)
    model = electronic.make_electronic_free_energy(flow, wavefunctions, n_electrons=n, temperature_K=config.state.temperature_K,
                                                   mass_amu=hc.mass_amu, twist_weights=weights, base_energy_fn=base_energy,
                                                   base_log_partition_A=None if ais is None else ais["ln_Z"])
    step, init_opt = electronic.make_joint_train_step(
        model, flow_learning_rate=vc.flow_learning_rate, wavefunction_optimizer=vc.optimizer, wavefunction_learning_rate=vc.learning_rate,
        proton_mcmc_steps=vc.proton_mcmc_steps, electron_mcmc_steps=vc.electron_mcmc_steps, damping=vc.damping, clip_width=vc.clip_width,
        target_acceptance=vc.target_acceptance, chunk_size=vc.chunk_size,
        lipschitz_bound=config.flow.lipschitz_bound, lipschitz_weight=config.flow.lipschitz_weight,
        learning_rate_schedule=None if vc.schedule == "constant" else learning_rate_factor(vc.schedule, max(vc.steps, 1), vc.final_lr_fraction))
    k_flow, k_protons, k_electrons, k_burn, k_run, k_eval = jax.random.split(jax.random.PRNGKey(config.seed), 6)
    rng = np.random.default_rng(config.seed)
    if ais is None:
        protons = np.asarray([random_protons(rng, n, float(cell[0, 0]), hc.min_proton_distance_bohr) for _ in range(vc.walkers)])
    else:  # the base's own samples: the flow starts at the identity, p = the base density
        protons = np.asarray(ais["positions"])[np.arange(vc.walkers) % len(ais["positions"])] / BOHR_A
    electrons = jnp.stack([jnp.stack([initial_electrons(jax.random.fold_in(jax.random.fold_in(k_electrons, t), b), protons[b], cell,
                                                        vc.electron_walkers, n) for b in range(vc.walkers)]) for t in range(len(twists))])
    state = electronic.initial_state(model, init_opt, flow.init(k_flow), wf_params, jnp.asarray(protons), electrons, k_run,
                                     proton_step_size=vc.initial_proton_step_bohr,
                                     electron_step_size=np.full(len(twists), vc.initial_electron_step_bohr))
    return JointSetup(cell=cell, twists=twists, model=model, step=step, init_opt=init_opt, state=state,
                      keys={"burn_in": k_burn, "evaluation": k_eval}, ais=ais)


def vfe_hydrogen_structure(run_dir: Path, *, seed: int = 0) -> dict:
    """The structure outputs (:func:`structure_outputs`) of a finished hydrogen VFE run directory, from its final samples
    (samples.extxyz) and the trained flow (checkpoints/state.npz); written into the run directory and into
    results.json's ``structure``.

    Raises:
        FileNotFoundError: a directory without config.resolved.toml, results.json, samples.extxyz or a checkpoint.
        ConfigError: a config that is not a hydrogen VFE run.
    """
    from thermoflow.workflows.config import load_config

    run_dir = Path(run_dir)
    for name in ("config.resolved.toml", "results.json", "samples.extxyz"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: not a finished thermoflow vfe run with [hydrogen]")
    config, _ = load_config(run_dir / "config.resolved.toml", model=VFEElectronsRunConfig)
    setup = build_joint_setup(config, base=config_base(run_dir), run_dir=run_dir, resume=True)
    stored, _, _, _ = load_latest_checkpoint(run_dir / "checkpoints" / "state.npz", setup.state)
    samples = jnp.asarray(np.stack([a.positions for a in ase.io.read(run_dir / "samples.extxyz", ":")]) / BOHR_A)
    summary = structure_outputs(run_dir, setup.model, stored.flow_params, samples, setup.cell, jax.random.PRNGKey(seed), config.vfe,
                                float(stored.proton_step_size))
    results = json.loads((run_dir / "results.json").read_text())
    results["structure"] = summary
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2) + "\n")
    return summary


def structure_outputs(out_dir: Path, model: electronic.ElectronicFreeEnergy, flow_params, protons_bohr, cell_bohr: np.ndarray,
                       key: jax.Array, vc, step_size_bohr: float) -> dict:
    """Quench the final proton samples on p(X)^beta (:func:`thermoflow.flows.sampling.make_annealing`), then per quenched
    configuration the molecules (mutual nearest neighbours), their centres and the space groups (spglib) of the protons
    and of the centres; the powder XRD pattern of the samples and of the quenched configurations. Writes
    ``quenched.extxyz``, ``structure.json``, ``xrd.csv`` and ``xrd.png``; returns a summary for results.json."""
    from collections import Counter

    from thermoflow.analysis.structure import molecular_centres, powder_xrd, space_group
    from thermoflow.flows.sampling import make_annealing

    n = model.n_protons
    betas = np.geomspace(1.0, vc.quench_beta, vc.quench_stages) if vc.quench_beta > 1 else np.zeros(0)
    quenched, acceptances = jnp.asarray(protons_bohr), np.zeros(0)
    if len(betas):
        anneal = make_annealing(model.log_density, model.flow.cell, vc.proton_mcmc_steps)
        quenched, acceptances = anneal(flow_params, quenched, key, betas, step_size_bohr)
    cell_A = cell_bohr * BOHR_A
    quenched_A = np.asarray(quenched) * BOHR_A
    ase.io.write(out_dir / "quenched.extxyz", [ase.Atoms(["H"] * n, positions=x, cell=cell_A, pbc=True) for x in quenched_A])
    rows = []
    for x in quenched_A:
        molecules = molecular_centres(x, cell_A, vc.molecule_max_bond_A)
        row = {"paired_fraction": molecules.paired_fraction,
               "mean_bond_length_A": float(np.mean(molecules.bond_lengths_A)) if len(molecules.pairs) else None}
        for name, positions, tolerance in (("protons", x, 0.1), ("centres", molecules.centres_A, 0.2)):
            try:
                row[f"space_group_{name}"] = "%s (%d)" % space_group(positions, cell_A, [1] * len(positions), symprec_A=tolerance) if len(positions) else None
            except ValueError:
                row[f"space_group_{name}"] = None
        rows.append(row)
    bonds = [r["mean_bond_length_A"] for r in rows if r["mean_bond_length_A"] is not None]
    summary = {
        "quench_betas": betas.tolist(), "quench_acceptances": acceptances.tolist(),
        "paired_fraction_mean": float(np.mean([r["paired_fraction"] for r in rows])),
        "mean_bond_length_A": float(np.mean(bonds)) if bonds else None,
        "space_groups_protons": dict(Counter(str(r["space_group_protons"]) for r in rows)),
        "space_groups_centres": dict(Counter(str(r["space_group_centres"]) for r in rows)),
        "molecule_max_bond_A": vc.molecule_max_bond_A, "symprec_A": {"protons": 0.1, "centres": 0.2},
    }
    atomic_write_text(out_dir / "structure.json", json.dumps({**summary, "configurations": rows}, indent=2) + "\n")
    try:
        two_theta, sampled = powder_xrd(np.asarray(protons_bohr) * BOHR_A, cell_A, "H")
        _, annealed = powder_xrd(quenched_A, cell_A, "H", two_theta_deg=two_theta)
    except ImportError:
        log.info("no XRD pattern: pymatgen is not installed (pip install pymatgen)")
        return summary
    write_csv(out_dir / "xrd.csv", ["two_theta_deg", "intensity_samples", "intensity_quenched"], [two_theta, sampled, annealed])
    plot_curves(out_dir / "xrd.png", {"samples": (two_theta, sampled), "quenched": (two_theta, annealed)},
                "2 theta (deg), wavelength 0.4133 A", "intensity (max 100)")
    summary["xrd_wavelength_A"] = 0.4133
    return summary


def _warm_started(state: electronic.JointState, model: electronic.ElectronicFreeEnergy, init_opt, checkpoint: Path, rs_from: float,
                  rs_to: float) -> electronic.JointState:
    """``state`` with the parameters and walkers of a run at ``rs_from`` (its checkpoint; the same system otherwise), the
    walkers scaled by rs_to / rs_from (the cell length at fixed N scales with r_s), fresh optimiser states, step 0."""
    stored, _, _, path = load_latest_checkpoint(checkpoint, state)
    scale = rs_to / rs_from
    flow_opt, wf_opt = init_opt(stored.flow_params, stored.wavefunction_params)
    log.info("warm start from %s (r_s = %g bohr): parameters and walkers scaled by %.4f", path, rs_from, scale)
    return dataclasses.replace(state, flow_params=stored.flow_params, wavefunction_params=stored.wavefunction_params, flow_opt_state=flow_opt,
                               wavefunction_opt_state=wf_opt, protons=stored.protons * scale, electrons=stored.electrons * scale,
                               proton_step_size=stored.proton_step_size * scale, electron_step_size=stored.electron_step_size * scale)


def run_vfe_hydrogen_scan(config: VFEElectronsRunConfig, base: Path, out_dir: Path, *, resume: bool = False,
                          log_every: int | None = 0) -> dict:
    """The equation of state at fixed T over ``scan.rs_bohr``: one ordinary run directory per density (``rs-X.XXXX/``;
    finished points are read back, interrupted ones resumed), each new point warm-started from the previous density's
    final parameters and walkers (:func:`run_vfe_hydrogen`); then ``summary.csv``, ``summary.json`` and the plots
    ``eos.png`` (P, S, F against r_s with error bars) and ``rdf.png`` (proton g(r) per density).

    Raises:
        ConfigError: as :func:`run_vfe_hydrogen`; a scan directory that already holds a scan (without ``resume``).
    """
    start_run_dir(out_dir, config, base, resume, markers=("summary.csv",) + tuple(f"rs-{r:.4f}" for r in config.scan.rs_bohr))
    points, previous = [], None
    for rs in config.scan.rs_bohr:
        point_config = config.model_copy(update={"hydrogen": config.hydrogen.model_copy(update={"rs_bohr": float(rs)}), "scan": None})
        point_dir = out_dir / f"rs-{rs:.4f}"
        stored = point_dir / "results.json"
        if stored.is_file() and json.loads(stored.read_text()).get("completed"):
            res = json.loads(stored.read_text())
        else:
            log.info("r_s = %g bohr%s", rs, "" if previous is None else f" (warm start from r_s = {previous[1]:g})")
            res = run_vfe_hydrogen(point_config, base, point_dir, resume=(point_dir / "checkpoints" / "state.npz").is_file(),
                                   log_every=log_every, warm_start=previous)
        points.append(res)
        previous = (point_dir / "checkpoints" / "state.npz", float(rs))
    keys = ("rs_bohr", "volume_A3_per_atom", "free_energy_eV_per_atom", "free_energy_stderr_eV_per_atom", "energy_eV_per_atom",
            "energy_stderr_eV_per_atom", "entropy_kB_per_atom", "entropy_stderr_kB_per_atom", "pressure_GPa", "pressure_stderr_GPa",
            "negative_jacobian_fraction")
    write_csv(out_dir / "summary.csv", list(keys), [[p[k] for p in points] for k in keys])
    summary = {"completed": True, "temperature_K": config.state.temperature_K, "n_protons": config.hydrogen.n_protons,
               "points": [{k: p[k] for k in keys} for p in points]}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    _plot_scan(out_dir, points, config.scan.rs_bohr)
    return summary


def _plot_scan(out_dir: Path, points: list[dict], rs_values) -> None:
    rs = np.asarray([p["rs_bohr"] for p in points])
    panels = {label: (np.asarray([p[key] for p in points]), np.asarray([p[err] for p in points]))
              for label, key, err in (("P (GPa)", "pressure_GPa", "pressure_stderr_GPa"),
                                      ("S (k_B/atom)", "entropy_kB_per_atom", "entropy_stderr_kB_per_atom"),
                                      ("F (eV/atom)", "free_energy_eV_per_atom", "free_energy_stderr_eV_per_atom"))}
    plot_scan(out_dir / "eos.png", rs, panels)
    curves = {}
    for rs_value in rs_values:
        path = out_dir / f"rs-{rs_value:.4f}" / "rdf.csv"
        if path.is_file():
            data = np.genfromtxt(path, delimiter=",", names=True)
            curves[f"r_s = {rs_value:g}"] = (data["r_A"], data["g_H_H"])
    plot_curves(out_dir / "rdf.png", curves, "r (A)", "g(r), protons")


#: protons closer than this (Angstrom) are improbable in hydrogen below about 10^4 K (the H2 bond is 0.74 A; the H2
#: Born-Oppenheimer energy at 0.5 A is about 2.5 eV above its minimum)
CLOSE_PAIR_A = 0.5


def _close_pairs(samples_A: np.ndarray, cell_A: np.ndarray) -> dict:
    """The closest proton pair over the evaluated samples (B, N, 3) and the fraction of samples holding a pair closer than
    :data:`CLOSE_PAIR_A`, with a warning when any does: a sanity check of the trained flow (a folded flow can put protons
    on top of each other, measured at 1200 K on a uniform base, docs/results/hydrogen.md)."""
    closest = np.full(len(samples_A), np.inf)  # inf: no pair within the search radius (a dilute sample)
    for b, x in enumerate(samples_A):
        _, _, d = pair_distances(x, cell_A, CLOSE_PAIR_A * 4)
        if len(d):
            closest[b] = d.min()
    fraction = float(np.mean(closest < CLOSE_PAIR_A))
    nearest = float(closest.min()) if np.isfinite(closest.min()) else None  # JSON has no infinity
    if fraction > 0:
        log.warning("%.0f %% of the evaluated proton samples hold a pair closer than %.1f A (closest %.3f A), improbable for "
                    "hydrogen below about 10^4 K: the flow may fold (negative_jacobian_fraction) or need more training or a "
                    "repulsive base potential ([base])",
                    100 * fraction, CLOSE_PAIR_A, closest.min())
    return {"closest_proton_pair_A": nearest, "close_pair_sample_fraction": fraction, "close_pair_threshold_A": CLOSE_PAIR_A}


def _per_atom_results(blocks: dict[str, np.ndarray], n: int, kT_Ha: float) -> dict:
    """Blocking means and errors of the evaluation series (Hartree cell totals) per atom: F, E, the electronic energy and its
    parts in eV, Ry and Hartree; S in k_B; P in GPa."""
    out = {}
    for name in ("free_energy", "energy", "electronic_energy", "kinetic", "potential"):
        est = blocking_stderr(blocks[name] / n)
        key = {"kinetic": "electron_kinetic_energy", "potential": "potential_energy"}.get(name, name)
        for unit, factor in (("eV", EV_PER_HARTREE), ("Ry", 2.0), ("Ha", 1.0)):
            out[f"{key}_{unit}_per_atom"] = est.mean * factor
            out[f"{key}_stderr_{unit}_per_atom"] = est.stderr * factor
    entropy = blocking_stderr(blocks["entropy"] / n)
    out["entropy_kB_per_atom"], out["entropy_stderr_kB_per_atom"] = entropy.mean, entropy.stderr
    pressure = blocking_stderr(blocks["pressure"] * GPA_PER_HARTREE_PER_BOHR3)
    out["pressure_GPa"], out["pressure_stderr_GPa"] = pressure.mean, pressure.stderr
    out["kT_eV"] = kT_Ha * EV_PER_HARTREE
    return out
