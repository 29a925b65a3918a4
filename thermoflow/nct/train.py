"""NCT training: optimiser, the jitted step, and the loop of the shared driver
(:mod:`thermoflow.optimize`: checkpoints, resume, NaN rollback).

The state of a run is one pytree, :class:`TrainState` (parameters, optimiser state, step,
random key, learning-rate scale); the step is one jitted function of it (sampling, local
energies, gradient, optimiser update), and the host only reads back a handful of scalars per
step. The random key of step t is ``fold_in(key, t)``, so a run resumed from a checkpoint replays
exactly the steps an uninterrupted run would have taken.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from thermoflow.nct.flow import PARAMETRISATION_VERSION
from thermoflow.nct.loss import FreeEnergyModel
from thermoflow.optimize import NonFiniteError, learning_rate_factor, optimise, scalar_row

__all__ = ["NonFiniteError", "TrainResult", "TrainState", "evaluate", "host_row", "make_optimizer", "make_train_step", "split_held", "train"]

OPTIMIZERS = ("adam", "adamw", "sgd")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a training step reads and writes, as one pytree.

    Attributes:
        params: model parameters (``model.init``).
        opt_state: optax state.
        step: index of the next step (int scalar).
        key: the run's base key; step t samples with ``fold_in(key, t)``.
        lr_scale: multiplies the optimiser's updates (halved by each rollback; float scalar).

    With ``held`` parameter groups (top-level keys of ``params``, e.g. ``("flow",)``), the
    optimiser state covers the other groups only: held groups get no gradient and no moments.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array
    lr_scale: jax.Array

    @classmethod
    def create(cls, model: FreeEnergyModel, optimizer: optax.GradientTransformation, seed: int,
               held: tuple[str, ...] = ()) -> "TrainState":
        """The state before step 0: ``model.init`` parameters from the seed's first subkey.

        Raises:
            ValueError: if a ``held`` name is not a parameter group of the model.
        """
        init_key, base_key = jax.random.split(jax.random.PRNGKey(seed))
        params = model.init(init_key)
        trainable, _ = split_held(params, held)
        return cls(params, optimizer.init(trainable), _step_array(0), base_key, _scale_array(1.0))


def split_held(params: dict, held: tuple[str, ...]) -> tuple[dict, dict]:
    """``params`` split into (trained groups, held groups) by top-level key.

    Raises:
        ValueError: if a ``held`` name is not a key of ``params``.
    """
    unknown = [name for name in held if name not in params]
    if unknown:
        raise ValueError(f"held parameter groups {unknown} are not among the model's {sorted(params)}")
    return {k: v for k, v in params.items() if k not in held}, {k: params[k] for k in held}


def _step_array(step: int) -> jax.Array:
    return jnp.asarray(step, dtype=jnp.int32)


def _scale_array(scale: float) -> jax.Array:
    return jnp.asarray(scale, dtype=jnp.result_type(float))


def make_optimizer(
    name: str = "adam",
    learning_rate: float = 1e-3,
    *,
    schedule: str = "constant",
    steps: int = 1000,
    final_fraction: float = 0.1,
    warmup_steps: int = 0,
    grad_clip_norm: float | None = 10.0,
    flow_scale: float = 1.0,
    strain_scale: float = 1.0,
) -> optax.GradientTransformation:
    """An optax optimiser with a learning-rate schedule and an optional linear warm-up.

    Args:
        name: one of :data:`OPTIMIZERS`.
        learning_rate: peak learning rate.
        schedule: ``constant``, ``cosine`` (decay to ``final_fraction``) or ``exponential``
            (to ``final_fraction`` at ``steps``).
        steps: total training steps (for the schedules).
        final_fraction: final / initial learning rate.
        warmup_steps: linear ramp from ``learning_rate / warmup_steps`` to ``learning_rate``
            over the first ``warmup_steps`` steps, then the schedule over the remaining steps.
            Adam's first updates have size ~``learning_rate`` in every parameter whatever the
            gradient noise; on a noisy Monte Carlo gradient they move the flow away from the
            harmonic (identity) start and raise F before the moment estimates settle (measured
            on lithium: +1 to +2.5 meV/atom in the first 50 steps without warm-up).
        grad_clip_norm: global-norm gradient clipping (None disables).
        flow_scale: multiplies the updates of the ``"flow"`` parameters (a separate learning
            rate for the flow and the occupation logits).
        strain_scale: multiplies the updates of the ``"strain"`` parameter (NPT), if present.

    Raises:
        ValueError: for unknown names or a negative ``warmup_steps``.
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    decay_steps = max(steps - warmup_steps, 1)
    schedule_factor = learning_rate_factor(schedule, decay_steps, final_fraction)
    lr = lambda count: learning_rate * schedule_factor(count)  # noqa: E731
    if warmup_steps > 0:
        ramp = optax.linear_schedule(learning_rate / warmup_steps, learning_rate, warmup_steps - 1)
        lr = optax.join_schedules([ramp, lr], boundaries=[warmup_steps])
    if name == "adam":
        opt = optax.adam(lr)
    elif name == "adamw":
        opt = optax.adamw(lr)
    elif name == "sgd":
        opt = optax.sgd(lr)
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    for name_, factor in (("flow", flow_scale), ("strain", strain_scale)):
        if not factor > 0:
            raise ValueError(f"{name_}_scale must be positive, got {factor}")
        if factor != 1.0:  # params are {"flow", "logits" or "occupations"[, "strain"]}; the mask is a prefix of that tree
            opt = optax.chain(opt, optax.masked(optax.scale(factor), lambda p, key=name_: {k: k == key for k in p}))
    return optax.chain(optax.clip_by_global_norm(grad_clip_norm), opt) if grad_clip_norm else opt


def make_train_step(model: FreeEnergyModel, optimizer: optax.GradientTransformation, held: tuple[str, ...] = ()) -> Callable:
    """Jitted ``step(state) -> (new_state, metrics, finite)`` on a :class:`TrainState`.

    ``metrics`` are the batch estimates at the parameters *before* the update (samples drawn
    with ``fold_in(state.key, state.step)``); ``finite`` is False if the free energy or any new
    parameter is NaN/inf. The update is multiplied by ``state.lr_scale``. The ``held``
    parameter groups enter the loss as constants: no gradient is formed for them (for the
    quadratic flow's 4 D^3 coefficients that saves their gradient and Adam's two moments).
    """

    @jax.jit
    def step(state: TrainState):
        trainable, fixed = split_held(state.params, held)
        grads, metrics = jax.grad(lambda p, key: model.loss({**p, **fixed}, key), has_aux=True)(
            trainable, jax.random.fold_in(state.key, state.step))
        updates, new_opt_state = optimizer.update(grads, state.opt_state, trainable)
        updates = jax.tree_util.tree_map(lambda u: state.lr_scale * u, updates)
        new_trainable = optax.apply_updates(trainable, updates)
        finite = jnp.isfinite(metrics["free_energy"])
        for leaf in jax.tree_util.tree_leaves(new_trainable):
            finite = finite & jnp.all(jnp.isfinite(leaf))
        new_params = {**new_trainable, **fixed}
        return dataclasses.replace(state, params=new_params, opt_state=new_opt_state, step=state.step + 1), metrics, finite

    return step


#: Voigt order of the six independent components of a symmetric 3x3 tensor
VOIGT_COMPONENTS = ("xx", "yy", "zz", "yz", "xz", "xy")
_VOIGT_INDICES = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def host_row(metrics: dict[str, Any]) -> dict[str, float]:
    """A step's metrics as host floats; the symmetric 3x3 ``"stress"`` becomes ``"stress_xx"``,
    ..., ``"stress_xy"`` (Voigt order); other tensor metrics (the kinetic stress) are left out
    of the per-step row."""
    row = scalar_row(metrics)
    if "stress" in metrics:
        stress = np.asarray(metrics["stress"])
        row.update({f"stress_{c}": float(stress[i, j]) for c, (i, j) in zip(VOIGT_COMPONENTS, _VOIGT_INDICES)})
    return row


#: folded into the seed's key for evaluation batches, so they never reuse a training step's key
_EVALUATION_STREAM = 1_000_003


def evaluate(model: FreeEnergyModel, params: Any, *, seed: int, n_batches: int) -> dict[str, np.ndarray]:
    """Estimates of ``n_batches`` independent batches of fresh exact samples at fixed ``params``.

    Training averages a trace whose parameters still move; this is the estimate at the final
    state itself, with independent batches (no autocorrelation: plain standard errors).

    Returns:
        metric name -> (n_batches, ...) per-batch values (totals, eV; entropy in k_B; tensor
        metrics such as the stress keep their shape after the batch axis).

    Raises:
        ValueError: if ``n_batches`` < 2.
    """
    if n_batches < 2:
        raise ValueError(f"an evaluation needs at least 2 batches for an error bar, got {n_batches}")
    loss = jax.jit(model.loss)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _EVALUATION_STREAM)
    rows = [jax.device_get(loss(params, jax.random.fold_in(key, i))[1]) for i in range(n_batches)]
    return {k: np.stack([np.asarray(r[k], dtype=np.float64) for r in rows]) for k in rows[0]}


@dataclasses.dataclass
class TrainResult:
    """Final parameters and the per-step metrics (dict of equal-length arrays)."""

    params: Any
    opt_state: Any
    history: dict[str, np.ndarray]
    seconds_per_step: float
    n_rollbacks: int


def train(
    model: FreeEnergyModel,
    optimizer: optax.GradientTransformation,
    *,
    steps: int,
    seed: int,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    max_rollbacks: int = 3,
    on_step: Callable[[dict], None] | None = None,
    on_checkpoint: Callable[[dict[str, list]], None] | None = None,
    stop_after: int | None = None,
    held: tuple[str, ...] = (),
) -> TrainResult:
    """Optimise the NCT free energy for ``steps`` steps with the shared driver
    (:func:`thermoflow.optimize.optimise`: checkpoints, exact resume, rollback of non-finite steps).

    Args:
        model: the free-energy model.
        optimizer: optax optimiser.
        seed: integer seed (parameters and all sampling).
        steps, checkpoint_path, checkpoint_every, resume, max_rollbacks, on_step, on_checkpoint,
        stop_after: as in :func:`thermoflow.optimize.optimise`.
        held: parameter groups kept at their initial values (e.g. ``("flow",)``: the flow stays
            at its initial, e.g. perturbative, map while occupations and strain train).

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint.
        CheckpointError: ``resume`` with no readable checkpoint (newest and previous), or a
            checkpoint that cannot be written (disk full).
        ValueError: ``resume`` from a checkpoint of another flow parametrisation version, or a
            ``held`` name that is not a parameter group.
        NonFiniteError: more than ``max_rollbacks`` non-finite steps.
    """

    def to_checkpoint(state: TrainState) -> tuple[dict, dict]:
        # the on-disk layout of every thermoflow version so far: run directories stay resumable
        return {"params": state.params, "opt_state": state.opt_state}, {"seed": seed, "flow_parametrisation": PARAMETRISATION_VERSION}

    def from_checkpoint(state: TrainState, tree: dict, meta: dict) -> TrainState:
        version = meta.get("flow_parametrisation", 1)
        if version != PARAMETRISATION_VERSION:
            raise ValueError(
                f"checkpoint {checkpoint_path} holds flow parameters of parametrisation version {version}; "
                f"this thermoflow uses version {PARAMETRISATION_VERSION} (thermoflow/nct/flow.py), in which the "
                "same arrays describe another flow. Start the run afresh (without --resume) in a new directory."
            )
        return dataclasses.replace(state, params=tree["params"], opt_state=tree["opt_state"])

    result = optimise(
        make_train_step(model, optimizer, held), TrainState.create(model, optimizer, seed, held), steps=steps,
        checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every, resume=resume,
        max_rollbacks=max_rollbacks, on_step=on_step, on_checkpoint=on_checkpoint, stop_after=stop_after,
        to_checkpoint=to_checkpoint, from_checkpoint=from_checkpoint, host_row=host_row,
        advice="lower the learning rate, raise clip_width / grad_clip_norm, or check the potential for unphysical regions",
    )
    return TrainResult(
        params=result.state.params,
        opt_state=result.state.opt_state,
        history=result.history,
        seconds_per_step=result.seconds_per_step,
        n_rollbacks=result.n_rollbacks,
    )
