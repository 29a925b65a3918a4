"""Local energy of electrons and fixed protons in a periodic cell (Hartree atomic units).

E_loc(x; X) = -(1/2) [lap ln psi + (grad ln psi)^2] + V_Ewald(x, X): the kinetic term of the
electrons from the forward Laplacian (``folx``: one forward pass carrying the Laplacian through
the wavefunction, including its determinants), the Coulomb energy of electrons (-1) and protons
(+1) together, with their periodic images, by :mod:`thermoflow.electrons.ewald` (the proton-proton
term is included: E_loc is the Born-Oppenheimer energy estimator at proton positions X).

Complex wavefunctions (twisted boundary conditions, :mod:`thermoflow.electrons.twists`) return a
complex unit ``phase`` = exp(i theta) instead of a sign; with ln psi = ln|psi| + i theta the forward
Laplacian carries the two real functions (ln|psi|, theta) and

    E_kin = -(1/2) [lap ln|psi| + |grad ln|psi||^2 - |grad theta|^2] - (i/2) [lap theta + 2 grad ln|psi| . grad theta].

The local energy is then complex; its real part is the energy estimator and its imaginary part has
zero mean over |psi|^2 (H is Hermitian), a check on the sampling and the phase.

References: R. Li, H. Ye, D. Jiang et al., Nat. Mach. Intell. 6, 209 (2024), arXiv:2307.08214
(forward Laplacian); W. M. C. Foulkes, L. Mitas, R. J. Needs and G. Rajagopal, Rev. Mod. Phys. 73,
33 (2001), doi:10.1103/RevModPhys.73.33 (local energy, VMC in periodic systems).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from folx import forward_laplacian

from thermoflow.electrons.ewald import EwaldSum


class LocalEnergy(NamedTuple):
    """Local energy and its parts for one configuration, Hartree (scalars); ``total`` and ``kinetic`` are
    complex for a complex wavefunction (average their real parts; ``potential`` is real)."""

    total: jax.Array
    kinetic: jax.Array
    potential: jax.Array


#: a sparsity threshold for folx that suits the periodic network: the two-electron stream g_ij depends on the 6
#: coordinates of electrons i and j through every layer, so its Laplacian jets stay sparse. Measured on this CPU
#: (loaded): the published-size network's kinetic energies of 64 walkers 2.48 -> 1.59 s with identical values,
#: but the compilation of a 14-electron local energy 11 -> 46 s.
SPARSE_JETS = 6


def make_local_energy(log_psi: Callable, ewald: EwaldSum, n_electrons: int, sparsity_threshold: int = 0) -> Callable:
    """``local_energy(params, electrons (n_e, 3) bohr, protons (n_p, 3) bohr) -> LocalEnergy`` (Hartree).

    Args:
        log_psi: ``(params, electrons (n_e, 3), protons (n_p, 3)) -> (sign, ln|psi|)`` for one configuration;
            a complex ``sign`` (the phase exp(i theta)) makes the local energy complex (module docstring).
        ewald: the Ewald sum of the cell, built for ``n_e + n_p`` charges
            (:func:`thermoflow.electrons.ewald.make_ewald_sum`); with no protons the electrons sit in a
            uniform positive background (jellium).
        n_electrons: n_e.
        sparsity_threshold: folx's: jets that depend on at most this many inputs are kept sparse (0: dense;
            :data:`SPARSE_JETS` for the periodic network: faster evaluation, slower compilation).

    References: arXiv:2307.08214 (folx); doi:10.1103/RevModPhys.73.33.
    """

    def local_energy(params, electrons, protons):
        def log_parts(flat):  # (ln|psi|,) for a real wavefunction, (ln|psi|, theta) for a complex one
            sign, log_abs = log_psi(params, flat.reshape(n_electrons, 3), protons)
            return jnp.stack([log_abs, jnp.angle(sign)]) if jnp.iscomplexobj(sign) else log_abs[None]

        out = forward_laplacian(log_parts, sparsity_threshold=sparsity_threshold)(electrons.reshape(-1))
        grad = out.jacobian.dense_array.reshape(-1, out.laplacian.shape[0])  # (3 n_e, 1 or 2)
        kinetic = -0.5 * (out.laplacian[0] + jnp.sum(grad[:, 0] ** 2))
        if out.laplacian.shape[0] == 2:
            kinetic = (kinetic + 0.5 * jnp.sum(grad[:, 1] ** 2)
                       - 0.5j * (out.laplacian[1] + 2.0 * jnp.sum(grad[:, 0] * grad[:, 1])))
        charges = jnp.concatenate([-jnp.ones(n_electrons, electrons.dtype), jnp.ones(protons.shape[0], electrons.dtype)])
        potential = ewald.energy(jnp.concatenate([electrons, protons], axis=0), charges)
        return LocalEnergy(kinetic + potential, kinetic, potential)

    return local_energy
