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
estimator leaves out (they vanish as the wavefunction becomes exact), and its variance is large
near electron-proton coalescence (no variance reduction is applied here).

References: O. H. Nielsen and R. M. Martin, Phys. Rev. B 32, 3780 (1985),
doi:10.1103/PhysRevB.32.3780 (stress/virial theorem in periodic systems); D. M. Ceperley and
B. J. Alder, Phys. Rev. B 36, 2092 (1987), doi:10.1103/PhysRevB.36.2092 (virial pressure of
hydrogen in QMC).
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


#: Hartree/bohr -> eV/Angstrom
EV_PER_A_PER_HARTREE_PER_BOHR = EV_PER_HARTREE / BOHR_A
