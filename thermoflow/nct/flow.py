"""RealNVP-type normalizing flow in dimensionless phonon coordinates, identity at initialisation.

Each coupling layer splits the coordinates by a fixed binary mask m; the coordinates with
m = 0 are transformed elementwise, conditioned on the others (x_a = m * x):

    z_b = exp(a(x_a)) * sinh(exp(d(x_a)) * asinh(x_b)) + b(x_a).

With d = 0 this is RealNVP's affine coupling. The sinh-arcsinh factor (Jones and Pewsey) lets
each coordinate be stretched nonlinearly, z ~ x^delta at large |x|: an affine coupling alone
cannot change the tails of a coordinate as a function of itself, which is exactly what a
quartic anharmonicity needs (its ground state decays like exp(-c x^3), delta = 3/2). a and d
are bounded by ``max_log_scale * tanh(. / max_log_scale)``; the map has an analytic inverse
x_b = sinh(asinh((z_b - b) exp(-a)) exp(-d)) and
log|dz_b/dx_b| = a + d + ln cosh(delta asinh x_b) - ln(1 + x_b^2)/2. Masks alternate between even/odd mode indices
and a random permutation-based split so that every pair of modes gets coupled. The last layer of
every conditioner starts at zero, so the flow is exactly the identity at initialisation and
NCT starts from the harmonic density matrix.

The output layer of each conditioner is multiplied by 1/hidden (the maximal-update
parametrisation's output multiplier, G. Yang and E. J. Hu, arXiv:2011.14522; G. Yang et al.,
arXiv:2203.03466). With the standard parametrisation, Adam moves each of the ``hidden`` output
weights by ~lr per step in the same direction, so the conditioner output (a log-scale) moves by
~hidden x lr per step and overshoots: on bcc lithium at 300 K, lr 1e-3, F first rose by
1.3 meV/atom over 50 steps and took 250 steps to return; with the 1/hidden multiplier F falls
from the first step and after 150 steps is 0.7 meV/atom below its start (measured, same seed).

The conditioners are two-hidden-layer tanh MLPs on plain dicts of arrays (a pytree that
checkpoints as arrays); flax/haiku would add a dependency for ~20 lines.

References: L. Dinh, J. Sohl-Dickstein, S. Bengio, "Density estimation using Real NVP",
ICLR 2017, arXiv:1605.08803; M. C. Jones and A. Pewsey, Biometrika 96, 761 (2009),
doi:10.1093/biomet/asp053 (sinh-arcsinh transform); Q. Zhang, R. Wang, L. Wang, "Neural canonical transformations
for vibrational spectra of molecules", J. Chem. Phys. 161, 024103 (2024), arXiv:2404.14402.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Params = Any

#: Version of the meaning of the flow parameters, stored in checkpoints: 2 = conditioner output
#: multiplied by 1/hidden (see above). Parameters saved under version 1 (no multiplier) have the
#: same shapes but describe another flow, so resuming from them is refused.
PARAMETRISATION_VERSION = 2


@dataclasses.dataclass(frozen=True)
class Flow:
    """A bijection of R^dim as pure functions (one configuration; callers vmap).

    Attributes:
        init: ``init(key) -> params``.
        forward_and_log_det: ``(params, x (dim,)) -> (z (dim,), log|det dz/dx|)``.
        inverse: ``(params, z (dim,)) -> x (dim,)``.
        dim: number of coordinates.
        jet: optional ``(params, x (dim,), w) -> (z, J, lap_z, log_det, grad_log_det,
            lap_log_det)``: z = f(x), J = dz/dx (dim, dim), the Laplacians in the metric M of
            ``w``, lap_z (dim,) = tr(M Hess z), and log|det dz/dx| with its gradient (dim,) and
            Laplacian tr(M Hess log det) (scalar). ``w`` is either the diagonal of M (dim,) or a
            factor C (dim, m) with M = C C^T (:func:`input_metric`): the diagonal serves the
            total kinetic energy, the factors its Cartesian components (orthorhombic NPT).
            Flows that provide it get their kinetic energy analytically (``laplacian = "auto"``).
    """

    init: Callable[[jax.Array], Params]
    forward_and_log_det: Callable[[Params, jax.Array], tuple[jax.Array, jax.Array]]
    inverse: Callable[[Params, jax.Array], jax.Array]
    dim: int
    jet: Callable | None = None


def input_metric(jac: jax.Array, w: jax.Array) -> jax.Array:
    """J M J^T (dim, dim) for a jet's metric ``w``: the diagonal of M (dim,) or a factor C
    (dim, m) with M = C C^T (see :class:`Flow`)."""
    if w.ndim == 1:
        return (jac * w[None, :]) @ jac.T
    jc = jac @ w
    return jc @ jc.T


def identity_flow(dim: int) -> Flow:
    """The identity of R^dim, without parameters (``init`` returns an empty dict): the flow of
    harmonic wavefunctions (``nct.freeze_flow``). A parametrised flow held at its identity start
    would cost the same answer plus its parameters, gradients and optimiser moments (4 D^3
    numbers each for the quadratic flow: 1.8 GB per copy at 128 bcc atoms, D = 381)."""

    def forward_and_log_det(params, x):
        del params
        return x, jnp.zeros((), x.dtype)

    def inverse(params, z):
        del params
        return z

    def jet(params, x, weights):
        del params, weights
        zeros = jnp.zeros(x.shape[0], x.dtype)
        return x, jnp.eye(x.shape[0], dtype=x.dtype), zeros, jnp.zeros((), x.dtype), zeros, jnp.zeros((), x.dtype)

    return Flow(init=lambda key: {}, forward_and_log_det=forward_and_log_det, inverse=inverse, dim=dim, jet=jet)


def linear_layer_forward(params: Params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The learnable linear layer y = (1 + W) x of ``params["linear"]`` and its log|det|
    (shared by the flows that offer it)."""
    matrix = jnp.eye(x.shape[0], dtype=x.dtype) + params["linear"]
    return matrix @ x, jnp.linalg.slogdet(matrix)[1]


def coupling_masks(dim: int, n_layers: int, seed: int = 0) -> np.ndarray:
    """(n_layers, dim) binary masks: alternating parity, then random halves, each followed by
    its complement so every coordinate is transformed equally often."""
    rng = np.random.default_rng(seed)
    masks = []
    for layer in range(n_layers):
        if layer % 2 == 1:
            masks.append(1.0 - masks[-1])
        elif layer % 4 == 0:
            masks.append((np.arange(dim) % 2).astype(np.float64))
        else:
            m = np.zeros(dim)
            m[rng.permutation(dim)[: dim // 2]] = 1.0
            masks.append(m)
    return np.stack(masks)


def make_realnvp(dim: int, n_layers: int = 4, hidden: int = 64, max_log_scale: float = 2.0, linear: bool = False,
                 network_dtype: Any = None) -> Flow:
    """RealNVP flow of ``dim`` coordinates (identity at initialisation).

    Args:
        dim: number of coordinates (phonon modes), >= 2.
        n_layers: number of affine coupling layers (even is best: each mask and its complement).
        hidden: width of the two hidden layers of each conditioner.
        max_log_scale: bound on |log scale| per layer.
        linear: start with a learnable linear layer y = (1 + W) x (W = 0 at initialisation):
            mode mixing and scaling, i.e. any change of the harmonic reference's polarisation
            vectors and frequencies, which coupling layers can only approximate. Its log-det
            and inverse come from one LU factorisation per parameter set (not per sample).
        network_dtype: precision of the conditioner MLPs (``jnp.float32`` for GPUs; None: that of
            the input). Mixed precision: the parameters stay float64 (the optimiser updates them
            in float64) and are rounded with the masked input on entry to each conditioner; its
            outputs (log scale, log tail, shift) return to the input's precision, so the coupling
            transform, the log-Jacobian, the kinetic energy and all accumulations stay float64.
            Derivatives through the conditioner (the kinetic energy's Laplacian, the gradients)
            carry float32 round-off. The bias this puts in F is measured in
            ``benchmarks/flow_precision.py`` (docs/benchmarks.md).

    Raises:
        ValueError: if ``dim < 2`` or ``n_layers < 0``, or no layer at all.
    """
    if dim < 2:
        raise ValueError(f"a coupling flow needs at least 2 coordinates, got dim={dim}")
    if n_layers < 0 or (n_layers == 0 and not linear):
        raise ValueError("n_layers must be >= 1 (or >= 0 with a linear layer)")
    masks = jnp.asarray(coupling_masks(dim, n_layers)) if n_layers else jnp.zeros((0, dim))
    eye = jnp.eye(dim)

    def init(key):
        params = {"layers": coupling_init(key)}
        if linear:
            params["linear"] = jnp.zeros((dim, dim))
        return params

    def coupling_init(key):
        layers = []
        for k in jax.random.split(key, n_layers):
            k1, k2 = jax.random.split(k)
            layers.append(
                {
                    "w1": jax.random.normal(k1, (dim, hidden)) / np.sqrt(dim),
                    "b1": jnp.zeros(hidden),
                    "w2": jax.random.normal(k2, (hidden, hidden)) / np.sqrt(hidden),
                    "b2": jnp.zeros(hidden),
                    "w3": jnp.zeros((hidden, 3 * dim)),
                    "b3": jnp.zeros(3 * dim),
                }
            )
        return layers

    def conditioner(layer, x_masked):
        if network_dtype is not None and network_dtype != x_masked.dtype:
            layer = jax.tree.map(lambda a: a.astype(network_dtype), layer)
            h = jnp.tanh(x_masked.astype(network_dtype) @ layer["w1"] + layer["b1"])
        else:
            h = jnp.tanh(x_masked @ layer["w1"] + layer["b1"])
        h = jnp.tanh(h @ layer["w2"] + layer["b2"])
        out = (h @ layer["w3"] / h.shape[-1] + layer["b3"]).astype(x_masked.dtype)  # 1/fan-in output multiplier, see module docstring
        bounded = max_log_scale * jnp.tanh(out[: 2 * dim] / max_log_scale)
        return bounded[:dim], bounded[dim:], out[2 * dim :]  # log scale a, log tail d, shift b

    def forward_and_log_det(params, x):
        log_det = jnp.zeros((), x.dtype)
        if linear:
            x, log_det = linear_layer_forward(params, x)
        for layer, m in zip(params["layers"], masks):
            log_scale, log_tail, shift = conditioner(layer, m * x)
            tail = jnp.exp(log_tail)
            u = tail * jnp.arcsinh(x)
            z_b = jnp.exp(log_scale) * jnp.sinh(u) + shift
            jac = log_scale + log_tail + jnp.log(jnp.cosh(u)) - 0.5 * jnp.log1p(x**2)
            x = m * x + (1.0 - m) * z_b
            log_det = log_det + jnp.sum((1.0 - m) * jac)
        return x, log_det

    def inverse(params, z):
        for layer, m in reversed(list(zip(params["layers"], masks))):
            log_scale, log_tail, shift = conditioner(layer, m * z)
            x_b = jnp.sinh(jnp.arcsinh((z - shift) * jnp.exp(-log_scale)) * jnp.exp(-log_tail))
            z = m * z + (1.0 - m) * x_b
        if linear:
            z = jnp.linalg.solve(eye + params["linear"], z)
        return z

    return Flow(init=init, forward_and_log_det=forward_and_log_det, inverse=inverse, dim=dim)
