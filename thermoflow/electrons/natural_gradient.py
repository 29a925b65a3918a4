"""Stochastic reconfiguration (natural gradient) for VMC in the sample space: minSR.

Stochastic reconfiguration (SR) updates the parameters by delta = -tau S^{-1} g with the quantum
geometric tensor S = <O O^T>_c and the energy gradient g = <O (E_loc - E)>_c, O_k = d ln|psi| /
d theta_k (c: centred over the samples). With N samples and P parameters write the centred,
scaled log-derivative matrix Obar (N x P, rows (O(x_i) - <O>) / sqrt(N)) and the centred, scaled
local energies e (N,, (E_loc(x_i) - E) / sqrt(N)); then S = Obar^T Obar, g = Obar^T e and, with a
diagonal shift lambda,

    delta = -tau (Obar^T Obar + lambda)^{-1} Obar^T e = -tau Obar^T (Obar Obar^T + lambda)^{-1} e

(the push-through identity). For a complex wavefunction (twisted boundary conditions) with real
parameters, O = d ln|psi| + i d arg psi and E_loc are complex, S = Re <O^* O^T>_c and
g = Re <O^* (E_loc - E)>_c (the gradient of :mod:`thermoflow.electrons.vmc`); both are the real
forms above with the real and imaginary parts stacked as 2N rows, Obar = [Re; Im] and e = [Re; Im],
so the same N x N solve runs at 2N. The right-hand form needs only the N x N matrix Obar Obar^T
("minSR", the SR with the neural-tangent-kernel trick), so P can be 10^4-10^6 while N is a few
thousand: memory N^2 + N P instead of the P^2 of the dense S, which at the published code's 23k
parameters needed > 20 GB. The two forms agree to round-off (tested), so the choice is only one
of cost.

References: S. Sorella, Phys. Rev. Lett. 80, 4558 (1998), doi:10.1103/PhysRevLett.80.4558 (SR);
A. Chen and M. Heyl, Nat. Phys. 20, 1476 (2024), arXiv:2302.01941 (minSR); R. Rende, L. L.
Viteritti, L. Bardone, F. Becca and S. Goldt, Commun. Phys. 7, 260 (2024), arXiv:2310.05715 (the
SR-NTK identity).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from thermoflow.electrons import mcmc
from thermoflow.electrons.vmc import is_complex_wavefunction, make_sampler, vmc_stats


def min_sr_direction(log_derivatives: jax.Array, local_energies: jax.Array, damping: float) -> jax.Array:
    """The SR direction (S + lambda)^{-1} g computed in sample space, shape (P,).

    Args:
        log_derivatives: (N, P) d ln|psi| / d theta per sample, or complex d ln psi / d theta.
        local_energies: (N,) Hartree, complex for a complex wavefunction.
        damping: diagonal shift lambda > 0 (regularises the rank-deficient S).

    Returns:
        (P,) the direction; the update is ``-learning_rate x`` it.

    References: arXiv:2302.01941; arXiv:2310.05715.
    """
    n = log_derivatives.shape[0]
    o = (log_derivatives - jnp.mean(log_derivatives, axis=0)) / jnp.sqrt(n)
    e = (local_energies - jnp.mean(local_energies)) / jnp.sqrt(n)
    if jnp.iscomplexobj(o) or jnp.iscomplexobj(e):  # Re S and Re g: real and imaginary parts as 2N rows
        o = jnp.concatenate([jnp.real(o), jnp.imag(o)], axis=0)
        e = jnp.concatenate([jnp.real(e), jnp.imag(e)], axis=0)
        n = 2 * n
    kernel = o @ o.T + damping * jnp.eye(n, dtype=o.dtype)
    return o.T @ jax.scipy.linalg.solve(kernel, e, assume_a="pos")


def log_derivatives(log_psi: Callable, params, electrons: jax.Array, protons: jax.Array) -> tuple[jax.Array, Callable]:
    """d ln psi / d theta per walker, (N, P) over the flattened parameters (complex d ln|psi| + i d arg psi
    for a complex wavefunction), and the function that unravels a (P,) vector into the ``params`` pytree.

    Args:
        log_psi: ``(params, electrons (n_e, 3), protons) -> (sign or phase, ln|psi|)``.
        electrons: (N, n_e, 3) walkers, bohr.
    """
    flat, unravel = ravel_pytree(params)
    if is_complex_wavefunction(log_psi, params, electrons[0], protons):
        def parts(f, x):  # d ln psi = d ln|psi| + i d arg psi
            sign, log_abs = log_psi(unravel(f), x, protons)
            return jnp.stack([log_abs, jnp.angle(sign)])

        jac = jax.vmap(jax.jacrev(parts), in_axes=(None, 0))(flat, electrons)  # (N, 2, P)
        return jac[:, 0] + 1j * jac[:, 1], unravel
    grads = jax.vmap(jax.grad(lambda f, x: log_psi(unravel(f), x, protons)[1]), in_axes=(None, 0))(flat, electrons)
    return grads, unravel


def make_sr_vmc_step(log_psi: Callable, local_energy: Callable, n_mcmc_steps: int, learning_rate: float, damping: float = 1e-3) -> Callable:
    """``step(params, walkers, protons, step_size) -> (params, walkers, VMCStats)``, jitted: a Metropolis
    block, the local energies and one minSR update ``params - learning_rate x direction`` (the
    direction's norm is not clipped; keep ``learning_rate`` ~ 0.01-0.1).

    Args:
        log_psi: ``(params, electrons, protons) -> (sign, ln|psi|)``.
        local_energy: ``(params, electrons, protons) -> LocalEnergy``.
        n_mcmc_steps: Metropolis moves per walker between updates.
        learning_rate: tau.
        damping: lambda.

    References: doi:10.1103/PhysRevLett.80.4558; arXiv:2302.01941.
    """
    sample = make_sampler(log_psi, local_energy, n_mcmc_steps)

    @jax.jit
    def step(params, walkers: mcmc.WalkerState, protons, step_size):
        walkers, e_loc, acceptance = sample(params, walkers, protons, step_size)
        per_sample, unravel = log_derivatives(log_psi, params, walkers.electrons, protons)
        flat, _ = ravel_pytree(params)
        direction = min_sr_direction(per_sample, e_loc, damping)
        return unravel(flat - learning_rate * direction), walkers, vmc_stats(e_loc, acceptance)

    return step
