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


@pytest.mark.slow  # default-budget trim (2026-12-03): an option's accuracy
def test_float32_network_is_mixed_precision():
    """network_dtype=float32: identity at init exactly, float64 outputs within float32 round-off of the
    float64 flow, log-det still equal to slogdet of the (float64) Jacobian of the map it computes,
    round trip to float32 accuracy, parameter gradients float64."""
    dim = 6
    f64 = make_realnvp(dim, 4, 16, linear=True)
    f32 = make_realnvp(dim, 4, 16, linear=True, network_dtype=jnp.float32)
    x = 1.5 * jax.random.normal(jax.random.PRNGKey(3), (dim,))
    z, log_det = f32.forward_and_log_det(f32.init(jax.random.PRNGKey(0)), x)
    np.testing.assert_allclose(z, x, rtol=1e-15, atol=1e-15)  # sinh(asinh(x)): float64 round-off only
    assert abs(log_det) < 1e-14
    params = _random_params(f64)
    z64, ld64 = f64.forward_and_log_det(params, x)
    z32, ld32 = f32.forward_and_log_det(params, x)
    assert z32.dtype == jnp.float64 and ld32.dtype == jnp.float64
    err = float(jnp.max(jnp.abs(z32 - z64)) / jnp.max(jnp.abs(z64)))
    print(f"float32 network: relative output error {err:.2e}, log-det {float(ld32 - ld64):.2e}")
    assert 1e-10 < err < 1e-5  # float32 round-off: present, and small
    assert abs(float(ld32 - ld64)) < 1e-5
    jac = jax.jacfwd(lambda y: f32.forward_and_log_det(params, y)[0])(x)
    assert abs(float(jnp.linalg.slogdet(jac)[1] - ld32)) < 1e-4
    np.testing.assert_allclose(f32.inverse(params, z32), x, atol=1e-5)
    grads = jax.grad(lambda p: f32.forward_and_log_det(p, x)[1])(params)
    assert all(g.dtype == jnp.float64 for g in jax.tree_util.tree_leaves(grads))
