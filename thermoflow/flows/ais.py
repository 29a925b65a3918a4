"""Annealed importance sampling of the configurational partition function of particles in a periodic cell.

Z = integral over the cell^N of exp(-U(X) / k_B T) dX is reached from the uniform density (Z_0 = V^N,
exact samples) through the tempered densities exp(-beta_k U / k_B T), beta_0 = 0 < beta_1 < ... <
beta_K = 1: each walker accumulates the log weight sum_k -(beta_k - beta_{k-1}) U(X_{k-1}) / k_B T and
is moved by Metropolis blocks that leave exp(-beta_k U / k_B T) invariant. Then

    Z / Z_0 = E[w],   ln Z = N ln V + ln mean(w)   (unbiased in Z, not in ln Z),

with the standard error of ln Z from the delta method, std(w) / (mean(w) sqrt(n)), and the effective
sample size (sum w)^2 / sum w^2 reported as the diagnostic of whether the schedule was fine enough.
The final walkers are weighted samples of the Boltzmann density. Used for ln Z of a flow's base
distribution when the base is the Boltzmann density of a potential (:mod:`thermoflow.flows.classical`).

Reference: R. M. Neal, Statistics and Computing 11, 125 (2001), doi:10.1023/A:1008923215028.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.flows.sampling import Walkers, make_metropolis_block
from thermoflow.potentials.base import EnergyFn


def annealed_importance_sampling(energy_fn: EnergyFn, cell: np.ndarray, n_particles: int, *, kT_eV: float, n_walkers: int,
                                 n_temperatures: int, mcmc_steps: int, key: jax.Array, step_size: float = 0.3,
                                 target_acceptance: float = 0.5) -> dict[str, Any]:
    """ln Z of exp(-U / k_B T) over the cell^N, by the schedule beta_k = (k / K)^2 (denser near beta = 0, where the
    uniform start is far from the target).

    Args:
        energy_fn: ``(positions (N, 3), cell (3, 3)) -> eV``.
        cell: (3, 3) lattice vectors as rows, Angstrom.
        n_particles: N.
        kT_eV: k_B T.
        n_walkers: independent annealing chains.
        n_temperatures: K >= 1 intermediate densities.
        mcmc_steps: Metropolis moves per walker at each temperature.
        key: randomness.
        step_size: initial Metropolis step, Angstrom (tuned towards ``target_acceptance`` along the schedule).

    Returns:
        ``ln_Z`` (dimensionless, lengths in Angstrom: ln of A^(3N)), ``ln_Z_stderr``, ``effective_sample_size``,
        ``log_weights`` (n_walkers,), ``positions`` (n_walkers, N, 3) final walkers, ``acceptance`` (mean).

    Raises:
        ValueError: ``n_temperatures``, ``mcmc_steps`` or ``n_walkers`` < 1, or non-finite energies.
    """
    if min(n_temperatures, mcmc_steps, n_walkers) < 1:
        raise ValueError("n_temperatures, mcmc_steps and n_walkers must be >= 1")
    cell = np.asarray(cell, dtype=np.float64)
    cell_j = jnp.asarray(cell)
    block = make_metropolis_block(lambda beta, x: -beta * energy_fn(x, cell_j) / kT_eV, cell, mcmc_steps)
    k_start, key = jax.random.split(key)
    positions = jax.random.uniform(k_start, (n_walkers, n_particles, 3), dtype=jnp.float64) @ cell_j
    u = jax.jit(jax.vmap(lambda x: energy_fn(x, cell_j)))(positions)
    betas = (np.arange(n_temperatures + 1) / n_temperatures) ** 2
    log_w = jnp.zeros(n_walkers)
    acceptances = []
    for k in range(1, n_temperatures + 1):
        log_w = log_w - (betas[k] - betas[k - 1]) * u / kT_eV
        walkers = Walkers(positions, -betas[k] * u / kT_eV)
        walkers, acceptance = block(walkers, jnp.asarray(betas[k]), jax.random.fold_in(key, k), step_size)
        positions = walkers.positions
        u = -walkers.log_density * kT_eV / betas[k]  # the walkers carry -beta_k U / kT: no second energy call
        acceptances.append(float(acceptance))
        step_size = float(np.clip(step_size * np.exp(float(acceptance) - target_acceptance), 1e-4, 10.0))
    log_w = np.asarray(log_w)
    if not np.all(np.isfinite(log_w)):
        raise ValueError("annealed importance sampling met non-finite energies (overlapping particles?)")
    shift = log_w.max()
    w = np.exp(log_w - shift)
    ln_ratio = shift + math.log(w.mean())
    return {
        "ln_Z": n_particles * math.log(abs(np.linalg.det(cell))) + ln_ratio,
        "ln_Z_stderr": float(w.std(ddof=1) / (w.mean() * math.sqrt(n_walkers))) if n_walkers > 1 else float("nan"),
        "effective_sample_size": float(w.sum() ** 2 / (w**2).sum()),
        "log_weights": log_w,
        "positions": positions,
        "acceptance": float(np.mean(acceptances)),
    }
