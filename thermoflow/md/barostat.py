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

The orthorhombic variant keeps the cell's axes along x, y, z (a diagonal cell). The triclinic
variant (fully anisotropic: lengths and angles, in the spirit of Del Tatto, Raiteri, Bernetti and
Bussi, Appl. Sci. 12, 1139 (2022), doi:10.3390/app12031139; derived and tested here, not copied)
keeps the cell lower triangular, rows a = (a_x, 0, 0), b = (b_x, b_y, 0), c = (c_x, c_y, c_z) (ASE's
standard form: no overall rotation), and deforms it by h -> h (1 + e) with a lower-triangular strain
increment e (six components). Target: exp(-(U + K + P0 V) / kT) with the measure of the six cell
entries, d a_x d b_x d b_y d c_x d c_y d c_z (with the off-diagonal entries at zero, the orthorhombic
scheme's dL_1 dL_2 dL_3). At fixed scaled coordinates and scaled momenta (r -> r (1 + e),
v -> v (1 + e)^-T) the force conjugate to e_ab is V (P_ab - P0 delta_ab); the Ito SDE for the six
entries x, dx = [D grad ln rho + div D] dt + sqrt(2 D) dW with D = kT (beta_T / 3 tau_p V) J J^T (J:
the linear map e -> h e), becomes in the strain

    triclinic     e_ab = (beta_T / 3 tau_p) (P_ab - P0 delta_ab) dt + J^-1 div D dt + sqrt(2 kT beta_T dt / (3 V tau_p)) xi_ab

(a >= b). The Ito term J^-1 div D is computed by automatic differentiation of D(x); for a diagonal
cell it is kT beta_T / (3 tau_p V) per diagonal component, and the update reproduces the orthorhombic
one to first order in dt. Tested against the exact distribution of a box whose six entries are springs.
ASE has Berendsen and Nose-Hoover-Parrinello-Rahman
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

BarostatKind = Literal["isotropic", "orthorhombic", "triclinic"]
#: the lower-triangular components (row, column) of the cell and of the triclinic strain increment
LOWER = (np.array([0, 1, 1, 2, 2, 2]), np.array([0, 0, 1, 0, 1, 2]))


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
        kind: ``"isotropic"`` (any cell, shape kept), ``"orthorhombic"`` (the three axis lengths
            of a diagonal cell fluctuate independently) or ``"triclinic"`` (lengths and angles of a
            lower-triangular cell, :func:`is_lower_triangular`).
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
    if kind not in ("isotropic", "orthorhombic", "triclinic"):
        raise ValueError(f"barostat kind must be 'isotropic', 'orthorhombic' or 'triclinic', got {kind!r}")
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
    if kind == "triclinic":
        return Barostat(rescale=_make_triclinic_rescale(p0, kT_eV, dt, mobility, masses), target_pressure=p0)

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


def is_lower_triangular(cell, rtol: float = 1e-10) -> bool:
    """Whether a (3, 3) cell (rows a, b, c) has a along x and b in the xy plane, with a positive diagonal
    (the triclinic barostat's form; ``ase.cell.Cell.standard_form`` rotates any cell into it)."""
    cell = np.asarray(cell)
    scale = np.abs(cell).max()
    return bool(np.all(np.abs(cell[np.triu_indices(3, 1)]) <= rtol * scale) and np.all(np.diagonal(cell) > 0))


def _make_triclinic_rescale(p0: float, kT_eV: float, dt: float, mobility: float, masses: jax.Array) -> Callable:
    """The triclinic step of :func:`make_stochastic_cell_rescaling` (equations in the module docstring)."""

    def strain_matrix(e6):  # (6,) -> (3, 3) lower triangular
        return jnp.zeros((3, 3), e6.dtype).at[LOWER].set(e6)

    def jacobian(x6):  # (6, 6): d (h e)_lower / d e_lower at the cell with lower entries x6
        h = strain_matrix(x6)
        return jax.jacfwd(lambda e6: (h @ strain_matrix(e6))[LOWER])(jnp.zeros_like(x6))

    def diffusion(x6):  # D(x) / kT, (6, 6)
        j = jacobian(x6)
        return (mobility / jnp.prod(x6[jnp.array([0, 2, 5])])) * j @ j.T

    def ito_drift(x6):  # J^-1 div D / kT, (6,)
        div = jnp.einsum("ijj->i", jax.jacfwd(diffusion)(x6))
        return jnp.linalg.solve(jacobian(x6), div)

    def rescale(key, positions, velocities, cell, virial_eV):
        volume = jnp.abs(jnp.linalg.det(cell))
        p_int = pressure_tensor(velocities, masses, cell, virial_eV)
        m = mobility / volume
        force = volume * (p_int - p0 * jnp.eye(3))[LOWER]
        e6 = (m * force + kT_eV * ito_drift(cell[LOWER])) * dt + jnp.sqrt(2.0 * kT_eV * m * dt) * jax.random.normal(key, (6,), positions.dtype)
        deform = jnp.eye(3, dtype=positions.dtype) + strain_matrix(e6)
        v_new = jnp.linalg.solve(deform, velocities.T).T  # v (1 + e)^-T
        kinetic_change = 0.5 * jnp.sum(masses[:, None] * (v_new**2 - velocities**2))
        work = -jnp.sum(virial_eV[LOWER] * e6) + p0 * volume * (jnp.linalg.det(deform) - 1.0) + kinetic_change
        return positions @ deform, v_new, cell @ deform, work

    return rescale


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
