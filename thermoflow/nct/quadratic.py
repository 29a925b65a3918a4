"""Quadratic autoregressive flow: the cubic-anharmonic point transformation, exactly invertible.

Why. To first order in the cubic anharmonicity V3 = (1/6) sum Phi_abc q_a q_b q_c (mass-weighted
mode coordinates q of the Gaussian reference), the ground state is a point transformation of the
harmonic one, Psi(q) = Phi_0(q - u(q)) |det(1 - du/dq)|^1/2 with the quadratic displacement

    u_a(q) = - sum_bc Phi_abc q_b q_c / (2 (omega_a + omega_b + omega_c)^2)

(its three-phonon part reproduces first-order perturbation theory exactly; the one-phonon part
vanishes when the atoms sit at inversion centres). In dimensionless coordinates s_k =
q_k sqrt(omega_k / hbar) the flow z = f(s) of :mod:`thermoflow.nct.wavefunction` is then
z_a = s_a + sum_bc K_abc s_b s_c with

    K_abc = hbar^1/2 Phi_abc omega_a^1/2 / (2 (omega_b omega_c)^1/2 (omega_a + omega_b + omega_c)^2).

On the default neon job, the RealNVP couplings fitted to this map by least squares reproduce only
4 % of it (a coupling transforms half the modes elementwise from the other half; a dense
three-mode coupling is outside that family), which is why they gained nothing over the Gaussian.

The layers. A quadratic map is not a bijection, so the map is split into autoregressive layers,
each exactly invertible: for an ordering pi of the modes,

    y'_a = y_a exp(h_a) + sum_bc Q_abc y_b y_c,    h_a = sum_c D_ac y_c,

with Q_abc non-zero only for b, c before a, and D_ac only for c before a. The Jacobian is
triangular in that order with diagonal exp(h_a): log|det| = sum_a h_a, linear in y; the inverse
runs once through the ordering. The orderings come in pairs (pi, reversed pi): to first order the
layers add, and a term (a; b, c) is representable in a layer in which b and c both precede a (the
shift Q) or, for b = a, in which c precedes a (the scale D). With identity/reversed and further
random orderings, the fraction of the three-mode terms that no layer can hold is (1/3)^n_pairs;
the self terms Phi_aaa are left out (:func:`perturbative_parameters` reports what is dropped).

Speed. The kinetic energy needs the Laplacian of ln|Psi|. A generic forward Laplacian (folx)
propagates D tangents through every contraction, O(D^4) per layer and sample; :func:`Flow.jet`
here propagates the value, the Jacobian and the weighted Laplacian of each coordinate through
the layers analytically, O(D^3) (measured 20x faster at D = 93; benchmarks/quadratic_flow.py).
Memory is D^3 numbers per layer (x3 with Adam's moments): 6.4 MB at D = 93, 216 MB at D = 300,
so a few hundred modes at most; larger cells need a sparse or low-rank Q (not built).

References: first-order (Rayleigh-Schroedinger) perturbation theory of the cubic anharmonicity,
e.g. A. A. Maradudin and A. E. Fein, Phys. Rev. 128, 2589 (1962), doi:10.1103/PhysRev.128.2589;
autoregressive flows: G. Papamakarios, T. Pavlakou, I. Murray, "Masked autoregressive flow for
density estimation", NeurIPS 2017, arXiv:1705.07057; forward Laplacian: R. Li et al., Nat. Mach.
Intell. 6, 209 (2024), arXiv:2307.08214.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.nct.flow import Flow, input_metric, linear_layer_forward
from thermoflow.units import HBAR_EV


def mode_orderings(dim: int, n_pairs: int, seed: int = 0) -> np.ndarray:
    """(2 n_pairs, dim) orderings of the modes: identity, reversed, then random ones each followed
    by its reverse.

    Raises:
        ValueError: if ``n_pairs < 1``.
    """
    if n_pairs < 1:
        raise ValueError(f"a quadratic flow needs at least one pair of orderings, got {n_pairs}")
    rng = np.random.default_rng(seed)
    orders = []
    for k in range(n_pairs):
        order = np.arange(dim) if k == 0 else rng.permutation(dim)
        orders += [order, order[::-1]]
    return np.stack(orders)


def _ranks(order: np.ndarray) -> np.ndarray:
    """(D,) position of each coordinate in ``order``."""
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(len(order))
    return rank


def _masks(rank):
    """Boolean masks from the ranks of one ordering: of Q (D, D, D), b and c before a; of D (D, D),
    c before a. ``rank`` may be a numpy or a JAX array (inside a jitted function the masks are built there:
    (D, D, D) constants closed over would be embedded in every compiled function using the flow and
    copied by XLA's constant folding; at D = 321, 1 GB each, the fcc 108 training step ran out of 24 GB)."""
    before = rank[None, :] < rank[:, None]  # [a, c]: c precedes a
    return before[:, :, None] & before[:, None, :], before


def make_quadratic_flow(dim: int, n_pairs: int = 2, linear: bool = False, seed: int = 0) -> Flow:
    """Quadratic autoregressive flow of ``dim`` coordinates (identity at initialisation).

    Args:
        dim: number of coordinates (phonon modes), >= 2.
        n_pairs: pairs of orderings (two layers each), see the module docstring.
        linear: start with the learnable linear layer y = (1 + W) x of
            :func:`thermoflow.nct.flow.make_realnvp`.
        seed: seed of the random orderings.

    Returns:
        A :class:`~thermoflow.nct.flow.Flow` with ``jet``; params
        ``{"quadratic": [{"q": (D, D, D), "d": (D, D)}, ...], "linear"?: (D, D)}``. Masked
        entries of q and d are ignored (and get zero gradient); q is symmetrised in its last two
        indices.

    Raises:
        ValueError: if ``dim < 2`` or ``n_pairs < 1``.
    """
    if dim < 2:
        raise ValueError(f"a quadratic flow needs at least 2 coordinates, got dim={dim}")
    orders = mode_orderings(dim, n_pairs, seed)
    ranks = jnp.asarray(np.stack([_ranks(o) for o in orders]))
    orders_j = jnp.asarray(orders)
    eye = jnp.eye(dim)

    def init(key):
        del key  # deterministic: the identity
        params = {"quadratic": [{"q": jnp.zeros((dim, dim, dim)), "d": jnp.zeros((dim, dim))} for _ in orders]}
        if linear:
            params["linear"] = jnp.zeros((dim, dim))
        return params

    def effective(layer, k):
        q_mask, d_mask = _masks(ranks[k])
        return jnp.where(q_mask, 0.5 * (layer["q"] + jnp.swapaxes(layer["q"], 1, 2)), 0.0), jnp.where(d_mask, layer["d"], 0.0)

    def forward_and_log_det(params, x):
        log_det = jnp.zeros((), x.dtype)
        if linear:
            x, log_det = linear_layer_forward(params, x)
        for k, layer in enumerate(params["quadratic"]):
            q, d = effective(layer, k)
            h = d @ x
            x = x * jnp.exp(h) + jnp.einsum("abc,b,c->a", q, x, x)
            log_det = log_det + jnp.sum(h)
        return x, log_det

    def inverse(params, z):
        for k in reversed(range(len(params["quadratic"]))):
            q, d = effective(params["quadratic"][k], k)

            # coordinates not yet solved are zero, and their coefficients are masked anyway
            def solve_one(y, a, q=q, d=d, z=z):
                shift = q[a] @ y @ y
                return y.at[a].set((z[a] - shift) * jnp.exp(-(d[a] @ y))), None

            z, _ = jax.lax.scan(solve_one, jnp.zeros_like(z), orders_j[k])
        if linear:
            z = jnp.linalg.solve(eye + params["linear"], z)
        return z

    def jet(params, x, weights):
        """Value, Jacobian and Laplacians in the metric ``weights``, see :class:`~thermoflow.nct.flow.Flow`."""
        n = x.shape[0]
        jac = eye
        lap = jnp.zeros(n, x.dtype)
        log_det = jnp.zeros((), x.dtype)
        grad_log_det = jnp.zeros(n, x.dtype)
        lap_log_det = jnp.zeros((), x.dtype)
        if linear:
            jac = eye + params["linear"]
            x, log_det = linear_layer_forward(params, x)
        for k, layer in enumerate(params["quadratic"]):
            q, d = effective(layer, k)
            h = d @ x
            e = jnp.exp(h)
            qx = jnp.einsum("abc,c->ab", q, x)
            # metric of the input coordinates, G = J W J^T
            g = input_metric(jac, weights)
            dg = d @ g
            # log det = 1^T D x is linear in x: gradient J^T D^T 1, Laplacian 1^T D lap
            col = jnp.sum(d, axis=0)
            grad_log_det = grad_log_det + jac.T @ col
            lap_log_det = lap_log_det + col @ lap
            log_det = log_det + jnp.sum(h)
            # d y'_a / d y_b and the second derivatives contracted with G
            a_mat = jnp.diag(e) + (x * e)[:, None] * d + 2.0 * qx
            second = 2.0 * e * jnp.diagonal(dg) + x * e * jnp.sum(dg * d, axis=1) + 2.0 * jnp.einsum("abc,bc->a", q, g)
            lap = a_mat @ lap + second
            x = x * e + qx @ x
            jac = a_mat @ jac
        return x, jac, lap, log_det, grad_log_det, lap_log_det

    return Flow(init=init, forward_and_log_det=forward_and_log_det, inverse=inverse, dim=dim, jet=jet)


@dataclasses.dataclass(frozen=True)
class PerturbativeInit:
    """Quadratic-flow parameters from first-order perturbation theory.

    Attributes:
        params: flow parameters (as :func:`make_quadratic_flow` ``init``), scaled by ``scale``.
        dropped_fraction: squared norm of the target map's coefficients no layer can hold
            (self terms and uncovered orderings), over the total.
    """

    params: dict
    dropped_fraction: float


def dimensionless_cubic_map(phi3: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """K (D, D, D) of z_a = s_a + sum_bc K_abc s_b s_c (module docstring).

    Args:
        phi3: (D, D, D) cubic force constants in the mass-weighted modes, eV / (amu^3/2 A^3).
        omega: (D,) frequencies of those modes, rad per ASE time unit.
    """
    w = np.asarray(omega)
    total = w[:, None, None] + w[None, :, None] + w[None, None, :]
    return np.sqrt(HBAR_EV) * np.asarray(phi3) * np.sqrt(w)[:, None, None] / (
        2.0 * np.sqrt(w[None, :, None] * w[None, None, :]) * total**2
    )


def perturbative_parameters(orderings: np.ndarray, k_map: np.ndarray, scale: float = 1.0, linear: bool = False) -> PerturbativeInit:
    """Distribute the map z = s + K(s, s) over the layers of a quadratic flow.

    Each term goes to the first layer that can hold it: the shift q for (a; b, c) with b, c
    both before a (a not among them); the log-scale d for (a; a, c), c before a (to first order
    s_a exp(d s_c) = s_a + d s_a s_c). The self terms (a; a, a) are dropped.

    Args:
        orderings: (n_layers, D) the flow's :func:`mode_orderings` (same n_pairs and seed).
        k_map: (D, D, D) K, symmetric in its last two indices.
        scale: multiplies the whole map.
        linear: whether the flow has the linear layer (its parameters start at zero).

    Raises:
        ValueError: if K does not match the orderings' shape.
    """
    orders = np.asarray(orderings)
    dim = orders.shape[1]
    k_map = np.asarray(k_map, dtype=np.float64)
    if k_map.shape != (dim, dim, dim):
        raise ValueError(f"K must have shape {(dim,) * 3}, got {k_map.shape}")
    k_map = 0.5 * (k_map + k_map.transpose(0, 2, 1))
    remaining_q = np.ones((dim, dim, dim), dtype=bool)
    idx = np.arange(dim)
    remaining_q[idx, idx, :] = False  # b = a: scale terms
    remaining_q[idx, :, idx] = False  # c = a: scale terms
    remaining_d = ~np.eye(dim, dtype=bool)  # [a, c], c != a: coefficient 2 K_aac
    scale_target = 2.0 * k_map[idx, idx, :]  # (a, c): K_aac + K_aca
    layers = []
    for order in orders:
        q_mask, d_mask = _masks(_ranks(order))
        take_q = q_mask & remaining_q
        take_d = d_mask & remaining_d
        layers.append({"q": jnp.asarray(scale * np.where(take_q, k_map, 0.0)), "d": jnp.asarray(scale * np.where(take_d, scale_target, 0.0))})
        remaining_q &= ~take_q
        remaining_d &= ~take_d
    total = np.sum(k_map**2)
    dropped = np.sum(np.where(remaining_q, k_map, 0.0) ** 2) + np.sum(k_map[idx, idx, idx] ** 2)
    dropped += np.sum(np.where(remaining_d, k_map[idx, idx, :], 0.0) ** 2) * 2.0  # K_aac and K_aca
    params = {"quadratic": layers}
    if linear:
        params["linear"] = jnp.zeros((dim, dim))
    return PerturbativeInit(params=params, dropped_fraction=float(dropped / total) if total > 0 else 0.0)
