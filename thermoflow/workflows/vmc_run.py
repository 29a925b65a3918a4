"""The ``thermoflow vmc`` workflow: electrons + fixed protons (or jellium) -> ground-state energy and pressure.

Config (:mod:`thermoflow.workflows.vmc_config`) -> cell of r_s, protons, occupied plane waves at the
twist, trial wavefunction, Ewald local energy -> burn-in -> optimisation on the shared driver
(:mod:`thermoflow.optimize`, engine :mod:`thermoflow.electrons.driver`) -> final evaluation at the
trained parameters. Run directory::

    config.resolved.toml, run_info.json
    metrics.csv            one row per step: energy and variance of the walkers (Hartree), acceptance, step size
    results.json           final evaluation: E, kinetic, potential (Hartree per electron; eV per atom), the
                           virial pressure (GPa), the variance, blocking error bars (with vmc.forces: forces on
                           the protons, eV/A), the acceptance and the energy's statistical inefficiency (blocking
                           over naive variance: evaluation blocks of vmc.mcmc_steps moves per independent
                           sample); protons (bohr) and the k set
    checkpoints/state.npz  parameters, optimiser state, walkers, step size, step (exact resume)
    energy.png             the optimisation trace and the final estimate

With ``wavefunction.twist_grid`` the directory holds one such run per twist (``twist-NNN/``), ``twists.csv``
and the twist-averaged ``results.json`` (:func:`run_twist_average`).
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.electrons import driver
from thermoflow.electrons.estimators import EV_PER_A_PER_HARTREE_PER_BOHR, make_zero_variance_forces, virial_pressure_GPa
from thermoflow.electrons.ewald import make_ewald_sum
from thermoflow.electrons.hamiltonian import SPARSE_JETS, make_local_energy
from thermoflow.electrons.jastrow import make_slater_jastrow
from thermoflow.electrons.network import make_periodic_network
from thermoflow.electrons.plane_waves import cubic_cell_from_rs, hartree_fock_energy
from thermoflow.electrons.twists import twisted_kvectors, unoccupied_kvectors
from thermoflow.io.atomic import atomic_write_text
from thermoflow.parallel import is_writer
from thermoflow.units import BOHR_A, EV_PER_HARTREE
from thermoflow.workflows.config import ConfigError, resolve_path
from thermoflow.workflows.run_dir import optimise_in_run_dir, start_run_dir
from thermoflow.workflows.vmc_config import PROTON_LATTICES, VMCRunConfig, WavefunctionConfig

log = logging.getLogger(__name__)

#: metrics.csv columns: (history key, header, conversion of the cell total given the electron count)
_METRIC_COLUMNS = (
    ("step", "step", lambda v, n: int(v)),
    ("energy", "energy_Ha_per_electron", lambda v, n: v / n),
    ("energy_imaginary", "energy_imaginary_Ha_per_electron", lambda v, n: v / n),
    ("variance", "local_energy_variance_Ha2", lambda v, n: v),
    ("acceptance", "acceptance", lambda v, n: v),
    ("step_size", "step_size_bohr", lambda v, n: v),
    ("lr_scale", "lr_scale", lambda v, n: v),
    ("seconds", "seconds", lambda v, n: v),
)


def proton_configurations(config: VMCRunConfig, cell: np.ndarray, base: Path) -> np.ndarray:
    """(M, n_p, 3) proton configurations in ``cell``, bohr ((1, 0, 3) for jellium; M > 1: an ensemble,
    from ``system.frames`` of a file or ``system.n_configurations`` random ones).

    Raises:
        ConfigError: a structure file that is missing, holds no selected frame, or a frame that is
            non-cubic or holds another number of atoms; random protons that cannot keep
            ``min_proton_distance_bohr`` apart.
    """
    sc, n = config.system, config.system.n_electrons
    length = cell[0, 0]
    if sc.protons == "none":
        return np.zeros((1, 0, 3))
    if sc.protons in PROTON_LATTICES:
        from ase.build import bulk

        m = round((n / PROTON_LATTICES[sc.protons]) ** (1 / 3))
        return bulk("H", sc.protons, a=length / m, cubic=True).repeat((m, m, m)).get_positions()[None]
    if sc.protons == "file":
        from ase.io import read

        path = resolve_path(base, sc.structure_file)
        if not path.is_file():
            raise ConfigError(f"system.structure_file: {path} not found")
        frames = read(path, index=sc.frames if sc.frames is not None else "0:1")
        if not frames:
            raise ConfigError(f"system.frames = {sc.frames!r} selects no frame of {path}")
        configurations = []
        for i, atoms in enumerate(frames):
            lengths, angles = atoms.cell.cellpar()[:3], atoms.cell.cellpar()[3:]
            if len(atoms) != n or not (np.allclose(lengths, lengths[0], rtol=1e-6) and np.allclose(angles, 90.0, atol=1e-6)):
                raise ConfigError(f"system.structure_file: frame {i} of {path} must hold a cubic cell of system.n_electrons = {n} "
                                  f"atoms (has {len(atoms)} atoms, cell {np.round(atoms.cell.cellpar(), 4).tolist()})")
            configurations.append(atoms.get_scaled_positions() * length)
        return np.asarray(configurations)
    rng = np.random.default_rng(config.seed)
    return np.asarray([random_protons(rng, n, length, sc.min_proton_distance_bohr) for _ in range(sc.n_configurations)])


def random_protons(rng: np.random.Generator, n: int, length: float, min_distance: float) -> np.ndarray:
    """(n, 3) uniform positions in a cube of side ``length`` at least ``min_distance`` apart (periodic), bohr."""
    positions = []
    for _ in range(1000 * n):
        trial = rng.uniform(size=3) * length
        if all(np.linalg.norm((trial - p + length / 2) % length - length / 2) >= min_distance for p in positions):
            positions.append(trial)
            if len(positions) == n:
                return np.asarray(positions)
    raise ConfigError(f"system.min_proton_distance_bohr = {min_distance}: could not place {n} random protons "
                      f"that far apart in the cell (L = {length:.3f} bohr); lower it")


def build_system(config: VMCRunConfig, base: Path):
    """``(cell (3, 3) bohr, proton configurations (M, n_p, 3) bohr, (k up (ceil(n/2), 3), k down (floor(n/2), 3))
    1/bohr, wavefunction, local_energy)``.

    Raises:
        ConfigError: an invalid system or wavefunction (the message names the field).
    """
    n = config.system.n_electrons
    cell = cubic_cell_from_rs(config.system.rs_bohr, n)
    protons = proton_configurations(config, cell, base)
    kvectors, wavefunction, local_energy = build_wavefunction(config.wavefunction, cell, n, protons.shape[1],
                                                              np.asarray(config.wavefunction.twist), seed=config.seed,
                                                              sparse_laplacian=config.vmc.sparse_laplacian)
    return cell, protons, kvectors, wavefunction, local_energy


def build_wavefunction(wf_cfg: WavefunctionConfig, cell: np.ndarray, n: int, n_protons: int, twist: np.ndarray, *, seed: int,
                       sparse_laplacian: bool = False):
    """``((k up, k down) 1/bohr, wavefunction, local_energy)`` of ``n`` electrons (and ``n_protons`` protons) in
    ``cell`` (bohr) at the fractional ``twist`` (3,), as configured by ``wf_cfg`` (its own twist fields are not read).

    Raises:
        ConfigError: an invalid wavefunction for the system (the message names the field).
    """
    try:
        k_up, k_down = (twisted_kvectors(cell, m, twist, degeneracy="lowest_exchange") if m else np.zeros((0, 3))
                        for m in ((n + 1) // 2, n // 2))
    except ValueError as err:
        raise ConfigError(f"wavefunction.twist: {err}") from None
    if wf_cfg.kind == "network":
        if wf_cfg.envelope == "atomic" and not n_protons:
            raise ConfigError("wavefunction.envelope = 'atomic' needs protons (system.protons is 'none')")
        extra = None
        if wf_cfg.antisymmetry == "geminal":
            if n % 2:
                raise ConfigError(f"wavefunction.antisymmetry = 'geminal' pairs up and down electrons: the electron count must be even, got {n}")
            extra = unoccupied_kvectors(cell, k_up, twist, wf_cfg.geminal_extra_orbitals)
        wavefunction = make_periodic_network(cell, k_up, k_down, n_layers=wf_cfg.n_layers, one_body=wf_cfg.one_body,
                                             two_body=wf_cfg.two_body, n_determinants=wf_cfg.n_determinants,
                                             envelope=wf_cfg.envelope, geminal_kvectors=extra, seed=seed,
                                             network_precision=wf_cfg.network_precision)
    else:
        wavefunction = make_slater_jastrow(cell, k_up, k_down)
    local_energy = make_local_energy(wavefunction.log_psi, make_ewald_sum(cell, n + n_protons), n,
                                     sparsity_threshold=SPARSE_JETS if sparse_laplacian else 0)
    return (k_up, k_down), wavefunction, local_energy


def initial_electrons(key: jax.Array, protons: np.ndarray, cell: np.ndarray, n_walkers: int, n_electrons: int) -> jax.Array:
    """Walkers (n_walkers, n_e, 3) bohr: each electron near a proton (unit Gaussian about it; a random
    assignment per walker, every proton used once when n_e = n_p) or uniform in the cell for jellium."""
    if len(protons) == 0:
        return jax.random.uniform(key, (n_walkers, n_electrons, 3)) @ jnp.asarray(cell)
    k_perm, k_noise = jax.random.split(key)
    order = jax.vmap(lambda k: jax.random.permutation(k, len(protons)))(jax.random.split(k_perm, n_walkers))
    centres = jnp.asarray(protons)[order[:, np.arange(n_electrons) % len(protons)]]
    return centres + jax.random.normal(k_noise, centres.shape)


def run_vmc(config: VMCRunConfig, base: Path, out_dir: Path, *, resume: bool = False, log_every: int | None = 0,
            stop_after: int | None = None) -> dict:
    """Optimise the trial wavefunction and write the run directory (layout in the module docstring).

    Args:
        config: validated VMC run config.
        base: directory relative file names in the config refer to.
        out_dir: run directory (created).
        resume: continue from ``out_dir/checkpoints/state.npz``; the config must be the same.
        log_every: log a progress line every this many steps (0: about 20 per run; None: none).
        stop_after: stop after this many steps (an interruption, for tests).

    Returns:
        The results dictionary also written to ``results.json`` (``{"completed": False, ...}`` when stopped early).

    Raises:
        ConfigError: an invalid system (:func:`proton_configurations`), resuming with another config, or a
            directory that already holds a run.
        FileNotFoundError: resuming without a checkpoint.
        NonFiniteError: non-finite energies after ``vmc.max_rollbacks`` rollbacks.
    """
    out_dir = Path(out_dir)
    if config.wavefunction.twist_grid is not None:
        return run_twist_average(config, base, out_dir, resume=resume, log_every=log_every)
    vc, n = config.vmc, config.system.n_electrons
    start_run_dir(out_dir, config, base, resume, markers=("checkpoints/state.npz",))
    t_start = time.perf_counter()
    cell, configurations, kvectors, wavefunction, local_energy = build_system(config, base)
    n_train = len(configurations) - vc.holdout
    if n_train < 1:
        raise ConfigError(f"vmc.holdout = {vc.holdout} leaves no configuration to train on ({len(configurations)} in all)")
    ensemble = n_train > 1
    training = jnp.asarray(configurations[:n_train] if ensemble else configurations[0])  # (M, n_p, 3) or (n_p, 3)
    n_protons = configurations.shape[1]
    params = wavefunction.init()
    n_parameters = int(sum(np.size(x) for x in jax.tree.leaves(params)))
    k_walkers, k_equilibrate, k_run = jax.random.split(jax.random.PRNGKey(config.seed), 3)
    step_size = vc.initial_step_size_bohr
    electrons = []
    for m in range(n_train):  # each configuration's walkers, burnt in at the initial parameters
        x = initial_electrons(jax.random.fold_in(k_walkers, m) if ensemble else k_walkers, configurations[m], cell, vc.walkers, n)
        if not resume and vc.equilibration_blocks:
            x, step_size, acceptance = driver.equilibrate(
                wavefunction.log_psi, params, x, jnp.asarray(configurations[m]),
                jax.random.fold_in(k_equilibrate, m) if ensemble else k_equilibrate, step_size,
                n_blocks=vc.equilibration_blocks, n_mcmc_steps=vc.mcmc_steps, target_acceptance=vc.target_acceptance)
        electrons.append(x)
    electrons = jnp.stack(electrons) if ensemble else electrons[0]
    if not resume and vc.equilibration_blocks:
        log.info("burn-in: %d blocks of %d moves%s, step size %.3f bohr, acceptance %.2f", vc.equilibration_blocks, vc.mcmc_steps,
                 f" for each of {n_train} proton configurations" if ensemble else "", step_size, acceptance)
    step, transform = driver.make_train_step(
        wavefunction.log_psi, local_energy, training, optimizer=vc.optimizer, learning_rate=vc.learning_rate,
        n_mcmc_steps=vc.mcmc_steps, damping=vc.damping, clip_width=vc.clip_width, target_acceptance=vc.target_acceptance,
        chunk_size=vc.chunk_size, configurations_per_step=vc.configurations_per_step)
    state = driver.initial_state(params, transform, electrons, k_run, step_size)
    log.info("VMC: %d electrons, %d protons%s, r_s = %g bohr (L = %.4f bohr), %s wavefunction with %d parameters, %s, %d walkers",
             n, n_protons, f" x {n_train} configurations ({vc.holdout} held out)" if ensemble or vc.holdout else "",
             config.system.rs_bohr, cell[0, 0], config.wavefunction.kind, n_parameters, vc.optimizer, vc.walkers)

    columns = [(key, name, functools.partial(convert, n=n)) for key, name, convert in _METRIC_COLUMNS]
    result, completed = optimise_in_run_dir(
        step, state, out_dir, columns, steps=vc.steps, checkpoint_every=vc.checkpoint_every, resume=resume, max_rollbacks=vc.max_rollbacks,
        log_every=log_every, stop_after=stop_after, advice="lower vmc.learning_rate or raise vmc.walkers",
        progress=lambda row: (f"E = {row['energy'] / n:.5f} Ha/electron, variance {row['variance']:.4f} Ha^2, "
                              f"acceptance {row['acceptance']:.2f}, {row['seconds']:.2f} s/step"))
    hist = result.history
    if not completed:
        return {"completed": False, "steps_done": len(hist.get("step", []))}

    final = result.state
    results = {
        "completed": True, "n_electrons": n, "n_protons": n_protons, "rs_bohr": config.system.rs_bohr,
        "cell_length_bohr": float(cell[0, 0]), "volume_bohr3": float(abs(np.linalg.det(cell))),
        "wavefunction": config.wavefunction.kind, "n_parameters": n_parameters, "optimizer": vc.optimizer,
        "twist": list(config.wavefunction.twist), "steps": vc.steps, "walkers": vc.walkers,
        "seconds_per_step": result.seconds_per_step, "n_rollbacks": result.n_rollbacks,
        "protons_bohr": (configurations if len(configurations) > 1 else configurations[0]).tolist(),
        "kvectors_up_per_bohr": np.asarray(kvectors[0]).tolist(), "kvectors_down_per_bohr": np.asarray(kvectors[1]).tolist(),
    }
    if config.system.protons == "none":
        hf = hartree_fock_energy(cell, *kvectors)
        results["hartree_fock_Ha_per_electron"] = float(hf["total"]) / n
    if vc.eval_blocks:
        t_eval = time.perf_counter()
        per_configuration = _evaluate_configurations(config, cell, configurations, n_train, wavefunction, local_energy, final,
                                                     k_walkers, k_run)
        if len(configurations) == 1:
            results.update({k: v for k, v in per_configuration[0].items() if k not in ("configuration", "held_out")})
        else:
            results.update(_configuration_means(per_configuration[:n_train]))
            results["configurations"] = per_configuration
            if vc.holdout:
                held = _configuration_means(per_configuration[n_train:])
                results.update({f"held_out_{k}": held[k] for k in ("energy_Ha_per_electron", "energy_stderr_Ha_per_electron")})
        results["evaluation_seconds"] = time.perf_counter() - t_eval
        results["estimate"] = (f"final evaluation at the trained parameters: {vc.eval_blocks} Metropolis blocks of "
                               f"{vc.mcmc_steps} moves x {vc.walkers} walkers, blocking error bars over the blocks"
                               + (f"; means over the {n_train} training configurations (energy, parts, pressure), "
                                  "each configuration in 'configurations'" if len(configurations) > 1 else ""))
    else:
        tail = hist["energy"][len(hist["energy"]) // 2:] / n
        est = blocking_stderr(tail)
        results.update({"energy_Ha_per_electron": est.mean, "energy_stderr_Ha_per_electron": est.stderr,
                        "estimate": f"second half of the optimisation trace ({len(tail)} steps, blocking error bars)"})
    results["wall_seconds"] = time.perf_counter() - t_start
    if is_writer():
        atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
        _plot_energy(out_dir / "energy.png", hist, n, results)
    log.info("E = %.6f +- %.6f Ha/electron", results["energy_Ha_per_electron"], results["energy_stderr_Ha_per_electron"])
    return results


#: twist-averaged quantities of a twist-grid run: (results key, its standard-error key)
_AVERAGED = (("energy_Ha_per_electron", "energy_stderr_Ha_per_electron"), ("kinetic_Ha_per_electron", "kinetic_stderr_Ha_per_electron"),
             ("potential_Ha_per_electron", "potential_stderr_Ha_per_electron"), ("pressure_GPa", "pressure_stderr_GPa"),
             ("energy_eV_per_atom", "energy_stderr_eV_per_atom"), ("hartree_fock_Ha_per_electron", None))


def run_twist_average(config: VMCRunConfig, base: Path, out_dir: Path, *, resume: bool = False, log_every: int | None = 0) -> dict:
    """One VMC run per twist of the reduced shifted Monkhorst-Pack grid (``twist-NNN/``, each an ordinary
    run directory: finished twists are read back, interrupted ones resumed), then the weighted twist
    averages with combined error bars (:func:`thermoflow.electrons.twists.twist_average`) in
    ``results.json`` and a per-twist ``twists.csv``.

    References: C. Lin, F. H. Zong and D. M. Ceperley, Phys. Rev. E 64, 016702 (2001), doi:10.1103/PhysRevE.64.016702.
    """
    from thermoflow.electrons.twists import monkhorst_pack_twists, twist_average

    start_run_dir(out_dir, config, base, resume, markers=("twist-000",))
    grid = monkhorst_pack_twists(config.wavefunction.twist_grid)
    per_twist = []
    for i, (twist, weight) in enumerate(zip(grid.twists, grid.weights)):
        sub_config = config.model_copy(update={"wavefunction": config.wavefunction.model_copy(
            update={"twist": tuple(float(t) for t in twist), "twist_grid": None})})
        sub_dir = out_dir / f"twist-{i:03d}"
        stored = sub_dir / "results.json"
        if stored.is_file() and json.loads(stored.read_text()).get("completed"):
            res = json.loads(stored.read_text())
        else:
            log.info("twist %d/%d: t = %s, weight %.4f", i + 1, len(grid.weights), np.round(twist, 4).tolist(), weight)
            res = run_vmc(sub_config, base, sub_dir, resume=(sub_dir / "checkpoints" / "state.npz").is_file(), log_every=log_every)
        per_twist.append(res)
    results = {"completed": True, "twist_grid": config.wavefunction.twist_grid, "n_twists": len(grid.weights),
               "twists": grid.twists.tolist(), "twist_weights": grid.weights.tolist()}
    for key, err_key in _AVERAGED:
        if all(key in r for r in per_twist):
            values = np.array([r[key] for r in per_twist])
            errors = np.array([r[err_key] for r in per_twist]) if err_key else None
            average = twist_average(values, grid.weights, errors)
            results[key] = average.mean
            if err_key:
                results[err_key] = average.stderr
    for key in ("n_electrons", "n_protons", "rs_bohr", "wavefunction", "n_parameters", "optimizer"):
        results[key] = per_twist[0][key]
    if is_writer():
        lines = ["twist_a,twist_b,twist_c,weight,energy_Ha_per_electron,energy_stderr_Ha_per_electron,pressure_GPa,pressure_stderr_GPa"]
        for twist, weight, r in zip(grid.twists, grid.weights, per_twist):
            lines.append(",".join(str(x) for x in (*twist, weight, r["energy_Ha_per_electron"], r["energy_stderr_Ha_per_electron"],
                                                  r.get("pressure_GPa", ""), r.get("pressure_stderr_GPa", ""))))
        atomic_write_text(out_dir / "twists.csv", "\n".join(lines) + "\n")
        atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    log.info("twist average over %d twists: E = %.6f +- %.6f Ha/electron", len(grid.weights), results["energy_Ha_per_electron"],
             results["energy_stderr_Ha_per_electron"])
    return results


def _evaluate_configurations(config: VMCRunConfig, cell: np.ndarray, configurations: np.ndarray, n_train: int, wavefunction,
                             local_energy, final: driver.VMCState, k_walkers: jax.Array, k_run: jax.Array) -> list[dict]:
    """The final evaluation of every proton configuration at the trained parameters: the training ones from
    their walkers, the held-out ones (index >= ``n_train``) from fresh walkers burnt in at the trained
    parameters. One :func:`_evaluation_results` dictionary per configuration, with its index and held-out flag."""
    vc, n = config.vmc, config.system.n_electrons
    ensemble = final.electrons.ndim == 4
    forces = None
    if vc.forces and configurations.shape[1]:
        ewald = make_ewald_sum(cell, n + configurations.shape[1])
        forces = make_zero_variance_forces(wavefunction.log_psi, ewald, n, cell)
    rows = []
    for m in range(len(configurations)):
        protons_m = jnp.asarray(configurations[m])
        key = jax.random.fold_in(k_run, 2**31 - 1 - m)
        if m < n_train:
            x, size = (final.electrons[m] if ensemble else final.electrons), float(final.step_size)
        else:
            x = initial_electrons(jax.random.fold_in(k_walkers, m), configurations[m], cell, vc.walkers, n)
            x, size, _ = driver.equilibrate(wavefunction.log_psi, final.params, x, protons_m, jax.random.fold_in(key, 1),
                                            float(final.step_size), n_blocks=max(vc.equilibration_blocks, 10),
                                            n_mcmc_steps=vc.mcmc_steps, target_acceptance=vc.target_acceptance)
        blocks = driver.evaluate(wavefunction.log_psi, local_energy, final.params, x, protons_m, key, size,
                                 n_blocks=vc.eval_blocks, n_mcmc_steps=vc.mcmc_steps, chunk_size=vc.chunk_size, forces=forces)
        rows.append({"configuration": m, "held_out": m >= n_train,
                     **_evaluation_results(blocks, n, configurations.shape[1], float(abs(np.linalg.det(cell))))})
    return rows


def _configuration_means(rows: list[dict]) -> dict:
    """Means over proton configurations of the energies, parts and pressure, with combined standard errors
    (independent runs: sqrt(sum err^2) / M): the ensemble-averaged quantity the training minimises."""
    out = {}
    for key, err_key in (("energy_Ha_per_electron", "energy_stderr_Ha_per_electron"),
                         ("kinetic_Ha_per_electron", "kinetic_stderr_Ha_per_electron"),
                         ("potential_Ha_per_electron", "potential_stderr_Ha_per_electron"),
                         ("energy_imaginary_Ha_per_electron", "energy_imaginary_stderr_Ha_per_electron"),
                         ("energy_Ry_per_electron", "energy_stderr_Ry_per_electron"),
                         ("energy_eV_per_atom", "energy_stderr_eV_per_atom"), ("pressure_GPa", "pressure_stderr_GPa")):
        if all(key in r for r in rows):
            out[key] = float(np.mean([r[key] for r in rows]))
            out[err_key] = float(np.sqrt(np.sum(np.square([r[err_key] for r in rows]))) / len(rows))
    for key in ("local_energy_variance_Ha2", "acceptance", "volume_A3_per_electron", "pressure_note"):
        out[key] = rows[0][key] if key == "pressure_note" else float(np.mean([r[key] for r in rows]))
    return out


def _evaluation_results(blocks: dict[str, np.ndarray], n_electrons: int, n_protons: int, volume_bohr3: float) -> dict:
    """Per-electron energies (Hartree, and eV per atom for hydrogen), the virial pressure (GPa), with blocking errors."""
    out = {}
    for key, name in (("total", "energy"), ("kinetic", "kinetic"), ("potential", "potential"), ("imaginary", "energy_imaginary")):
        est = blocking_stderr(blocks[key] / n_electrons)
        out[f"{name}_Ha_per_electron"], out[f"{name}_stderr_Ha_per_electron"] = est.mean, est.stderr
    energy_series = blocks["total"] / n_electrons
    naive = float(np.std(energy_series, ddof=1) / np.sqrt(len(energy_series)))
    # the Metropolis chain's autocorrelation, seen by the blocking analysis: consecutive evaluation blocks per
    # independent energy sample (1: the blocks are uncorrelated; 2 tau_int in units of blocks)
    out["energy_statistical_inefficiency_blocks"] = (out["energy_stderr_Ha_per_electron"] / naive) ** 2 if naive > 0 else 1.0
    out["energy_Ry_per_electron"], out["energy_stderr_Ry_per_electron"] = 2 * out["energy_Ha_per_electron"], 2 * out["energy_stderr_Ha_per_electron"]
    if n_protons:
        per_atom = n_electrons / n_protons * EV_PER_HARTREE
        out["energy_eV_per_atom"], out["energy_stderr_eV_per_atom"] = per_atom * out["energy_Ha_per_electron"], per_atom * out["energy_stderr_Ha_per_electron"]
    pressure = blocking_stderr(virial_pressure_GPa(blocks["kinetic"], blocks["potential"], volume_bohr3))
    out["pressure_GPa"], out["pressure_stderr_GPa"] = pressure.mean, pressure.stderr
    out["pressure_note"] = ("virial (2T + V) / 3 Omega: exact for eigenstates, biased for an approximate wavefunction "
                            "(thermoflow/electrons/estimators.py)")
    if "forces" in blocks:  # (n_blocks, n_p, 3) Hartree/bohr
        per_component = [blocking_stderr(series * EV_PER_A_PER_HARTREE_PER_BOHR) for series in blocks["forces"].reshape(len(blocks["forces"]), -1).T]
        out["forces_eV_per_A"] = np.reshape([e.mean for e in per_component], blocks["forces"].shape[1:]).tolist()
        out["forces_stderr_eV_per_A"] = np.reshape([e.stderr for e in per_component], blocks["forces"].shape[1:]).tolist()
        out["forces_note"] = ("zero-variance (Assaraf-Caffarel) estimator of the Hellmann-Feynman force; no Pulay terms: exact "
                              "for an exact eigenstate (thermoflow/electrons/estimators.py)")
    out["local_energy_variance_Ha2"] = float(np.mean(blocks["variance"]))
    out["acceptance"] = float(np.mean(blocks["acceptance"]))
    out["volume_A3_per_electron"] = volume_bohr3 * BOHR_A**3 / n_electrons
    return out


def _plot_energy(path: Path, hist: dict, n_electrons: int, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(hist["step"], hist["energy"] / n_electrons, lw=0.8, label="walker mean per step")
    e, err = results["energy_Ha_per_electron"], results["energy_stderr_Ha_per_electron"]
    ax.axhspan(e - err, e + err, color="C1", alpha=0.4, label=f"final {e:.5f} +- {err:.5f}")
    if "hartree_fock_Ha_per_electron" in results:
        ax.axhline(results["hartree_fock_Ha_per_electron"], color="k", ls="--", lw=0.8, label="Hartree-Fock")
    ax.set_xlabel("step")
    ax.set_ylabel("energy (Ha / electron)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
