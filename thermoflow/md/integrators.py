"""Molecular-dynamics integrators: velocity Verlet (NVE) and Langevin BAOAB (NVT) with a
pluggable random force (white noise: classical Langevin; coloured noise: the quantum thermal bath).

Factories follow jax-md's pattern, ``make_*(...) -> (init_fn, step_fn)``, on one frozen
:class:`MDState` pytree that carries its RNG key and the noise source's state, so a block of
steps is one ``jax.lax.scan`` inside one jitted function (:func:`make_block_fn`) and a run
restarts exactly from the saved state. jax-md (not a dependency) has ``simulate.nve`` and
``simulate.nvt_langevin`` (BAOAB), but with white noise only, a fixed-box displacement API rather
than the project's ``energy_fn(positions, cell)`` contract, and no hook for a coloured random
force; ASE's ``VelocityVerlet`` / ``Langevin`` step on the host one step at a time. The few
integrator lines are therefore written here.

Units inside: eV, Angstrom, amu and the ASE time unit (Angstrom sqrt(amu/eV), about 10.18 fs),
so velocities are Angstrom per ASE time unit, as ASE's ``Atoms.get_velocities``. Factories take
the timestep in fs and the friction per ps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.md.barostat import Barostat, pressure_tensor
from thermoflow.potentials.base import EnergyFn, energy_forces_virial
from thermoflow.units import ASE_TIME_PER_FS, ASE_TIME_PER_PS, KB_EV_PER_K


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MDState:
    """The complete state of an MD run (a pytree; every leaf is an array).

    Attributes:
        positions: (n_atoms, 3) Cartesian positions, Angstrom (not wrapped into the cell).
        velocities: (n_atoms, 3) velocities, Angstrom per ASE time unit.
        cell: (3, 3) lattice vectors as rows, Angstrom (changes only under a barostat).
        forces: (n_atoms, 3) forces at ``positions``, eV/Angstrom.
        virial: (3, 3) virial W = -dU/d(strain) at ``positions`` and ``cell``, eV.
        potential_energy: () potential energy at ``positions``, eV.
        bath_energy: () energy the thermostat (and barostat) have added since the start, eV (the
            conserved quantity of a thermostatted run is total energy (+ P0 V) - bath_energy).
        step: () int, steps taken.
        key: (2,) uint32 raw PRNG key of the next step.
        noise: state of the random-force source (``()`` for NVE and white noise).
        neighbors: the potential's neighbour list (a
            :class:`thermoflow.potentials.neighbors.NeighborList`) when the integrator was made
            with ``neighbor_update_fn``, else ``()``. Not part of a checkpoint: drivers rebuild
            it from the positions.
    """

    positions: jax.Array
    velocities: jax.Array
    cell: jax.Array
    forces: jax.Array
    virial: jax.Array
    potential_energy: jax.Array
    bath_energy: jax.Array
    step: jax.Array
    key: jax.Array
    noise: Any
    neighbors: Any = ()

    def replace(self, **changes) -> "MDState":
        return dataclasses.replace(self, **changes)


class NoiseSource(NamedTuple):
    """A random force for the O step of :func:`make_langevin`.

    ``draw(noise_state, key, shape) -> (eta, noise_state)``: eta of ``shape`` (n_atoms, 3), sqrt(eV), the random
    force in units where white noise at temperature T has variance k_B T per component.
    ``observe(noise_state, velocities, kicks) -> noise_state``: sees each step's velocities
    before the O step and the velocity change the random force caused (both (n_atoms, 3),
    Angstrom / ASE time), for spectra and adaptation (identity for white noise).
    ``init(key) -> noise_state``.
    """

    init: Callable
    draw: Callable
    observe: Callable


def make_white_noise(kT_eV: float) -> NoiseSource:
    """Classical Langevin noise: independent Gaussians of variance ``kT_eV`` (eV) per component and
    step, so that the O step of :func:`make_langevin` is the exact Ornstein-Uhlenbeck update at T.
    Its state is empty (the integrator's key drives it)."""
    scale = float(np.sqrt(kT_eV))

    def draw(noise_state, key, shape=None):
        return scale * jax.random.normal(key, shape), noise_state

    return NoiseSource(init=lambda key: (), draw=draw, observe=lambda s, v, u: s)


def kinetic_energy(velocities: jax.Array, masses: jax.Array) -> jax.Array:
    """Kinetic energy sum_i m_i |v_i|^2 / 2, eV (velocities (n, 3) A/ASE time, masses (n,) amu)."""
    return 0.5 * jnp.sum(masses[:, None] * velocities**2)


def temperature_K(kinetic_energy_eV, n_dof: int):
    """Kinetic temperature 2 K / (n_dof k_B), K."""
    return 2.0 * kinetic_energy_eV / (n_dof * KB_EV_PER_K)


def maxwell_boltzmann_velocities(key: jax.Array, masses: jax.Array, kT_eV: float, remove_drift: bool = True) -> jax.Array:
    """Velocities (n_atoms, 3), A/ASE time, drawn from the Maxwell-Boltzmann distribution at
    ``kT_eV``; with ``remove_drift`` the centre-of-mass velocity is subtracted."""
    masses = jnp.asarray(masses)
    v = jax.random.normal(key, (masses.shape[0], 3)) * jnp.sqrt(kT_eV / masses)[:, None]
    return remove_centre_of_mass(v, masses) if remove_drift else v


def remove_centre_of_mass(velocities: jax.Array, masses: jax.Array) -> jax.Array:
    """Velocities minus the centre-of-mass velocity (zero total momentum), same shape."""
    return velocities - jnp.sum(masses[:, None] * velocities, axis=0) / jnp.sum(masses)


def has_virial(energy_fn: EnergyFn, positions: jax.Array, cell: jax.Array) -> bool:
    """Whether ``energy_fn`` can be differentiated with respect to the cell (traced, not run)."""
    try:
        jax.eval_shape(lambda x, c: energy_forces_virial(energy_fn, x, c), positions, cell)
    except NotImplementedError:
        return False
    return True


def _evaluate(energy_fn, neighbor_update_fn, positions, cell, neighbors, with_virial: bool):
    """Energy, forces, virial and the neighbour list (updated first, when there is one)."""
    if neighbor_update_fn is None:
        return (*energy_forces_virial(energy_fn, positions, cell, with_virial), neighbors)
    neighbors = neighbor_update_fn(neighbors, positions, cell)
    energy, force, w = energy_forces_virial(lambda x, h: energy_fn(x, h, neighbors), positions, cell, with_virial)
    return energy, force, w, neighbors


def _make_init(energy_fn: EnergyFn, cell, noise: NoiseSource | None, with_virial: bool, neighbor_update_fn=None):
    def init_fn(key: jax.Array, positions: jax.Array, velocities: jax.Array, neighbors: Any = ()) -> MDState:
        energy, force, w, neighbors = _evaluate(energy_fn, neighbor_update_fn, positions, jnp.asarray(cell, positions.dtype),
                                                neighbors, with_virial)
        key, noise_key = jax.random.split(key)
        return MDState(
            positions=positions, velocities=velocities, cell=jnp.asarray(cell, positions.dtype), forces=force, virial=w,
            potential_energy=energy,
            bath_energy=jnp.zeros((), positions.dtype), step=jnp.zeros((), jnp.int64), key=key,
            noise=() if noise is None else noise.init(noise_key), neighbors=neighbors,
        )

    return jax.jit(init_fn)  # eager, the potential's gradient costs seconds of op-by-op dispatch


def make_nve(energy_fn: EnergyFn, cell: jax.Array, masses: jax.Array, timestep_fs: float, with_virial: bool = True,
             neighbor_update_fn: Callable | None = None):
    """Velocity Verlet (microcanonical).

    Args:
        energy_fn: ``energy_fn(positions (n, 3) A, cell (3, 3) A) -> eV``.
        cell: (3, 3) lattice vectors as rows, Angstrom (fixed).
        masses: (n_atoms,) amu.
        timestep_fs: timestep, fs.
        with_virial: compute the virial (pressure) with the forces; False for a potential without
            cell derivatives (:func:`has_virial`).
        neighbor_update_fn: ``update(neighbors, positions, cell) -> neighbors`` of a neighbour
            list (:class:`thermoflow.potentials.neighbors.NeighborListFns` ``.update``): then
            ``energy_fn(positions, cell, neighbors) -> eV`` takes the list, which ``state.neighbors``
            carries and each force evaluation first updates (rebuilt when stale); pass the first
            list to ``init_fn``. None: ``energy_fn(positions, cell)``.

    Returns:
        ``(init_fn, step_fn)``: ``init_fn(key, positions, velocities[, neighbors]) -> MDState`` and
        ``step_fn(state) -> state``.

    Raises:
        ValueError: for a non-positive timestep.

    References: W. C. Swope, H. C. Andersen, P. H. Berens and K. R. Wilson, J. Chem. Phys. 76,
    637 (1982), doi:10.1063/1.442716.
    """
    if not timestep_fs > 0:
        raise ValueError(f"timestep must be positive, got {timestep_fs} fs")
    dt = timestep_fs * ASE_TIME_PER_FS
    inv_m = 1.0 / jnp.asarray(masses)[:, None]

    def step_fn(state: MDState) -> MDState:
        v = state.velocities + 0.5 * dt * state.forces * inv_m
        x = state.positions + dt * v
        energy, force, w, neighbors = _evaluate(energy_fn, neighbor_update_fn, x, state.cell, state.neighbors, with_virial)
        v = v + 0.5 * dt * force * inv_m
        return state.replace(positions=x, velocities=v, forces=force, virial=w, potential_energy=energy, step=state.step + 1,
                             neighbors=neighbors)

    return _make_init(energy_fn, cell, None, with_virial, neighbor_update_fn), step_fn


def ou_coefficient(timestep_fs: float, friction_per_ps: float) -> float:
    """c1 = exp(-gamma dt): the velocity factor of one O step (dimensionless)."""
    return float(np.exp(-friction_per_ps / ASE_TIME_PER_PS * timestep_fs * ASE_TIME_PER_FS))


def make_langevin(
    energy_fn: EnergyFn, cell: jax.Array, masses: jax.Array, timestep_fs: float, friction_per_ps: float,
    noise: NoiseSource, zero_net_force: bool = True, barostat: Barostat | None = None, with_virial: bool = True,
    neighbor_update_fn: Callable | None = None,
):
    """Langevin dynamics, BAOAB splitting, with the random force of ``noise`` (and optionally a barostat).

    One step: B (half kick), A (half drift), O (v <- c1 v + sqrt((1 - c1^2) / m) eta with
    c1 = exp(-gamma dt) and eta from ``noise``), A, new forces, B. With white noise of variance
    k_B T this samples the canonical distribution with configurational error O(dt^2) (and exactly
    for a harmonic potential in the limit of high friction); with the QTB's coloured eta the
    kinetic-energy spectrum follows theta(omega, T) instead of k_B T. With a ``barostat`` the
    step is B C A O A B: the stochastic cell rescaling C acts right after the first half kick,
    where the stored virial belongs to the current positions (NPT).

    Args:
        energy_fn: ``energy_fn(positions (n, 3) A, cell (3, 3) A) -> eV``.
        cell: (3, 3) lattice vectors as rows, Angstrom (fixed).
        masses: (n_atoms,) amu.
        timestep_fs: timestep, fs.
        friction_per_ps: friction gamma, 1/ps.
        noise: the random force (:func:`make_white_noise`, :func:`thermoflow.md.qtb.make_qtb_noise`).
        barostat: stochastic cell rescaling (:func:`thermoflow.md.barostat.make_stochastic_cell_rescaling`),
            or None for a fixed cell.
        with_virial: as :func:`make_nve` (a barostat needs it).
        neighbor_update_fn: as :func:`make_nve`.
        zero_net_force: remove the total random impulse (each atom's share in proportion to its
            mass), so the centre of mass is not heated; use False for a potential that is not
            translation invariant (an Einstein crystal, a single oscillator).

    Returns:
        ``(init_fn, step_fn)`` as :func:`make_nve`; ``state.bath_energy`` accumulates the kinetic
        energy the O steps add.

    Raises:
        ValueError: for a non-positive timestep or friction, or a barostat without the virial.

    References: B. Leimkuhler and C. Matthews, Appl. Math. Res. Express 2013, 34 (2013),
    doi:10.1093/amrx/abs010.
    """
    if not (timestep_fs > 0 and friction_per_ps > 0):
        raise ValueError(f"timestep and friction must be positive, got {timestep_fs} fs and {friction_per_ps} /ps")
    if barostat is not None and not with_virial:
        raise ValueError("a barostat needs the virial: the potential must be differentiable with respect to the cell")
    dt = timestep_fs * ASE_TIME_PER_FS
    masses = jnp.asarray(masses)
    inv_m = 1.0 / masses[:, None]
    c1 = ou_coefficient(timestep_fs, friction_per_ps)
    kick_scale = jnp.sqrt((1.0 - c1**2) * masses)[:, None]  # momentum per unit eta, sqrt(amu)
    mass_fraction = (masses / jnp.sum(masses))[:, None]

    def step_fn(state: MDState) -> MDState:
        key, noise_key, cell_key = jax.random.split(state.key, 3)
        v = state.velocities + 0.5 * dt * state.forces * inv_m  # B
        x, h, work = state.positions, state.cell, 0.0
        if barostat is not None:  # C
            x, v, h, work = barostat.rescale(cell_key, x, v, h, state.virial)
        x = x + 0.5 * dt * v  # A
        eta, noise_state = noise.draw(state.noise, noise_key, v.shape)  # O
        impulse = kick_scale * eta
        if zero_net_force:
            impulse = impulse - mass_fraction * jnp.sum(impulse, axis=0)
        kicks = impulse * inv_m
        v_new = c1 * v + kicks
        noise_state = noise.observe(noise_state, v, kicks)
        bath = state.bath_energy + work + kinetic_energy(v_new, masses) - kinetic_energy(v, masses)
        x = x + 0.5 * dt * v_new  # A
        energy, force, w, neighbors = _evaluate(energy_fn, neighbor_update_fn, x, h, state.neighbors, with_virial)
        v_new = v_new + 0.5 * dt * force * inv_m  # B
        return MDState(positions=x, velocities=v_new, cell=h, forces=force, virial=w, potential_energy=energy,
                       bath_energy=bath, step=state.step + 1, key=key, noise=noise_state, neighbors=neighbors)

    return _make_init(energy_fn, cell, noise, with_virial, neighbor_update_fn), step_fn


class BlockObservables(NamedTuple):
    """Per-step observables of a block of steps, each of shape (n_steps,): energies in eV
    (``potential_energy``, ``kinetic_energy``, ``bath_energy`` as in :class:`MDState`), ``volume``
    in A^3, ``pressure`` (instantaneous, kinetic + virial) in eV/A^3, and of shape (n_steps, 3): the
    diagonal of the pressure tensor ``pressure_diagonal`` (eV/A^3) and ``cell_lengths`` (A)."""

    potential_energy: jax.Array
    kinetic_energy: jax.Array
    bath_energy: jax.Array
    volume: jax.Array
    pressure: jax.Array
    pressure_diagonal: jax.Array
    cell_lengths: jax.Array


def observables(state: MDState, masses: jax.Array) -> BlockObservables:
    """The :class:`BlockObservables` of one state (scalars, and (3,) cell lengths)."""
    volume = jnp.abs(jnp.linalg.det(state.cell))
    diagonal = jnp.diagonal(pressure_tensor(state.velocities, masses, state.cell, state.virial))
    return BlockObservables(state.potential_energy, kinetic_energy(state.velocities, masses), state.bath_energy, volume,
                            jnp.mean(diagonal), diagonal, jnp.linalg.norm(state.cell, axis=1))


def make_block_fn(step_fn: Callable[[MDState], MDState], n_steps: int, masses: jax.Array):
    """``n_steps`` steps as one jitted ``lax.scan``.

    Returns:
        ``block_fn(state) -> (state, BlockObservables)``, the observables after each step.

    Raises:
        ValueError: if ``n_steps`` < 1.
    """
    if n_steps < 1:
        raise ValueError(f"a block needs at least one step, got {n_steps}")
    masses = jnp.asarray(masses)

    def body(state, _):
        state = step_fn(state)
        return state, observables(state, masses)

    @jax.jit
    def block_fn(state):
        return jax.lax.scan(body, state, None, length=n_steps)

    return block_fn
