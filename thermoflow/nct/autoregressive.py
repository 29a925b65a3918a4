"""A masked autoregressive network (MADE) over the levels of the D phonon modes.

p(n) = prod_i p(n_{o_i} | n_{o_1}, ..., n_{o_{i-1}}) in a fixed mode order o (the modes by
increasing phonon energy). The network takes the one-hot levels (D, K) in that order, one
hidden layer of ``n_hidden`` tanh units, and gives the logits (D, K) of every conditional in one
pass. Masks make the logits of position i depend on positions < i only: hidden unit h has a
degree m_h in 1..D-1; it sees the inputs of positions i < m_h + 1 (0-based i <= m_h - 1) and
feeds the outputs of positions i >= m_h. The last layer starts at zero and its bias holds the
product-spectrum logits, so at initialisation the network is exactly that product spectrum.

Ancestral sampling runs over the positions (``jax.lax.scan``): the hidden pre-activations gain
one input row per drawn level, so each step costs O(batch x n_hidden x K) and a whole draw
O(batch x D x n_hidden x K), the cost of one network pass.

References: M. Germain, K. Gregor, I. Murray, H. Larochelle, "MADE: Masked autoencoder for
distribution estimation", ICML 2015, arXiv:1502.03509; D. Wu, L. Wang, P. Zhang, "Solving
statistical mechanics using variational autoregressive networks", Phys. Rev. Lett. 122, 080602
(2019), doi:10.1103/PhysRevLett.122.080602.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def hidden_degrees(n_modes: int, n_hidden: int) -> np.ndarray:
    """MADE degrees m_h in 1..max(D - 1, 1) of the hidden units, cycled: integer (n_hidden,)."""
    return np.arange(n_hidden) % max(n_modes - 1, 1) + 1


def init_params(key: jax.Array, bias_logits: jax.Array, n_hidden: int) -> dict:
    """Network parameters equal to the product spectrum with logits ``bias_logits``.

    Args:
        key: PRNG key of the first layer's weights.
        bias_logits: (D, K) logits of the product spectrum, in autoregressive order.
        n_hidden: hidden units (>= 1).

    Returns:
        ``{"w_in": (D, K, H), "b_in": (H,), "w_out": (H, D, K) zeros, "b_out": (D, K)}``; the
        first layer is N(0, 1/D) (a one-hot input has D non-zero entries), the masks are applied
        in the forward pass, not stored.

    Raises:
        ValueError: if n_hidden < 1.
    """
    if n_hidden < 1:
        raise ValueError(f"the autoregressive network needs n_hidden >= 1, got {n_hidden}")
    n_modes, n_levels = bias_logits.shape
    w_in = jax.random.normal(key, (n_modes, n_levels, n_hidden)) / np.sqrt(n_modes)
    return {
        "w_in": w_in,
        "b_in": jnp.zeros(n_hidden),
        "w_out": jnp.zeros((n_hidden, n_modes, n_levels)),
        "b_out": jnp.asarray(bias_logits, dtype=jnp.float64),
    }


def _masked(params: dict) -> tuple[jax.Array, jax.Array]:
    """The weights with the MADE masks applied: (D, K, H) and (H, D, K)."""
    n_modes, _, n_hidden = params["w_in"].shape
    degree = hidden_degrees(n_modes, n_hidden)
    position = np.arange(n_modes)
    mask_in = position[:, None] < degree[None, :]  # (D, H): input i feeds hidden h if i < m_h
    mask_out = degree[:, None] <= position[None, :]  # (H, D): hidden h feeds output i if m_h <= i
    return params["w_in"] * mask_in[:, None, :], params["w_out"] * mask_out[:, :, None]


def conditional_logits(params: dict, levels: jax.Array) -> jax.Array:
    """Logits (D, K) of p(n_i = j | n_<i) for one state, levels (D,) integers in autoregressive
    order (position i's row depends on levels[:i] only)."""
    w_in, w_out = _masked(params)
    n_levels = w_in.shape[1]
    one_hot = jax.nn.one_hot(levels, n_levels, dtype=w_in.dtype)
    hidden = jnp.tanh(jnp.einsum("ik,ikh->h", one_hot, w_in) + params["b_in"])
    return jnp.einsum("h,hik->ik", hidden, w_out) + params["b_out"]


def sample(params: dict, key: jax.Array, n_samples: int) -> jax.Array:
    """Ancestral samples n ~ p(n), integer (n_samples, D) in autoregressive order: D sequential
    steps of one ``jax.lax.scan``, position i drawn from its conditional given positions < i."""
    w_in, w_out = _masked(params)
    n_modes = w_in.shape[0]

    def step(pre, xs):
        w_in_i, w_out_i, b_out_i, key_i = xs
        logits = jnp.tanh(pre) @ w_out_i + b_out_i  # (B, K), from the positions drawn so far
        level = jax.random.categorical(key_i, logits, axis=-1)
        return pre + w_in_i[level], level

    pre0 = jnp.broadcast_to(params["b_in"], (n_samples, params["b_in"].shape[0]))
    xs = (w_in, jnp.moveaxis(w_out, 1, 0), params["b_out"], jax.random.split(key, n_modes))
    _, levels = jax.lax.scan(step, pre0, xs)
    return levels.T
