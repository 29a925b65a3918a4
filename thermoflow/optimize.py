"""The optimisation driver every engine shares: a jitted step on one state pytree, checkpoints,
exact resume and rollback of non-finite steps.

An engine supplies ``step_fn(state) -> (new_state, metrics, finite)``, jitted, on a state
pytree (a frozen dataclass registered with ``jax.tree_util.register_dataclass``) that has two
fields the driver reads and writes: ``step`` (index of the next step; the step's randomness must
come from it, e.g. ``fold_in(key, step)``, so a resumed run replays exactly the steps of an
uninterrupted one) and ``lr_scale`` (multiplies the updates; halved by each rollback). The driver
loops on the host, reads back a handful of scalars per step, keeps the metric history, writes
atomic checkpoints every ``checkpoint_every`` steps, and on a non-finite step returns to the last
checkpoint known to be good with half the learning rate. NCT training (:mod:`thermoflow.nct.train`)
uses it; variational Monte Carlo is meant to.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from thermoflow.io.checkpoint import UNREADABLE, CheckpointError, load_checkpoint, load_latest_checkpoint, previous_path, save_checkpoint

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Optimisation produced non-finite values repeatedly, even after rollbacks."""


@dataclasses.dataclass
class OptimisationResult:
    """Final state, the per-step metrics (dict of equal-length arrays), timing and rollbacks."""

    state: Any
    history: dict[str, np.ndarray]
    seconds_per_step: float
    n_rollbacks: int


def clip_to_median(values, width: float | None):
    """``values`` (n,) clipped to median +- width x mean absolute deviation from the median (None: unchanged): the
    robust clipping of local energies / local free energies in score-function and VMC gradients (traced in a jit;
    the reported averages are never clipped).

    References: D. Pfau et al., Phys. Rev. Research 2, 033429 (2020), doi:10.1103/PhysRevResearch.2.033429.
    """
    if width is None:
        return values
    import jax.numpy as jnp

    centre = jnp.median(values)
    spread = jnp.mean(jnp.abs(values - centre))
    return jnp.clip(values, centre - width * spread, centre + width * spread)


SCHEDULES = ("constant", "cosine", "exponential")


def learning_rate_factor(schedule: str, steps: int, final_fraction: float = 0.1) -> Callable:
    """``factor(step) -> float``: the learning rate at ``step`` over the initial one, for engines whose updates are
    not all optax transformations (minSR's ``tau``) and so scale them by hand.

    ``constant`` (1), ``cosine`` (to ``final_fraction`` at ``steps``, then flat: optax's cosine decay, I. Loshchilov and
    F. Hutter, arXiv:1608.03983) or ``exponential`` (``final_fraction ** (step / steps)``).

    Raises:
        ValueError: an unknown schedule, ``steps`` < 1 or ``final_fraction`` outside (0, 1].
    """
    import optax

    if steps < 1 or not 0 < final_fraction <= 1:
        raise ValueError(f"need steps >= 1 and 0 < final_fraction <= 1, got {steps}, {final_fraction}")
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "cosine":
        return optax.cosine_decay_schedule(1.0, steps, alpha=final_fraction)
    if schedule == "exponential":
        return optax.exponential_decay(1.0, steps, final_fraction)
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")


def _whole_state(state) -> tuple[Any, dict]:
    return state, {}


def _restore_whole_state(template, tree, meta):
    return tree


def scalar_row(metrics: dict[str, Any]) -> dict[str, float]:
    """A step's scalar metrics as host floats (tensor metrics are left out)."""
    return {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}


def optimise(
    step_fn: Callable,
    state: Any,
    *,
    steps: int,
    checkpoint_path: str | Path | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    max_rollbacks: int = 3,
    on_step: Callable[[dict], None] | None = None,
    on_checkpoint: Callable[[dict[str, list]], None] | None = None,
    stop_after: int | None = None,
    to_checkpoint: Callable[[Any], tuple[Any, dict]] = _whole_state,
    from_checkpoint: Callable[[Any, Any, dict], Any] = _restore_whole_state,
    host_row: Callable[[dict], dict[str, float]] = scalar_row,
    advice: str = "lower the learning rate",
) -> OptimisationResult:
    """Run ``step_fn`` from ``state`` (or from the checkpoint) until ``state.step == steps``.

    Args:
        step_fn: jitted ``state -> (new_state, metrics, finite)``; ``metrics`` describe the
            state before the update, ``finite`` is False when anything came out NaN/inf.
        state: the initial state (also the template a checkpoint is read into).
        steps: total number of steps of the run.
        checkpoint_path: where to write the checkpoint (None: no checkpoints, rollback targets
            kept in memory). A fresh run checkpoints its starting state too; rollback targets
            are read back from the newest checkpoint or the one before it, so no extra copy of
            the state stays in memory.
        checkpoint_every: steps between checkpoints (also the rollback granularity).
        resume: continue from ``checkpoint_path``.
        max_rollbacks: non-finite steps tolerated; each rolls back to the last good checkpoint
            and halves ``lr_scale``.
        on_step: called with each step's row (host floats, plus ``step``, ``lr_scale``, ``seconds``).
        on_checkpoint: called with the metric history (rows up to the checkpoint) after each
            checkpoint and after a rollback.
        stop_after: stop (after checkpointing) once this step count is reached; simulates an
            interruption.
        to_checkpoint: ``state -> (tree, metadata)`` written to the checkpoint (default: the
            whole state, no metadata); ``step``, ``lr_scale`` and ``n_rollbacks`` are added to
            the metadata.
        from_checkpoint: ``(template state, tree, metadata) -> state`` (default: the tree);
            may raise ValueError for an incompatible checkpoint. ``step`` and ``lr_scale`` are
            restored from the metadata afterwards.
        host_row: ``metrics -> {name: float}`` for the history.
        advice: what the user should try, quoted in the :class:`NonFiniteError`.

    Raises:
        FileNotFoundError: ``resume`` without a checkpoint.
        CheckpointError: ``resume`` with no readable checkpoint (newest and previous), or a
            checkpoint that cannot be written (disk full).
        NonFiniteError: more than ``max_rollbacks`` non-finite steps.
    """
    n_rollbacks = 0
    history: dict[str, list] = {}
    if resume:
        template, _ = to_checkpoint(state)
        tree, meta, arrays, read = load_latest_checkpoint(checkpoint_path, template)
        if Path(read) != Path(checkpoint_path):
            log.warning("checkpoint %s is damaged or unreadable: resuming from the previous one, %s", checkpoint_path, read)
        state = from_checkpoint(state, tree, meta)
        state = dataclasses.replace(
            state, step=np.asarray(meta["next_step"], dtype=np.asarray(state.step).dtype),
            lr_scale=np.asarray(meta["lr_scale"], dtype=np.asarray(state.lr_scale).dtype),
        )
        n_rollbacks = meta["n_rollbacks"]
        history = {k: list(v) for k, v in arrays.items()}
        log.info("resumed from %s at step %d", checkpoint_path, meta["next_step"])
    start = int(state.step)
    # A checkpointed state is only known to be good once the step that starts from it has
    # evaluated to finite values: `pending` is the latest checkpoint, `good` the latest verified
    # one, where a rollback goes (each with the metric history up to it). With a checkpoint file
    # they are read back from disk on a rollback (the newest or the previous file), not held in
    # memory: for a large state (the quadratic flow's D^3 parameters and their optimiser moments,
    # 3 GB at D = 321) two more resident copies decide whether a run fits in memory.
    on_disk = checkpoint_path is not None

    def remember(s, hist):
        return (None if on_disk else s, int(s.step), {k: list(v) for k, v in hist.items()})

    def recall(reference):
        s, step, hist = reference
        if s is not None:
            return s, hist
        template, _ = to_checkpoint(state)
        for path in (Path(checkpoint_path), previous_path(checkpoint_path)):
            if not path.is_file():
                continue
            try:
                tree, meta, _ = load_checkpoint(path, template)
            except UNREADABLE:
                continue  # a damaged newest file (a resume then read the previous one)
            if meta["next_step"] == step:
                restored = from_checkpoint(state, tree, meta)
                return dataclasses.replace(
                    restored, step=np.asarray(step, dtype=np.asarray(state.step).dtype),
                    lr_scale=np.asarray(meta["lr_scale"], dtype=np.asarray(state.lr_scale).dtype),
                ), hist
        raise CheckpointError(f"the last good checkpoint (step {step}) is no longer in {checkpoint_path} or the file before it")

    def write_checkpoint(s, hist, notify=True):
        if checkpoint_path is not None:
            tree, meta = to_checkpoint(s)
            meta = {**meta, "next_step": int(s.step), "lr_scale": float(s.lr_scale), "n_rollbacks": n_rollbacks}
            save_checkpoint(checkpoint_path, tree, meta, {k: np.asarray(v) for k, v in hist.items()})
        if notify and on_checkpoint is not None:
            on_checkpoint(hist)

    if on_disk and not resume:
        write_checkpoint(state, history, notify=False)  # the starting state is the first rollback target
    good = pending = remember(state, history)

    t_total, n_timed = 0.0, 0
    t = start
    last = min(steps, stop_after) if stop_after is not None else steps
    while t < last:
        t0 = time.perf_counter()
        new_state, metrics, finite = step_fn(state)
        metrics = host_row(metrics)
        elapsed = time.perf_counter() - t0
        if not bool(finite):
            n_rollbacks += 1
            if n_rollbacks > max_rollbacks:
                raise NonFiniteError(
                    f"non-finite values at step {t}, after {max_rollbacks} rollbacks with halved learning rates: {advice}"
                )
            bad_step = t
            state, hist = recall(good)
            state = dataclasses.replace(state, lr_scale=state.lr_scale * 0.5)
            t = int(state.step)
            history = {k: list(v) for k, v in hist.items()}
            write_checkpoint(state, history)  # a resume must not restart from the bad state either
            good = pending = remember(state, history)
            log.warning("non-finite values at step %d: rolled back to step %d, learning rate x%.3g", bad_step, t, float(state.lr_scale))
            continue
        if pending[1] == t:
            good = pending
        lr_scale = float(state.lr_scale)
        state = new_state
        if t > start:  # the first step includes compilation
            t_total += elapsed
            n_timed += 1
        row = {"step": t, **metrics, "lr_scale": lr_scale, "seconds": elapsed}
        for k, v in row.items():
            history.setdefault(k, []).append(v)
        if on_step is not None:
            on_step(row)
        t += 1
        if t % checkpoint_every == 0 or t == last:
            write_checkpoint(state, history)
            pending = remember(state, history)
    return OptimisationResult(
        state=state,
        history={k: np.asarray(v) for k, v in history.items()},
        seconds_per_step=t_total / max(n_timed, 1),
        n_rollbacks=n_rollbacks,
    )
