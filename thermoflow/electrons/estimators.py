"""Estimators of electronic VMC beyond the energy: the virial pressure and the forces on the protons.

For Coulomb systems (all interactions 1/r) the virial theorem gives the pressure of an eigenstate
from its kinetic and potential energies, P = (2 <T> + <V>) / (3 Omega): for an exact eigenstate
(and for any state whose energy scales like T ~ L^-2, V ~ L^-1 under a uniform dilation, such as a
plane-wave determinant or a wavefunction optimised over its length scale) it equals -dE/dOmega. For
an approximate, not fully optimised wavefunction the estimator is biased (the Pulay-like term
of the wavefunction's own volume dependence is missing); say so when quoting it. With fixed
protons the proton-proton Coulomb energy is part of V (it scales as 1/L too), and the pressure is
the electronic + static-proton (Born-Oppenheimer) pressure at that proton configuration.

Forces on the protons (Hellmann-Feynman): F_I = -<dV/dR_I>_{|psi|^2}, the electrostatic force of the
electrons (sampled) and of the other protons and all periodic images (Ewald) on proton I. It is
the exact force dE/dR_I for an exact eigenstate, and for any wavefunction that does not depend on
the proton positions; a proton-dependent approximate wavefunction adds Pulay-like terms that this
estimator leaves out (they vanish as the wavefunction becomes exact), and its variance is infinite
(the 1/r^2 force of an electron at a proton). :func:`make_zero_variance_forces` removes that: the
Assaraf-Caffarel estimator F_I + [H (Q_I psi)] / psi - E_L Q_I with Q_I = -sum_i q(r_i - R_I),
q(d) = d/|d| w(|d|) (w = 1 near the proton, a smooth cutoff inside the cell), which per sample is
F_I - sum_i [(1/2) lap q(d_iI) + (grad q(d_iI)) grad_i ln|psi|]: the Laplacian of d/|d| is -2 d/|d|^3 and
cancels the singular electron-proton force exactly, and the added term has zero mean for any
wavefunction (integration by parts over the periodic cell, Q smooth), so the mean is that of the
Hellmann-Feynman estimator with a finite variance.

References: O. H. Nielsen and R. M. Martin, Phys. Rev. B 32, 3780 (1985),
doi:10.1103/PhysRevB.32.3780 (stress/virial theorem in periodic systems); D. M. Ceperley and
B. J. Alder, Phys. Rev. B 36, 2092 (1987), doi:10.1103/PhysRevB.36.2092 (virial pressure of
hydrogen in QMC); R. Assaraf and M. Caffarel, J. Chem. Phys. 113, 4028 (2000), doi:10.1063/1.1286598
(zero-variance forces).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.electrons.ewald import EwaldSum
from thermoflow.units import BOHR_A, EV_PER_HARTREE, GPA_PER_HARTREE_PER_BOHR3


def virial_pressure_GPa(kinetic_hartree, potential_hartree, volume_bohr3: float) -> np.ndarray:
    """P = (2 T + V) / (3 Omega) per sample, GPa.

    Args:
        kinetic_hartree, potential_hartree: (n,) local kinetic and potential energies of the cell, Hartree
            (complex for a twisted wavefunction: the real parts are used; twist-average the pressures
            with :func:`thermoflow.electrons.twists.twist_average`).
        volume_bohr3: cell volume Omega, bohr^3.

    Returns:
        (n,) pressures, GPa (average them with error bars; biased for approximate wavefunctions,
        module docstring).

    References: doi:10.1103/PhysRevB.32.3780.
    """
    kinetic, potential = np.real(np.asarray(kinetic_hartree)), np.real(np.asarray(potential_hartree))
    return (2.0 * kinetic + potential) / (3.0 * volume_bohr3) * GPA_PER_HARTREE_PER_BOHR3


def make_proton_forces(ewald: EwaldSum, n_electrons: int) -> Callable:
    """``forces(electrons (n_e, 3) bohr, protons (n_p, 3) bohr) -> (n_p, 3)`` Hellmann-Feynman forces
    -dV/dR_I of one electron configuration, Hartree/bohr (average over |psi|^2 samples; module
    docstring for when this is the exact force). ``ewald`` is built for n_e + n_p charges.

    References: R. P. Feynman, Phys. Rev. 56, 340 (1939), doi:10.1103/PhysRev.56.340.
    """

    def forces(electrons, protons):
        charges = jnp.concatenate([-jnp.ones(n_electrons, electrons.dtype), jnp.ones(protons.shape[0], electrons.dtype)])
        potential = lambda r: ewald.energy(jnp.concatenate([electrons, r], axis=0), charges)  # noqa: E731
        return -jax.grad(potential)(protons)

    return forces


def make_zero_variance_forces(log_psi: Callable, ewald: EwaldSum, n_electrons: int, cell: np.ndarray) -> Callable:
    """``forces(params, electrons (n_e, 3) bohr, protons (n_p, 3) bohr) -> (n_p, 3)`` Hartree/bohr: the
    zero-variance (Assaraf-Caffarel) force estimator of one electron configuration (module docstring),
    with the same mean as :func:`make_proton_forces` and a finite variance.

    Args:
        log_psi: ``(params, electrons, protons) -> (sign or phase, ln|psi|)``.
        ewald: the Ewald sum of the cell for n_e + n_p charges.
        n_electrons: n_e.
        cell: (3, 3) lattice vectors as rows, bohr. The cutoff w(r) = 1 - smoothstep(r / r_c) (C2, w = 1 -
            O(r^3) at the proton) reaches 0 at r_c = 0.49 x the shortest distance between lattice planes,
            so q is smooth and periodic on the minimum-image displacement.

    References: doi:10.1063/1.1286598.
    """
    hellmann_feynman = make_proton_forces(ewald, n_electrons)
    cell = np.asarray(cell, dtype=np.float64)
    inverse = jnp.asarray(np.linalg.inv(cell))
    spacing = float(1.0 / np.linalg.norm(np.linalg.inv(cell), axis=0).max())  # shortest distance between lattice planes
    outer = 0.49 * spacing

    def q(d):  # (3,) minimum-image displacement -> (3,)
        r = jnp.sqrt(jnp.sum(d**2))
        t = jnp.clip(r / outer, 0.0, 1.0)
        return -d / r * (1.0 - t**3 * (10.0 - 15.0 * t + 6.0 * t**2))

    def pair_terms(d):
        """(1/2 lap q (3,), grad q (3, 3)) at one electron-proton displacement."""
        return 0.5 * jnp.trace(jax.hessian(q)(d), axis1=1, axis2=2), jax.jacfwd(q)(d)

    def forces(params, electrons, protons):
        grad_log = jax.grad(lambda x: log_psi(params, x, protons)[1])(electrons)  # (n_e, 3)
        frac = (electrons[:, None, :] - protons[None, :, :]) @ inverse
        d = (frac - jnp.round(frac)) @ jnp.asarray(cell)  # (n_e, n_p, 3), minimum image
        half_laplacian, jacobian = jax.vmap(jax.vmap(pair_terms))(d)
        correction = half_laplacian + jnp.einsum("ipab,ib->ipa", jacobian, grad_log)
        return hellmann_feynman(electrons, protons) - jnp.sum(correction, axis=0)

    return forces


#: Hartree/bohr -> eV/Angstrom
EV_PER_A_PER_HARTREE_PER_BOHR = EV_PER_HARTREE / BOHR_A
