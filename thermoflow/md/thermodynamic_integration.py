"""Classical free energies by thermodynamic integration (TI) from a harmonic or Einstein crystal.

The potential is switched from a reference U_ref whose classical free energy is known exactly to
the full potential U, U_lambda = (1 - lambda) U_ref + lambda U, and

    F = F_ref + int_0^1 <U - U_ref>_lambda d lambda,

each <.>_lambda a canonical average sampled by classical Langevin MD (BAOAB, white noise) on
U_lambda; the integral is a Gauss-Legendre sum over the nodes lambda_i with weights w_i, its error
bar sqrt(sum_i w_i^2 sigma_i^2) from the blocking error bars sigma_i of the (independent) nodes.

Classical nuclei, distinguishable atoms (a crystal): with phonon frequencies omega_k the harmonic
crystal has F = V0 + kT sum_k ln(hbar omega_k / kT) (the kinetic and configurational integrals
together; no N!).

**Centre of mass.** A translation-invariant U (and its Hessian: 3 zero modes) leaves the centre of
mass (COM) free, and the harmonic reference would have no finite F. The MD then keeps the
mass-weighted COM fixed at that of R0: the energy is evaluated at positions shifted back to the
reference COM (U(P x), P x = x - R_cm(x) + R_cm(R0)), whose gradient is the force with the
constraint force m_i / M sum_j F_j removed; the random impulses sum to zero and the initial
velocities carry no drift. The linear constraint has a constant metric (no Fixman term), so the
MD samples exp(-U_lambda / kT) delta(R_cm - R_cm(R0)). With Z^c the partition function with
that delta (all 3N momenta integrated), every reported F is the *internal* free energy
F_int = -kT ln(Z^c Lambda_M^3), Lambda_M = h / sqrt(2 pi M kT): for a quadratic reference it is
V0 + kT sum_k ln(hbar omega'_k / kT) over the 3N - 3 eigenfrequencies omega'_k of the reference's
dynamical matrix restricted to the subspace orthogonal to the mass-weighted translations (the
Hessian's 3N - 3 internal modes; for an Einstein crystal of springs k the restriction of
diag(k / m_i), omega' = sqrt(k / m) for equal masses, which contains Frenkel and Ladd's COM terms).
This is the convention of the harmonic and NCT free energies of thermoflow (3 modes dropped). The
crystal with a free COM moving through the cell volume V has in addition the subextensive

    F_COM = -kT ln(V / Lambda_M^3)                           (:func:`centre_of_mass_free_energy`),

which cancels from free-energy differences of crystals with equal masses and volumes.
A potential that is not translation invariant (an Einstein crystal, independent oscillators) is
sampled with all 3N degrees of freedom free and F_ref counts 3N modes.

References: D. Frenkel and A. J. C. Ladd, J. Chem. Phys. 81, 3188 (1984), doi:10.1063/1.448024;
J. M. Polson, E. Trizac, S. Pronk and D. Frenkel, J. Chem. Phys. 112, 5339 (2000),
doi:10.1063/1.481102 (the COM terms); R. Freitas, M. Asta and M. de Koning, Comput. Mater. Sci.
112, 333 (2016), doi:10.1016/j.commatsci.2015.10.050 (TI with Langevin MD).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from thermoflow.md.integrators import make_langevin, make_white_noise
from thermoflow.phonons.modes import HarmonicModes, dynamical_matrix, translation_vectors
from thermoflow.potentials.base import EnergyFn
from thermoflow.potentials.harmonic import make_harmonic_energy_fn
from thermoflow.units import HBAR_EV

#: below this lambda dU/dlambda is the full potential evaluated again, not (U_lambda - U_ref) / lambda
_DIVIDE_ABOVE_LAMBDA = 1e-2


@dataclasses.dataclass(frozen=True)
class TIReference:
    """A quadratic reference crystal with an exact classical free energy.

    Attributes:
        kind: "harmonic" (the potential's own Hessian at R0) or "einstein".
        energy_fn: ``U_ref(positions (n, 3) A, cell) -> eV``, equal to V0 = U(R0) at R0.
        reference_positions: (n_atoms, 3) R0, Angstrom.
        masses: (n_atoms,) amu.
        energy0_eV: V0, eV.
        omega: (n_modes,) frequencies of the sampled degrees of freedom, rad per ASE time unit
            (3N - 3 with the centre of mass fixed, else 3N).
        fix_centre_of_mass: sample with the mass-weighted centre of mass fixed at R0's.
        spring_eV_per_A2: the Einstein spring (None for the harmonic reference).
    """

    kind: str
    energy_fn: EnergyFn
    reference_positions: np.ndarray
    masses: np.ndarray
    energy0_eV: float
    omega: np.ndarray
    fix_centre_of_mass: bool
    spring_eV_per_A2: float | None = None

    def free_energy(self, kT_eV: float) -> float:
        """Exact classical F_ref = V0 + kT sum_k ln(hbar omega_k / kT), eV (internal F with the COM fixed)."""
        return self.energy0_eV + classical_harmonic_free_energy(self.omega, kT_eV)


def classical_harmonic_free_energy(omega: np.ndarray, kT_eV: float) -> float:
    """kT sum_k ln(hbar omega_k / kT), eV: classical vibrational F of oscillators omega (n,) rad/ASE time.

    Raises:
        ValueError: for non-positive frequencies or kT.
    """
    omega = np.asarray(omega, dtype=np.float64)
    if (omega <= 0).any() or not kT_eV > 0:
        raise ValueError("classical harmonic free energy needs positive frequencies and kT")
    return float(kT_eV * np.sum(np.log(HBAR_EV * omega / kT_eV)))


def centre_of_mass_free_energy(masses: np.ndarray, volume_A3: float, kT_eV: float) -> float:
    """F_COM = -kT ln(V / Lambda_M^3), eV: the free energy of the centre of mass of total mass M
    (masses (n,) amu) moving freely through the cell volume V (A^3); Lambda_M = h / sqrt(2 pi M kT).
    Add it to a COM-fixed (internal) free energy for the crystal with a free centre of mass.

    References: Polson et al., J. Chem. Phys. 112, 5339 (2000), doi:10.1063/1.481102.
    """
    thermal_wavelength = np.sqrt(2.0 * np.pi * HBAR_EV**2 / (float(np.sum(masses)) * kT_eV))
    return float(-kT_eV * np.log(volume_A3 / thermal_wavelength**3))


def _internal_frequencies(force_constants: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Frequencies of the dynamical matrix restricted to the complement of the mass-weighted translations."""
    basis = scipy.linalg.null_space(translation_vectors(masses).T)
    return np.sqrt(np.linalg.eigvalsh(basis.T @ dynamical_matrix(force_constants, masses) @ basis))


def make_harmonic_reference(modes: HarmonicModes) -> TIReference:
    """The harmonic crystal of ``modes`` (the Hessian at R0 with the acoustic sum rule imposed),
    U_ref = V0 + 1/2 u . Phi . u with Phi = M^1/2 E diag(omega^2) E^T M^1/2: exactly the quadratic
    form whose free energy is counted; the COM is fixed if the translations were projected out.

    Raises:
        ValueError: if a mode is imaginary (the classical harmonic crystal is unbound).
    """
    if modes.imaginary.any():
        raise ValueError(f"{int(modes.imaginary.sum())} imaginary harmonic mode(s): the harmonic reference is unbound; "
                         "use ti.reference = 'einstein' or a structure at a minimum (structure.relax_positions)")
    sqrt_m = np.repeat(np.sqrt(modes.masses), 3)
    phi = sqrt_m[:, None] * (modes.modes * modes.omega**2) @ modes.modes.T * sqrt_m[None, :]
    return TIReference(
        kind="harmonic", energy_fn=make_harmonic_energy_fn(modes.reference_positions, 0.5 * (phi + phi.T), modes.energy0_eV),
        reference_positions=modes.reference_positions, masses=modes.masses, energy0_eV=modes.energy0_eV,
        omega=np.asarray(modes.omega), fix_centre_of_mass=modes.n_translations_removed == 3,
    )


def matching_einstein_spring(modes: HarmonicModes) -> float:
    """The spring k, eV/A^2, of the Einstein crystal with the harmonic crystal's classical mean-square
    displacement: 3 N / sum_k sum_i |e_ki|^2 / (m_i omega_k^2) (temperature independent)."""
    inv_m = np.repeat(1.0 / modes.masses, 3)
    return float(3 * modes.n_atoms / np.sum(inv_m[:, None] * modes.modes**2 / modes.omega[None, :] ** 2))


def make_einstein_reference(modes: HarmonicModes, spring_eV_per_A2: float) -> TIReference:
    """The Einstein crystal U_ref = V0 + k/2 sum_i |R_i - R0_i|^2 about the positions of ``modes``;
    with a translation-invariant potential (``modes.n_translations_removed == 3``) it is sampled with
    the COM fixed and its 3N - 3 frequencies are those of diag(k / m_i) restricted to the internal
    subspace (sqrt(k / m) for equal masses: Frenkel and Ladd's COM correction).

    Raises:
        ValueError: for a non-positive spring.
    """
    if not spring_eV_per_A2 > 0:
        raise ValueError(f"the Einstein spring must be positive, got {spring_eV_per_A2} eV/A^2")
    n = modes.n_atoms
    springs = spring_eV_per_A2 * np.eye(3 * n)
    fix = modes.n_translations_removed == 3
    omega = _internal_frequencies(springs, modes.masses) if fix else np.repeat(np.sqrt(spring_eV_per_A2 / modes.masses), 3)
    return TIReference(
        kind="einstein", energy_fn=make_harmonic_energy_fn(modes.reference_positions, springs, modes.energy0_eV),
        reference_positions=modes.reference_positions, masses=modes.masses, energy0_eV=modes.energy0_eV,
        omega=omega, fix_centre_of_mass=fix, spring_eV_per_A2=float(spring_eV_per_A2),
    )


def make_lambda_energy_fn(energy_fn: EnergyFn, reference: TIReference) -> Callable:
    """``U_lambda(positions (n, 3) A, cell (3, 3) A, lam) -> eV`` = (1 - lam) U_ref + lam U, evaluated
    at the positions shifted to the reference centre of mass when ``reference.fix_centre_of_mass``
    (the gradient is then the constrained force). ``lam`` is an argument: one compiled step serves
    every node."""
    masses = jnp.asarray(reference.masses)
    com0 = masses @ jnp.asarray(reference.reference_positions) / jnp.sum(masses)

    def lambda_energy_fn(positions, cell, lam):
        if reference.fix_centre_of_mass:
            positions = positions - masses @ positions / jnp.sum(masses) + com0
        return (1.0 - lam) * reference.energy_fn(positions, cell) + lam * energy_fn(positions, cell)

    return lambda_energy_fn


class TISampler(NamedTuple):
    """Jitted Langevin sampling of U_lambda, lambda an argument.

    ``init_fn(key (2,), positions (n, 3) A, velocities (n, 3) A/ASE time, lam) -> MDState``;
    ``block_fn(state, lam) -> (state, du_dlambda (block_steps,) eV)``: U - U_ref after each step.
    """

    init_fn: Callable
    block_fn: Callable


def make_ti_sampler(
    energy_fn: EnergyFn, reference: TIReference, cell: jax.Array, kT_eV: float, timestep_fs: float,
    friction_per_ps: float, block_steps: int,
) -> TISampler:
    """Classical Langevin (BAOAB, white noise at ``kT_eV``) on U_lambda, ``block_steps`` steps per call.

    With ``reference.fix_centre_of_mass`` the total random impulse is removed and the forces are
    projected (see the module docstring); start from velocities without drift.

    Raises:
        ValueError: for non-positive timestep, friction or block length.

    References: B. Leimkuhler and C. Matthews, Appl. Math. Res. Express 2013, 34, doi:10.1093/amrx/abs010.
    """
    if block_steps < 1:
        raise ValueError(f"a block needs at least one step, got {block_steps}")
    lambda_energy_fn = make_lambda_energy_fn(energy_fn, reference)
    masses = jnp.asarray(reference.masses)
    noise = make_white_noise(kT_eV)

    def integrator(lam):
        return make_langevin(lambda x, c: lambda_energy_fn(x, c, lam), cell, masses, timestep_fs, friction_per_ps, noise,
                             zero_net_force=reference.fix_centre_of_mass, with_virial=False)

    integrator(0.5)  # validates timestep and friction eagerly

    @jax.jit
    def init_fn(key, positions, velocities, lam):
        return integrator(lam)[0](key, positions, velocities)

    def du_dlambda(state, lam):
        def difference():
            return (state.potential_energy - lambda_energy_fn(state.positions, cell, 0.0)) / lam

        def direct():
            return lambda_energy_fn(state.positions, cell, 1.0) - lambda_energy_fn(state.positions, cell, 0.0)

        return jax.lax.cond(lam > _DIVIDE_ABOVE_LAMBDA, difference, direct)

    @jax.jit
    def block_fn(state, lam):
        step_fn = integrator(lam)[1]

        def body(s, _):
            s = step_fn(s)
            return s, du_dlambda(s, lam)

        return jax.lax.scan(body, state, None, length=block_steps)

    return TISampler(init_fn=init_fn, block_fn=block_fn)


def gauss_legendre(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes lambda_i and weights w_i on [0, 1], each (n_nodes,); sum w_i f(lambda_i)
    integrates polynomials of degree 2 n_nodes - 1 exactly.

    Raises:
        ValueError: if ``n_nodes`` < 1.
    """
    if n_nodes < 1:
        raise ValueError(f"Gauss-Legendre quadrature needs at least one node, got {n_nodes}")
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    return 0.5 * (x + 1.0), 0.5 * w


def integrate_nodes(weights: np.ndarray, means: np.ndarray, stderrs: np.ndarray) -> tuple[float, float]:
    """sum_i w_i <dU/dlambda>_i and its standard error sqrt(sum_i w_i^2 sigma_i^2) (independent nodes), eV."""
    weights, means, stderrs = (np.asarray(a, dtype=np.float64) for a in (weights, means, stderrs))
    return float(weights @ means), float(np.sqrt(np.sum((weights * stderrs) ** 2)))


def gibbs_helmholtz_nodes(T1_K: float, T2_K: float, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre temperatures (n_nodes,) K and weights (n_nodes,) K on [T1, T2] for
    :func:`integrate_temperature` (run one MD per temperature for the mean total energy E(T)).

    Raises:
        ValueError: if ``n_nodes`` < 1 or a temperature is not positive.
    """
    if not (T1_K > 0 and T2_K > 0):
        raise ValueError(f"temperatures must be positive, got {T1_K} and {T2_K} K")
    x, w = gauss_legendre(n_nodes)
    return T1_K + (T2_K - T1_K) * x, (T2_K - T1_K) * w


def integrate_temperature(
    free_energy1_eV: float, T1_K: float, T2_K: float, temperatures_K: np.ndarray, weights_K: np.ndarray,
    energies_eV: np.ndarray, stderrs_eV: np.ndarray,
) -> tuple[float, float]:
    """Temperature integration along an isochore (Gibbs-Helmholtz): F(T2)/T2 = F(T1)/T1 - int_T1^T2 E(T)/T^2 dT.

    Args:
        free_energy1_eV: F(T1), eV (e.g. from thermodynamic integration; its error is not propagated).
        T1_K, T2_K: the two temperatures, K.
        temperatures_K, weights_K: quadrature nodes and weights on [T1, T2] (:func:`gibbs_helmholtz_nodes`), (n,).
        energies_eV: (n,) mean total energies E = <U> + <K> at the nodes (with the COM fixed, K = (3N - 3) kT / 2
            for the internal F of this module), eV; at constant pressure use the enthalpy and G instead.
        stderrs_eV: (n,) their standard errors, eV.

    Returns:
        ``(F(T2), standard error)``, eV.

    References: e.g. D. Frenkel and B. Smit, Understanding Molecular Simulation, 2nd ed. (Academic
    Press, 2002), section 10.2; Freitas et al., doi:10.1016/j.commatsci.2015.10.050.
    """
    t, w = np.asarray(temperatures_K, dtype=np.float64), np.asarray(weights_K, dtype=np.float64)
    integral, error = integrate_nodes(w / t**2, energies_eV, stderrs_eV)
    return float(T2_K * (free_energy1_eV / T1_K - integral)), float(T2_K * error)


def gibbs_along_isobar(
    T0_K: float, gibbs0_eV: float, gibbs0_stderr_eV: float, temperatures_K: np.ndarray, enthalpies_eV: np.ndarray,
    stderrs_eV: np.ndarray, degree: int = 2,
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """G(T) along an isobar from G(T0) and the enthalpy H(T) of NPT MD (Gibbs-Helmholtz).

    H(T) = sum_k c_k T^k is a weighted least-squares polynomial fit of the MD enthalpies
    (<U> + <K> + P <V>, smooth in T for a solid); then, analytically,
    G(T) / T = G(T0) / T0 - int_T0^T H(T') / T'^2 dT'. The standard error combines the fit's
    parameter covariance and G(T0)'s (scaled by T / T0) as independent.

    Args:
        T0_K: temperature of the known G, K.
        gibbs0_eV, gibbs0_stderr_eV: G(T0) and its standard error (e.g. TI at the mean NPT volume plus P V).
        temperatures_K: (n,) temperatures of the NPT runs, K (n > degree).
        enthalpies_eV, stderrs_eV: (n,) mean enthalpies and their standard errors, same unit as G.
        degree: polynomial degree of H(T).

    Returns:
        ``gibbs(T (m,) K) -> (G (m,), stderr (m,))``, the unit of ``gibbs0_eV``.

    Raises:
        ValueError: fewer temperatures than degree + 1, a non-positive temperature or standard error.

    References: D. Frenkel and B. Smit, Understanding Molecular Simulation, 2nd ed. (Academic Press,
    2002), section 10.2.
    """
    t = np.asarray(temperatures_K, dtype=np.float64)
    h, s = np.asarray(enthalpies_eV, dtype=np.float64), np.asarray(stderrs_eV, dtype=np.float64)
    if t.size <= degree:
        raise ValueError(f"a degree-{degree} enthalpy fit needs more than {degree} temperatures, got {t.size}")
    if np.any(t <= 0) or T0_K <= 0 or np.any(s <= 0):
        raise ValueError("temperatures and standard errors must be positive")
    design = t[:, None] ** np.arange(degree + 1)[None, :]
    weighted = design / s[:, None]
    covariance = np.linalg.inv(weighted.T @ weighted)
    coefficients = covariance @ weighted.T @ (h / s)

    def integral_basis(temperature):
        """int_T0^T T'^k / T'^2 dT' for k = 0..degree, shape (m, degree + 1)."""
        temperature = np.asarray(temperature, dtype=np.float64)
        columns = []
        for k in range(degree + 1):
            if k == 1:
                columns.append(np.log(temperature / T0_K))
            else:
                columns.append((temperature ** (k - 1) - T0_K ** (k - 1)) / (k - 1))
        return np.stack(columns, axis=-1)

    def gibbs(temperature):
        temperature = np.atleast_1d(np.asarray(temperature, dtype=np.float64))
        basis = integral_basis(temperature)
        value = temperature * (gibbs0_eV / T0_K - basis @ coefficients)
        variance = temperature**2 * (np.einsum("mi,ij,mj->m", basis, covariance, basis) + (gibbs0_stderr_eV / T0_K) ** 2)
        return value, np.sqrt(variance)

    return gibbs
