"""Smooth periodic functions of displacements in a lattice, shared by the electronic and the classical-particle networks.

A displacement d = f A (f fractional, A the lattice vectors as rows) is seen through functions that
are periodic in every component of f and smooth, so that networks built on them are periodic in
every particle and differentiable (forward Laplacians, Jacobians):

* the smooth periodic distance  D(d) = | sum_a A_a (1 - exp(2 pi i f_a)) | / 2 pi  (the norm of a
  complex vector in C^3: sqrt(|sum_a A_a (1 - cos 2 pi f_a)|^2 + |sum_a A_a sin 2 pi f_a|^2) / 2 pi),
  which equals |d| + O(|d|^2) for small d, vanishes only on lattice vectors, and for an orthogonal
  cell reduces to sqrt(sum_a |A_a|^2 sin^2(pi f_a)) / pi. Each term depends on f_a only through
  exp(2 pi i f_a), so it is periodic for any lattice; the simpler |sum_a A_a sin(pi f_a) / pi| is not
  for a non-orthogonal one (sin(pi f_a) changes sign under f_a -> f_a + 1 and the cross terms with
  the other lattice vectors change);
* the periodic vector  u(d) = sum_a A_a sin(2 pi f_a) / 2 pi, odd, u = d + O(|d|^3).

References: the periodic input features of X. Li, Z. Li and J. Chen, Nat. Commun. 13, 7895 (2022),
doi:10.1038/s41467-022-35627-1 (DeepSolid) and of Xie et al., PRL 131, 126501 (2023).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def smooth_periodic_distance(displacements: jax.Array, cell: jax.Array) -> jax.Array:
    """D(d) of the module docstring for displacements (..., 3) in ``cell`` (3, 3; rows = lattice vectors): (...,).
    Same length unit as the input."""
    frac = displacements @ jnp.linalg.inv(cell)
    angle = 2.0 * jnp.pi * frac
    real = (1.0 - jnp.cos(angle)) @ cell
    imaginary = jnp.sin(angle) @ cell
    return jnp.sqrt(jnp.sum(real**2 + imaginary**2, axis=-1) + 1e-300) / (2.0 * jnp.pi)


def periodic_vector(displacements: jax.Array, cell: jax.Array) -> jax.Array:
    """u(d) of the module docstring, (..., 3)."""
    frac = displacements @ jnp.linalg.inv(cell)
    return (jnp.sin(2.0 * jnp.pi * frac) / (2.0 * jnp.pi)) @ cell
