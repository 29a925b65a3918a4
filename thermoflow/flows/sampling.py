"""Metropolis sampling of a flow's density p(X) over configurations of N particles in a periodic cell.

Walkers are (n_walkers, N, 3) arrays; one jitted block runs ``n_steps`` moves of every walker
(``lax.scan``), each X' = X + sigma xi (xi standard normal, all particles of a walker at once)
accepted with probability min(1, p(X') / p(X)). Positions are kept wrapped into the cell (the
density is periodic, so wrapping changes nothing but keeps coordinates bounded). The electronic
sampler (:mod:`thermoflow.electrons.mcmc`) is the same algorithm on |psi|^2; this one takes a log
density and its own walker state so that the classical engine does not depend on the electrons.

Reference: N. Metropolis et al., J. Chem. Phys. 21, 1087 (1953), doi:10.1063/1.1699114.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Walkers(NamedTuple):
    """``positions`` (n_walkers, N, 3); ``log_density`` (n_walkers,) ln p at them."""

    positions: jax.Array
    log_density: jax.Array


def wrap(positions: jax.Array, cell: jax.Array) -> jax.Array:
    """Positions (..., 3) wrapped into the cell [0, 1)^3 A."""
    frac = positions @ jnp.linalg.inv(cell)
    return (frac - jnp.floor(frac)) @ cell


def make_metropolis_block(log_density: Callable, cell: np.ndarray, n_steps: int) -> Callable:
    """``block(walkers, params, key, step_size) -> (walkers, acceptance ())``: ``n_steps`` moves of every
    walker; ``log_density(params, X (N, 3)) -> ln p`` (scalar). ``walkers.log_density`` must belong to
    ``params`` (re-evaluate with :func:`init_walkers` after a parameter update).

    Raises:
        ValueError: ``n_steps`` < 1.
    """
    if n_steps < 1:
        raise ValueError(f"a Metropolis block needs at least one step, got {n_steps}")
    cell_j = jnp.asarray(cell)
    batched = jax.vmap(log_density, in_axes=(None, 0))

    def move(carry, key, params, step_size):
        positions, current = carry
        k_move, k_accept = jax.random.split(key)
        proposal = wrap(positions + step_size * jax.random.normal(k_move, positions.shape, positions.dtype), cell_j)
        proposed = batched(params, proposal)
        accept = jnp.log(jax.random.uniform(k_accept, current.shape, positions.dtype)) < proposed - current
        return (jnp.where(accept[:, None, None], proposal, positions), jnp.where(accept, proposed, current)), jnp.mean(accept)

    @jax.jit
    def block(walkers: Walkers, params, key, step_size):
        (positions, current), accepted = jax.lax.scan(
            lambda c, k: move(c, k, params, step_size), tuple(walkers), jax.random.split(key, n_steps))
        return Walkers(positions, current), jnp.mean(accepted)

    return block


def init_walkers(log_density: Callable, params, positions: jax.Array) -> Walkers:
    """:class:`Walkers` at ``positions`` (n_walkers, N, 3) with their ln p under ``params``."""
    return Walkers(positions, jax.vmap(log_density, in_axes=(None, 0))(params, positions))


def make_annealing(log_density: Callable, cell: np.ndarray, n_steps: int) -> Callable:
    """``anneal(params, positions (n_walkers, N, 3), key, betas (K,), step_size) -> (positions, acceptances (K,))``:
    Metropolis blocks of ``n_steps`` moves on p(X)^beta for beta = betas[0], ..., betas[K-1] in turn (e.g. rising
    geometrically from 1), the step size shrunk as step_size / sqrt(beta): quenching sampled configurations
    towards the maxima of the flow's density, i.e. the structures the density favours.

    Raises:
        ValueError: ``n_steps`` < 1.
    """
    block = make_metropolis_block(lambda pb, x: pb[1] * log_density(pb[0], x), cell, n_steps)
    tempered = jax.jit(jax.vmap(lambda p, beta, x: beta * log_density(p, x), in_axes=(None, None, 0)))

    def anneal(params, positions, key, betas, step_size):
        acceptances = []
        for k, beta in enumerate(np.asarray(betas, dtype=float)):
            walkers = Walkers(positions, tempered(params, beta, positions))
            walkers, acceptance = block(walkers, (params, beta), jax.random.fold_in(key, k), step_size / np.sqrt(beta))
            positions = walkers.positions
            acceptances.append(float(acceptance))
        return positions, np.asarray(acceptances)

    return anneal
