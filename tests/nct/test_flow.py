import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermoflow.nct.flow import make_realnvp


def _random_params(flow, seed=0, scale=0.3):  # noqa: D103
    params = flow.init(jax.random.PRNGKey(seed))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, leaves)


@pytest.mark.parametrize("linear", [False, True])
def test_identity_at_init(linear):
    flow = make_realnvp(5, 4, 8, linear=linear)
    params = flow.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (5,))
    z, log_det = flow.forward_and_log_det(params, x)
    np.testing.assert_allclose(z, x, rtol=1e-15, atol=1e-15)
    assert abs(log_det) < 1e-14


@pytest.mark.parametrize("dim", [2, 3, 7])
@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True])  # eager variants: default-budget trim
@pytest.mark.parametrize("n_layers, linear", [(4, False), (4, True), (0, True)])
def test_round_trip_and_log_det(dim, jit, n_layers, linear):
    flow = make_realnvp(dim, n_layers, 16, linear=linear)
    params = _random_params(flow)
    fwd = jax.jit(flow.forward_and_log_det) if jit else flow.forward_and_log_det
    inv = jax.jit(flow.inverse) if jit else flow.inverse
    for k in range(3):
        x = 1.5 * jax.random.normal(jax.random.PRNGKey(10 + k), (dim,))
        z, log_det = fwd(params, x)
        np.testing.assert_allclose(inv(params, z), x, atol=1e-12)
        jac = jax.jacfwd(lambda y: flow.forward_and_log_det(params, y)[0])(x)
        sign, ref = jnp.linalg.slogdet(jac)
        assert sign > 0 or linear  # couplings preserve orientation; a linear layer need not
        np.testing.assert_allclose(log_det, ref, atol=1e-12)
        assert not np.allclose(z, x)  # the random flow is not the identity


def test_rejects_one_dimension():
    with pytest.raises(ValueError, match="at least 2"):
        make_realnvp(1)
