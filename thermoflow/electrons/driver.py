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
import functools
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


def make_wavefunction_update(log_psi: Callable, *, optimizer: str, learning_rate: float, damping: float = 1e-3,
                             clip_width: float | None = CLIP_WIDTH) -> tuple[Callable, optax.GradientTransformation | None]:
    """``(update, optax transformation or None)``: one optimiser step of a wavefunction conditioned on the protons
    on the mean energy over proton configurations, traced inside a jitted step.

    ``update(params, opt_state, lr_scale, electrons (B, W, n_e, 3), configurations (B, n_p, 3), e_loc (B, W))
    -> (params, opt_state)``: Adam on the mean over the B configurations of the VMC gradient
    (:func:`thermoflow.electrons.vmc.energy_gradient`, each configuration centred on its own mean), or minSR
    (``-learning_rate x (S + damping)^-1 g``) with the log derivatives and local energies centred within each
    configuration. Shared by the VMC driver (B = 1, or an ensemble) and the joint proton-electron training of
    :mod:`thermoflow.flows.electronic` (B proton walkers).

    Raises:
        ValueError: an unknown optimiser.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    transform = optax.adam(learning_rate) if optimizer == "adam" else None

    def update(params, opt_state, lr_scale, electrons, configurations, e_loc):
        if transform is not None:
            grads = jax.lax.map(lambda a: energy_gradient(log_psi, params, *a, clip_width=clip_width),
                                (electrons, configurations, e_loc))
            grads = jax.tree.map(lambda g: jnp.mean(g, axis=0), grads)
            updates, opt_state = transform.update(grads, opt_state, params)
            updates = jax.tree.map(lambda u: lr_scale * u, updates)
            return optax.apply_updates(params, updates), opt_state
        flat, unravel = ravel_pytree(params)
        per_sample = jax.lax.map(lambda a: log_derivatives(log_psi, params, *a)[0], (electrons, configurations))
        per_sample = per_sample - jnp.mean(per_sample, axis=1, keepdims=True)  # centred within each configuration
        centred = e_loc - jnp.mean(e_loc, axis=1, keepdims=True)
        direction = min_sr_direction(per_sample.reshape(-1, flat.shape[0]), centred.reshape(-1), damping)
        return unravel(flat - lr_scale * learning_rate * direction), opt_state

    return update, transform


def make_train_step(log_psi: Callable, local_energy: Callable, protons: jax.Array, *, optimizer: str, learning_rate: float,
                    n_mcmc_steps: int, damping: float = 1e-3, clip_width: float | None = CLIP_WIDTH,
                    target_acceptance: float = 0.5, chunk_size: int | None = None,
                    configurations_per_step: int | None = None) -> tuple[Callable, optax.GradientTransformation | None]:
    """``(step(state) -> (state, metrics, finite), optax transformation or None)`` for :func:`thermoflow.optimize.optimise`.

    Args:
        log_psi: ``(params, electrons (n_e, 3), protons) -> (sign or phase, ln|psi|)``.
        local_energy: ``(params, electrons, protons) -> LocalEnergy`` (Hartree).
        protons: (n_p, 3) bohr (n_p = 0: jellium), or an ensemble (M, n_p, 3) of proton configurations:
            one wavefunction conditioned on the protons is trained on the mean energy over the ensemble
            (the pretraining of the deep variational free energy, Dong et al. arXiv 2025), each
            configuration with its own walkers (``state.electrons`` (M, n_walkers, n_e, 3)).
        optimizer: ``"adam"`` or ``"minsr"`` (update ``-learning_rate x (S + damping)^-1 g``).
        learning_rate: Adam's rate, or minSR's tau.
        n_mcmc_steps: Metropolis moves per walker per step.
        damping: minSR diagonal shift.
        clip_width: local-energy clipping of the Adam gradient (None: none).
        target_acceptance: the step size is tuned towards it.
        chunk_size: local energies of this many walkers at a time (None: all at once).
        configurations_per_step: ensemble only: configurations drawn (without replacement, from
            ``fold_in(key, step)``) for each step; None: all. The gradient is that of the mean energy
            of the drawn configurations: per configuration the VMC gradient, or for minSR the log
            derivatives and local energies centred within each configuration (S and g averaged over them).

    Metrics (Hartree units, cell totals): ``energy`` (mean over the step's configurations),
    ``energy_imaginary``, ``variance`` (of E_loc within a configuration, averaged), ``acceptance``,
    ``step_size`` (bohr, before the step's update).

    Raises:
        ValueError: an unknown optimiser, ``configurations_per_step`` < 1.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if configurations_per_step is not None and configurations_per_step < 1:
        raise ValueError(f"configurations_per_step must be >= 1, got {configurations_per_step}")
    sample = make_sampler(log_psi, local_energy, n_mcmc_steps, chunk_size)
    update_wavefunction, transform = make_wavefunction_update(log_psi, optimizer=optimizer, learning_rate=learning_rate,
                                                              damping=damping, clip_width=clip_width)
    ensemble = protons.ndim == 3

    def update(state: VMCState, electrons, configurations, e_loc):
        return update_wavefunction(state.params, state.opt_state, state.lr_scale, electrons, configurations, e_loc)

    def finish(state: VMCState, params, opt_state, electrons, e_loc, acceptance):
        mean = jnp.mean(e_loc)
        metrics = {"energy": jnp.real(mean), "energy_imaginary": jnp.imag(mean),
                   "variance": jnp.mean(jnp.var(e_loc, axis=-1)), "acceptance": acceptance, "step_size": state.step_size}
        finite = jnp.all(jnp.isfinite(jnp.real(e_loc))) & jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))
        step_size = jnp.clip(state.step_size * jnp.exp(acceptance - target_acceptance), *STEP_SIZE_BOUNDS)
        new = dataclasses.replace(state, params=params, opt_state=opt_state, electrons=electrons,
                                  step_size=step_size, step=state.step + 1)
        return new, metrics, finite

    @jax.jit
    def step(state: VMCState):
        walkers = mcmc.WalkerState(state.electrons, jnp.zeros(state.electrons.shape[0]), jax.random.fold_in(state.key, state.step))
        walkers, e_loc, acceptance = sample(state.params, walkers, protons, state.step_size)
        params, opt_state = update(state, walkers.electrons[None], protons[None], e_loc[None])
        return finish(state, params, opt_state, walkers.electrons, e_loc, acceptance)

    @jax.jit
    def ensemble_step(state: VMCState):
        k_pick, k_walkers = jax.random.split(jax.random.fold_in(state.key, state.step))
        m = protons.shape[0]
        drawn = (jnp.arange(m) if configurations_per_step is None or configurations_per_step >= m
                 else jax.random.choice(k_pick, m, (configurations_per_step,), replace=False))

        def one(args):
            x, r, key = args
            walkers, e, acc = sample(state.params, mcmc.WalkerState(x, jnp.zeros(x.shape[0]), key), r, state.step_size)
            return walkers.electrons, e, acc

        configurations = protons[drawn]
        electrons, e_loc, acceptance = jax.lax.map(
            one, (state.electrons[drawn], configurations, jax.random.split(k_walkers, drawn.shape[0])))
        params, opt_state = update(state, electrons, configurations, e_loc)
        return finish(state, params, opt_state, state.electrons.at[drawn].set(electrons), e_loc, jnp.mean(acceptance))

    return (ensemble_step if ensemble else step), transform


@functools.lru_cache(maxsize=16)
def _metropolis_block(log_psi: Callable, n_mcmc_steps: int) -> Callable:
    """One jitted Metropolis block per (wavefunction, moves): reused across the configurations of an ensemble
    (a fresh jit per call would compile again for every configuration)."""
    return mcmc.make_metropolis_block(log_psi, n_mcmc_steps)


@functools.lru_cache(maxsize=16)
def _block_energies(local_energy: Callable, chunk_size: int | None) -> Callable:
    """``(params, walkers (n, n_e, 3), protons) -> LocalEnergy`` of (n,) arrays, jitted once per local energy."""
    return jax.jit(lambda params, xs, protons: map_walkers(lambda x: local_energy(params, x, protons), xs, chunk_size))


@functools.lru_cache(maxsize=16)
def _block_forces(forces: Callable, chunk_size: int | None) -> Callable:
    """``(params, walkers (n, n_e, 3), protons) -> (n, n_p, 3)`` forces, jitted once per estimator."""
    return jax.jit(lambda params, xs, protons: map_walkers(lambda x: forces(params, x, protons), xs, chunk_size))


def equilibrate(log_psi: Callable, params, electrons: jax.Array, protons: jax.Array, key: jax.Array, step_size: float, *,
                n_blocks: int, n_mcmc_steps: int, target_acceptance: float = 0.5) -> tuple[jax.Array, float, float]:
    """Burn in the walkers at fixed ``params``: ``n_blocks`` Metropolis blocks, the step size tuned
    after each. Returns (electrons, step size bohr, acceptance of the last block)."""
    block = _metropolis_block(log_psi, n_mcmc_steps)
    state = mcmc.init_walkers(log_psi, params, electrons, protons, key)
    acceptance = float("nan")
    for _ in range(n_blocks):
        state, acc = block(state, params, protons, step_size)
        acceptance = float(acc)
        step_size = mcmc.tune_step_size(step_size, acceptance, target_acceptance, STEP_SIZE_BOUNDS)
    return state.electrons, step_size, acceptance


def evaluate(log_psi: Callable, local_energy: Callable, params, electrons: jax.Array, protons: jax.Array, key: jax.Array,
             step_size: float, *, n_blocks: int, n_mcmc_steps: int, chunk_size: int | None = None,
             forces: Callable | None = None) -> dict[str, np.ndarray]:
    """Walker means per Metropolis block at frozen ``params``: ``total``, ``kinetic`` (real parts),
    ``potential``, ``imaginary`` (Im E_loc), ``variance`` of E_loc, ``acceptance``; each (n_blocks,),
    Hartree per cell; with ``forces`` (``(params, electrons, protons) -> (n_p, 3)`` Hartree/bohr, e.g.
    :func:`thermoflow.electrons.estimators.make_zero_variance_forces`) also ``forces`` (n_blocks, n_p, 3).
    Average with :func:`thermoflow.analysis.statistics.blocking_stderr`.

    Raises:
        ValueError: ``n_blocks`` < 2.
    """
    if n_blocks < 2:
        raise ValueError(f"an evaluation needs at least 2 blocks for an error bar, got {n_blocks}")
    block, parts = _metropolis_block(log_psi, n_mcmc_steps), _block_energies(local_energy, chunk_size)
    block_forces = None if forces is None else _block_forces(forces, chunk_size)
    state = mcmc.init_walkers(log_psi, params, electrons, protons, key)
    rows = []
    for _ in range(n_blocks):
        state, acceptance = block(state, params, protons, step_size)
        e = parts(params, state.electrons, protons)
        rows.append({"total": np.mean(np.real(e.total)), "kinetic": np.mean(np.real(e.kinetic)), "potential": np.mean(e.potential),
                     "imaginary": np.mean(np.imag(e.total)), "variance": np.var(np.asarray(e.total)), "acceptance": float(acceptance)})
        if block_forces is not None:
            rows[-1]["forces"] = np.mean(np.asarray(block_forces(params, state.electrons, protons)), axis=0)
    return {k: np.asarray([r[k] for r in rows], dtype=np.float64) for k in rows[0]}
