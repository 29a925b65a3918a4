"""Local energy E_loc = (H Psi)/Psi of the vibrational Hamiltonian in phonon coordinates.

In dimensionless mode coordinates s_k (see :mod:`thermoflow.phonons.modes`),
H = -sum_k (hbar omega_k / 2) d^2/ds_k^2 + V(R0 + B s), so with g = ln|Psi|
E_kin = -sum_k (hbar omega_k / 2) [d_k^2 g + (d_k g)^2]. Three ways to get it:

* ``"folx"``: the forward-Laplacian transform of the ``folx`` package (exact; one forward pass
  carrying the Hessian diagonal), cf. R. Li et al., Nat. Mach. Intell. 6, 209 (2024),
  arXiv:2307.08214;
* ``"exact"``: forward-over-reverse, one Hessian-vector product per mode (exact, O(D) passes);
* ``"hutchinson"``: unbiased stochastic trace v^T Hess v with one Rademacher vector v per
  sample (cheap for large D, adds variance). M. F. Hutchinson, Commun. Stat. Simul. Comput. 18,
  1059 (1989), doi:10.1080/03610918908812806;
* ``"jet"``: for flows that propagate their own Jacobian and Laplacian analytically
  (:attr:`thermoflow.nct.flow.Flow.jet`, e.g. the quadratic flow): with ln|Psi| =
  sum_a ln|phi_{n_a}(z_a)| + ln|det dz/ds| / 2 the chain rule needs only those, O(D^3);
* ``"auto"``: ``"jet"`` when the flow has one, else ``"folx"``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from folx import forward_laplacian

from thermoflow.nct.flow import Flow
from thermoflow.nct.hermite import log_abs_hermite_function
from thermoflow.units import HBAR_EV

LAPLACIAN_METHODS = ("auto", "folx", "exact", "hutchinson", "jet")


def _gradient_and_laplacian(g: Callable, y: jax.Array, method: str, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(grad g (n,), Laplacian of g) at y: folx's forward Laplacian, forward-over-reverse ("exact",
    n Hessian-vector products) or Hutchinson's estimate with one Rademacher vector drawn from key."""
    if method == "folx":
        out = forward_laplacian(g)(y)
        return out.jacobian.dense_array.reshape(-1), out.laplacian
    grad_fn = jax.grad(g)
    if method == "exact":
        grad, hvp = jax.linearize(grad_fn, y)
        return grad, jnp.sum(jax.vmap(lambda e: jnp.dot(e, hvp(e)))(jnp.eye(y.shape[0], dtype=y.dtype)))
    v = jax.random.rademacher(key, y.shape, dtype=y.dtype)
    grad, hv = jax.jvp(grad_fn, (y,), (v,))
    return grad, jnp.dot(v, hv)


def make_kinetic_energy(
    log_psi: Callable, phonon_energies_eV: jax.Array, method: str = "folx"
) -> Callable[[dict, jax.Array, jax.Array, jax.Array], jax.Array]:
    """``kinetic(flow_params, levels (D,), s (D,), key) -> local kinetic energy (eV)``.

    Args:
        log_psi: ``(flow_params, levels, s) -> ln|Psi|`` for one configuration.
        phonon_energies_eV: (D,) hbar omega_k, eV.
        method: one of :data:`LAPLACIAN_METHODS`.

    Raises:
        ValueError: for an unknown method.
    """
    if method not in LAPLACIAN_METHODS or method in ("auto", "jet"):
        raise ValueError(f"unknown Laplacian method {method!r} here; choose folx, exact or hutchinson (auto and jet: make_jet_kinetic_energy)")
    sqrt_e = jnp.sqrt(jnp.asarray(phonon_energies_eV))

    # In y = s / sqrt(hbar omega) the kinetic operator is -(1/2) sum_k d^2/dy_k^2.
    def kinetic(flow_params, levels, s, key):
        def g(y):
            return log_psi(flow_params, levels, sqrt_e * y)

        grad, lap = _gradient_and_laplacian(g, s / sqrt_e, method, key)
        return -0.5 * (lap + jnp.sum(grad**2))

    return kinetic


def make_directional_kinetic_energy(
    log_psi: Callable, modes_eigenvectors: jax.Array, phonon_energies_eV: jax.Array, method: str = "folx"
) -> Callable[[dict, jax.Array, jax.Array, jax.Array], jax.Array]:
    """``kinetic(flow_params, levels (D,), s (D,), key) -> (3,)``: the local kinetic energy split by
    Cartesian direction, K_a = -(hbar^2 / 2) sum_atoms (1 / m) d^2 Psi / dx_a^2 / Psi, eV; the three
    sum to :func:`make_kinetic_energy`'s value. An orthorhombic strain scales them separately.

    With x = R0 + B s, d/dx_(i a) = sum_k sqrt(m_i omega_k / hbar) e_(i a),k d/ds_k, so
    K_a = -(1/2) [tr(C_a^T Hess C_a) + |C_a^T grad|^2] with C_a = diag(sqrt(hbar omega)) E_a^T
    (D x N; E_a the eigenvector rows of direction a) and grad, Hess those of ln|Psi| in s: the
    Laplacian of y -> ln|Psi(s + C_a y)| over N coordinates, three per sample, about the cost of one
    D-dimensional Laplacian. sum_a C_a C_a^T = diag(hbar omega) recovers the total.

    Args:
        log_psi: ``(flow_params, levels, s) -> ln|Psi|`` for one configuration.
        modes_eigenvectors: (3N, D) orthonormal mass-weighted eigenvectors.
        phonon_energies_eV: (D,) hbar omega_k, eV.
        method: ``"folx"``, ``"exact"`` (N Hessian-vector products per direction) or
            ``"hutchinson"`` (one Rademacher vector per direction and sample).

    Raises:
        ValueError: for another method.
    """
    if method not in ("folx", "exact", "hutchinson"):
        raise ValueError(f"directional kinetic energy: choose folx, exact or hutchinson (or the flow's jet: make_directional_jet_kinetic_energy), not {method!r}")
    directions = cartesian_factors(modes_eigenvectors, phonon_energies_eV)
    n_atoms = directions.shape[2]

    def kinetic(flow_params, levels, s, key):
        def along(c, k):
            def g(y):
                return log_psi(flow_params, levels, s + c @ y)

            grad, lap = _gradient_and_laplacian(g, jnp.zeros(n_atoms, dtype=s.dtype), method, k)
            return -0.5 * (lap + jnp.sum(grad**2))

        return jax.vmap(along)(directions, jax.random.split(key, 3))

    return kinetic


def cartesian_factors(modes_eigenvectors: jax.Array, phonon_energies_eV: jax.Array) -> jax.Array:
    """(3, D, N) C_a = diag(sqrt(hbar omega)) E_a^T, the factors of the kinetic metric per Cartesian
    direction a (E_a: the eigenvector rows of direction a; sum_a C_a C_a^T = diag(hbar omega)), see
    :func:`make_directional_kinetic_energy`. ``modes_eigenvectors`` (3N, D), ``phonon_energies_eV`` (D,)."""
    e = jnp.asarray(modes_eigenvectors)
    sqrt_e = jnp.sqrt(jnp.asarray(phonon_energies_eV))
    return jnp.transpose(e.reshape(e.shape[0] // 3, 3, -1), (1, 2, 0)) * sqrt_e[None, :, None]


def _jet_kinetic(flow: Flow, n_levels: int, flow_params, levels, s, metric: jax.Array) -> jax.Array:
    """-(1/2) [tr(M Hess g) + grad g^T M grad g] of g = ln|Psi| at s from the flow's jet, for the
    metric M of ``metric`` (its diagonal (D,) or a factor C (D, m), M = C C^T).

    With phi_a = ln|phi_{n_a}(z_a)| (elementwise): grad g = J^T phi' + grad(ln det)/2 and
    tr(M Hess g) = sum_a phi''_a (J M J^T)_aa + phi' . lap_M z + lap_M(ln det)/2."""
    z, jac, lap_z, _, grad_log_det, lap_log_det = flow.jet(flow_params, s, metric)

    def log_phi(z):
        return log_abs_hermite_function(z, levels, n_levels)

    ones = jnp.ones_like(z)

    def first(z):
        return jax.jvp(log_phi, (z,), (ones,))[1]  # elementwise derivative

    d1, d2 = jax.jvp(first, (z,), (ones,))
    grad = jac.T @ d1 + 0.5 * grad_log_det
    if metric.ndim == 1:
        metric_diag, grad_term = jnp.sum(jac * jac * metric[None, :], axis=1), jnp.sum(metric * grad**2)
    else:
        metric_diag, grad_term = jnp.sum((jac @ metric) ** 2, axis=1), jnp.sum((metric.T @ grad) ** 2)
    lap = jnp.sum(d2 * metric_diag) + d1 @ lap_z + 0.5 * lap_log_det
    return -0.5 * (lap + grad_term)


def _require_jet(flow: Flow) -> None:
    if flow.jet is None:
        raise ValueError("the 'jet' Laplacian needs a flow with an analytic jet (e.g. the quadratic flow)")


def make_jet_kinetic_energy(flow: Flow, n_levels: int, phonon_energies_eV: jax.Array) -> Callable:
    """``kinetic(flow_params, levels (D,), s (D,), key) -> local kinetic energy (eV)`` from the
    flow's analytic jet (method ``"jet"``, see the module docstring): the metric W = diag(hbar omega).

    Raises:
        ValueError: if the flow has no jet.
    """
    _require_jet(flow)
    weights = jnp.asarray(phonon_energies_eV)

    def kinetic(flow_params, levels, s, key):
        del key
        return _jet_kinetic(flow, n_levels, flow_params, levels, s, weights)

    return kinetic


def make_directional_jet_kinetic_energy(flow: Flow, n_levels: int, modes_eigenvectors: jax.Array, phonon_energies_eV: jax.Array) -> Callable:
    """``kinetic(flow_params, levels (D,), s (D,), key) -> (3,)``: the local kinetic energy per
    Cartesian direction (as :func:`make_directional_kinetic_energy`, eV) from the flow's analytic jet,
    in the metrics C_a C_a^T of :func:`cartesian_factors`. The three jets are one vmap over the
    factors: the parts that do not depend on the metric (the flow's value and Jacobian) are computed
    once (measured: the orthorhombic training step costs 1.5x the isotropic one, 6x less than with
    three directional folx Laplacians; benchmarks/npt_step.py, docs/benchmarks.md).

    Raises:
        ValueError: if the flow has no jet.
    """
    _require_jet(flow)
    directions = cartesian_factors(modes_eigenvectors, phonon_energies_eV)

    def kinetic(flow_params, levels, s, key):
        del key
        return jax.vmap(lambda c: _jet_kinetic(flow, n_levels, flow_params, levels, s, c))(directions)

    return kinetic


def harmonic_kinetic_energy(levels: jax.Array, s: jax.Array, phonon_energies_eV: jax.Array) -> jax.Array:
    """Exact local kinetic energy of the unflowed state Phi_n at s (flow frozen at identity).

    From the oscillator equation, -(1/2) psi_n''/psi_n = n + 1/2 - s^2/2 per mode, so
    E_kin = sum_k hbar omega_k (n_k + 1/2 - s_k^2 / 2), eV.
    """
    return jnp.sum(phonon_energies_eV * (levels + 0.5 - 0.5 * s**2))


def make_kinetic_stress(
    flow: Flow, n_levels: int, modes_eigenvectors: jax.Array, omega: jax.Array, masses: jax.Array
) -> Callable[[dict, jax.Array, jax.Array], jax.Array]:
    """``kinetic_tensor(flow_params, levels (D,), s (D,)) -> Pi (3, 3)``, eV: a per-sample estimator
    of the kinetic tensor Pi_ij = sum_atoms <P_i P_j> / m of the state Psi_n (tr Pi = 2 <K>).

    For a real Psi, <P_i P_j> = hbar^2 <d_i ln|Psi| d_j ln|Psi|> (integration by parts), so with
    g = grad_s ln|Psi| in the dimensionless mode coordinates, Pi = sum_atoms m v v^T where
    v = B (omega * g) is a "velocity" (B the displacement matrix, Angstrom per unit s): one
    gradient of ln|Psi| per sample, no Hessian, symmetric and positive semi-definite by
    construction. The full tensor (not 2 <K> / 3 on the diagonal) is what an anisotropic stress
    needs.

    Control variate: the same estimator of the harmonic state Phi_n at the flow's output
    z = f(s) has an exactly known mean, Pi_h(n) = sum_k (n_k + 1/2) hbar omega_k P_k with P_k the
    3 x 3 projector of mode k summed over atoms, because z ~ |Phi_n|^2 exactly; it is subtracted
    per sample and its mean added back. The estimator stays unbiased, and at the identity flow it
    returns Pi_h(n) with zero variance.

    Args:
        flow: the NCT flow.
        n_levels: harmonic-oscillator levels per mode.
        modes_eigenvectors: (3N, D) orthonormal mass-weighted eigenvectors e_k.
        omega: (D,) angular frequencies, rad per ASE time unit.
        masses: (N,) amu.
    """
    e = jnp.asarray(modes_eigenvectors)
    omega = jnp.asarray(omega)
    masses = jnp.asarray(masses)
    n_atoms = masses.shape[0]
    # B = M^-1/2 E diag(sqrt(hbar / omega)); v = B (omega g) = M^-1/2 E (sqrt(hbar omega) g)
    velocity_matrix = (e * jnp.sqrt(HBAR_EV * omega)[None, :]) / jnp.repeat(jnp.sqrt(masses), 3)[:, None]
    e_atoms = e.reshape(n_atoms, 3, -1)
    projectors = jnp.einsum("aik,ajk->kij", e_atoms, e_atoms)  # (D, 3, 3)
    phonon_energies = HBAR_EV * omega

    def tensor(g):
        v = (velocity_matrix @ g).reshape(n_atoms, 3)
        return jnp.einsum("a,ai,aj->ij", masses, v, v)

    def log_abs_phi(levels, z):
        return jnp.sum(log_abs_hermite_function(z, levels, n_levels))

    def kinetic_tensor(flow_params, levels, s):
        def log_psi(x):
            z, log_det = flow.forward_and_log_det(flow_params, x)
            return log_abs_phi(levels, z) + 0.5 * log_det, z

        g, z = jax.grad(log_psi, has_aux=True)(s)
        g_harmonic = jax.grad(log_abs_phi, argnums=1)(levels, z)
        mean_harmonic = jnp.einsum("k,kij->ij", (levels + 0.5) * phonon_energies, projectors)
        return tensor(g) - tensor(g_harmonic) + mean_harmonic

    return kinetic_tensor
