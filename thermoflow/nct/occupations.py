"""Product-spectrum occupation probabilities p_n = prod_k p_k(n_k) over K levels per mode.

Each mode k has a softmax distribution over its levels n_k = 0..K-1 with learnable logits,
initialised at the harmonic Boltzmann weights exp(-n hbar omega_k / kT). The entropy of a
product distribution is the sum of the mode entropies, computed exactly (no sampling).

References: Q. Zhang, X. Wang, R. Shi, X. Ren, H. Wang, L. Wang, "Neural canonical
transformations for quantum anharmonic solids of lithium", Phys. Rev. Lett. 134, 246101 (2025),
arXiv:2409.09813.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def harmonic_logits(phonon_energies_eV: np.ndarray, kT_eV: float, n_levels: int) -> jax.Array:
    """Logits (n_modes, K) = -n hbar omega_k / kT: the harmonic Boltzmann occupations.

    Raises:
        ValueError: if kT is not positive or n_levels < 1.
    """
    if not kT_eV > 0:
        raise ValueError(f"kT must be positive, got {kT_eV}")
    if n_levels < 1:
        raise ValueError("n_levels must be >= 1")
    e = jnp.asarray(phonon_energies_eV, dtype=jnp.float64)
    return -e[:, None] * jnp.arange(n_levels)[None, :] / kT_eV


def log_probability(logits: jax.Array, levels: jax.Array) -> jax.Array:
    """ln p_n for one state: ``logits`` (n_modes, K), integer ``levels`` (n_modes,) -> scalar."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.take_along_axis(logp, levels[:, None], axis=-1))


def sample_levels(key: jax.Array, logits: jax.Array, n_samples: int) -> jax.Array:
    """Independent states n ~ p_n, integer array (n_samples, n_modes)."""
    return jax.random.categorical(key, logits, axis=-1, shape=(n_samples, logits.shape[0]))


def entropy(logits: jax.Array) -> jax.Array:
    """Exact entropy -sum_n p_n ln p_n of the product distribution, in units of k_B."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp)


def probabilities(logits: jax.Array) -> jax.Array:
    """Mode occupation probabilities p_k(n), shape (n_modes, K)."""
    return jax.nn.softmax(logits, axis=-1)
