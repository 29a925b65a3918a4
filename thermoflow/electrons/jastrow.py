"""Periodic Slater-Jastrow wavefunction: plane-wave determinants times an RPA-type two-body Jastrow factor.

ln psi = ln|D_up D_down| - sum_{i<j} u_{s_i s_j}(d_ij) (+ electron-proton terms), with the smooth periodic distance

    d_ij = | sum_a a_a (1 - exp(2 pi i s_a)) | / 2 pi,   s = fractional coordinates of r_j - r_i

(:func:`thermoflow.lattice.smooth_periodic_distance`; sqrt(sum_a |a_a|^2 sin^2(pi s_a)) / pi in an
orthogonal cell), which equals |r_ij| for small separations, is invariant under lattice translations
of either electron in any lattice and smooth except where r_ij is a lattice vector (an image of
r_ij = 0), and the
Ceperley (RPA) pair function u(d) = (A / d) (1 - exp(-d / F)) with F fixed by the electron-electron
cusp conditions (d ln psi / dr = 1/2 for antiparallel and 1/4 for parallel spins at contact:
F = sqrt(A) and sqrt(2A)). With protons, + sum_{i, I} u_ep(d_iI) of the same form with the
electron-proton cusp d ln psi / dr = -1. One variational parameter per kind of pair, A = softplus(a) > 0.
This is the classic VMC wavefunction of the electron gas and the baseline the neural
wavefunction of issue 11 must beat. The Jastrow factor is real and periodic, so with twisted
plane waves (k = G + k_s, :mod:`thermoflow.electrons.twists`) the wavefunction is complex and
obeys the twisted boundary condition of its determinants.

References: D. Ceperley, Phys. Rev. B 18, 3126 (1978), doi:10.1103/PhysRevB.18.3126 (RPA Jastrow
of the electron gas); T. Kato, Commun. Pure Appl. Math. 10, 151 (1957) (cusp conditions);
Foulkes et al., Rev. Mod. Phys. 73, 33 (2001).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.electrons.plane_waves import inversion_symmetric, make_slater_determinant, make_twisted_determinant
from thermoflow.lattice import distance_from_phases, fractional_phases, pair_phases, pair_phases_within, smooth_periodic_distance


class Wavefunction(NamedTuple):
    """``init() -> params`` (a pytree) and ``log_psi(params, electrons (n_e, 3) bohr, protons (n_p, 3)) ->
    (sign, ln|psi|)`` for one configuration; ``sign`` is a complex phase exp(i arg psi) for a complex
    (twisted) wavefunction."""

    init: Callable
    log_psi: Callable


def periodic_distance(displacements: jax.Array, cell: jax.Array) -> jax.Array:
    """Smooth periodic distance (module docstring) of displacements (..., 3) bohr in ``cell`` (3, 3): (...,) bohr."""
    return smooth_periodic_distance(displacements, cell)


def rpa_pair_function(d: jax.Array, amplitude: jax.Array, cusp: float) -> jax.Array:
    """u(d) = (A / d) (1 - exp(-d / F)) with F = sqrt(A / (2 cusp)) (the cusp d ln psi / dr at contact)."""
    decay = jnp.sqrt(amplitude / (2.0 * cusp))
    return amplitude * -jnp.expm1(-d / decay) / d


def log_jastrow(params: dict, electrons: jax.Array, protons: jax.Array | None, n_up: int, cell: jax.Array, *,
                distances: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """ln J = -sum_{i<j} u_{s_i s_j}(d_ij) + sum_{i, I} u_ep(d_iI) (scalar): the RPA pair terms with the
    electron-electron cusps (1/2 antiparallel, 1/4 parallel) and, with protons, the electron-proton
    term with the cusp d ln psi / dr = -1 (Z = 1) at every proton. ``params``: ``a_parallel``,
    ``a_antiparallel``, ``a_electron_proton`` (amplitudes A = softplus(a)). ``distances``: the smooth
    periodic distances ``(electron-electron (n, n), any diagonal; electron-proton (n, n_p))`` when the
    caller has them (the network wavefunction computes them with its pair inputs), else computed here.

    References: doi:10.1103/PhysRevB.18.3126; Kato (1957).
    """
    n = electrons.shape[0]
    spin = jnp.arange(n) < n_up
    same = spin[:, None] == spin[None, :]
    upper = jnp.triu(jnp.ones((n, n), dtype=bool), k=1)
    with_protons = protons is not None and protons.shape[0] > 0
    if distances is None:
        inverse = jnp.linalg.inv(cell)
        phases = fractional_phases(electrons, cell, inverse)
        d_ee = distance_from_phases(*pair_phases_within(phases), cell)
        d_ep = distance_from_phases(*pair_phases(phases, fractional_phases(protons, cell, inverse)), cell) if with_protons else None
    else:
        d_ee, d_ep = distances
    d = jnp.where(upper, d_ee, 1.0)
    u = jnp.where(same, rpa_pair_function(d, jax.nn.softplus(params["a_parallel"]), 0.25),
                  rpa_pair_function(d, jax.nn.softplus(params["a_antiparallel"]), 0.5))
    log_j = -jnp.sum(jnp.where(upper, u, 0.0))
    if with_protons:
        log_j = log_j + jnp.sum(rpa_pair_function(d_ep, jax.nn.softplus(params["a_electron_proton"]), 1.0))
    return log_j


def jastrow_params() -> dict:
    """Initial Jastrow amplitudes (a = 0: A = ln 2); strongly typed zeros, so that a jitted step does not
    compile twice (weakly typed scalars become strongly typed after the first update)."""
    return {"a_parallel": jnp.zeros(()), "a_antiparallel": jnp.zeros(()), "a_electron_proton": jnp.zeros(())}


def make_slater_jastrow(cell: np.ndarray, kvectors_up: np.ndarray, kvectors_down: np.ndarray) -> Wavefunction:
    """Plane-wave determinants times the RPA Jastrow factor :func:`log_jastrow` (electron-electron, and
    electron-proton when protons are given); params :func:`jastrow_params`. The first ``len(kvectors_up)``
    electrons are spin up. Real orbitals (:func:`thermoflow.electrons.plane_waves.make_slater_determinant`)
    when both k sets are symmetric under k -> -k (zero twist, closed shells), complex exp(i k . r)
    otherwise (:func:`thermoflow.electrons.plane_waves.make_twisted_determinant`: twisted sets
    :func:`thermoflow.electrons.twists.twisted_kvectors`, both spins at +k_s or the down spin at -k_s, as
    the caller chooses).

    References: doi:10.1103/PhysRevB.18.3126; doi:10.1103/PhysRevE.64.016702.
    """
    real = inversion_symmetric(kvectors_up) and inversion_symmetric(kvectors_down)
    determinant = (make_slater_determinant if real else make_twisted_determinant)(kvectors_up, kvectors_down)
    n_up = len(kvectors_up)
    cell_j = jnp.asarray(np.asarray(cell, dtype=np.float64))

    def log_psi(params, electrons, protons=None):
        sign, log_det = determinant(electrons)
        return sign, log_det + log_jastrow(params, electrons, protons, n_up, cell_j)

    return Wavefunction(init=jastrow_params, log_psi=log_psi)
