"""VMC optimisation on the shared driver (:mod:`thermoflow.optimize`) and the final evaluation.

The whole optimisation state is one pytree, :class:`VMCState` (parameters, optimiser state,
walkers, Metropolis step size, step, key, learning-rate scale), so a checkpoint holds everything
a step reads and a resumed run repeats the uninterrupted one exactly. One jitted step: a
Metropolis block of ``n_mcmc_steps`` moves per walker (randomness from ``fold_in(key, step)``),
the local energies, the update (Adam on the VMC gradient, :func:`thermoflow.electrons.vmc.energy_gradient`,
or minSR, :func:`thermoflow.electrons.natural_gradient.min_sr_direction`), and the step size
moved towards the target acceptance, sigma exp(acceptance - target), inside the jit.

The reported energies come from :func:`evaluate`, at frozen parameters: ``n_blocks`` Metropolis
blocks, the walker means of the local energy and its kinetic and potential parts per block, and
blocking error bars over the blocks (consecutive blocks are correlated when a block is shorter
than the autocorrelation time: blocking accounts for it).

References: Foulkes et al., Rev. Mod. Phys. 73, 33 (2001), doi:10.1103/RevModPhys.73.33 (VMC);
S. Sorella, Phys. Rev. Lett. 80, 4558 (1998), doi:10.1103/PhysRevLett.80.4558 and A. Chen and
M. Heyl, Nat. Phys. 20, 1476 (2024), arXiv:2302.01941 (SR, minSR); H. Flyvbjerg and H. G.
Petersen, J. Chem. Phys. 91, 461 (1989), doi:10.1063/1.457480 (blocking).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from thermoflow.electrons import mcmc
from thermoflow.electrons.natural_gradient import log_derivatives, min_sr_direction
from thermoflow.electrons.vmc import CLIP_WIDTH, energy_gradient, make_sampler, map_walkers

OPTIMIZERS = ("adam", "minsr")

#: bounds of the Metropolis step size, bohr
STEP_SIZE_BOUNDS = (1e-3, 10.0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class VMCState:
    """Everything a VMC step reads and writes, as one pytree.

    Attributes:
        params: wavefunction parameters.
        opt_state: optax state (Adam) or ``()`` (minSR).
        electrons: (n_walkers, n_e, 3) walker positions, bohr.
        step_size: Metropolis step size, bohr (scalar).
        step: index of the next step (int scalar); step t samples with ``fold_in(key, t)``.
        key: the run's base key.
        lr_scale: multiplies the updates (halved by each rollback of the driver).
    """

    params: Any
    opt_state: Any
    electrons: jax.Array
    step_size: jax.Array
    step: jax.Array
    key: jax.Array
    lr_scale: jax.Array


def initial_state(params, optimizer: optax.GradientTransformation | None, electrons: jax.Array, key: jax.Array,
                  step_size: float) -> VMCState:
    """The state before step 0 (``optimizer`` None for minSR)."""
    return VMCState(
        params=params, opt_state=() if optimizer is None else optimizer.init(params), electrons=jnp.asarray(electrons),
        step_size=jnp.asarray(step_size, jnp.float64), step=jnp.asarray(0, jnp.int32), key=key,
        lr_scale=jnp.asarray(1.0, jnp.float64),
    )


def make_train_step(log_psi: Callable, local_energy: Callable, protons: jax.Array, *, optimizer: str, learning_rate: float,
                    n_mcmc_steps: int, damping: float = 1e-3, clip_width: float | None = CLIP_WIDTH,
                    target_acceptance: float = 0.5, chunk_size: int | None = None) -> tuple[Callable, optax.GradientTransformation | None]:
    """``(step(state) -> (state, metrics, finite), optax transformation or None)`` for :func:`thermoflow.optimize.optimise`.

    Args:
        log_psi: ``(params, electrons (n_e, 3), protons) -> (sign or phase, ln|psi|)``.
        local_energy: ``(params, electrons, protons) -> LocalEnergy`` (Hartree).
        protons: (n_p, 3) bohr (n_p = 0: jellium).
        optimizer: ``"adam"`` or ``"minsr"`` (update ``-learning_rate x (S + damping)^-1 g``).
        learning_rate: Adam's rate, or minSR's tau.
        n_mcmc_steps: Metropolis moves per walker per step.
        damping: minSR diagonal shift.
        clip_width: local-energy clipping of the Adam gradient (None: none).
        target_acceptance: the step size is tuned towards it.
        chunk_size: local energies of this many walkers at a time (None: all at once).

    Metrics (Hartree units, cell totals): ``energy``, ``energy_imaginary``, ``variance``,
    ``acceptance``, ``step_size`` (bohr, before the step's update).

    Raises:
        ValueError: an unknown optimiser.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    sample = make_sampler(log_psi, local_energy, n_mcmc_steps, chunk_size)
    transform = optax.adam(learning_rate) if optimizer == "adam" else None

    def update(state: VMCState, electrons, e_loc):
        if transform is not None:
            grads = energy_gradient(log_psi, state.params, electrons, protons, e_loc, clip_width=clip_width)
            updates, opt_state = transform.update(grads, state.opt_state, state.params)
            updates = jax.tree.map(lambda u: state.lr_scale * u, updates)
            return optax.apply_updates(state.params, updates), opt_state
        per_sample, unravel = log_derivatives(log_psi, state.params, electrons, protons)
        flat, _ = ravel_pytree(state.params)
        return unravel(flat - state.lr_scale * learning_rate * min_sr_direction(per_sample, e_loc, damping)), state.opt_state

    @jax.jit
    def step(state: VMCState):
        walkers = mcmc.WalkerState(state.electrons, jnp.zeros(state.electrons.shape[0]), jax.random.fold_in(state.key, state.step))
        walkers, e_loc, acceptance = sample(state.params, walkers, protons, state.step_size)
        params, opt_state = update(state, walkers.electrons, e_loc)
        mean = jnp.mean(e_loc)
        metrics = {"energy": jnp.real(mean), "energy_imaginary": jnp.imag(mean), "variance": jnp.var(e_loc),
                   "acceptance": acceptance, "step_size": state.step_size}
        finite = jnp.all(jnp.isfinite(jnp.real(e_loc))) & jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))
        step_size = jnp.clip(state.step_size * jnp.exp(acceptance - target_acceptance), *STEP_SIZE_BOUNDS)
        new = dataclasses.replace(state, params=params, opt_state=opt_state, electrons=walkers.electrons,
                                  step_size=step_size, step=state.step + 1)
        return new, metrics, finite

    return step, transform


def equilibrate(log_psi: Callable, params, electrons: jax.Array, protons: jax.Array, key: jax.Array, step_size: float, *,
                n_blocks: int, n_mcmc_steps: int, target_acceptance: float = 0.5) -> tuple[jax.Array, float, float]:
    """Burn in the walkers at fixed ``params``: ``n_blocks`` Metropolis blocks, the step size tuned
    after each. Returns (electrons, step size bohr, acceptance of the last block)."""
    block = mcmc.make_metropolis_block(log_psi, n_mcmc_steps)
    state = mcmc.init_walkers(log_psi, params, electrons, protons, key)
    acceptance = float("nan")
    for _ in range(n_blocks):
        state, acc = block(state, params, protons, step_size)
        acceptance = float(acc)
        step_size = mcmc.tune_step_size(step_size, acceptance, target_acceptance, STEP_SIZE_BOUNDS)
    return state.electrons, step_size, acceptance


def evaluate(log_psi: Callable, local_energy: Callable, params, electrons: jax.Array, protons: jax.Array, key: jax.Array,
             step_size: float, *, n_blocks: int, n_mcmc_steps: int, chunk_size: int | None = None) -> dict[str, np.ndarray]:
    """Walker means per Metropolis block at frozen ``params``: ``total``, ``kinetic`` (real parts),
    ``potential``, ``imaginary`` (Im E_loc), ``variance`` of E_loc, ``acceptance``; each (n_blocks,),
    Hartree per cell. Average with :func:`thermoflow.analysis.statistics.blocking_stderr`.

    Raises:
        ValueError: ``n_blocks`` < 2.
    """
    if n_blocks < 2:
        raise ValueError(f"an evaluation needs at least 2 blocks for an error bar, got {n_blocks}")
    block = mcmc.make_metropolis_block(log_psi, n_mcmc_steps)
    parts = jax.jit(lambda xs: map_walkers(lambda x: local_energy(params, x, protons), xs, chunk_size))
    state = mcmc.init_walkers(log_psi, params, electrons, protons, key)
    rows = []
    for _ in range(n_blocks):
        state, acceptance = block(state, params, protons, step_size)
        e = parts(state.electrons)
        rows.append({"total": np.mean(np.real(e.total)), "kinetic": np.mean(np.real(e.kinetic)), "potential": np.mean(e.potential),
                     "imaginary": np.mean(np.imag(e.total)), "variance": np.var(np.asarray(e.total)), "acceptance": float(acceptance)})
    return {k: np.asarray([r[k] for r in rows], dtype=np.float64) for k in rows[0]}
