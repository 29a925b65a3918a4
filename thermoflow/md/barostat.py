"""Stochastic cell rescaling: constant pressure (NPT) for Langevin and quantum-thermal-bath MD.

The barostat is first order: every step the cell, the positions and the velocities are rescaled
by a small random deformation whose drift pushes the instantaneous pressure towards the target
and whose noise makes the volume fluctuations those of the isothermal-isobaric ensemble
(Bernetti and Bussi). In the log-strain the equations are (Ito, ``P`` the instantaneous pressure
including the kinetic part)::

    isotropic     d(ln V)   = -(beta_T / tau_p)     (P0 - P)     dt + sqrt(2 kT beta_T / (V tau_p))     dW
    orthorhombic  d(ln L_a) = -(beta_T / 3 tau_p)   (P0 - P_aa)  dt + sqrt(2 kT beta_T / (3 V tau_p))   dW_a

with positions and cell scaled by ``exp(d ln L_a)`` along each axis and velocities by its inverse
(scaled coordinates and scaled momenta are unchanged). Written as a Fokker-Planck equation the
stationary distribution is exp(-(U + K + P0 V) / kT) with the volume measure dV (isotropic) or
dL_1 dL_2 dL_3 (orthorhombic); the Ito correction of the volume-dependent noise cancels the
Jacobian of the log variables exactly, which is why no k_B T / V term appears here (GROMACS writes
the isotropic equation the same way; Bernetti and Bussi's form in V carries -k_B T / V). Two exact
consequences are tested: the ideal gas volume <V> = (N + 1) k_B T / P0, and <P_aa> = P0 in the
stationary state. ``beta_T`` (isothermal compressibility) and ``tau_p`` only set the relaxation
time of the volume, not the distribution; :func:`static_bulk_modulus_GPa` estimates a sensible
``beta_T`` from the potential. With the quantum thermal bath the kinetic part of P contains the
zero-point motion (the quantum kinetic pressure), while the cell itself stays a classical degree
of freedom at the bath temperature.

The orthorhombic variant keeps the cell's axes along x, y, z (a diagonal cell); fully triclinic
anisotropic rescaling (Del Tatto, Raiteri, Bernetti and Bussi, Appl. Sci. 12, 1139 (2022),
doi:10.3390/app12031139) is not implemented. ASE has Berendsen and Nose-Hoover-Parrinello-Rahman
NPT stepping on the host; jax-md's ``npt_nose_hoover`` is isotropic and deterministic; neither
composes with this package's coloured-noise Langevin step, so the few lines are written here.

References: M. Bernetti and G. Bussi, J. Chem. Phys. 153, 114107 (2020), doi:10.1063/5.0020514.
"""

from __future__ import annotations

from typing import Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.potentials.base import EnergyFn, virial
from thermoflow.units import ASE_TIME_PER_FS, ASE_TIME_PER_PS, GPA_PER_EV_PER_A3

BarostatKind = Literal["isotropic", "orthorhombic"]


class Barostat(NamedTuple):
    """``rescale(key, positions, velocities, cell, virial) -> (positions, velocities, cell, work)``:
    one step of stochastic cell rescaling; arrays as :class:`thermoflow.md.integrators.MDState`,
    ``work`` (eV) the first-order change of U + K + P0 V the move caused (for the conserved energy).
    ``target_pressure``: P0, eV/A^3."""

    rescale: Callable
    target_pressure: float


def pressure_tensor(velocities: jax.Array, masses: jax.Array, cell: jax.Array, virial_eV: jax.Array) -> jax.Array:
    """Instantaneous pressure tensor (sum_i m_i v_i v_i^T + W) / V, shape (3, 3), eV/A^3.

    Args:
        velocities: (n_atoms, 3), Angstrom / ASE time unit.
        masses: (n_atoms,) amu.
        cell: (3, 3) lattice vectors as rows, Angstrom.
        virial_eV: (3, 3) virial W = -dU/d(strain), eV (:func:`thermoflow.potentials.base.virial`).
    """
    kinetic = jnp.einsum("i,ia,ib->ab", masses, velocities, velocities)
    return (kinetic + virial_eV) / jnp.abs(jnp.linalg.det(cell))


def make_stochastic_cell_rescaling(
    kind: BarostatKind, pressure_GPa: float, kT_eV: float, timestep_fs: float, time_constant_ps: float,
    compressibility_per_GPa: float, masses: jax.Array,
) -> Barostat:
    """Stochastic cell rescaling (the equations in the module docstring), one Euler-Maruyama step
    of the log-strain per MD step.

    Args:
        kind: ``"isotropic"`` (any cell, shape kept) or ``"orthorhombic"`` (the three axis lengths
            of a diagonal cell fluctuate independently).
        pressure_GPa: target pressure P0, GPa.
        kT_eV: k_B T of the bath, eV.
        timestep_fs: MD timestep, fs.
        time_constant_ps: tau_p, ps (relaxation time of the volume if beta_T is the true compressibility).
        compressibility_per_GPa: beta_T, 1/GPa.
        masses: (n_atoms,) amu.

    Returns:
        A :class:`Barostat`.

    Raises:
        ValueError: an unknown kind or non-positive time constant, timestep or compressibility.

    References: M. Bernetti and G. Bussi, J. Chem. Phys. 153, 114107 (2020), doi:10.1063/5.0020514.
    """
    if kind not in ("isotropic", "orthorhombic"):
        raise ValueError(f"barostat kind must be 'isotropic' or 'orthorhombic', got {kind!r}")
    if not (timestep_fs > 0 and time_constant_ps > 0 and compressibility_per_GPa > 0):
        raise ValueError(
            f"timestep ({timestep_fs} fs), barostat time constant ({time_constant_ps} ps) and compressibility "
            f"({compressibility_per_GPa} 1/GPa) must be positive"
        )
    dt = timestep_fs * ASE_TIME_PER_FS
    tau = time_constant_ps * ASE_TIME_PER_PS
    beta = compressibility_per_GPa * GPA_PER_EV_PER_A3  # A^3 / eV
    p0 = pressure_GPa / GPA_PER_EV_PER_A3
    masses = jnp.asarray(masses)
    # per log-length mobility: the volume mode of the orthorhombic scheme relaxes like the isotropic one
    mobility = beta / tau if kind == "isotropic" else beta / (3.0 * tau)

    def rescale(key, positions, velocities, cell, virial_eV):
        volume = jnp.abs(jnp.linalg.det(cell))
        p_int = pressure_tensor(velocities, masses, cell, virial_eV)
        if kind == "isotropic":
            drive = jnp.trace(p_int) / 3.0 - p0
            d_log = mobility * drive * dt + jnp.sqrt(2.0 * kT_eV * mobility * dt / volume) * jax.random.normal(key, (), positions.dtype)
            d_log_lengths = jnp.full((3,), d_log / 3.0)
        else:
            drive = jnp.diagonal(p_int) - p0
            d_log_lengths = mobility * drive * dt + jnp.sqrt(2.0 * kT_eV * mobility * dt / volume) * jax.random.normal(key, (3,), positions.dtype)
        scale = jnp.exp(d_log_lengths)
        # first-order work on U + P0 V (dU = -sum_a W_aa d ln L_a) plus the exact kinetic change
        v_new = velocities / scale
        kinetic_change = 0.5 * jnp.sum(masses[:, None] * (v_new**2 - velocities**2))
        work = -jnp.sum(jnp.diagonal(virial_eV) * d_log_lengths) + p0 * volume * jnp.expm1(jnp.sum(d_log_lengths)) + kinetic_change
        return positions * scale, v_new, cell * scale, work

    return Barostat(rescale=rescale, target_pressure=p0)


def static_bulk_modulus_GPa(energy_fn: EnergyFn, positions: jax.Array, cell: jax.Array, strain: float = 0.005) -> float:
    """Static bulk modulus B = -V dP/dV of the potential at a structure, GPa (central difference of
    the virial pressure under isotropic strains +-``strain``): 1/B is the natural barostat
    compressibility.

    Args:
        energy_fn: ``energy_fn(positions (n, 3) A, cell (3, 3) A) -> eV``.
        positions: (n_atoms, 3) Angstrom.
        cell: (3, 3) Angstrom.
        strain: linear strain of the finite difference.

    Raises:
        ValueError: a non-finite or non-positive bulk modulus (mechanically unstable structure).
    """
    @jax.jit  # one compilation for both strains (op-by-op, a DeePMD gradient takes seconds)
    def virial_pressure(s):
        c = cell * (1.0 + s)
        return jnp.trace(virial(energy_fn, positions * (1.0 + s), c)) / (3.0 * jnp.abs(jnp.linalg.det(c)))

    def pressure(s):
        return float(virial_pressure(jnp.asarray(s, dtype=jnp.asarray(positions).dtype)))

    v_plus, v_minus = (1.0 + strain) ** 3, (1.0 - strain) ** 3
    modulus = -(pressure(strain) - pressure(-strain)) / (v_plus - v_minus) * GPA_PER_EV_PER_A3  # V0 = 1 in these units
    if not np.isfinite(modulus) or modulus <= 0:
        raise ValueError(
            f"the static bulk modulus at the initial structure is {modulus:.4g} GPa (not positive): the structure is "
            "mechanically unstable on this potential; relax it or set md.compressibility_per_GPa explicitly"
        )
    return modulus
