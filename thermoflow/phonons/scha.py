"""Self-consistent harmonic approximation: the best Gaussian density matrix on the true potential.

A Gaussian (harmonic) density matrix rho_G = exp(-H_G / kT) / Z_G, H_G = p^2/2 + q^T Phi q / 2 in
the mass-weighted internal mode coordinates q of a reference (:class:`HarmonicModes`), gives the
Gibbs-Bogoliubov upper bound

    F_G(Phi) = F_harm(omega') + < V(q) - q^T Phi q / 2 >_{rho_G} >= F_exact,

where omega'^2 are the eigenvalues of Phi and F_harm the exact free energy of those oscillators
(the kinetic and harmonic-potential terms of H_G are exact; only V is sampled). F_G is stationary
when Phi equals the average curvature of the potential over its own Gaussian,
Phi = < d^2 V / dq dq >_{rho_G}, which by Stein's lemma (Gaussian integration by parts) is
Sigma^-1 < q (dV/dq)^T > with Sigma = <q q^T>: forces only, no Hessians. The fixed point is found
by damped iteration; the Gaussian's samples are drawn exactly (q = C diag(sigma) xi, xi normal),
in antithetic pairs (xi, -xi) whose half-batch is whitened to unit second moment when it is larger
than the number of modes. The current Phi serves as a control variate,
Phi + Sigma^-1 < q (dV/dq - Phi q)^T > (the same mean for any fixed Phi), so that only the part of the
forces Phi does not already fit carries noise: the harmonic part is reproduced exactly by every
batch, whitened or not (a batch of fewer pairs than modes, e.g. 512 samples on fcc 108 atoms, 321
modes, cannot be whitened). Each estimate is then projected onto the matrices the crystal's space
group allows (:mod:`thermoflow.phonons.symmetry`), which removes its symmetry-breaking noise: the
noise of the curvature raises F_G (it is a variational bound, second order in the error of Phi),
and without both measures it raised F_G of fcc lithium, 108 atoms, 100 K, by ~2.4 meV/atom
(docs/results/lithium.md). The last iterates are averaged
(Polyak-Ruppert) against the remaining noise, and F_G, E_G, S_G are then evaluated at the final
Phi on fresh, independent samples (plain standard errors).

The centroid. By default it stays at the reference positions, which is exact for crystals whose
atoms the space group fixes (bcc, fcc: the mean force vanishes by symmetry). With
``relax_centroid`` it is a variational parameter too: dF_G/dR_c = -<f>_rho_G (the mean force over
the Gaussian), and each iteration takes the damped Newton step R_c <- R_c + mixing Phi^-1 <f> in the
mode coordinates, the mean force projected onto the displacements the space group allows (a free
Wyckoff coordinate such as cI16's x moves, the fixed sites do not). The centroid is then the
quantum (and thermal) average position, not the minimum of the potential: zero-point motion in an
asymmetric well shifts it. Antithetic pairs make the harmonic part of the mean force exact.

The result is itself a product (an upper bound on F with error bars) and the natural basis of an
NCT run: its renormalised frequencies and polarisation vectors form a :class:`HarmonicModes`, on
which the NCT flow at the identity and Boltzmann occupations reproduce rho_G, so the flow only
has to learn what is not Gaussian.

References: N. R. Werthamer, Phys. Rev. B 1, 572 (1970), doi:10.1103/PhysRevB.1.572 (SCHA);
I. Errea, M. Calandra, F. Mauri, Phys. Rev. B 89, 064302 (2014), doi:10.1103/PhysRevB.89.064302
and R. Bianco, I. Errea, L. Paulatto, M. Calandra, F. Mauri, Phys. Rev. B 96, 014111 (2017),
doi:10.1103/PhysRevB.96.014111 (stochastic SCHA, force-based curvature); C. Stein, Ann. Stat. 9,
1135 (1981), doi:10.1214/aos/1176345632 (Gaussian integration by parts); B. T. Polyak and
A. B. Juditsky, SIAM J. Control Optim. 30, 838 (1992), doi:10.1137/0330046 (iterate averaging).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from thermoflow.io.progress import read_progress, save_progress

from thermoflow.parallel import map_samples
from thermoflow.phonons.modes import HarmonicModes
from thermoflow.phonons.symmetry import potential_has_symmetry, space_group_operations, symmetrise_force_constants, symmetrise_vector
from thermoflow.phonons.thermo import harmonic_thermodynamics
from thermoflow.potentials.base import EnergyFn
from thermoflow.units import HBAR_EV

log = logging.getLogger(__name__)


class GaussianInstabilityError(ValueError):
    """The self-consistent curvature matrix lost positive definiteness (no stable Gaussian)."""


@dataclasses.dataclass(frozen=True)
class GaussianReference:
    """The optimised Gaussian density matrix and its thermodynamics (totals over the crystal).

    Attributes:
        modes: renormalised phonon modes (same cell and masses as the input reference; R0 and
            its static energy the relaxed centroid's with ``relax_centroid``, else the reference's;
            ``omega`` (n_modes,) the self-consistent frequencies, ascending; ``modes`` the
            polarisation vectors (3 n_atoms, n_modes)).
        free_energy_eV, free_energy_stderr_eV: F_G (static energy included) and its standard error.
        energy_eV, energy_stderr_eV: E_G = <K> + <V>, eV.
        entropy_kB: S_G of the Gaussian (exact), k_B.
        history: per iteration ``free_energy_eV`` (batch estimate), ``residual`` (relative
            Frobenius norm of the curvature estimate minus Phi) and ``mean_force_eV_per_A`` (the
            largest Cartesian mean force on an atom, symmetrised; 0 when the centroid is fixed);
            arrays (n_iterations,).
        centroid_shift_A: (n_atoms, 3) centroid minus the reference positions, Angstrom (zeros
            unless ``relax_centroid``).
    """

    modes: HarmonicModes
    free_energy_eV: float
    free_energy_stderr_eV: float
    energy_eV: float
    energy_stderr_eV: float
    entropy_kB: float
    history: dict[str, np.ndarray]
    centroid_shift_A: np.ndarray


def mode_variances(omega: np.ndarray, kT_eV: float) -> np.ndarray:
    """<q_k^2> = hbar / (2 omega_k) coth(hbar omega_k / 2kT) of thermal oscillators, amu A^2.

    ``omega``: (n,) rad per ASE time unit.
    """
    return HBAR_EV / (2.0 * omega) / np.tanh(HBAR_EV * omega / (2.0 * kT_eV))


def antithetic_normals(key: jax.Array, n_samples: int, dim: int) -> jax.Array:
    """(n_samples, dim) standard normals in pairs (xi, -xi); the half-batch is whitened
    (exact unit second moment) when n_samples / 2 > dim.

    Raises:
        ValueError: if ``n_samples`` is odd or < 2.
    """
    if n_samples < 2 or n_samples % 2:
        raise ValueError(f"n_samples must be even and >= 2, got {n_samples}")
    half = n_samples // 2
    xi = jax.random.normal(key, (half, dim))
    if half > dim:
        second = xi.T @ xi / half
        w, v = jnp.linalg.eigh(second)
        xi = xi @ (v / jnp.sqrt(w)) @ v.T
    return jnp.concatenate([xi, -xi])


def mode_to_cartesian(modes: HarmonicModes) -> np.ndarray:
    """T (3 n_atoms, n_modes) with Cartesian displacements u = T q for mass-weighted mode
    coordinates q (sqrt(amu) A -> A): T = M^-1/2 E."""
    return np.repeat(1.0 / np.sqrt(modes.masses), 3)[:, None] * modes.modes


def make_mode_potential(energy_fn: EnergyFn, modes: HarmonicModes) -> Callable[[jax.Array], jax.Array]:
    """``V(q)``: the potential as a function of the reference's mass-weighted mode
    coordinates q (n_modes,), sqrt(amu) Angstrom -> eV."""
    r0 = jnp.asarray(modes.reference_positions)
    cell = jnp.asarray(modes.cell)
    to_cartesian = jnp.asarray(mode_to_cartesian(modes))

    def potential(q):
        return energy_fn(r0 + (to_cartesian @ q).reshape(r0.shape), cell)

    return potential


def centroid_in_basis(gaussian: HarmonicModes, reference: HarmonicModes) -> np.ndarray:
    """The centroid of ``gaussian`` (its reference positions) as a shift (n_modes,) in the
    mass-weighted mode coordinates of ``reference``, sqrt(amu) A: q = E^T M^1/2 (R_c - R0), the
    translation-free part (a warm start of :func:`optimise_gaussian` with ``relax_centroid``)."""
    u = np.asarray(gaussian.reference_positions) - np.asarray(reference.reference_positions)
    return reference.modes.T @ (np.repeat(np.sqrt(reference.masses), 3) * u.reshape(-1))


def curvature_in_basis(gaussian: HarmonicModes, reference: HarmonicModes, *, tolerance: float = 1e-6) -> np.ndarray:
    """The curvature Phi = E diag(omega^2) E^T of the Gaussian ``gaussian`` in the mode coordinates
    of ``reference``: (n_modes, n_modes), eV/(amu A^2). Both must describe the same crystal (R0,
    masses) and span the same internal-mode subspace (translations removed alike).

    Raises:
        ValueError: if the two mode sets do not span the same subspace (different structures or
            supercells), or their atoms differ.
    """
    if gaussian.modes.shape != reference.modes.shape or not np.allclose(gaussian.masses, reference.masses):
        raise ValueError(
            f"the starting Gaussian has modes {gaussian.modes.shape} and another crystal's atoms; the reference has "
            f"{reference.modes.shape}: a warm start needs the same structure and supercell"
        )
    overlap = reference.modes.T @ gaussian.modes  # (n, n), orthogonal when the subspaces agree
    error = np.abs(overlap @ overlap.T - np.eye(len(overlap))).max()
    if error > tolerance:
        raise ValueError(f"the starting Gaussian's modes do not span the reference's mode subspace (deviation {error:.2g})")
    return (overlap * gaussian.omega[None, :] ** 2) @ overlap.T


def _damped_update(phi: np.ndarray, curvature: np.ndarray, mixing: float) -> np.ndarray:
    """phi + alpha (curvature - phi), alpha = mixing halved until the lowest eigenvalue stays
    above half the current one. A rare sample deep in a repulsive wall makes one Stein estimate
    far off; backtracking keeps the iterate positive definite, and the averaging removes it."""
    floor = 0.5 * np.linalg.eigvalsh(phi)[0]
    alpha = mixing
    for _ in range(30):
        new = phi + alpha * (curvature - phi)
        if np.linalg.eigvalsh(new)[0] > floor:
            return new
        alpha *= 0.5
    return phi


def _save_progress(path: Path, settings: dict, done: int, phi, centre, kept, kept_centres, estimates, history) -> None:
    """The iteration state after ``done`` iterations, written atomically (one file, replaced)."""
    save_progress(path, settings, done, {
        "phi": phi, "centre": centre, "kept": np.asarray(kept).reshape(-1, *phi.shape),
        "kept_centres": np.asarray(kept_centres).reshape(-1, *centre.shape),
        "estimates": np.asarray(estimates).reshape(-1, *phi.shape),
        **{f"history_{k}": np.asarray(v, dtype=np.float64) for k, v in history.items()},
    })


def _read_progress(path: Path, settings: dict):
    """``(iterations done, phi, centre, kept, kept_centres, estimates, history)`` from a progress file.

    Raises:
        ValueError: if the file was written with other settings.
    """
    done, arrays = read_progress(path, settings, "the iterations of a Gaussian")
    history = {k[len("history_"):]: list(v) for k, v in arrays.items() if k.startswith("history_")}
    return (done, arrays["phi"], arrays["centre"], list(arrays["kept"]), list(arrays["kept_centres"]),
            list(arrays["estimates"]), history)


def optimise_gaussian(
    energy_fn: EnergyFn,
    reference: HarmonicModes,
    kT_eV: float,
    *,
    n_samples: int = 1024,
    n_iterations: int = 40,
    mixing: float = 0.5,
    averaging_fraction: float = 0.25,
    n_eval_samples: int = 4096,
    seed: int = 0,
    chunk_size: int | None = 64,
    initial_curvature: np.ndarray | None = None,
    symmetrise: bool = True,
    relax_centroid: bool = False,
    initial_centroid: np.ndarray | None = None,
    mesh: Mesh | None = None,
    progress_path: str | Path | None = None,
) -> GaussianReference:
    """Optimise the Gaussian density matrix of ``energy_fn`` (see module docstring).

    Args:
        energy_fn: potential ``(positions (N, 3) A, cell (3, 3) A) -> eV``.
        reference: the starting modes (usually the harmonic ones); fixes R0 and the subspace
            of internal modes (translations stay excluded).
        kT_eV: thermal energy, eV (> 0).
        n_samples: Gaussian samples per iteration (even).
        n_iterations: damped fixed-point iterations Phi <- Phi + mixing (<d2V> - Phi).
        mixing: damping in (0, 1].
        averaging_fraction: final fraction of the iterates averaged into the result.
        n_eval_samples: independent samples of the final evaluation (>= 2).
        seed: random seed.
        chunk_size: forces of at most this many samples at once (None: all at once).
        initial_curvature: (n_modes, n_modes) starting Phi in the reference's mode coordinates,
            eV/(amu A^2) (default diag(omega^2) of the reference); e.g. a neighbouring
            temperature's Gaussian, :func:`curvature_in_basis` (a warm start: fewer iterations).
        symmetrise: project every curvature estimate onto the matrices invariant under the
            reference crystal's space group (:func:`thermoflow.phonons.symmetry.symmetrise_force_constants`),
            when the potential has that symmetry (checked; a warning and no projection if not).
            Unbiased, and it removes the symmetry-breaking noise, which otherwise raises F_G.
            With ``relax_centroid`` the mean force is projected the same way.
        relax_centroid: optimise the centroid too (module docstring); the returned modes carry it.
        initial_centroid: (n_modes,) starting centroid shift in the reference's mass-weighted mode
            coordinates, sqrt(amu) A (:func:`centroid_in_basis` of a stored Gaussian; default 0).
        mesh: split the samples' forces over this device mesh (:mod:`thermoflow.parallel`;
            None: one device). The result does not depend on it beyond round-off.
        progress_path: an ``.npz`` file written (atomically) after every iteration with the
            iteration's state; if it exists at the start, the iterations resume from it, and the
            result is the one an uninterrupted run gives (iteration t samples with
            ``fold_in(seed key, t)``). A file of other settings (seed, temperature, iterations,
            modes...) raises.

    Returns:
        The :class:`GaussianReference`.

    Raises:
        ValueError: for invalid arguments, non-finite potential values on the samples, or a
            ``progress_path`` file written with other settings.
        GaussianInstabilityError: if the curvature matrix becomes non-positive-definite (a
            structure that is not stable even with its quantum and thermal fluctuations).
    """
    if not kT_eV > 0:
        raise ValueError(f"kT must be positive for the Gaussian reference, got {kT_eV}")
    if not 0 < mixing <= 1:
        raise ValueError(f"mixing must be in (0, 1], got {mixing}")
    if n_iterations < 1:
        raise ValueError(f"n_iterations must be >= 1, got {n_iterations}")
    if n_samples < 2 or n_samples % 2:
        raise ValueError(f"n_samples must be even and >= 2 (antithetic pairs), got {n_samples}")
    if n_eval_samples < 2:
        raise ValueError(f"n_eval_samples must be >= 2 for an error bar, got {n_eval_samples}")
    if not 0 < averaging_fraction <= 1:
        raise ValueError(f"averaging_fraction must be in (0, 1], got {averaging_fraction}")
    dim = reference.n_modes
    potential = make_mode_potential(energy_fn, reference)
    value_and_grad = jax.value_and_grad(potential)

    @jax.jit
    def evaluate(q):
        return map_samples(value_and_grad, q, chunk_size=chunk_size, mesh=mesh)

    def check_stable(w2):
        if w2[0] <= 0:
            raise GaussianInstabilityError(
                f"the self-consistent curvature has {(w2 <= 0).sum()} non-positive eigenvalue(s) "
                f"(lowest {w2[0]:.3g} eV/(amu A^2)): the structure has no stable Gaussian state at "
                "this temperature and volume (it is unstable, or sits at a saddle); check the "
                "structure or lower the temperature"
            )

    def gaussian(phi):
        w2, vec = np.linalg.eigh(0.5 * (phi + phi.T))
        check_stable(w2)
        omega = np.sqrt(w2)
        return omega, vec, np.sqrt(mode_variances(omega, kT_eV))

    def sample(key, omega, vec, sigma, n, antithetic, centre):
        """(xi, q - centre, V, dV/dq) of n samples of the Gaussian centred at ``centre``."""
        xi = antithetic_normals(key, n, dim) if antithetic else jax.random.normal(key, (n, dim))
        q = np.asarray(xi) * sigma[None, :] @ vec.T
        v, g = evaluate(jnp.asarray(q + centre[None, :]))
        v, g = np.asarray(v), np.asarray(g)
        if not (np.all(np.isfinite(v)) and np.all(np.isfinite(g))):
            raise ValueError(
                "the potential is not finite on samples of the Gaussian density matrix: atoms "
                "too close (volume too small?) or outside the potential's range"
            )
        return np.asarray(xi), q, v, g

    operations = space_group_operations(reference) if symmetrise else None
    if operations is not None and not potential_has_symmetry(energy_fn, reference, operations):
        log.warning(
            "the potential does not have the symmetry of the structure (its energy is not invariant under the space "
            "group found by spglib): the Gaussian's curvature estimates are left unsymmetrised"
        )
        operations = None

    base_key = jax.random.PRNGKey(seed)
    if initial_curvature is None:
        phi = np.diag(reference.omega**2)
    else:
        phi = np.asarray(initial_curvature, dtype=np.float64)
        if phi.shape != (dim, dim) or not np.all(np.isfinite(phi)):
            raise ValueError(f"initial_curvature must be a finite ({dim}, {dim}) matrix, got shape {phi.shape}")
        phi = 0.5 * (phi + phi.T)
        check_stable(np.linalg.eigvalsh(phi))
    centre = np.zeros(dim)
    if initial_centroid is not None:
        centre = np.asarray(initial_centroid, dtype=np.float64)
        if centre.shape != (dim,) or not np.all(np.isfinite(centre)):
            raise ValueError(f"initial_centroid must be a finite ({dim},) vector, got shape {centre.shape}")
    gradient_to_cartesian = np.repeat(np.sqrt(reference.masses), 3)[:, None] * reference.modes  # dV/dq -> dV/dR = M^1/2 E dV/dq
    kept: list[np.ndarray] = []
    kept_centres: list[np.ndarray] = []
    estimates: list[np.ndarray] = []
    n_keep = max(1, int(round(averaging_fraction * n_iterations)))
    history: dict[str, list] = {"free_energy_eV": [], "residual": [], "mean_force_eV_per_A": []}
    t_start = time.perf_counter()
    settings = {"seed": seed, "kT_eV": kT_eV, "n_iterations": n_iterations, "n_samples": n_samples, "mixing": mixing, "n_modes": dim,
                "averaging_fraction": averaging_fraction, "relax_centroid": relax_centroid, "symmetrise": symmetrise}
    first = 0
    if progress_path is not None and Path(progress_path).is_file():
        first, phi, centre, kept, kept_centres, estimates, history = _read_progress(Path(progress_path), settings)
        log.info("self-consistent Gaussian resumed after iteration %d/%d from %s", first, n_iterations, progress_path)
    for it in range(first, n_iterations):
        omega, vec, sigma = gaussian(phi)
        xi, q, v, g = sample(jax.random.fold_in(base_key, it), omega, vec, sigma, n_samples, True, centre)
        # Stein: <d2V/dq dq> = Sigma^-1 <q g^T> = C diag(1/sigma) <xi g^T>, Sigma = C diag(sigma^2) C^T,
        # with the current Phi as control variate: Phi + Sigma^-1 <q (g - Phi q)^T> has the same mean for
        # any fixed Phi, and only the part of the forces that Phi does not fit carries noise (the
        # harmonic part is exact even when the batch is too small to be whitened)
        curvature = phi + (vec / sigma[None, :]) @ (xi.T @ (g - q @ phi)) / n_samples
        curvature = 0.5 * (curvature + curvature.T)
        if operations is not None:
            curvature = symmetrise_force_constants(curvature, reference, operations)
        harm = harmonic_thermodynamics(HBAR_EV * omega, kT_eV)
        f_batch = harm.free_energy_eV + np.mean(v - 0.5 * np.einsum("bi,ij,bj->b", q, phi, q))
        history["free_energy_eV"].append(f_batch)
        history["residual"].append(np.linalg.norm(curvature - phi) / np.linalg.norm(phi))
        step = np.zeros(dim)
        if relax_centroid:
            # dF_G/dq_c = <dV/dq>: a damped Newton step with the current curvature
            mean_gradient = np.mean(g, axis=0)
            if operations is not None:
                mean_gradient = symmetrise_vector(mean_gradient, reference, operations)
            step = -np.linalg.solve(phi, mean_gradient)
            force = (gradient_to_cartesian @ mean_gradient).reshape(-1, 3)
            history["mean_force_eV_per_A"].append(float(np.linalg.norm(force, axis=1).max()))
        else:
            history["mean_force_eV_per_A"].append(0.0)
        log.info(
            "self-consistent Gaussian, iteration %d/%d: F = %.6f eV (batch estimate), curvature residual %.3g%s, %.0f s",
            it + 1, n_iterations, f_batch, history["residual"][-1],
            f", mean force {history['mean_force_eV_per_A'][-1]:.2g} eV/A" if relax_centroid else "", time.perf_counter() - t_start,
        )
        phi = _damped_update(phi, curvature, mixing)
        centre = centre + mixing * step
        if it >= n_iterations - n_keep:
            kept.append(phi)
            kept_centres.append(centre)
            estimates.append(curvature)
        if progress_path is not None:
            _save_progress(Path(progress_path), settings, it + 1, phi, centre, kept, kept_centres, estimates, history)
    # at the fixed point Phi is the average curvature; a non-positive one means no stable Gaussian
    check_stable(np.linalg.eigvalsh(np.mean(estimates, axis=0)))
    phi = np.mean(kept, axis=0)
    centre = np.mean(kept_centres, axis=0)

    omega, vec, sigma = gaussian(phi)
    _, q, v, _ = sample(jax.random.fold_in(base_key, n_iterations), omega, vec, sigma, n_eval_samples, False, centre)
    harm = harmonic_thermodynamics(HBAR_EV * omega, kT_eV)
    residual = v - 0.5 * np.einsum("bi,ij,bj->b", q, phi, q)  # zero variance on a harmonic potential
    stderr = float(np.std(residual, ddof=1) / np.sqrt(len(v)))
    shift = (mode_to_cartesian(reference) @ centre).reshape(-1, 3)
    modes = dataclasses.replace(
        reference, omega=omega, modes=reference.modes @ vec, imaginary=np.zeros(dim, dtype=bool)
    )
    if relax_centroid or initial_centroid is not None:
        positions = np.asarray(reference.reference_positions) + shift
        modes = dataclasses.replace(modes, reference_positions=positions,
                                    energy0_eV=float(energy_fn(jnp.asarray(positions), jnp.asarray(reference.cell))))
    # <K> = E_harm / 2 exactly; <V> sampled
    energy = 0.5 * harm.energy_eV + float(np.mean(v))
    return GaussianReference(
        modes=modes,
        free_energy_eV=harm.free_energy_eV + float(np.mean(residual)),
        free_energy_stderr_eV=stderr,
        energy_eV=energy,
        energy_stderr_eV=float(np.std(v, ddof=1) / np.sqrt(len(v))),
        entropy_kB=harm.entropy_kB,
        history={k: np.asarray(val) for k, val in history.items()},
        centroid_shift_A=shift,
    )
