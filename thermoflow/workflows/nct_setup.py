"""Everything an NCT run is built from, before training: structure, potential, harmonic modes,
the self-consistent Gaussian basis, the cubic force constants and the flow
(:func:`prepare_nct` -> :class:`NCTSetup`).

The Gaussian (``gaussian_reference.npz``) and the cubic force constants
(``cubic_force_constants.npz``) are computed once and stored in the run directory; a resumed run
or a post-processing command (``thermoflow spectrum``, ``thermoflow structure``) reads them back,
so it works in exactly the basis the run trained in.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from thermoflow.io.atomic import atomic_write_bytes
from thermoflow.nct.flow import Flow, identity_flow, make_realnvp
from thermoflow.nct.loss import make_free_energy_model, resolve_strain_derivative
from thermoflow.nct.quadratic import dimensionless_cubic_map, make_quadratic_flow, mode_orderings, perturbative_parameters
from thermoflow.nct.train import make_optimizer
from thermoflow.parallel import check_batch_divisible, make_batch_mesh, n_devices
from thermoflow.phonons.cubic import cubic_force_constants
from thermoflow.phonons.modes import HarmonicModes
from thermoflow.phonons.thermo import harmonic_thermodynamics
from thermoflow.units import GPA_PER_EV_PER_A3, KB_EV_PER_K, MEV_PER_EV
from thermoflow.workflows.build import build_modes
from thermoflow.workflows.config import ConfigError, RunConfig
from thermoflow.workflows.phonon_run import gaussian_from_config, harmonic_results, load_gaussian_basis

log = logging.getLogger(__name__)

#: the self-consistent Gaussian's iterations so far, in the run directory until the Gaussian is stored
GAUSSIAN_PROGRESS = "gaussian_progress.npz"
#: directory of the cubic force constants' sample groups while they are computed
CUBIC_PROGRESS = "cubic_progress"
_GAUSSIAN_SCALARS = ("free_energy_eV", "free_energy_stderr_eV", "energy_eV", "energy_stderr_eV", "entropy_kB")


def _gaussian_reference(config: RunConfig, energy_fn, modes: HarmonicModes, kT: float, path: Path, resume: bool, base: Path,
                        mesh: Mesh | None) -> dict:
    """The self-consistent Gaussian of the run: computed once, stored in the run directory and
    read back on resume (so a resumed run trains in exactly the same basis); until it is stored,
    its iterations are checkpointed in ``gaussian_progress.npz`` and a resume continues them."""
    if resume and path.is_file():
        with np.load(path) as data:
            scalars = {k: float(data[k]) for k in _GAUSSIAN_SCALARS}
        log.info("self-consistent Gaussian read from %s", path)
        return {"modes": load_gaussian_basis(path, modes), **scalars}
    # the iterations are checkpointed beside it: an interrupted run resumes them (an hour of Gaussian at ~100 atoms)
    progress = path.with_name(GAUSSIAN_PROGRESS)
    g = gaussian_from_config(config, energy_fn, modes, kT, base, mesh=mesh, progress_path=progress)
    out = {"modes": g.modes, **{k: getattr(g, k) for k in _GAUSSIAN_SCALARS}}
    buffer = io.BytesIO()
    np.savez(buffer, omega=g.modes.omega, modes=g.modes.modes, reference_positions=g.modes.reference_positions,
             energy0_eV=g.modes.energy0_eV, **{k: np.asarray(out[k]) for k in _GAUSSIAN_SCALARS})
    atomic_write_bytes(path, buffer.getvalue())
    progress.unlink(missing_ok=True)  # superseded by the stored Gaussian
    return out


def _cubic_reference(config: RunConfig, energy_fn, basis: HarmonicModes, kT: float, path: Path, resume: bool, mesh: Mesh | None) -> dict:
    """Gaussian-averaged cubic force constants of the basis and the bubble F3: computed once,
    stored in the run directory and read back on resume."""
    if resume and path.is_file():
        with np.load(path) as data:
            log.info("cubic force constants read from %s", path)
            return {k: (data[k] if k == "phi3" else float(data[k])) for k in data.files}
    # each sample group is stored as it is done (~20 min in all at fcc 108): an interrupted run resumes the groups
    progress = path.with_name(CUBIC_PROGRESS)
    c = cubic_force_constants(energy_fn, basis, kT, n_samples=config.nct.flow.cubic_samples, seed=config.seed,
                              chunk_size=config.nct.flow.cubic_chunk_size, mesh=mesh, progress_dir=progress)
    out = {"phi3": c.phi3, "bubble_free_energy_eV": c.bubble_free_energy_eV, "bubble_free_energy_stderr_eV": c.bubble_free_energy_stderr_eV}
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in out.items()})
    atomic_write_bytes(path, buffer.getvalue())
    shutil.rmtree(progress, ignore_errors=True)  # superseded by the stored force constants
    return out


#: above this many modes a trained perturbative quadratic flow is warned about (measured to degrade at 159 and 321)
_HELD_FLOW_ADVISED_MODES = 150


def configured_flow(config: RunConfig, n_modes: int) -> Flow:
    """The flow of ``[nct.flow]`` at its identity start (RealNVP, or the quadratic flow before
    its perturbative parameters), whatever ``nct.freeze_flow`` says."""
    fc = config.nct.flow
    if fc.kind == "realnvp":
        network_dtype = jnp.float32 if fc.network_precision == "float32" else None
        return make_realnvp(n_modes, fc.n_layers, fc.hidden, fc.max_log_scale, linear=fc.linear, network_dtype=network_dtype)
    return make_quadratic_flow(n_modes, fc.pairs, linear=fc.linear, seed=config.seed)


def _build_flow(config: RunConfig, energy_fn, basis: HarmonicModes, kT: float, out_dir: Path, resume: bool,
                mesh: Mesh | None = None) -> tuple[Flow, dict | None]:
    """The configured flow; a perturbative quadratic flow starts from first-order perturbation
    theory in the Gaussian-averaged cubic force constants (returned too, else None)."""
    fc = config.nct.flow
    if config.nct.freeze_flow:  # harmonic wavefunctions: no flow parameters to store, differentiate or checkpoint
        return identity_flow(basis.n_modes), None
    flow = configured_flow(config, basis.n_modes)
    if fc.kind == "realnvp" or fc.init == "identity":
        return flow, None
    cubic = _cubic_reference(config, energy_fn, basis, kT, out_dir / "cubic_force_constants.npz", resume, mesh)
    k_map = dimensionless_cubic_map(cubic["phi3"], basis.omega)
    init = perturbative_parameters(mode_orderings(basis.n_modes, fc.pairs, config.seed), k_map, linear=fc.linear)
    cubic["dropped_fraction"] = init.dropped_fraction
    if fc.trainable and basis.n_modes > _HELD_FLOW_ADVISED_MODES:
        log.warning(
            "training a quadratic flow of %d modes: in measured runs (lithium, 1 GPa, 159 and 321 modes) training raised "
            "F above its perturbative start, and holding it (nct.flow.trainable = false) was better and faster "
            "(docs/results/lithium.md)", basis.n_modes,
        )
    return dataclasses.replace(flow, init=lambda key: init.params), cubic


@dataclasses.dataclass
class NCTSetup:
    """Everything an NCT run is built from, before training (see :func:`prepare_nct`)."""

    config: RunConfig
    atoms: object
    energy_fn: object
    modes: HarmonicModes
    basis: HarmonicModes
    kT_eV: float
    harmonic: dict
    gaussian: dict | None
    cubic: dict | None
    flow: Flow
    optimizer: object
    truncation_eV_per_atom: float
    mesh: Mesh | None = None

    def build_model(self, stress: bool = False):
        """The free-energy model of the run (``stress``: with the pressure/stress estimators),
        its batch split over the devices of ``[parallel]``."""
        nc = self.config.nct
        return make_free_energy_model(
            self.energy_fn, self.basis, self.flow, kT_eV=self.kT_eV, n_levels=nc.n_levels, batch_size=nc.batch_size,
            laplacian=nc.laplacian, freeze_flow=nc.freeze_flow, clip_width=nc.clip_width,
            chunk_size=nc.chunk_size, stress=stress, pressure_eV_per_A3=self.pressure_eV_per_A3,
            strain_samples=nc.strain_samples, strain_derivative=self.strain_derivative, cell_strain=nc.cell_strain,
            occupations=nc.occupations, occupation_hidden=nc.occupation_hidden, mesh=self.mesh,
        )

    @property
    def strain_derivative(self) -> str:
        """``nct.strain_derivative`` with ``"auto"`` resolved: central differences for a compressed
        potential (energies from tables, derivatives through the network), forward mode otherwise."""
        return resolve_strain_derivative(self.config.nct.strain_derivative, self.energy_fn)

    @property
    def held_parameters(self) -> tuple[str, ...]:
        """Parameter groups kept at their start during training (a held flow, ``nct.flow.trainable``)."""
        return () if self.config.nct.flow.trainable else ("flow",)

    @property
    def pressure_eV_per_A3(self) -> float | None:
        """The external pressure of an NPT run, eV/A^3 (None: NVT)."""
        p = self.config.state.pressure_GPa
        return None if p is None else p / GPA_PER_EV_PER_A3


def prepare_nct(config: RunConfig, base: Path, out_dir: Path, resume: bool) -> NCTSetup:
    """Structure, potential, harmonic modes, the self-consistent Gaussian basis and the flow of
    an NCT run. The Gaussian and the cubic force constants are computed once and stored in
    ``out_dir``; with ``resume`` they are read back from there, so a resumed run (or a
    post-processing step) works in exactly the same basis."""
    nc = config.nct
    kT = KB_EV_PER_K * config.state.temperature_K
    try:
        mesh = make_batch_mesh(config.parallel.devices)
        check_batch_divisible(nc.batch_size, mesh, "nct.batch_size")
    except ValueError as err:
        raise ConfigError(f"parallel.devices: {err}") from None
    if mesh is not None:
        log.info("the batch of %d samples is split over %d devices (%s)", nc.batch_size, n_devices(mesh), mesh.devices.flat[0].platform)
    atoms, energy_fn, modes = build_modes(config, base, cache_dir=out_dir)
    n_atoms = len(atoms)
    if modes.imaginary.any():
        log.warning("%d imaginary harmonic mode(s): the basis uses |omega|; the flow must correct them", int(modes.imaginary.sum()))
    harmonic = harmonic_results(modes, kT)
    f_harm = harmonic["harmonic_free_energy_eV_per_atom"]
    gaussian = None
    basis = modes
    if nc.reference.kind == "scha":
        gaussian = _gaussian_reference(config, energy_fn, modes, kT, out_dir / "gaussian_reference.npz", resume, base, mesh)
        basis = gaussian["modes"]
        log.info(
            "self-consistent Gaussian: F = %.4f +- %.4f meV/atom (harmonic %s); phonon energies %.2f-%.2f meV (harmonic %.2f-%.2f)",
            gaussian["free_energy_eV"] / n_atoms * MEV_PER_EV, gaussian["free_energy_stderr_eV"] / n_atoms * MEV_PER_EV,
            "undefined" if f_harm is None else f"{f_harm * MEV_PER_EV:.4f}",
            basis.phonon_energies_eV.min() * MEV_PER_EV, basis.phonon_energies_eV.max() * MEV_PER_EV,
            modes.phonon_energies_eV.min() * MEV_PER_EV, modes.phonon_energies_eV.max() * MEV_PER_EV,
        )
    basis_full = harmonic_thermodynamics(basis.phonon_energies_eV, kT)
    basis_k = harmonic_thermodynamics(basis.phonon_energies_eV, kT, nc.n_levels)
    truncation = (basis_k.free_energy_eV - basis_full.free_energy_eV) / n_atoms
    if truncation > 5e-5:
        log.warning(
            "nct.n_levels = %d truncates the free energy of the basis oscillators by %.3f meV/atom at %g K: "
            "raise nct.n_levels for results converged in the basis",
            nc.n_levels, truncation * MEV_PER_EV, config.state.temperature_K,
        )
    flow, cubic = _build_flow(config, energy_fn, basis, kT, out_dir, resume, mesh)
    if cubic is not None:
        log.info(
            "cubic force constants (Gaussian average, %d samples): bubble F3 = %.4f +- %.4f meV/atom; "
            "the perturbative flow holds %.1f %% of the first-order map",
            nc.flow.cubic_samples, cubic["bubble_free_energy_eV"] / n_atoms * MEV_PER_EV,
            cubic["bubble_free_energy_stderr_eV"] / n_atoms * MEV_PER_EV, 100 * (1 - cubic["dropped_fraction"]),
        )

    optimizer = make_optimizer(
        nc.optimizer, nc.learning_rate, schedule=nc.schedule, steps=nc.steps,
        final_fraction=nc.final_lr_fraction, warmup_steps=nc.warmup_steps,
        grad_clip_norm=nc.grad_clip_norm, flow_scale=nc.flow.flow_learning_rate_scale,
        strain_scale=nc.strain_learning_rate / nc.learning_rate,
    )
    return NCTSetup(
        config=config, atoms=atoms, energy_fn=energy_fn, modes=modes, basis=basis, kT_eV=kT,
        harmonic=harmonic, gaussian=gaussian, cubic=cubic, flow=flow, optimizer=optimizer,
        truncation_eV_per_atom=truncation, mesh=mesh,
    )
