"""Anharmonic phonon excitation energies of a trained NCT state by correlated sampling.

The NCT states Psi_n = U Phi_n are labelled by harmonic-oscillator quantum numbers n; the
single-phonon excitation energy of mode k is the difference of two of their energies,

    w_k = E(e_k) - E(0),    E(n) = <Psi_n|H|Psi_n>,

with e_k one quantum in mode k. Both energies come from exact samples of their states drawn from
the *same* uniforms (the same key: the same xi for both states, :func:`sample_hermite` inverts each
mode's CDF), so most of the noise cancels in the difference. The harmonic control variate of the
loss is used too, w_k = hbar omega_k + <r>_{e_k} - <r>_0 with r = E_loc - sum_k hbar omega_k n_k:
for a harmonic crystal and the identity flow r is constant, and w_k = hbar omega_k exactly.

For the ground state the transformation is variational (E(0) >= E_0 exact); w_k is the energy
of a variational excited state above that ground state, not a bound. The anharmonic zero-point
energy is sum_k w_k / 2.

References: Q. Zhang et al., Phys. Rev. Lett. 134, 246101 (2025), arXiv:2409.09813 (NCT
excitation energies and anharmonic phonon DOS of lithium); Q. Zhang, R. Wang, L. Wang,
J. Chem. Phys. 161, 024103 (2024), arXiv:2404.14402 (NCT vibrational spectra).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.nct.loss import FreeEnergyModel


@dataclasses.dataclass(frozen=True)
class ExcitationSpectrum:
    """Single-phonon excitation energies of an NCT state (all eV, totals over the crystal).

    Attributes:
        excitation_energies_eV: (D,) w_k = E(e_k) - E(0).
        excitation_stderr_eV: (D,) standard errors of w_k (paired samples).
        basis_energies_eV: (D,) hbar omega_k of the basis the state is built on.
        ground_state_energy_eV: E(0), the variational ground-state energy.
        ground_state_energy_stderr_eV: its standard error.
        n_samples: samples per state.
    """

    excitation_energies_eV: np.ndarray
    excitation_stderr_eV: np.ndarray
    basis_energies_eV: np.ndarray
    ground_state_energy_eV: float
    ground_state_energy_stderr_eV: float
    n_samples: int

    @property
    def zero_point_energy_eV(self) -> float:
        """sum_k w_k / 2, eV."""
        return float(0.5 * np.sum(self.excitation_energies_eV))

    @property
    def zero_point_energy_stderr_eV(self) -> float:
        """Standard error of the zero-point energy (modes treated as independent), eV."""
        return float(0.5 * np.sqrt(np.sum(self.excitation_stderr_eV**2)))


def excitation_energies(
    model: FreeEnergyModel, params: dict, *, n_samples: int, seed: int, batch_size: int = 256
) -> ExcitationSpectrum:
    """w_k = E(e_k) - E(0) for every mode of ``model``'s basis at parameters ``params``.

    Args:
        model: the NCT free-energy model (its flow, basis and potential).
        params: trained parameters ``{"flow": ..., "logits" or "occupations": ...}`` (only the flow is used).
        n_samples: samples per state, a multiple of ``batch_size`` (or smaller than it).
        seed: seed of the sampling.
        batch_size: samples per evaluation call (memory: one call holds batch x modes).

    Returns:
        The spectrum; cost (D + 1) x ``n_samples`` local energies.

    Raises:
        ValueError: for n_samples < 2, or not a multiple of the batch size.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 for an error bar, got {n_samples}")
    batch_size = min(batch_size, n_samples)
    if n_samples % batch_size:
        raise ValueError(f"n_samples ({n_samples}) must be a multiple of batch_size ({batch_size})")
    eps = jnp.asarray(model.phonon_energies_eV)
    dim = eps.shape[0]

    @jax.jit
    def residuals(levels_row, key):
        """r = E_loc - H0(n) on ``batch_size`` exact samples of the state ``levels_row``."""
        k_s, k_kin = jax.random.split(key)
        levels = jnp.broadcast_to(levels_row, (batch_size, dim))
        s = model.sample_states(params["flow"], k_s, levels)
        kin, pot = model.local_energies(params, levels, s, jax.random.split(k_kin, batch_size))
        return kin + pot - levels @ eps

    base = jax.random.PRNGKey(seed)
    keys = [jax.random.fold_in(base, i) for i in range(n_samples // batch_size)]

    def state_residuals(levels_row):
        return np.concatenate([np.asarray(residuals(levels_row, k)) for k in keys])

    ground = state_residuals(jnp.zeros(dim, dtype=jnp.int32))
    w, err = np.empty(dim), np.empty(dim)
    for k in range(dim):  # D + 1 compiled evaluations; a post-processing step, not a hot loop
        diff = state_residuals(jnp.zeros(dim, dtype=jnp.int32).at[k].set(1)) - ground
        w[k] = float(eps[k]) + diff.mean()
        err[k] = diff.std(ddof=1) / np.sqrt(n_samples)
    return ExcitationSpectrum(
        excitation_energies_eV=w,
        excitation_stderr_eV=err,
        basis_energies_eV=np.asarray(eps),
        ground_state_energy_eV=float(ground.mean()),
        ground_state_energy_stderr_eV=float(ground.std(ddof=1) / np.sqrt(n_samples)),
        n_samples=n_samples,
    )
