"""Training driver: rollback with a reduced learning rate after a non-finite step."""

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
