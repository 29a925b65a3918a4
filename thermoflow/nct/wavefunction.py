"""NCT wavefunctions Psi_n(s) = Phi_n(f(s)) |det df/ds|^1/2 and exact sampling of |Psi_n|^2.

Phi_n is a product of Hermite functions in the flow's output coordinates z = f(s); because f is
a bijection the states Psi_n are orthonormal for every flow parameter (a unitary change of
variables). If z ~ |Phi_n|^2 exactly then s = f^-1(z) ~ |Psi_n|^2 exactly: independent samples,
no Markov chain, no warm-up, no autocorrelation.

References: Q. Zhang et al., Phys. Rev. Lett. 134, 246101 (2025), arXiv:2409.09813;
Q. Zhang, R. Wang, L. Wang, J. Chem. Phys. 161, 024103 (2024), arXiv:2404.14402.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from thermoflow.nct.flow import Flow
from thermoflow.nct.hermite import log_abs_hermite_function, sample_hermite


def make_log_psi(flow: Flow, n_levels: int) -> Callable[[dict, jax.Array, jax.Array], jax.Array]:
    """``log_psi(flow_params, levels (n_modes,) int, s (n_modes,)) -> ln|Psi_n(s)|``.

    ``s`` are dimensionless phonon coordinates (see :mod:`thermoflow.phonons.modes`). The
    result is normalised with respect to ds.
    """

    def log_psi(flow_params, levels, s):
        z, log_det = flow.forward_and_log_det(flow_params, s)
        return jnp.sum(log_abs_hermite_function(z, levels, n_levels)) + 0.5 * log_det

    return log_psi


def make_sampler(flow: Flow, n_levels: int) -> Callable[[dict, jax.Array, jax.Array], jax.Array]:
    """``sample(flow_params, key, levels (batch, n_modes)) -> s (batch, n_modes)``, exact."""
    inverse = jax.vmap(flow.inverse, in_axes=(None, 0))

    def sample(flow_params, key, levels):
        z = sample_hermite(key, levels, n_levels)
        return inverse(flow_params, z)

    return sample
