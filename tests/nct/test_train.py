"""Training driver: rollback with a reduced learning rate after a non-finite step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from thermoflow.nct.loss import FreeEnergyModel
from thermoflow.nct.train import train


def _toy_model():
    """F(x) = x^2, reported as NaN when |x| > 1.5 (an 'unphysical region')."""

    def loss(params, key):
        x = params["x"]
        free = jnp.where(jnp.abs(x) > 1.5, jnp.nan, x**2)
        zero = jnp.zeros(())
        metrics = {k: zero for k in ("energy", "energy_stderr", "kinetic", "potential", "entropy", "local_energy_variance")}
        return x**2, {**metrics, "free_energy": free}

    return FreeEnergyModel(
        init=lambda key: {"x": jnp.ones(())}, loss=loss, local_energy=None, local_energies=None, log_psi=None, sample=None,
        sample_states=None, phonon_energies_eV=np.zeros(0), kT_eV=0.0, n_levels=1,
    )


def test_rollback_halves_learning_rate_and_recovers(tmp_path, caplog):
    # SGD with lr 1.3 overshoots from x = 1 to x = -1.6 (NaN region); after the rollback the
    # halved step from the last verified state (x = 1, step 0) lands at x = -0.3 and converges.
    result = train(_toy_model(), optax.sgd(1.3), steps=6, seed=0, checkpoint_path=tmp_path / "c.npz", checkpoint_every=1, max_rollbacks=2)
    assert result.n_rollbacks == 1
    np.testing.assert_array_equal(result.history["step"], np.arange(6))
    assert np.isfinite(result.history["free_energy"]).all()
    np.testing.assert_allclose(result.history["lr_scale"], 0.5)  # step 0 was replayed at half rate
    assert abs(float(result.params["x"])) < 1e-3
    assert "rolled back" in caplog.text


def test_warmup_ramps_linearly_then_follows_the_schedule():
    """Warm-up: lr/w, 2 lr/w, ..., lr over w steps, then the cosine schedule from its peak."""
    from thermoflow.nct.train import make_optimizer

    lr, w, steps = 1e-2, 4, 20
    opt = make_optimizer("sgd", lr, schedule="cosine", steps=steps, warmup_steps=w, final_fraction=0.1, grad_clip_norm=None)
    params = jnp.zeros(())
    state = opt.init(params)
    rates = []
    for _ in range(steps):
        update, state = opt.update(jnp.ones(()), state, params)
        rates.append(-float(update))  # sgd: update = -lr(t) * grad
    cosine = optax.cosine_decay_schedule(lr, steps - w, alpha=0.1)
    expected = [lr * (t + 1) / w for t in range(w)] + [float(cosine(t)) for t in range(steps - w)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6)  # optax evaluates schedules in float32


def test_resume_refuses_a_checkpoint_of_another_flow_parametrisation(tmp_path):
    import json

    path = tmp_path / "c.npz"
    train(_toy_model(), optax.sgd(0.1), steps=4, seed=0, checkpoint_path=path, checkpoint_every=1, stop_after=2)
    resumed = train(_toy_model(), optax.sgd(0.1), steps=4, seed=0, checkpoint_path=path, checkpoint_every=1, resume=True)
    assert list(resumed.history["step"]) == [0, 1, 2, 3]

    with np.load(path) as data:  # rewrite the checkpoint as a version-1 one (no version key)
        payload = dict(data)
    meta = json.loads(bytes(payload["metadata_json"]).decode())
    del meta["flow_parametrisation"]
    payload["metadata_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **payload)
    with pytest.raises(ValueError, match="parametrisation version 1"):
        train(_toy_model(), optax.sgd(0.1), steps=6, seed=0, checkpoint_path=path, checkpoint_every=1, resume=True)


def _two_group_model():
    """F(a, b) = |a - 1|^2 + |b - 2|^2 + a.b with groups "flow" (a) and "logits" (b)."""

    def loss(params, key):
        a, b = params["flow"]["a"], params["logits"]
        value = jnp.sum((a - 1.0) ** 2) + jnp.sum((b - 2.0) ** 2) + jnp.dot(a, b)
        zero = jnp.zeros(())
        metrics = {k: zero for k in ("energy", "energy_stderr", "kinetic", "potential", "entropy", "local_energy_variance")}
        return value, {**metrics, "free_energy": value}

    return FreeEnergyModel(
        init=lambda key: {"flow": {"a": jnp.array([0.3, -0.2])}, "logits": jnp.array([0.5, 1.5])},
        loss=loss, local_energy=None, local_energies=None, log_psi=None, sample=None,
        sample_states=None, phonon_energies_eV=np.zeros(0), kT_eV=0.0, n_levels=1,
    )


def test_held_flow_keeps_its_map_and_trains_the_rest_as_the_full_step_does(tmp_path):
    """A held group stays bitwise at its start and has no optimiser moments; the first update of
    the other groups equals the full step's (Adam acts per leaf; no clipping); a checkpoint of a
    held run does not resume as a full run (other optimiser state)."""
    from thermoflow.io.checkpoint import CheckpointError
    from thermoflow.nct.train import TrainState, make_train_step

    model, opt = _two_group_model(), optax.adam(0.1)
    held_state = TrainState.create(model, opt, seed=0, held=("flow",))
    full_state = TrainState.create(model, opt, seed=0)
    assert len(jax.tree_util.tree_leaves(held_state.opt_state)) < len(jax.tree_util.tree_leaves(full_state.opt_state))
    held_next = make_train_step(model, opt, ("flow",))(held_state)[0]
    full_next = make_train_step(model, opt)(full_state)[0]
    np.testing.assert_array_equal(held_next.params["flow"]["a"], held_state.params["flow"]["a"])
    assert not np.allclose(full_next.params["flow"]["a"], full_state.params["flow"]["a"])
    np.testing.assert_allclose(held_next.params["logits"], full_next.params["logits"], rtol=0, atol=1e-15)

    # many steps: b converges to its minimum at the held a, argmin_b = 2 - a / 2
    result = train(model, opt, steps=400, seed=0, checkpoint_path=tmp_path / "c.npz", checkpoint_every=100, held=("flow",))
    np.testing.assert_allclose(result.params["logits"], 2.0 - np.array([0.3, -0.2]) / 2, atol=1e-3)
    with pytest.raises(CheckpointError, match="another model configuration"):
        train(model, opt, steps=500, seed=0, checkpoint_path=tmp_path / "c.npz", checkpoint_every=100, resume=True)
    with pytest.raises(ValueError, match="not among"):
        TrainState.create(model, opt, seed=0, held=("occupations",))
