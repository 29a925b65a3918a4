"""Chunked local energies (lax.map over chunks) give the same loss, metrics and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import perturbed_params, planar_modes
from thermoflow.nct.flow import make_realnvp
from thermoflow.nct.loss import make_free_energy_model


def energy_fn(positions, cell):
    x, y = positions[0, 0], positions[0, 1]
    return 0.5 * (x**2 + 1.5 * y**2) + 2.0 * (x**4 + y**4) + 1.5 * x**2 * y**2


@pytest.mark.parametrize("chunk_size", [pytest.param(1, marks=pytest.mark.slow), 5, pytest.param(16, marks=pytest.mark.slow)])  # 5 does not divide the batch of 22
def test_chunked_local_energies_match_the_full_batch(chunk_size):
    modes = planar_modes(np.sqrt([1.0, 1.5]))
    flow = make_realnvp(2, 2, 6)
    kwargs = dict(kT_eV=0.03, n_levels=3, batch_size=22, laplacian="folx")
    full = make_free_energy_model(energy_fn, modes, flow, **kwargs)
    chunked = make_free_energy_model(energy_fn, modes, flow, chunk_size=chunk_size, **kwargs)
    params = {"flow": perturbed_params(flow, seed=2, scale=0.1), "logits": full.init(jax.random.PRNGKey(0))["logits"]}
    key = jax.random.PRNGKey(7)
    (_, m_full), g_full = jax.value_and_grad(full.loss, has_aux=True)(params, key)
    (_, m_chunk), g_chunk = jax.value_and_grad(chunked.loss, has_aux=True)(params, key)
    for name in m_full:
        np.testing.assert_allclose(m_chunk[name], m_full[name], rtol=1e-12, atol=1e-14, err_msg=name)
    for a, b in zip(jax.tree_util.tree_leaves(g_chunk), jax.tree_util.tree_leaves(g_full)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
    assert float(jnp.abs(m_full["free_energy"])) > 0


def test_invalid_chunk_size_is_rejected():
    modes = planar_modes(np.sqrt([1.0, 1.5]))
    with pytest.raises(ValueError, match="chunk_size"):
        make_free_energy_model(energy_fn, modes, make_realnvp(2, 2, 6), kT_eV=0.03, n_levels=2, batch_size=4, chunk_size=0)
