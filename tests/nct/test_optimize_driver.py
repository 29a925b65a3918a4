"""The shared optimisation driver on a state of its own (not NCT): exact resume with the default
whole-state checkpoint, and rollback of the whole state (here a walker-like array too)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.optimize import optimise


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ToyState:
    x: jax.Array  # a parameter
    walkers: jax.Array  # state that is not a parameter (as VMC walkers are)
    key: jax.Array
    step: jax.Array
    lr_scale: jax.Array


def _initial():
    return ToyState(jnp.ones(()), jnp.zeros(4), jax.random.PRNGKey(3), jnp.asarray(0, dtype=jnp.int32), jnp.asarray(1.0))


@jax.jit
def _noisy_descent(state):
    noise = jax.random.normal(jax.random.fold_in(state.key, state.step), (4,))
    walkers = 0.5 * state.walkers + noise
    loss = state.x**2 + 0.01 * jnp.mean(walkers)
    x = state.x - state.lr_scale * 0.3 * 2 * state.x
    return dataclasses.replace(state, x=x, walkers=walkers, step=state.step + 1), {"loss": loss, "walker_mean": jnp.mean(walkers)}, jnp.isfinite(x)


def test_resume_with_the_whole_state_reproduces_the_uninterrupted_run(tmp_path):
    full = optimise(_noisy_descent, _initial(), steps=6)
    path = tmp_path / "state.npz"
    optimise(_noisy_descent, _initial(), steps=6, checkpoint_path=path, checkpoint_every=2, stop_after=3)
    resumed = optimise(_noisy_descent, _initial(), steps=6, checkpoint_path=path, checkpoint_every=2, resume=True)
    for name in ("step", "loss", "walker_mean"):
        np.testing.assert_array_equal(resumed.history[name], full.history[name])
    np.testing.assert_array_equal(resumed.state.walkers, full.state.walkers)
    assert int(resumed.state.step) == 6 and float(resumed.state.x) == float(full.state.x)


def test_rollback_restores_the_whole_state(tmp_path):
    calls = {"n": 0}

    def step(state):
        # step 2 fails once. The checkpoint of step 2 is not verified yet (the step from it
        # failed), so the driver returns to step 0 and replays everything at half the rate
        new, metrics, finite = _noisy_descent(state)
        if int(state.step) == 2 and calls["n"] == 0:
            calls["n"] += 1
            return dataclasses.replace(new, x=jnp.nan), metrics, jnp.asarray(False)
        return new, metrics, finite

    result = optimise(step, _initial(), steps=4, checkpoint_path=tmp_path / "s.npz", checkpoint_every=2, max_rollbacks=1)
    assert result.n_rollbacks == 1
    np.testing.assert_array_equal(result.history["step"], np.arange(4))
    np.testing.assert_allclose(result.history["lr_scale"], 0.5)
    reference = optimise(_noisy_descent, _initial(), steps=4)  # the walkers never depend on lr_scale
    np.testing.assert_array_equal(result.state.walkers, reference.state.walkers)


def test_rollback_from_the_checkpoint_files_equals_the_rollback_in_memory(tmp_path):
    """With a checkpoint file the rollback target is read back from disk (the newest file when it
    is verified, else the one before it); without one it is kept in memory. Failures at step 3
    (target: the verified newest file, step 2) and at step 4 (the checkpoint of step 4 is not
    verified: target step 2, now the previous file) give the same run both ways."""

    def failing_once_at(steps_to_fail):
        calls = set()

        def step(state):
            new, metrics, finite = _noisy_descent(state)
            t = int(state.step)
            if t in steps_to_fail and t not in calls:
                calls.add(t)
                return dataclasses.replace(new, x=jnp.nan), metrics, jnp.asarray(False)
            return new, metrics, finite

        return step

    on_disk = optimise(failing_once_at({3, 4}), _initial(), steps=6, checkpoint_path=tmp_path / "s.npz", checkpoint_every=2, max_rollbacks=2)
    in_memory = optimise(failing_once_at({3, 4}), _initial(), steps=6, checkpoint_every=2, max_rollbacks=2)
    assert on_disk.n_rollbacks == in_memory.n_rollbacks == 2
    for name in ("step", "loss", "lr_scale"):
        np.testing.assert_array_equal(on_disk.history[name], in_memory.history[name])
    np.testing.assert_allclose(on_disk.history["lr_scale"], [1.0, 1.0, 0.25, 0.25, 0.25, 0.25])
    assert float(on_disk.state.x) == float(in_memory.state.x)
