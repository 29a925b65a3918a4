"""Harmonic potentials: a Taylor expansion from force constants, and an Einstein crystal."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from thermoflow.potentials.base import EnergyFn


def make_harmonic_energy_fn(
    reference_positions: np.ndarray, force_constants: np.ndarray, energy0_eV: float = 0.0
) -> EnergyFn:
    """V(R) = E0 + 1/2 u . Phi . u with u = R - R0 (flattened), the cell ignored.

    Args:
        reference_positions: (n_atoms, 3) equilibrium positions R0, Angstrom.
        force_constants: (3 n_atoms, 3 n_atoms) symmetric matrix Phi, eV/Angstrom^2
            (also accepted as (n, n, 3, 3), phonopy's layout).
        energy0_eV: energy at R0, eV.

    Raises:
        ValueError: if the shapes do not match or Phi is not symmetric.
    """
    r0 = jnp.asarray(reference_positions, dtype=jnp.float64)
    n = r0.shape[0]
    fc = np.asarray(force_constants, dtype=np.float64)
    if fc.shape == (n, n, 3, 3):
        fc = fc.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n)
    if fc.shape != (3 * n, 3 * n):
        raise ValueError(f"force constants must have shape {(3 * n, 3 * n)}, got {fc.shape}")
    if not np.allclose(fc, fc.T, atol=1e-8 * max(1.0, np.abs(fc).max())):
        raise ValueError("force constants must be symmetric")
    phi = jnp.asarray(fc)

    def energy_fn(positions, cell):
        del cell
        u = (positions - r0).reshape(-1)
        return energy0_eV + 0.5 * u @ phi @ u

    return energy_fn


def make_einstein_energy_fn(reference_positions: np.ndarray, spring_eV_per_A2: float) -> EnergyFn:
    """Einstein crystal V = 1/2 k sum_i |R_i - R0_i|^2 (not translation-invariant: 3N modes)."""
    n = np.asarray(reference_positions).shape[0]
    return make_harmonic_energy_fn(reference_positions, spring_eV_per_A2 * np.eye(3 * n))
