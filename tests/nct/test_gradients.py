"""Gradient estimators against finite differences of the exact free energy (2 modes, quadrature)."""

import jax
import jax.numpy as jnp
import numpy as np

from helpers import perturbed_params, planar_modes
from thermoflow.nct import occupations
from thermoflow.nct.flow import make_realnvp
from thermoflow.nct.hermite import hermite_functions
from thermoflow.nct.loss import make_free_energy_model

K = 2
KT = 0.03  # eV


def energy_fn(positions, cell):
    x, y = positions[0, 0], positions[0, 1]
    return 0.5 * (x**2 + 1.5 * y**2) + 2.0 * (x**4 + y**4) + 1.5 * x**2 * y**2


def test_reinforce_and_flow_gradients_match_finite_differences():
    modes = planar_modes(np.sqrt([1.0, 1.5]))
    eps = modes.phonon_energies_eV
    disp = modes.displacement_matrix()
    flow = make_realnvp(2, 2, 6)
    batch = 4096
    model = make_free_energy_model(energy_fn, modes, flow, kT_eV=KT, n_levels=K, batch_size=batch, laplacian="exact", clip_width=0.0)
    params = {"flow": perturbed_params(flow, seed=3, scale=0.1), "logits": jnp.array([[0.0, -0.7], [0.0, -1.1]])}

    # exact F by quadrature: E_n = int [sum_k eps_k/2 (d_k Psi)^2 + V Psi^2] ds (smooth integrand)
    grid = np.linspace(-12.0, 12.0, 361)
    ds = grid[1] - grid[0]
    pts = jnp.asarray(np.stack(np.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2))
    states = jnp.array([[0, 0], [0, 1], [1, 0], [1, 1]])

    def psi(flow_params, n, s):
        z, log_det = flow.forward_and_log_det(flow_params, s)
        h = hermite_functions(z, K)
        return jnp.prod(jnp.take_along_axis(h, n[:, None], axis=-1)[:, 0]) * jnp.exp(0.5 * log_det)

    def state_energy(flow_params, n):
        def integrand(s):
            val, grad = jax.value_and_grad(psi, argnums=2)(flow_params, n, s)
            pos = (disp @ s).reshape(1, 3)
            return jnp.sum(0.5 * eps * grad**2) + energy_fn(pos, None) * val**2, val**2

        e, norm = jax.vmap(integrand)(pts)
        return jnp.sum(e) * ds**2, jnp.sum(norm) * ds**2

    @jax.jit
    def exact_free_energy(p):
        e_n, norm = jax.vmap(state_energy, in_axes=(None, 0))(p["flow"], states)
        log_p = jax.vmap(occupations.log_probability, in_axes=(None, 0))(p["logits"], states)
        return -KT * occupations.entropy(p["logits"]) + jnp.sum(jnp.exp(log_p) * e_n), norm

    f0, norm = exact_free_energy(params)
    np.testing.assert_allclose(norm, 1.0, atol=1e-9)  # every Psi_n is normalised

    # stochastic estimate of F and of its gradient
    grad_fn = jax.jit(jax.grad(model.loss, has_aux=True))
    grads, f_est = [], []
    for i in range(24):
        g, m = grad_fn(params, jax.random.PRNGKey(100 + i))
        grads.append(jax.tree_util.tree_leaves(g))
        f_est.append(float(m["free_energy"]))
    f_est = np.array(f_est)
    assert abs(f_est.mean() - float(f0)) < 4 * f_est.std() / np.sqrt(len(f_est)) + 1e-12

    leaves, tree = jax.tree_util.tree_flatten(params)
    checked = 0
    for leaf_index, leaf in enumerate(leaves):
        flat = np.asarray(leaf).ravel()
        for idx in sorted({0, flat.size // 2, flat.size - 1}):
            h = 1e-5

            def shifted(delta):
                new = [np.array(x, copy=True) for x in leaves]
                new[leaf_index].reshape(-1)[idx] += delta
                return float(exact_free_energy(jax.tree_util.tree_unflatten(tree, [jnp.asarray(x) for x in new]))[0])

            fd = (shifted(h) - shifted(-h)) / (2 * h)
            est = np.array([np.asarray(g[leaf_index]).ravel()[idx] for g in grads])
            se = est.std(ddof=1) / np.sqrt(len(est))
            assert abs(est.mean() - fd) < 4.5 * se + 1e-7, (leaf_index, idx, est.mean(), fd, se)
            if abs(fd) > 6 * se:
                checked += 1
    assert checked >= 6  # enough components where the comparison is sharp
