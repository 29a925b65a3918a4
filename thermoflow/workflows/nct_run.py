"""The NCT workflow: config -> run directory (resolved config, metrics, results, checkpoints, plots).

Run directory layout::

    config.resolved.toml   the validated config, defaults filled in
    metrics.csv            one row per step (units in column names), rewritten at checkpoints
    results.json           final values with error bars
    checkpoints/state.npz  params, optimiser state, step, metrics so far (atomic writes)
    free_energy.png, occupations.png
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from pathlib import Path

import jax
import numpy as np
import tomli_w

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.nct import occupations
from thermoflow.nct.flow import make_realnvp
from thermoflow.nct.loss import make_free_energy_model
from thermoflow.nct.train import make_optimizer, train
from thermoflow.phonons.thermo import harmonic_thermodynamics
from thermoflow.units import KB_EV_PER_K, MEV_PER_EV
from thermoflow.workflows import plots
from thermoflow.workflows.build import build_modes
from thermoflow.workflows.config import ConfigError, RunConfig

log = logging.getLogger(__name__)

#: metric name (a total over the crystal, eV) -> CSV column (divided by n_atoms)
_PER_ATOM_COLUMNS = {
    "free_energy": "free_energy_eV_per_atom",
    "energy": "energy_eV_per_atom",
    "energy_stderr": "energy_batch_stderr_eV_per_atom",
    "kinetic": "kinetic_eV_per_atom",
    "potential": "potential_eV_per_atom",
}


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_metrics(path: Path, history: dict, n_atoms: int) -> None:
    columns = ["step"] + list(_PER_ATOM_COLUMNS.values()) + ["entropy_kB_per_atom", "local_energy_variance_eV2", "lr_scale", "seconds"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for i in range(len(history.get("step", []))):
        row = [int(history["step"][i])]
        row += [history[k][i] / n_atoms for k in _PER_ATOM_COLUMNS]
        row += [history["entropy"][i] / n_atoms, history["local_energy_variance"][i], history["lr_scale"][i], history["seconds"][i]]
        writer.writerow(row)
    _atomic_write_text(path, buffer.getvalue())


def _config_toml(config: RunConfig) -> str:
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


def run_nct(config: RunConfig, base: Path, out_dir: Path, *, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> dict:
    """Run an NCT free-energy optimisation and write the run directory.

    Args:
        config: validated run config.
        base: directory relative file names in the config refer to.
        out_dir: run directory (created).
        resume: continue from ``out_dir/checkpoints/state.npz``; the config must be the same.
        progress: show a progress bar with the running free energy.
        stop_after: stop after this many steps (an interruption, for tests).

    Returns:
        The results dictionary also written to ``results.json``.

    Raises:
        ConfigError: resuming with a different config, or a run directory that holds another run.
        FileNotFoundError: resuming without a checkpoint.
    """
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoints" / "state.npz"
    resolved = out_dir / "config.resolved.toml"
    text = _config_toml(config)
    if resume:
        if not resolved.is_file() or resolved.read_text() != text:
            raise ConfigError(f"cannot resume in {out_dir}: its config.resolved.toml is missing or differs from this config")
    elif ckpt.exists():
        raise ConfigError(f"{out_dir} already holds a run (checkpoints/state.npz); use --resume or another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(resolved, text)

    nc = config.nct
    kT = KB_EV_PER_K * nc.temperature_K
    atoms, energy_fn, modes = build_modes(config, base)
    n_atoms = len(atoms)
    if modes.imaginary.any():
        log.warning("%d imaginary harmonic mode(s): the basis uses |omega|; the flow must correct them", int(modes.imaginary.sum()))
    harm = harmonic_thermodynamics(modes.phonon_energies_eV, kT)
    harm_k = harmonic_thermodynamics(modes.phonon_energies_eV, kT, nc.n_levels)
    truncation = (harm_k.free_energy_eV - harm.free_energy_eV) / n_atoms
    if truncation > 5e-5:
        log.warning(
            "nct.n_levels = %d truncates the harmonic free energy by %.3f meV/atom at %g K: "
            "raise nct.n_levels for results converged in the basis",
            nc.n_levels, truncation * MEV_PER_EV, nc.temperature_K,
        )
    flow = make_realnvp(modes.n_modes, nc.flow.n_layers, nc.flow.hidden, nc.flow.max_log_scale)
    model = make_free_energy_model(
        energy_fn, modes, flow, kT_eV=kT, n_levels=nc.n_levels, batch_size=nc.batch_size,
        laplacian=nc.laplacian, freeze_flow=nc.freeze_flow, clip_width=nc.clip_width,
        chunk_size=nc.chunk_size,
    )
    optimizer = make_optimizer(
        nc.optimizer, nc.learning_rate, schedule=nc.schedule, steps=nc.steps,
        final_fraction=nc.final_lr_fraction, warmup_steps=nc.warmup_steps,
        grad_clip_norm=nc.grad_clip_norm,
    )
    metrics_path = out_dir / "metrics.csv"

    bar = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]NCT[/]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                       TextColumn("{task.fields[status]}"), TimeRemainingColumn())
        task = bar.add_task("train", total=nc.steps, status="")
        bar.start()

    def on_step(row):
        if bar is not None:
            bar.update(task, completed=row["step"] + 1, status=f"F = {row['free_energy'] / n_atoms * MEV_PER_EV:.3f} meV/atom")

    t0 = time.perf_counter()
    try:
        result = train(
            model, optimizer, steps=nc.steps, seed=config.seed, checkpoint_path=ckpt,
            checkpoint_every=nc.checkpoint_every, resume=resume, max_rollbacks=nc.max_rollbacks,
            on_step=on_step, on_checkpoint=lambda h: _write_metrics(metrics_path, h, n_atoms),
            stop_after=stop_after,
        )
    finally:
        if bar is not None:
            bar.stop()
    wall = time.perf_counter() - t0
    hist = result.history
    n_done = len(hist["step"])
    if n_done < nc.steps:
        return {"completed": False, "steps_done": n_done}

    window_start = int(nc.steps * (1.0 - nc.averaging_fraction))
    sel = hist["step"] >= window_start
    stats = {k: blocking_stderr(hist[k][sel] / n_atoms) for k in ("free_energy", "energy", "kinetic", "potential", "entropy")}
    e0 = modes.energy0_eV
    probs = np.asarray(occupations.probabilities(result.params["logits"]))
    probs_h = np.asarray(occupations.probabilities(occupations.harmonic_logits(modes.phonon_energies_eV, kT, nc.n_levels)))
    levels = np.arange(nc.n_levels)
    results = {
        "completed": True,
        "free_energy_eV_per_atom": stats["free_energy"].mean,
        "free_energy_stderr_eV_per_atom": stats["free_energy"].stderr,
        "energy_eV_per_atom": stats["energy"].mean,
        "energy_stderr_eV_per_atom": stats["energy"].stderr,
        "kinetic_energy_eV_per_atom": stats["kinetic"].mean,
        "kinetic_energy_stderr_eV_per_atom": stats["kinetic"].stderr,
        "potential_energy_eV_per_atom": stats["potential"].mean,
        "potential_energy_stderr_eV_per_atom": stats["potential"].stderr,
        "entropy_kB_per_atom": stats["entropy"].mean,
        "static_energy_eV_per_atom": e0 / n_atoms,
        "harmonic_free_energy_eV_per_atom": (e0 + harm.free_energy_eV) / n_atoms,
        "harmonic_free_energy_truncated_eV_per_atom": (e0 + harm_k.free_energy_eV) / n_atoms,
        "harmonic_truncation_error_eV_per_atom": truncation,
        "harmonic_energy_eV_per_atom": (e0 + harm.energy_eV) / n_atoms,
        "harmonic_entropy_kB_per_atom": harm.entropy_kB / n_atoms,
        "harmonic_zero_point_energy_eV_per_atom": harm.zero_point_energy_eV / n_atoms,
        "anharmonic_correction_eV_per_atom": stats["free_energy"].mean - (e0 + harm.free_energy_eV) / n_atoms,
        "temperature_K": nc.temperature_K,
        "n_atoms": n_atoms,
        "n_modes": modes.n_modes,
        "n_imaginary_modes": int(modes.imaginary.sum()),
        "n_levels": nc.n_levels,
        "freeze_flow": nc.freeze_flow,
        "steps": nc.steps,
        "averaging_window_steps": int(sel.sum()),
        "blocking_block_size": stats["free_energy"].block_size,
        "seconds_per_step": result.seconds_per_step,
        "wall_seconds": wall,
        "n_rollbacks": result.n_rollbacks,
        "notes": "per-atom values divide totals by n_atoms; the 3 uniform translations are not quantised (a known finite-size term)",
    }
    _atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    plots.plot_run_free_energy(out_dir)  # from the metrics.csv written at the final checkpoint
    plots.plot_occupations(out_dir / "occupations.png", modes.phonon_energies_eV * MEV_PER_EV, probs @ levels, probs_h @ levels)
    return results


def jax_device_summary() -> str:
    """One line naming the JAX backend and devices (for logs)."""
    return f"JAX {jax.__version__} on {jax.default_backend()}: {', '.join(str(d) for d in jax.devices())}"
