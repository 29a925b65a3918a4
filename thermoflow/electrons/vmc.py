"""Variational Monte Carlo energy minimisation: the energy-gradient estimator and one jitted step.

For a real wavefunction and a Hermitian H the gradient of E = <E_loc>_{|psi|^2} is

    dE/dtheta = 2 E[(E_loc - E) d ln|psi| / dtheta],

estimated over the walkers; local energies are clipped to median +- 5 x their mean absolute
deviation in the gradient only (FermiNet's clipping: the heavy tails of E_loc near nodes and
coalescences otherwise dominate the noise). One step = a Metropolis block with the current
parameters, the local energies, the gradient and an optax update.

References: Foulkes et al., Rev. Mod. Phys. 73, 33 (2001), doi:10.1103/RevModPhys.73.33;
D. Pfau, J. S. Spencer, A. G. de G. Matthews and W. M. C. Foulkes, Phys. Rev. Research 2, 033429
(2020), doi:10.1103/PhysRevResearch.2.033429 (clipping, FermiNet).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from thermoflow.electrons import mcmc

#: local energies are clipped to median +- CLIP_WIDTH x mean absolute deviation in the gradient
CLIP_WIDTH = 5.0


class VMCStats(NamedTuple):
    """Per-step monitors: ``energy`` (mean local energy, Hartree), ``variance`` (Hartree^2), ``acceptance``."""

    energy: jax.Array
    variance: jax.Array
    acceptance: jax.Array


def energy_gradient(log_psi: Callable, params, electrons: jax.Array, protons: jax.Array, local_energies: jax.Array):
    """The VMC gradient estimate 2 mean[(clip(E_loc) - mean clip(E_loc)) d ln|psi| / dtheta] (a pytree like ``params``).

    Args:
        log_psi: ``(params, electrons (n_e, 3), protons (n_p, 3)) -> (sign, ln|psi|)``.
        electrons: (n_walkers, n_e, 3) bohr, distributed as |psi|^2.
        local_energies: (n_walkers,) Hartree at ``electrons``.

    References: doi:10.1103/RevModPhys.73.33; doi:10.1103/PhysRevResearch.2.033429.
    """
    median = jnp.median(local_energies)
    spread = jnp.mean(jnp.abs(local_energies - median))
    clipped = jnp.clip(local_energies, median - CLIP_WIDTH * spread, median + CLIP_WIDTH * spread)
    centred = jax.lax.stop_gradient(clipped - jnp.mean(clipped))

    def surrogate(p):
        logs = jax.vmap(lambda x: log_psi(p, x, protons)[1])(electrons)
        return 2.0 * jnp.mean(centred * logs)

    return jax.grad(surrogate)(params)


def make_sampler(log_psi: Callable, local_energy: Callable, n_mcmc_steps: int) -> Callable:
    """``sample(params, walkers, protons, step_size) -> (walkers, local energies (n_walkers,) Hartree,
    acceptance)``: ln|psi| of the walkers re-evaluated at ``params`` (after a parameter update), a
    Metropolis block, the local energies; traced inside the optimisers' jitted steps.
    """
    block = mcmc.make_metropolis_block(log_psi, n_mcmc_steps)
    energies = jax.vmap(lambda p, x, r: local_energy(p, x, r).total, in_axes=(None, 0, None))

    def sample(params, walkers: mcmc.WalkerState, protons, step_size):
        log_abs = jax.vmap(lambda x: log_psi(params, x, protons)[1])(walkers.electrons)
        walkers, acceptance = block(walkers._replace(log_abs_psi=log_abs), params, protons, step_size)
        return walkers, energies(params, walkers.electrons, protons), acceptance

    return sample


def make_vmc_step(log_psi: Callable, local_energy: Callable, optimizer: optax.GradientTransformation, n_mcmc_steps: int) -> Callable:
    """``step(params, opt_state, walkers, protons, step_size) -> (params, opt_state, walkers, VMCStats)``, jitted.

    Args:
        log_psi: ``(params, electrons, protons) -> (sign, ln|psi|)``.
        local_energy: ``(params, electrons, protons) -> LocalEnergy`` (:func:`thermoflow.electrons.hamiltonian.make_local_energy`).
        optimizer: an optax transformation (e.g. ``optax.adam``).
        n_mcmc_steps: Metropolis moves per walker between parameter updates.
    """
    sample = make_sampler(log_psi, local_energy, n_mcmc_steps)

    @jax.jit
    def step(params, opt_state, walkers: mcmc.WalkerState, protons, step_size):
        walkers, e_loc, acceptance = sample(params, walkers, protons, step_size)
        grads = energy_gradient(log_psi, params, walkers.electrons, protons, e_loc)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, walkers, VMCStats(jnp.mean(e_loc), jnp.var(e_loc), acceptance)

    return step
