"""Variational free energy of N identical classical particles with a periodic flow (:mod:`thermoflow.flows.periodic`).

For a normalised density p(X) of the positions in the cell (volume V) and a potential U(X), the
Gibbs-Bogoliubov-Feynman variational principle gives

    F[p] = E_{X ~ p}[ k_B T ln p(X) + U(X) ] + k_B T ( 3N ln lambda + ln N! )  >=  F,

with equality for the Boltzmann density p = exp(-U / k_B T) / Z. The constant term is written out:
integrating the momenta gives 3N ln lambda with the thermal de Broglie wavelength
lambda = sqrt(2 pi hbar^2 / (m k_B T)), and ln N! counts identical particles (classical
indistinguishability). Derived outputs: the energy E = (3/2) N k_B T + <U>, the entropy
S = (E - F) / T, and the virial pressure P = (N k_B T + tr<W> / 3) / V (W = -dU/d(strain),
:func:`thermoflow.potentials.base.virial`); for the variational density P is an estimate, exact at
the optimum. With U = 0 and the identity flow F is the exact ideal-gas free energy with zero variance.

The base distribution of the flow is uniform in the cell (p(X) = det(1 + dg/dX) / V^N) or the
Boltzmann density of a base potential U_b at the same temperature, p(X) = exp(-U_b(Z) / k_B T) det(1 +
dg/dX) / Z_b with Z = X + g(X), whose configurational integral ln Z_b the caller supplies (from
annealed importance sampling, :mod:`thermoflow.flows.ais`, with its error bar, which then adds to F's):
a cheap potential (e.g. a machine-learned one) carries the packing and the flow learns the correction.

The gradient with respect to the flow parameters is the score-function (REINFORCE) estimator
grad F = E_p[(f(X) - b) grad ln p(X)], f = k_B T ln p + U, with the batch mean as baseline b (the
term E_p[grad ln p] = 0 drops); samples come from Metropolis walkers carried from step to step.

This is the classical half of the deep variational free energy of dense hydrogen (the electrons
supply U(X) there, :mod:`thermoflow.electrons`); on its own it gives the free energy of classical
particles on any thermoflow potential.

References: H. Xie et al., Phys. Rev. Lett. 131, 126501 (2023), arXiv:2209.06095; R. P. Feynman,
Statistical Mechanics (1972), ch. 3 (variational principle); R. J. Williams, Machine Learning 8,
229 (1992), doi:10.1007/BF00992696 (score-function gradients); D. Wu, L. Wang and P. Zhang, Phys.
Rev. Lett. 122, 080602 (2019), doi:10.1103/PhysRevLett.122.080602 (variational free energy with
generative models).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from thermoflow.flows.periodic import PeriodicFlow
from thermoflow.flows.sampling import Walkers, init_walkers, make_metropolis_block, wrap
from thermoflow.optimize import clip_to_median
from thermoflow.potentials.base import EnergyFn, energy_forces_virial
from thermoflow.units import HBAR_EV, KB_EV_PER_K

#: bounds of the Metropolis step size (length unit of the cell)
STEP_SIZE_BOUNDS = (1e-4, 10.0)


def thermal_wavelength(mass_amu: float, temperature_K: float) -> float:
    """lambda = sqrt(2 pi hbar^2 / (m k_B T)), Angstrom, for a mass in amu.

    Raises:
        ValueError: a non-positive mass or temperature.
    """
    if not (mass_amu > 0 and temperature_K > 0):
        raise ValueError(f"mass and temperature must be positive, got {mass_amu} amu and {temperature_K} K")
    return math.sqrt(2.0 * math.pi * HBAR_EV**2 / (mass_amu * KB_EV_PER_K * temperature_K))


def ideal_constant(n_particles: int, mass_amu: float, temperature_K: float) -> float:
    """k_B T (3N ln lambda + ln N!), eV: the momentum integral and the identical-particle count of F."""
    kT = KB_EV_PER_K * temperature_K
    return kT * (3 * n_particles * math.log(thermal_wavelength(mass_amu, temperature_K)) + math.lgamma(n_particles + 1))


@dataclasses.dataclass(frozen=True)
class ClassicalFreeEnergy:
    """The variational free energy of the module docstring as pure functions.

    Attributes:
        flow: the :class:`PeriodicFlow`.
        log_density: ``(params, X (N, 3)) -> (sign, ln p(X))``: the flow's density on its base.
        kT_eV: thermal energy.
        constant_eV: :func:`ideal_constant` (added to every F).
        local_free_energy: ``(params, X (N, 3)) -> (f, U, sign)``: f = k_B T ln p + U (eV), U (eV), the
            sign of the flow's Jacobian determinant.
        loss: ``(params, positions (W, N, 3)) -> (surrogate, metrics)``; ``jax.grad`` of the surrogate
            is the score-function estimator of grad F; metrics (eV, cell totals): ``free_energy``,
            ``free_energy_stderr`` (plain, for independent samples), ``energy``, ``potential``,
            ``entropy`` (k_B), ``negative_jacobians`` (fraction of samples with a negative determinant),
            ``jacobian_norm_max`` (the largest ||dg/dX||_2 over the samples).
        potential_and_pressure: ``(positions (W, N, 3)) -> (U (W,) eV, P (W,) eV/A^3)``: per-sample potential
            energies and virial pressures from one backward pass of the potential each.
    """

    flow: PeriodicFlow
    log_density: Callable
    kT_eV: float
    constant_eV: float
    local_free_energy: Callable
    loss: Callable
    potential_and_pressure: Callable


def lipschitz_penalty(norms: jax.Array, kT: float, bound: float, weight: float) -> jax.Array:
    """k_B T x weight x mean((||dg/dX||_2 - bound)_+^2) over samples: the soft i-ResNet condition that keeps the flow from
    folding (||dg/dX||_2 < 1 implies det(1 + dg/dX) > 0; :mod:`thermoflow.flows.periodic`), in the units of kT.

    References: J. Behrmann et al., ICML 2019, arXiv:1811.00995.
    """
    return kT * weight * jnp.mean(jnp.square(jnp.maximum(norms - bound, 0.0)))


def make_base_correction(flow: PeriodicFlow, kT: float, base_energy_fn: EnergyFn | None = None,
                         base_log_partition: float | None = None) -> Callable:
    """``with_base(params, X, ln p_uniform) -> ln p``: the flow's log density on its uniform base (``flow.log_density``,
    ln det(1 + dg/dX) - N ln V) turned into that on the Boltzmann density of ``base_energy_fn`` at k_B T:
    ln p(X) = ln det(1 + dg/dX) - U_b(Z) / k_B T - ln Z_b with Z = X + g(X) wrapped into the cell. The identity
    without a base potential. Lengths and energies in the units of the flow's cell and of ``kT`` (the base potential
    and ln Z_b in the same units).

    Raises:
        ValueError: a base potential without its ln Z_b, or ln Z_b without a potential.
    """
    if (base_energy_fn is None) != (base_log_partition is None):
        raise ValueError("a base potential needs its ln Z (base_log_partition), and ln Z needs the base potential")
    if base_energy_fn is None:
        return lambda params, x, log_p: log_p
    cell = jnp.asarray(flow.cell)
    log_volume = flow.n_particles * float(np.log(flow.volume))

    def with_base(params, x, log_p):
        z = wrap(flow.forward(params, x), cell)
        return log_p + log_volume - base_energy_fn(z, cell) / kT - base_log_partition

    return with_base


def make_classical_free_energy(energy_fn: EnergyFn, flow: PeriodicFlow, *, temperature_K: float, mass_amu: float,
                               clip_width: float | None = 5.0, base_energy_fn: EnergyFn | None = None,
                               base_log_partition: float | None = None, lipschitz_bound: float | None = None,
                               lipschitz_weight: float = 100.0) -> ClassicalFreeEnergy:
    """The model of the module docstring.

    Args:
        energy_fn: ``(positions (N, 3) A, cell (3, 3) A) -> eV``.
        flow: :func:`thermoflow.flows.periodic.make_periodic_flow` of the same cell (Angstrom).
        temperature_K: T.
        mass_amu: the particles' mass (all identical).
        clip_width: the gradient's f values are clipped to median +- width x mean absolute deviation
            (None: no clipping); the reported F is never clipped.
        base_energy_fn: the base potential U_b (same signature as ``energy_fn``); None: uniform base.
        base_log_partition: ln of the integral of exp(-U_b / k_B T) over the cell^N (lengths in
            Angstrom), required with ``base_energy_fn``.
        lipschitz_bound: with a value c (0 < c < 1), the gradient's loss adds :func:`lipschitz_penalty`: samples
            where the backflow's Jacobian has a spectral norm above c are pulled back (folding prevention);
            None: no penalty. The reported F never includes it.
        lipschitz_weight: the penalty's weight (in units of k_B T per unit squared excess).

    Raises:
        ValueError: non-positive temperature or mass; a base potential without its ln Z_b; a Lipschitz bound outside (0, 1).
    """
    if lipschitz_bound is not None and not 0.0 < lipschitz_bound < 1.0:
        raise ValueError(f"lipschitz_bound must lie in (0, 1), got {lipschitz_bound}")
    kT = KB_EV_PER_K * temperature_K
    constant = ideal_constant(flow.n_particles, mass_amu, temperature_K)
    cell = jnp.asarray(flow.cell)
    n = flow.n_particles
    with_base = make_base_correction(flow, kT, base_energy_fn, base_log_partition)

    def log_density(params, x):
        sign, log_p = flow.log_density(params, x)
        return sign, with_base(params, x, log_p)

    def log_density_and_norm(params, x):
        sign, log_p, norm = flow.log_density_and_norm(params, x)
        return sign, with_base(params, x, log_p), norm

    def local_free_energy(params, x):
        sign, log_p = log_density(params, x)
        potential = energy_fn(x, cell)
        return kT * log_p + potential, potential, sign

    def loss(params, positions):
        batch = positions.shape[0]
        sign, log_p, norm = jax.vmap(log_density_and_norm, in_axes=(None, 0))(params, positions)
        potential = jax.vmap(energy_fn, in_axes=(0, None))(positions, cell)
        f = kT * jax.lax.stop_gradient(log_p) + potential
        used = clip_to_median(f, clip_width)
        surrogate = jnp.mean(jax.lax.stop_gradient(used - jnp.mean(used)) * log_p)
        if lipschitz_bound is not None:
            surrogate = surrogate + lipschitz_penalty(norm, kT, lipschitz_bound, lipschitz_weight)
        free_energy = jnp.mean(f) + constant
        energy = 1.5 * n * kT + jnp.mean(potential)
        metrics = {
            "free_energy": free_energy,
            "free_energy_stderr": jnp.std(f) / jnp.sqrt(batch),
            "energy": energy,
            "potential": jnp.mean(potential),
            "entropy": (energy - free_energy) / kT,
            "negative_jacobians": jnp.mean(sign < 0),
            "jacobian_norm_max": jnp.max(norm),
        }
        return surrogate, metrics

    def potential_and_pressure(positions):
        potential, _, w = jax.vmap(lambda x: energy_forces_virial(energy_fn, x, cell))(positions)
        return potential, (n * kT + jnp.trace(w, axis1=-2, axis2=-1) / 3.0) / flow.volume

    return ClassicalFreeEnergy(flow=flow, log_density=log_density, kT_eV=kT, constant_eV=constant, local_free_energy=local_free_energy, loss=loss,
                               potential_and_pressure=potential_and_pressure)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class FlowState:
    """Everything a training step reads and writes (one pytree, checkpointed whole).

    Attributes:
        params: flow parameters.
        opt_state: optax state.
        positions: (n_walkers, N, 3) Metropolis walkers, A.
        step_size: Metropolis step size, A.
        step: index of the next step; step t draws its randomness from ``fold_in(key, t)``.
        key: the run's base key.
        lr_scale: multiplies the updates (halved by each rollback of :func:`thermoflow.optimize.optimise`).
    """

    params: Any
    opt_state: Any
    positions: jax.Array
    step_size: jax.Array
    step: jax.Array
    key: jax.Array
    lr_scale: jax.Array


def initial_state(model: ClassicalFreeEnergy, transform: optax.GradientTransformation, key: jax.Array, n_walkers: int,
                  step_size: float, positions: jax.Array | None = None) -> FlowState:
    """Parameters at the identity flow; walkers at ``positions`` (n_walkers, N, 3), e.g. the final walkers of
    the base's annealed importance sampling, or uniform in the cell (None)."""
    k_params, k_pos = jax.random.split(key)
    params = model.flow.init(k_params)
    if positions is None:
        positions = jax.random.uniform(k_pos, (n_walkers, model.flow.n_particles, 3)) @ jnp.asarray(model.flow.cell)
    return FlowState(params=params, opt_state=transform.init(params), positions=jnp.asarray(positions),
                     step_size=jnp.asarray(step_size, jnp.float64), step=jnp.asarray(0, jnp.int32), key=key,
                     lr_scale=jnp.asarray(1.0, jnp.float64))


def make_train_step(model: ClassicalFreeEnergy, *, learning_rate: float, n_mcmc_steps: int,
                    target_acceptance: float = 0.5) -> tuple[Callable, optax.GradientTransformation]:
    """``(step(state) -> (state, metrics, finite), optax.adam)`` for :func:`thermoflow.optimize.optimise`:
    a Metropolis block of ``n_mcmc_steps`` moves at the current parameters, the loss and its
    gradient on the walkers, one Adam update, and the step size moved towards the target
    acceptance (sigma exp(acceptance - target)). Metrics: those of ``model.loss`` (before the
    update) plus ``acceptance`` and ``step_size``.
    """
    transform = optax.adam(learning_rate)
    block = make_metropolis_block(lambda p, x: model.log_density(p, x)[1], model.flow.cell, n_mcmc_steps)

    @jax.jit
    def step(state: FlowState):
        key = jax.random.fold_in(state.key, state.step)
        walkers = init_walkers(lambda p, x: model.log_density(p, x)[1], state.params, state.positions)
        walkers, acceptance = block(walkers, state.params, key, state.step_size)
        (_, metrics), grads = jax.value_and_grad(model.loss, has_aux=True)(state.params, walkers.positions)
        updates, opt_state = transform.update(grads, state.opt_state, state.params)
        updates = jax.tree.map(lambda u: state.lr_scale * u, updates)
        params = optax.apply_updates(state.params, updates)
        step_size = jnp.clip(state.step_size * jnp.exp(acceptance - target_acceptance), *STEP_SIZE_BOUNDS)
        metrics = {**metrics, "acceptance": acceptance, "step_size": state.step_size}
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((params, metrics))]))
        new = dataclasses.replace(state, params=params, opt_state=opt_state, positions=walkers.positions,
                                  step_size=step_size, step=state.step + 1)
        return new, metrics, finite

    return step, transform


def evaluate(model: ClassicalFreeEnergy, params, positions: jax.Array, key: jax.Array, *, n_blocks: int, n_mcmc_steps: int,
             step_size: float, return_positions: bool = False) -> dict[str, Any]:
    """F, E, S and P at frozen parameters from ``n_blocks`` Metropolis blocks.

    Returns a dict (eV, k_B, eV/A^3; cell totals): ``free_energy``, ``energy``, ``potential``,
    ``entropy``, ``pressure``, each with ``*_stderr`` (the plain standard error of the block means:
    right when the blocks are longer than the chain's autocorrelation time), ``blocks`` (the per-block
    series of each, for a blocking analysis), ``acceptance``, ``negative_jacobians``; with
    ``return_positions`` also ``positions``, the walkers after the last block (n_walkers, N, 3).

    Raises:
        ValueError: ``n_blocks`` < 2.
    """
    if n_blocks < 2:
        raise ValueError(f"blocking error bars need at least two blocks, got {n_blocks}")
    log_density = lambda p, x: model.log_density(p, x)[1]  # noqa: E731
    block = make_metropolis_block(log_density, model.flow.cell, n_mcmc_steps)
    walkers: Walkers = init_walkers(log_density, params, positions)
    signs = jax.jit(jax.vmap(lambda p, x: model.log_density(p, x)[0], in_axes=(None, 0)))
    potential_and_pressure = jax.jit(model.potential_and_pressure)
    rows = []
    for b in range(n_blocks):
        walkers, acceptance = block(walkers, params, jax.random.fold_in(key, b), step_size)
        potential, pressure = potential_and_pressure(walkers.positions)
        f = model.kT_eV * walkers.log_density + potential  # the walkers carry ln p at their positions
        rows.append([float(jnp.mean(f)), float(jnp.mean(potential)), float(jnp.mean(pressure)),
                     float(acceptance), float(jnp.mean(signs(params, walkers.positions) < 0))])
    rows = np.asarray(rows)
    n, kT = model.flow.n_particles, model.kT_eV
    free = rows[:, 0] + model.constant_eV
    energy = 1.5 * n * kT + rows[:, 1]
    series = {"free_energy": free, "energy": energy, "potential": rows[:, 1], "entropy": (energy - free) / kT, "pressure": rows[:, 2]}
    out: dict[str, Any] = {"blocks": series}
    for name, values in series.items():
        out[name] = float(np.mean(values))
        out[name + "_stderr"] = float(np.std(values, ddof=1) / np.sqrt(len(values)))
    out["acceptance"] = float(np.mean(rows[:, 3]))
    out["negative_jacobians"] = float(np.mean(rows[:, 4]))
    if return_positions:
        out["positions"] = walkers.positions
    return out
