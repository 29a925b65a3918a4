"""A periodic, permutation-equivariant, translation-equivariant flow for N identical particles in a cell.

The map is a residual backflow of the positions X (N, 3) in a periodic cell,

    Z = X + g(X),    g_i(X) = sum_{j != i} w_ij(X) u(x_i - x_j),

with u(d) = (sin(2 pi f) / 2 pi) A the smooth periodic image of a displacement d = f A (f fractional,
A the lattice vectors as rows; u(d) = d to first order; :mod:`thermoflow.lattice`) and scalar weights w_ij from FermiNet-style
interacting streams: pair inputs (sin 2 pi f, cos 2 pi f, the smooth periodic distance) of every
displacement, a two-body stream h_ij <- h_ij + tanh(V h_ij) and a one-body stream
h_i <- h_i + tanh(W [h_i, mean_{j != i} h_ij]) started from the mean pair input. Everything depends
on differences only and is periodic in every particle, so g is invariant under a common translation
and under moving any particle by a lattice vector, and equivariant under permutations. The output
weights start at zero: the flow starts at the identity.

The density of X is the uniform base density pushed through the map,

    p(X) = det(1 + dg/dX) / V^N,

with the dense 3N x 3N Jacobian by forward-mode autodiff and its log-determinant by LU (``slogdet``):
3N forward passes and O((3N)^3) per configuration (48 x 48 for 16 particles; 96 x 96 for 32). The
density is normalised whenever det(1 + dg/dX) > 0 everywhere, invertible or not: X -> Z is a map of
the torus homotopic to the identity (degree 1), so the integral of its Jacobian determinant over the
torus is V^N. Where the map folds (negative determinant), |det| / V^N integrates to more than 1, since
the integral of |det| is at least |integral of det| = V^N: treating it as normalised then overestimates
kT <ln p> by kT ln(mass) >= 0, so a variational free energy stays an upper bound, only a looser one.
``log_density`` returns the sign of the determinant so that callers can watch the folding. There is no closed-form
inverse, so configurations are sampled from p by Metropolis (:mod:`thermoflow.flows.sampling`), as in
the published method.

References: H. Xie, Z.-H. Li, H. Wang, L. Zhang and L. Wang, Phys. Rev. Lett. 131, 126501 (2023),
arXiv:2209.06095 (deep variational free energy: an equivariant backflow flow for protons, sampled by
Metropolis); D. Pfau et al., Phys. Rev. Research 2, 033429 (2020), doi:10.1103/PhysRevResearch.2.033429
(FermiNet streams); X. Li, Z. Li and J. Chen, Nat. Commun. 13, 7895 (2022) (periodic features);
J. W. Milnor, Topology from the Differentiable Viewpoint (1965) (degree of a map: the integral of its
Jacobian determinant).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.lattice import periodic_vector, smooth_periodic_distance

N_PAIR_INPUTS = 7


@dataclasses.dataclass(frozen=True)
class PeriodicFlow:
    """The flow of the module docstring for ``n_particles`` in ``cell``.

    Attributes:
        n_particles: N.
        cell: (3, 3) lattice vectors as rows (any length unit; positions in the same unit).
        init: ``init(key) -> params``.
        forward: ``(params, X (N, 3)) -> Z (N, 3)``, Z = X + g(X) (not wrapped into the cell).
        backflow: ``(params, X (N, 3)) -> g (N, 3)``.
        log_density: ``(params, X (N, 3)) -> (sign, ln p(X))``: ln p = ln|det(1 + dg/dX)| - N ln V.
    """

    n_particles: int
    cell: np.ndarray
    init: Callable
    forward: Callable
    backflow: Callable
    log_density: Callable

    @property
    def volume(self) -> float:
        return float(abs(np.linalg.det(self.cell)))


def pair_inputs(displacements: jax.Array, cell: jax.Array, inverse_cell: jax.Array) -> jax.Array:
    """(..., 7): sin and cos of 2 pi f and the smooth periodic distance (:func:`thermoflow.lattice.smooth_periodic_distance`) of d = f A."""
    frac = displacements @ inverse_cell
    return jnp.concatenate([jnp.sin(2.0 * jnp.pi * frac), jnp.cos(2.0 * jnp.pi * frac),
                            smooth_periodic_distance(displacements, cell)[..., None]], axis=-1)


def _dense(key, n_in: int, n_out: int, scale: float = 1.0) -> dict:
    return {"w": jax.random.normal(key, (n_in, n_out)) * scale / np.sqrt(n_in), "b": jnp.zeros(n_out)}


def _apply(layer: dict, x: jax.Array) -> jax.Array:
    return x @ layer["w"] + layer["b"]


def make_periodic_flow(cell: np.ndarray, n_particles: int, *, n_layers: int = 2, one_body: int = 16, two_body: int = 16) -> PeriodicFlow:
    """The flow of the module docstring.

    Args:
        cell: (3, 3) lattice vectors as rows.
        n_particles: N >= 2 (one particle has no relative coordinates: its density is uniform).
        n_layers: interaction layers (>= 1).
        one_body, two_body: widths of the one- and two-particle streams.

    Returns:
        A :class:`PeriodicFlow`; ``params`` start at the identity map (p uniform).

    Raises:
        ValueError: ``n_particles`` < 2, ``n_layers`` < 1, or a singular cell.
    """
    if n_particles < 2:
        raise ValueError(f"the flow needs at least two particles, got {n_particles}")
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    cell = np.asarray(cell, dtype=np.float64)
    volume = abs(np.linalg.det(cell))
    if not volume > 0:
        raise ValueError("the cell is singular")
    cell_j, inverse_j = jnp.asarray(cell), jnp.asarray(np.linalg.inv(cell))
    off_diagonal = jnp.asarray(1.0 - np.eye(n_particles))
    dim = 3 * n_particles

    def init(key):
        keys = jax.random.split(key, 2 * n_layers + 2)
        one_in, two_in = N_PAIR_INPUTS, N_PAIR_INPUTS
        layers = []
        for layer in range(n_layers):
            layers.append({"one": _dense(keys[2 * layer], one_in + two_in, one_body),
                           "two": _dense(keys[2 * layer + 1], two_in, two_body)})
            one_in, two_in = one_body, two_body
        # zero output weights: g = 0, the identity map
        return {"layers": layers, "weight_two": jnp.zeros(two_body), "weight_one": jnp.zeros(one_body), "weight_bias": jnp.zeros(())}

    def mean_over_others(pairs):
        return jnp.einsum("ij,ij...->i...", off_diagonal, pairs) / (n_particles - 1)

    def backflow(params, x):
        displacements = x[:, None, :] - x[None, :, :]
        two = pair_inputs(displacements, cell_j, inverse_j)
        one = mean_over_others(two)
        for layer in params["layers"]:
            new_one = jnp.tanh(_apply(layer["one"], jnp.concatenate([one, mean_over_others(two)], axis=-1)))
            new_two = jnp.tanh(_apply(layer["two"], two))
            one = new_one + one if new_one.shape == one.shape else new_one
            two = new_two + two if new_two.shape == two.shape else new_two
        weights = two @ params["weight_two"] + (one @ params["weight_one"])[:, None] + params["weight_bias"]
        vectors = periodic_vector(displacements, cell_j)
        return jnp.einsum("ij,ij,ija->ia", off_diagonal, weights, vectors)

    def forward(params, x):
        return x + backflow(params, x)

    def log_density(params, x):
        jacobian = jax.jacfwd(lambda flat: backflow(params, flat.reshape(n_particles, 3)).reshape(-1))(x.reshape(-1))
        sign, logdet = jnp.linalg.slogdet(jnp.eye(dim) + jacobian)
        return sign, logdet - n_particles * np.log(volume)

    return PeriodicFlow(n_particles=n_particles, cell=cell, init=init, forward=forward, backflow=backflow, log_density=log_density)
