"""The NCT workflow: config -> run directory (resolved config, metrics, results, checkpoints, plots).
The setup before training (basis, flow, optimiser) is :mod:`thermoflow.workflows.nct_setup`.

Run directory layout::

    config.resolved.toml   the validated config, defaults filled in
    run_info.json          the directory the config's relative file names refer to
    metrics.csv            one row per step (units in column names), rewritten at checkpoints
    results.json           final values with error bars
    checkpoints/state.npz  params, optimiser state, step, metrics so far (atomic writes)
    free_energy.png, occupations.png
"""

from __future__ import annotations

import functools
import json
import logging
import time
from pathlib import Path

import jax
import numpy as np

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.io.atomic import atomic_write_text
from thermoflow.nct import occupations
from thermoflow.nct.train import VOIGT_COMPONENTS, evaluate, train
from thermoflow.parallel import is_writer, n_devices
from thermoflow.units import GPA_PER_EV_PER_A3, MEV_PER_EV
from thermoflow.workflows import plots
from thermoflow.workflows.config import RunConfig, read_run_config
from thermoflow.workflows.nct_setup import CUBIC_PROGRESS, GAUSSIAN_PROGRESS, NCTSetup, prepare_nct
from thermoflow.workflows.run_dir import start_run_dir, write_metrics_csv

log = logging.getLogger(__name__)

#: metrics.csv: (metric key, column with its unit, conversion of the total metric); a column is
#: written when its metric is in the history (NPT runs add the Gibbs free energy, volume, pressure;
#: orthorhombic NPT the pressure per direction; nct.training_stress the pressure and the six stress components)
_METRIC_COLUMNS = (
    ("step", "step", lambda v, n: int(v)),
    ("free_energy", "free_energy_eV_per_atom", lambda v, n: v / n),
    ("energy", "energy_eV_per_atom", lambda v, n: v / n),
    ("energy_stderr", "energy_batch_stderr_eV_per_atom", lambda v, n: v / n),
    ("kinetic", "kinetic_eV_per_atom", lambda v, n: v / n),
    ("potential", "potential_eV_per_atom", lambda v, n: v / n),
    ("entropy", "entropy_kB_per_atom", lambda v, n: v / n),
    ("gibbs_free_energy", "gibbs_free_energy_eV_per_atom", lambda v, n: v / n),
    ("volume", "volume_A3_per_atom", lambda v, n: v / n),
    ("pressure", "pressure_GPa", lambda v, n: v * GPA_PER_EV_PER_A3),
    *((f"pressure_{a}", f"pressure_{a}_GPa", lambda v, n: v * GPA_PER_EV_PER_A3) for a in "xyz"),
    *((f"stress_{c}", f"stress_{c}_GPa", lambda v, n: v * GPA_PER_EV_PER_A3) for c in VOIGT_COMPONENTS),
    ("local_energy_variance", "local_energy_variance_eV2", lambda v, n: v),
    ("lr_scale", "lr_scale", lambda v, n: v),
    ("seconds", "seconds", lambda v, n: v),
)


def _write_metrics(path: Path, history: dict, n_atoms: int) -> None:
    write_metrics_csv(path, history, [(key, name, functools.partial(convert, n=n_atoms)) for key, name, convert in _METRIC_COLUMNS])


def _mean_stderr(values: np.ndarray) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1) / np.sqrt(len(values)))


def _mean_stderr_tensor(values: np.ndarray) -> tuple[list, list]:
    """Per-component mean and standard error over the leading (batch) axis, as nested lists."""
    return values.mean(axis=0).tolist(), (values.std(axis=0, ddof=1) / np.sqrt(len(values))).tolist()


def _gaussian_results(gaussian: dict | None, free_energy: tuple[float, float], n_atoms: int, npt: bool) -> dict:
    """The Gaussian's F, E, S at the reference cell and, for NVT, F(NCT) - F(Gaussian) (for NPT the
    two are at different cells: not reported)."""
    if gaussian is None:
        return {}
    f_g, err_g = gaussian["free_energy_eV"] / n_atoms, gaussian["free_energy_stderr_eV"] / n_atoms
    difference = (None, None) if npt else (free_energy[0] - f_g, float(np.hypot(free_energy[1], err_g)))
    return {
        "gaussian_free_energy_eV_per_atom": f_g,
        "gaussian_free_energy_stderr_eV_per_atom": err_g,
        "gaussian_energy_eV_per_atom": gaussian["energy_eV"] / n_atoms,
        "gaussian_energy_stderr_eV_per_atom": gaussian["energy_stderr_eV"] / n_atoms,
        "gaussian_entropy_kB_per_atom": gaussian["entropy_kB"] / n_atoms,
        "flow_minus_gaussian_eV_per_atom": difference[0],
        "flow_minus_gaussian_stderr_eV_per_atom": difference[1],
    }


def _cubic_results(cubic: dict | None, gaussian: dict | None, n_atoms: int) -> dict:
    if cubic is None:
        return {}
    out = {
        "bubble_free_energy_eV_per_atom": cubic["bubble_free_energy_eV"] / n_atoms,
        "bubble_free_energy_stderr_eV_per_atom": cubic["bubble_free_energy_stderr_eV"] / n_atoms,
        "perturbative_map_dropped_fraction": cubic["dropped_fraction"],
    }
    if gaussian is not None:
        out["gaussian_plus_bubble_free_energy_eV_per_atom"] = (gaussian["free_energy_eV"] + cubic["bubble_free_energy_eV"]) / n_atoms
        out["gaussian_plus_bubble_free_energy_stderr_eV_per_atom"] = float(
            np.hypot(gaussian["free_energy_stderr_eV"], cubic["bubble_free_energy_stderr_eV"])
        ) / n_atoms
    return out


#: strains beyond which the affinely scaled basis of the reference cell deserves a new reference
_LARGE_STRAIN = 0.02


def _npt_results(setup: NCTSetup, params: dict, final: dict, n_atoms: int) -> dict:
    """Gibbs free energy, volume and cell at the optimised strain (isotropic, or per Cartesian
    direction for ``nct.cell_strain = "orthorhombic"``)."""
    strain = np.asarray(params["strain"], dtype=float)
    cell = setup.basis.cell * (1.0 + strain)  # scales the Cartesian components (columns)
    volume = float(abs(np.linalg.det(cell)))
    if np.abs(strain).max() > _LARGE_STRAIN:
        log.warning(
            "NPT: the cell moved by a linear strain of %s; the basis is the reference cell's, scaled. For the best "
            "state at this cell, rerun from the trained cell (cell_A in results.json) with a new basis",
            np.array2string(strain, precision=3),
        )
    return {
        "gibbs_free_energy_eV_per_atom": final["gibbs_free_energy"][0],
        "gibbs_free_energy_stderr_eV_per_atom": final["gibbs_free_energy"][1],
        "pressure_target_GPa": setup.config.state.pressure_GPa,
        "strain_derivative": setup.strain_derivative,
        "volume_A3_per_atom": volume / n_atoms,
        "reference_volume_A3_per_atom": float(abs(np.linalg.det(setup.basis.cell))) / n_atoms,
        "strain": strain.tolist(),
        "cell_A": cell.tolist(),
    }


def run_nct(
    config: RunConfig, base: Path, out_dir: Path, *, resume: bool = False, progress: bool = True,
    log_every: int | None = None, stop_after: int | None = None,
) -> dict:
    """Run an NCT free-energy optimisation and write the run directory.

    Args:
        config: validated run config.
        base: directory relative file names in the config refer to.
        out_dir: run directory (created).
        resume: continue in ``out_dir`` (the config must be the same): the stored stages
            (harmonic Hessian, Gaussian, cubic force constants) are read back, and training
            continues from ``out_dir/checkpoints/state.npz`` or, for a run interrupted before its
            first checkpoint, starts at step 0.
        progress: show a progress bar with the running free energy.
        log_every: log a progress line (step, F, s/step, time left) every this many steps, for
            runs not attached to a terminal (0: about 20 lines per run; None: none; a progress
            bar takes precedence).
        stop_after: stop after this many steps (an interruption, for tests).

    Returns:
        The results dictionary also written to ``results.json``.

    Raises:
        ConfigError: resuming with a different config, or a run directory that holds another run.
    """
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoints" / "state.npz"
    # the stored stages count as a run too: a fresh start must not overwrite an hour of Gaussian
    # (found 2026-12-04: a second run started in a directory whose first run was still in its Gaussian stage)
    markers = ("checkpoints/state.npz", GAUSSIAN_PROGRESS, "gaussian_reference.npz", CUBIC_PROGRESS, "cubic_force_constants.npz",
               "results.json")
    # compared as validated configs, so fields added since (with their defaults) do not block a resume;
    # the device count may differ (results agree to round-off across device counts)
    start_run_dir(out_dir, config, base, resume, markers=markers, stored_config=read_run_config, ignore=("parallel",))

    t_start = time.perf_counter()
    nc = config.nct
    setup = prepare_nct(config, base, out_dir, resume)
    resume_training = resume and ckpt.is_file()
    if resume and not resume_training:
        log.info("%s: no training checkpoint yet; the stored stages are reused and training starts at step 0", out_dir)
    modes, basis, kT = setup.modes, setup.basis, setup.kT_eV
    n_atoms = len(setup.atoms)
    harmonic, gaussian, cubic, optimizer = setup.harmonic, setup.gaussian, setup.cubic, setup.optimizer
    f_harm = harmonic["harmonic_free_energy_eV_per_atom"]
    truncation = setup.truncation_eV_per_atom
    build_model = setup.build_model
    model = build_model(stress=nc.training_stress)
    if setup.pressure_eV_per_A3 is not None and not nc.training_stress:
        log.info("NPT: the strain follows the potential's strain derivative of %s samples per step by %s", nc.strain_samples or "all",
                 "central differences" if setup.strain_derivative == "central_difference" else "forward-mode autodiff")
    metrics_path = out_dir / "metrics.csv"

    bar = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]NCT[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                       TextColumn("{task.fields[status]}"), TimeRemainingColumn())
        task = bar.add_task("train", total=nc.steps, status="")
        bar.start()

    every = log_every if log_every else max(1, nc.steps // 20)
    seconds: list[float] = []

    def on_step(row):
        done = row["step"] + 1
        f_mev = row["free_energy"] / n_atoms * MEV_PER_EV
        if bar is not None:
            bar.update(task, completed=done, status=f"F = {f_mev:.3f} meV/atom")
        elif log_every is not None:
            seconds.append(row["seconds"])
            if done % every == 0 or done == nc.steps:
                per_step = float(np.median(seconds[-every:]))
                log.info("step %d/%d  F = %.4f meV/atom  %.3f s/step  about %.0f s left", done, nc.steps, f_mev, per_step, per_step * (nc.steps - done))

    try:
        result = train(
            model, optimizer, steps=nc.steps, seed=config.seed, checkpoint_path=ckpt,
            checkpoint_every=nc.checkpoint_every, resume=resume_training, max_rollbacks=nc.max_rollbacks,
            on_step=on_step, on_checkpoint=lambda h: _write_metrics(metrics_path, h, n_atoms),
            stop_after=stop_after, held=setup.held_parameters,
        )
    finally:
        if bar is not None:
            bar.stop()
    hist = result.history
    n_done = len(hist.get("step", ()))
    if n_done < nc.steps:
        return {"completed": False, "steps_done": n_done}

    window_start = int(nc.steps * (1.0 - nc.averaging_fraction))
    sel = hist["step"] >= window_start
    npt = setup.pressure_eV_per_A3 is not None
    names = ("free_energy", "energy", "kinetic", "potential", "entropy") + (("gibbs_free_energy",) if npt else ())
    trace = {k: blocking_stderr(hist[k][sel] / n_atoms) for k in names}
    if nc.eval_batches:
        t_eval = time.perf_counter()
        # the same estimators plus pressure and stress (one strain gradient per sample)
        batches = evaluate(build_model(stress=True), result.params, seed=config.seed, n_batches=nc.eval_batches)
        final = {k: _mean_stderr(batches[k] / n_atoms) for k in names}
        pressure = _mean_stderr(batches["pressure"] * GPA_PER_EV_PER_A3)
        stress = _mean_stderr_tensor(batches["stress"] * GPA_PER_EV_PER_A3)
        estimate = f"final evaluation at the trained parameters: {nc.eval_batches} batches of {nc.batch_size} fresh exact samples"
        eval_seconds = time.perf_counter() - t_eval
    else:
        final = {k: (trace[k].mean, trace[k].stderr) for k in names}
        estimate = f"training-trace average over the last {int(sel.sum())} steps (blocking error bars)"
        pressure = (None, None)
        if npt:  # NPT steps estimate the pressure anyway
            trace_p = blocking_stderr(hist["pressure"][sel] * GPA_PER_EV_PER_A3)
            pressure = (trace_p.mean, trace_p.stderr)
        stress = (None, None)
        eval_seconds = 0.0
    e0 = modes.energy0_eV
    npt_results = _npt_results(setup, result.params, final, n_atoms) if npt else {}
    # mean level per mode: exact (product spectrum) or from ancestral samples (autoregressive)
    mean_level = np.asarray(occupations.estimate_mean_levels(model.occupations, result.params[model.occupations.param_name], jax.random.PRNGKey(config.seed)))
    probs_h = np.asarray(occupations.probabilities(occupations.harmonic_logits(basis.phonon_energies_eV, kT, nc.n_levels)))
    levels = np.arange(nc.n_levels)
    results = {
        "completed": True,
        "estimate": estimate,
        "free_energy_eV_per_atom": final["free_energy"][0],
        "free_energy_stderr_eV_per_atom": final["free_energy"][1],
        "energy_eV_per_atom": final["energy"][0],
        "energy_stderr_eV_per_atom": final["energy"][1],
        "kinetic_energy_eV_per_atom": final["kinetic"][0],
        "kinetic_energy_stderr_eV_per_atom": final["kinetic"][1],
        "potential_energy_eV_per_atom": final["potential"][0],
        "potential_energy_stderr_eV_per_atom": final["potential"][1],
        "entropy_kB_per_atom": final["entropy"][0],
        "pressure_GPa": pressure[0],
        "pressure_stderr_GPa": pressure[1],
        "stress_GPa": stress[0],
        "stress_stderr_GPa": stress[1],
        **npt_results,
        "free_energy_trace_eV_per_atom": trace["free_energy"].mean,
        "free_energy_trace_stderr_eV_per_atom": trace["free_energy"].stderr,
        "static_energy_eV_per_atom": e0 / n_atoms,
        **harmonic,
        "basis_truncation_error_eV_per_atom": truncation,
        # NPT: F is at the trained cell, the harmonic and Gaussian references at the reference cell
        "anharmonic_correction_eV_per_atom": None if f_harm is None or npt else final["free_energy"][0] - f_harm,
        "reference": nc.reference.kind,
        **_gaussian_results(gaussian, final["free_energy"], n_atoms, npt),
        # the basis' centre minus the structure's positions (nct.reference.relax_centroid; else 0)
        "centroid_shift_max_A": float(np.linalg.norm(basis.reference_positions - modes.reference_positions, axis=1).max()),
        "flow": nc.flow.kind,
        "occupations": nc.occupations,
        **_cubic_results(cubic, gaussian, n_atoms),
        "temperature_K": config.state.temperature_K,
        "n_atoms": n_atoms,
        "n_modes": modes.n_modes,
        "n_imaginary_modes": int(modes.imaginary.sum()),
        "n_levels": nc.n_levels,
        "freeze_flow": nc.freeze_flow,
        "flow_trained": nc.flow.trainable and not nc.freeze_flow,
        "steps": nc.steps,
        "averaging_window_steps": int(sel.sum()),
        "blocking_block_size": trace["free_energy"].block_size,
        "seconds_per_step": result.seconds_per_step,
        "devices": n_devices(setup.mesh),
        "evaluation_seconds": eval_seconds,
        "wall_seconds": time.perf_counter() - t_start,
        "n_rollbacks": result.n_rollbacks,
        "notes": "per-atom values divide totals by n_atoms; the 3 uniform translations are not quantised (a known finite-size term)",
    }
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    if is_writer():  # process 0 of a multi-process run
        plots.plot_run_free_energy(out_dir)  # from the metrics.csv written at the final checkpoint
        plots.plot_occupations(out_dir / "occupations.png", basis.phonon_energies_eV * MEV_PER_EV, mean_level, probs_h @ levels)
    return results


def jax_device_summary() -> str:
    """One line naming the JAX backend and devices (for logs)."""
    return f"JAX {jax.__version__} on {jax.default_backend()}: {', '.join(str(d) for d in jax.devices())}"
