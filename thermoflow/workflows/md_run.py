"""The MD workflow: config -> run directory (``thermoflow md CONFIG``).

Run directory layout::

    config.resolved.toml      the validated config, defaults filled in
    run_info.json             the directory the config's relative file names refer to
    thermo.csv                every md.thermo_every steps: step, time, kinetic temperature, energies per atom,
                              instantaneous pressure (kinetic + virial), volume per atom and cell lengths
    trajectory.extxyz         every md.trajectory_every steps (positions, velocities, energy, forces; ase.io.read(..., index=':'))
    checkpoints/state.npz     the complete MD state (positions, velocities, forces, RNG key, QTB noise buffer,
                              adQTB state, step) and the byte lengths of thermo.csv / trajectory.extxyz at that step
    results.json              means over the final md.averaging_fraction with blocking error bars, speed
    fdt_deviation.csv/.png    qtb / adqtb: the fluctuation-dissipation deviation spectrum and gamma_r / gamma per species

A resumed run (``resume=True``) truncates thermo.csv and trajectory.extxyz to the checkpoint and
continues from the saved state; on CPU it reproduces the uninterrupted run bit for bit (the same
compiled block of steps runs on the same state).

Neighbour lists (``md.neighbor_list``): the state carries a cell-list list that each force
evaluation first updates (rebuilt inside the jitted block when stale, :mod:`thermoflow.potentials.neighbors`),
so the trajectory equals the dense one to round-off. A block whose list overflowed its static
capacities (NaN energies) runs again from its start with larger ones. The list is not
checkpointed, its capacities are (metadata): at every checkpoint the run rebuilds it from the
checkpointed state, as a resumed run does, so resuming stays bit for bit.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.io.atomic import atomic_write_text
from thermoflow.io.checkpoint import load_latest_checkpoint, save_checkpoint
from thermoflow.md import integrators
from thermoflow.md.barostat import Barostat, is_lower_triangular, make_stochastic_cell_rescaling, static_bulk_modulus_GPa
from thermoflow.md.qtb import deviation_spectrum, make_qtb_noise
from thermoflow.potentials.neighbors import allocate_neighbor_list, make_neighbor_list
from thermoflow.potentials.pair import with_fresh_neighbors
from thermoflow.structures.build import closest_pair
from thermoflow.units import GPA_PER_EV_PER_A3, KB_EV_PER_K
from thermoflow.workflows.build import build_neighbor_energy, build_potential, build_structure
from thermoflow.workflows.run_dir import start_run_dir
from thermoflow.workflows.md_config import NEIGHBOR_LIST_MIN_ATOMS, MDRunConfig

log = logging.getLogger(__name__)

THERMO_COLUMNS = (
    "step", "time_ps", "temperature_K", "potential_energy_eV_per_atom", "kinetic_energy_eV_per_atom",
    "total_energy_eV_per_atom", "conserved_energy_eV_per_atom", "pressure_GPa", "volume_A3_per_atom",
    "cell_a_A", "cell_b_A", "cell_c_A",
)


class MDSetup:
    """Structure, potential, species, degrees of freedom and the jitted block of steps of an MD run.

    Raises:
        ValueError: a potential that is not finite at the structure (and the errors of the builders).
    """

    def __init__(self, config: MDRunConfig, base: Path):
        md = config.md
        self.config = config
        self.atoms = build_structure(config.structure, base)
        if md.ensemble == "npt" and md.barostat == "triclinic" and not is_lower_triangular(self.atoms.cell.array):
            standard, _ = self.atoms.cell.standard_form()
            self.atoms.set_cell(standard, scale_atoms=True)  # a rotation: same lengths, angles and scaled positions
            log.info("md.barostat = 'triclinic': the cell is rotated into the standard lower-triangular form (a along x, "
                     "b in the xy plane); positions, trajectory and forces are in that frame")
        self.symbols = list(dict.fromkeys(self.atoms.get_chemical_symbols()))
        self.species = np.array([self.symbols.index(s) for s in self.atoms.get_chemical_symbols()])
        self.masses = jnp.asarray(self.atoms.get_masses())
        self.cell = jnp.asarray(self.atoms.cell.array)
        self.n_atoms = len(self.atoms)
        self.n_dof = 3 * self.n_atoms - (3 if md.zero_net_force else 0)
        self.kT = KB_EV_PER_K * config.state.temperature_K
        positions = jnp.asarray(self.atoms.get_positions())
        self.neighbor_energy_fn, self.neighbor_fns, self.cutoff_A = None, None, None
        neighbor = None
        if md.neighbor_list == "cell_list" or (md.neighbor_list == "auto" and self.n_atoms >= NEIGHBOR_LIST_MIN_ATOMS):
            try:
                neighbor = build_neighbor_energy(config, self.atoms, base, md.neighbor_skin_A)
            except NotImplementedError as err:
                if md.neighbor_list == "cell_list":
                    raise ValueError(f"md.neighbor_list = 'cell_list': {err}; set md.neighbor_list = 'dense'") from err
                log.info("dense neighbours: %s", err)
        if neighbor is None:
            self.energy_fn = build_potential(config, self.atoms, base)
        else:
            self.neighbor_energy_fn, self.cutoff_A = neighbor
            self.neighbor_fns = allocate_neighbor_list(positions, self.cell, self.cutoff_A, md.neighbor_skin_A)
            # the set-up (finite check, bulk modulus) evaluates the contract energy on a fresh list: the dense sum may not fit
            self.energy_fn = with_fresh_neighbors(self.neighbor_energy_fn, self.neighbor_fns)
            log.info("cell-list neighbour lists: cutoff %g + skin %g A, %s cells, %d neighbours and %d atoms per cell reserved",
                     self.cutoff_A, md.neighbor_skin_A, self.neighbor_fns.n_cells, self.neighbor_fns.max_neighbors,
                     self.neighbor_fns.max_atoms_per_cell)
        _check_finite(self.energy_fn, self.atoms)
        self.with_virial = integrators.has_virial(self.energy_fn, positions, self.cell)
        self.barostat, self.compressibility_per_GPa = None, None
        if md.ensemble == "npt":
            self.barostat = self._make_barostat(positions, self.with_virial)
        self.noise = None
        if md.ensemble != "nve":
            if md.thermostat == "langevin":
                self.noise = integrators.make_white_noise(self.kT)
            else:
                self.noise = make_qtb_noise(
                    self.kT, md.timestep_fs, md.friction_per_ps, self.masses, self.species, cutoff_THz=md.cutoff_THz,
                    filter_length=md.qtb_filter_length, adaptive=md.thermostat == "adqtb",
                    adaptation_rate_per_ps=md.adqtb_rate_per_ps, kernel_oversampling=md.qtb_kernel_oversampling,
                )
        self._compiled: dict = {}
        self.init_fn, self.block_fn, self.build_fn = self._integrator(self.neighbor_fns)

    def _integrator(self, neighbor_fns):
        """``(init_fn, block_fn, build_fn)`` for one neighbour-list allocation (None: dense), cached
        per static capacities so that an allocation seen before reuses its compiled block."""
        key = None if neighbor_fns is None else neighbor_fns[3:]
        if key in self._compiled:
            return self._compiled[key]
        md = self.config.md
        energy_fn, update, build = self.energy_fn, None, None
        if neighbor_fns is not None:
            energy_fn, update, build = self.neighbor_energy_fn, neighbor_fns.update, jax.jit(neighbor_fns.build)
        if md.ensemble == "nve":
            init_fn, step_fn = integrators.make_nve(energy_fn, self.cell, self.masses, md.timestep_fs, with_virial=self.with_virial,
                                                    neighbor_update_fn=update)
        else:
            init_fn, step_fn = integrators.make_langevin(
                energy_fn, self.cell, self.masses, md.timestep_fs, md.friction_per_ps, self.noise, zero_net_force=md.zero_net_force,
                barostat=self.barostat, with_virial=self.with_virial, neighbor_update_fn=update,
            )
        self._compiled[key] = init_fn, integrators.make_block_fn(step_fn, md.trajectory_every, self.masses), build
        return self._compiled[key]

    def fresh_neighbors(self, positions: jax.Array, cell: jax.Array, grow: bool = False):
        """A list built at ``positions`` and ``cell`` with the current capacities, grown (x1.5, the
        block functions switched) with ``grow`` and for as long as it overflows. Dense runs: ``()``."""
        if self.neighbor_fns is None:
            return ()
        while True:
            if grow:
                self._use(allocate_neighbor_list(positions, cell, self.cutoff_A, self.config.md.neighbor_skin_A,
                                                 previous=self.neighbor_fns))
            neighbors = self.build_fn(positions, cell)
            if not bool(neighbors.overflow):
                return neighbors
            grow = True

    def _use(self, neighbor_fns) -> None:
        self.neighbor_fns = neighbor_fns
        self.init_fn, self.block_fn, self.build_fn = self._integrator(neighbor_fns)

    def attach_neighbors(self, state: integrators.MDState, grow: bool = False, capacity: dict | None = None) -> integrators.MDState:
        """``state`` with a :meth:`fresh_neighbors` list, in the capacities ``capacity`` if given
        (:meth:`capacity` of a checkpoint). Dense runs: ``state`` unchanged."""
        if self.neighbor_fns is None:
            return state
        if grow:
            log.info("neighbour list overflow after step %d: the block runs again with larger capacities", int(state.step))
        if capacity is not None:
            self._use(make_neighbor_list(self.cutoff_A, self.config.md.neighbor_skin_A,
                                         **{k: tuple(v) if isinstance(v, list) else v for k, v in capacity.items()}))
        return state.replace(neighbors=self.fresh_neighbors(state.positions, state.cell, grow))

    def capacity(self) -> dict | None:
        """The static shapes of the neighbour-list allocation (checkpoint metadata); None for dense runs."""
        fns = self.neighbor_fns
        return None if fns is None else {"max_neighbors": fns.max_neighbors, "max_atoms_per_cell": fns.max_atoms_per_cell,
                                         "n_cells": list(fns.n_cells), "search": list(fns.search)}

    def overflowed(self, state: integrators.MDState) -> bool:
        """Whether the state's neighbour list ran out of capacity (always False for dense runs)."""
        return self.neighbor_fns is not None and bool(state.neighbors.overflow)

    def _make_barostat(self, positions, with_virial: bool) -> Barostat:
        md = self.config.md
        if not with_virial:
            raise ValueError("md.ensemble = 'npt' needs the virial, but this potential has no cell derivatives (an ASE "
                             "calculator without 'stress'?)")
        cell = np.asarray(self.cell)
        if md.barostat == "orthorhombic" and np.abs(cell - np.diag(np.diag(cell))).max() > 1e-8 * np.abs(cell).max():
            raise ValueError(f"md.barostat = 'orthorhombic' needs a cell with its axes along x, y, z (diagonal); this cell is "
                             f"{cell.round(6).tolist()}: use md.barostat = 'isotropic'")
        beta = md.compressibility_per_GPa
        if beta is None:
            modulus = static_bulk_modulus_GPa(self.energy_fn, positions, self.cell)
            beta = 1.0 / modulus
            log.info("barostat compressibility 1 / B = %.4g 1/GPa (static bulk modulus %.4g GPa at the initial structure)", beta, modulus)
        self.compressibility_per_GPa = beta
        return make_stochastic_cell_rescaling(md.barostat, self.config.state.pressure_GPa, self.kT, md.timestep_fs,
                                              md.barostat_time_ps, beta, self.masses)

    def initial_state(self) -> integrators.MDState:
        """The state at step 0: the structure's positions, Maxwell-Boltzmann velocities at T (seeded)."""
        key, velocity_key = jax.random.split(jax.random.PRNGKey(self.config.seed))
        velocities = integrators.maxwell_boltzmann_velocities(velocity_key, self.masses, self.kT, remove_drift=self.config.md.zero_net_force)
        positions = jnp.asarray(self.atoms.get_positions())
        neighbors = self.fresh_neighbors(positions, self.cell)  # allocated for this structure
        return self.init_fn(key, positions, velocities, neighbors)


def _check_finite(energy_fn, atoms: Atoms) -> None:
    energy = float(jax.jit(energy_fn)(jnp.asarray(atoms.get_positions()), jnp.asarray(atoms.cell.array)))
    if not np.isfinite(energy):
        d, i, j = closest_pair(atoms)
        raise ValueError(f"the potential energy is not finite at the initial structure (closest atoms {i} and {j} are {d:.3f} A apart)")


def _thermo_rows(setup: MDSetup, first_step: int, obs: integrators.BlockObservables) -> str:
    """thermo.csv rows of the steps of ``obs`` that fall on md.thermo_every; the conserved energy
    is E_pot + E_kin (+ P0 V at constant pressure) - the energy the baths added."""
    md, n = setup.config.md, setup.n_atoms
    p0 = 0.0 if setup.barostat is None else setup.barostat.target_pressure
    columns = [np.atleast_1d(np.asarray(a)) for a in (obs.potential_energy, obs.kinetic_energy, obs.bath_energy, obs.volume, obs.pressure)]
    lengths = np.asarray(obs.cell_lengths).reshape(-1, 3)
    lines = []
    for i, (p, k, b, v, pressure) in enumerate(zip(*columns)):
        step = first_step + i
        if step % md.thermo_every:
            continue
        t = step * md.timestep_fs / 1000.0
        temperature = 2.0 * k / (setup.n_dof * KB_EV_PER_K)
        conserved = (p + k + p0 * v - b) / n
        a, b_len, c = lengths[i]
        lines.append(f"{step},{t:.6f},{temperature:.10g},{p / n:.12g},{k / n:.12g},{(p + k) / n:.12g},{conserved:.12g},"
                     f"{pressure * GPA_PER_EV_PER_A3:.10g},{v / n:.12g},{a:.10g},{b_len:.10g},{c:.10g}\n")
    return "".join(lines)


def _frame(setup: MDSetup, state: integrators.MDState) -> str:
    atoms = setup.atoms.copy()
    atoms.set_cell(np.asarray(state.cell))
    atoms.set_positions(np.asarray(state.positions))
    atoms.set_velocities(np.asarray(state.velocities))
    atoms.calc = SinglePointCalculator(atoms, energy=float(state.potential_energy), forces=np.asarray(state.forces))
    step = int(state.step)
    atoms.info.update(step=step, time_ps=step * setup.config.md.timestep_fs / 1000.0)
    buffer = io.StringIO()
    atoms.write(buffer, format="extxyz")
    return buffer.getvalue()


def _append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


def run_md(
    config: MDRunConfig, base: Path, out_dir: Path, *, resume: bool = False, log_every: int | None = 0,
    stop_after: int | None = None,
) -> dict:
    """Run molecular dynamics and write the run directory (layout in the module docstring).

    Args:
        config: validated MD run config.
        base: directory relative file names in the config refer to.
        out_dir: run directory (created).
        resume: continue from ``out_dir/checkpoints/state.npz``; the config must be the same.
        log_every: log a progress line (step, T, E_pot, ns/day) every this many steps (0: about 20
            lines per run; None: none).
        stop_after: stop after this many steps of this invocation (an interruption, for tests).

    Returns:
        The results dictionary also written to ``results.json`` (``{"completed": False, ...}`` when stopped early).

    Raises:
        ConfigError: resuming with a different config, or a directory that already holds a run.
        FileNotFoundError: resuming without a checkpoint.
        CheckpointError: no usable checkpoint, or one cannot be written.
        ValueError: a potential that is not finite at the structure, or an npt run the potential
            or cell cannot serve.
        FloatingPointError: a non-finite energy during the run (the run directory is kept up to the
            last checkpoint).
    """
    md = config.md
    out_dir = Path(out_dir)
    ckpt = out_dir / "checkpoints" / "state.npz"
    thermo_path, traj_path = out_dir / "thermo.csv", out_dir / "trajectory.extxyz"
    start_run_dir(out_dir, config, base, resume, markers=("checkpoints/state.npz", "thermo.csv"))

    setup = MDSetup(config, base)
    state = setup.initial_state()
    if resume:
        state, meta, _, used = load_latest_checkpoint(ckpt, state.replace(neighbors=()))
        state = setup.attach_neighbors(state, capacity=meta.get("neighbor_capacity"))
        for path, size in ((thermo_path, meta["thermo_bytes"]), (traj_path, meta["trajectory_bytes"])):
            os.truncate(path, size)
        log.info("resumed from %s at step %d", used.name, int(state.step))
    else:
        thermo_path.write_text(",".join(THERMO_COLUMNS) + "\n")
        traj_path.write_text("")
        _append(thermo_path, _thermo_rows(setup, 0, integrators.observables(state, setup.masses)))
        _append(traj_path, _frame(setup, state))

    every = log_every if log_every else max(md.trajectory_every, md.steps // 20)
    start_step, t_loop, timed_steps, timed_seconds = int(state.step), time.perf_counter(), 0, 0.0
    step = start_step
    while step < md.steps and (stop_after is None or step - start_step < stop_after):
        t0 = time.perf_counter()
        new_state, obs = setup.block_fn(state)
        if setup.overflowed(new_state):
            state = setup.attach_neighbors(state, grow=True)
            continue
        state = new_state
        pot, kin = np.asarray(obs.potential_energy), np.asarray(obs.kinetic_energy)
        if step > start_step:  # the first block includes compilation
            timed_steps, timed_seconds = timed_steps + md.trajectory_every, timed_seconds + time.perf_counter() - t0
        if not (np.all(np.isfinite(pot)) and np.all(np.isfinite(kin))):
            raise FloatingPointError(
                f"non-finite energy between steps {step} and {step + md.trajectory_every}: atoms too close, or (npt) the cell "
                f"shrank below what the potential's periodic images cover (volume {float(obs.volume[-1]) / setup.n_atoms:.4g} "
                f"A^3/atom). The run directory is kept up to the last checkpoint; lower md.timestep_fs or raise "
                "md.barostat_time_ps and --resume, or start again with --out elsewhere"
            )
        _append(thermo_path, _thermo_rows(setup, step + 1, obs))
        step += md.trajectory_every
        _append(traj_path, _frame(setup, state))
        if step % md.checkpoint_every == 0 or step == md.steps:
            meta = {"step": step, "thermo_bytes": thermo_path.stat().st_size, "trajectory_bytes": traj_path.stat().st_size,
                    "neighbor_capacity": setup.capacity()}
            save_checkpoint(ckpt, state.replace(neighbors=()), meta)
            state = setup.attach_neighbors(state)  # rebuilt from the checkpointed state, as a resumed run does
        if log_every is not None and (step % every < md.trajectory_every or step == md.steps):
            rate = _ns_per_day(md.timestep_fs, timed_steps, timed_seconds)
            log.info("step %d/%d  T = %.1f K  E_pot = %.6f eV/atom  %s ns/day", step, md.steps,
                     2.0 * float(kin[-1]) / (setup.n_dof * KB_EV_PER_K), float(pot[-1]) / setup.n_atoms,
                     "-" if rate is None else f"{rate:.3g}")
    if step < md.steps:
        return {"completed": False, "steps_done": step}
    results = _results(setup, state, out_dir, thermo_path, timed_steps, timed_seconds, time.perf_counter() - t_loop)
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2) + "\n")
    return results


def _split_unit(column: str) -> tuple[str, str]:
    """``"pressure_GPa"`` -> ``("pressure", "GPa")``; the unit starts at the first unit token."""
    parts = column.split("_")
    for i, part in enumerate(parts):
        if part in ("K", "eV", "GPa", "A3", "A"):
            return "_".join(parts[:i]), "_".join(parts[i:])
    raise ValueError(f"column {column!r} names no unit")


def _ns_per_day(timestep_fs: float, steps: int, seconds: float) -> float | None:
    return None if seconds <= 0 else steps * timestep_fs * 1e-6 / (seconds / 86400.0)


def _results(setup: MDSetup, state, out_dir: Path, thermo_path: Path, timed_steps: int, timed_seconds: float, wall: float) -> dict:
    md = setup.config.md
    table = np.loadtxt(thermo_path, delimiter=",", skiprows=1, ndmin=2)
    columns = dict(zip(THERMO_COLUMNS, table.T))
    window = columns["step"] > md.steps * (1.0 - md.averaging_fraction)
    results = {"completed": True, "ensemble": md.ensemble, "thermostat": md.thermostat if md.ensemble == "nvt" else None,
               "n_atoms": setup.n_atoms, "n_degrees_of_freedom": setup.n_dof, "target_temperature_K": setup.config.state.temperature_K,
               "steps": md.steps, "timestep_fs": md.timestep_fs, "averaged_rows": int(window.sum())}
    for name in THERMO_COLUMNS[2:]:
        b = blocking_stderr(columns[name][window])
        quantity, unit = _split_unit(name)
        results["temperature_mean_K" if name == "temperature_K" else name] = b.mean
        results[f"{quantity}_stderr_{unit}"] = b.stderr
    if setup.barostat is not None:
        results.update(target_pressure_GPa=setup.config.state.pressure_GPa, barostat=md.barostat,
                       barostat_compressibility_per_GPa=setup.compressibility_per_GPa)
    slope = np.polyfit(columns["time_ps"], columns["conserved_energy_eV_per_atom"], 1)[0] if len(table) > 2 else 0.0
    results["conserved_energy_drift_eV_per_atom_per_ps"] = float(slope)
    results["ns_per_day"] = _ns_per_day(md.timestep_fs, timed_steps, timed_seconds)
    results["seconds_per_step"] = timed_seconds / timed_steps if timed_steps else None
    results["wall_seconds"] = wall
    results["notes"] = ("temperature_K is the kinetic temperature 2 E_kin / (n_dof k_B); with qtb/adqtb it includes the "
                        "zero-point motion and exceeds the bath temperature. pressure_GPa is the instantaneous pressure "
                        "(virial + kinetic from the velocities: with qtb/adqtb the quantum kinetic pressure). At constant "
                        "pressure the conserved energy counts the barostat's work to first order in each step's strain")
    if md.ensemble != "nve" and md.thermostat != "langevin":
        spectra = deviation_spectrum(state.noise, md.cutoff_THz, md.timestep_fs)
        _write_deviation(out_dir, spectra, setup.symbols, md.friction_per_ps, md.cutoff_THz)
        band = spectra["frequency_THz"] < md.cutoff_THz
        results["fdt_relative_deviation_rms"] = {s: float(np.sqrt(np.mean(spectra["relative_deviation"][i, band] ** 2)))
                                                 for i, s in enumerate(setup.symbols)}
        results["qtb_segments"] = int(state.noise.n_segments)
    return results


def _write_deviation(out_dir: Path, spectra: dict, symbols: list[str], friction_per_ps: float, cutoff_THz: float) -> None:
    """fdt_deviation.csv and fdt_deviation.png: relative deviation and gamma_r per species."""
    freq = spectra["frequency_THz"]
    header = ["frequency_THz"] + [f"relative_fdt_deviation_{s}" for s in symbols] + [f"gamma_r_{s}_per_ps" for s in symbols]
    rows = np.column_stack([freq, *spectra["relative_deviation"], *(spectra["gamma_ratio"] * friction_per_ps)])
    buffer = io.StringIO()
    np.savetxt(buffer, rows, delimiter=",", header=",".join(header), comments="", fmt="%.8g")
    atomic_write_text(out_dir / "fdt_deviation.csv", buffer.getvalue())
    from thermoflow.workflows.plots import plot_fdt_deviation  # matplotlib only when needed

    plot_fdt_deviation(out_dir / "fdt_deviation.png", spectra, symbols, friction_per_ps, cutoff_THz)
