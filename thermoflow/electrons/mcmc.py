"""Metropolis sampling of |psi|^2 for electronic VMC: all-electron Gaussian moves, acceptance-tuned step.

Walkers are (n_walkers, n_electrons, 3) arrays, bohr; one jitted block runs ``n_steps`` moves of
every walker (``lax.scan``), each move x' = x + sigma xi (xi standard normal, all electrons of a
walker at once) accepted with probability min(1, |psi(x')|^2 / |psi(x)|^2). Between blocks the
driver may rescale sigma towards a target acceptance (:func:`tune_step_size`); within a block the
chain is a time-homogeneous Metropolis chain, so detailed balance holds for |psi|^2.

References: N. Metropolis et al., J. Chem. Phys. 21, 1087 (1953), doi:10.1063/1.1699114; Foulkes
et al., Rev. Mod. Phys. 73, 33 (2001) (VMC practice, acceptance near 0.5).
"""

from __future__ import annotations

import functools

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class WalkerState(NamedTuple):
    """``electrons`` (n_walkers, n_e, 3) bohr; ``log_abs_psi`` (n_walkers,) ln|psi| at them; ``key`` (2,)."""

    electrons: jax.Array
    log_abs_psi: jax.Array
    key: jax.Array


def init_walkers(log_psi: Callable, params, electrons: jax.Array, protons: jax.Array, key: jax.Array) -> WalkerState:
    """A :class:`WalkerState` at ``electrons`` (n_walkers, n_e, 3) for protons (n_p, 3);
    ``log_psi(params, electrons, protons) -> (sign, ln|psi|)``."""
    return WalkerState(electrons, _batched_log_abs(log_psi)(params, electrons, protons), key)


@functools.lru_cache(maxsize=16)
def _batched_log_abs(log_psi: Callable) -> Callable:
    """ln|psi| of a batch of walkers, jitted once per wavefunction (not once per call)."""
    return jax.jit(jax.vmap(lambda p, x, r: log_psi(p, x, r)[1], in_axes=(None, 0, None)))


def make_metropolis_block(log_psi: Callable, n_steps: int, *, per_walker_protons: bool = False) -> Callable:
    """``block(state, params, protons, step_size) -> (state, acceptance ())``: ``n_steps``
    all-electron moves of every walker in one jitted scan; ``log_psi(params, electrons, protons) ->
    (sign, ln|psi|)``. ``protons`` is (n_p, 3), shared by all walkers, or with ``per_walker_protons``
    (n_walkers, n_p, 3), each walker's own configuration (the walkers of many proton configurations in
    one flat batch, as the joint proton-electron training uses). ``state.log_abs_psi`` must belong to
    ``params`` (re-evaluate it after a parameter update: :func:`init_walkers`).

    Raises:
        ValueError: ``n_steps`` < 1.

    References: doi:10.1063/1.1699114.
    """
    if n_steps < 1:
        raise ValueError(f"a Metropolis block needs at least one step, got {n_steps}")
    log_abs = jax.vmap(lambda params, x, p: log_psi(params, x, p)[1], in_axes=(None, 0, 0 if per_walker_protons else None))

    def move(carry, _, params, protons, step_size):
        electrons, current, key = carry
        key, k_move, k_accept = jax.random.split(key, 3)
        proposal = electrons + step_size * jax.random.normal(k_move, electrons.shape, electrons.dtype)
        proposed = log_abs(params, proposal, protons)
        accept = jnp.log(jax.random.uniform(k_accept, current.shape, electrons.dtype)) < 2.0 * (proposed - current)
        electrons = jnp.where(accept[:, None, None], proposal, electrons)
        current = jnp.where(accept, proposed, current)
        return (electrons, current, key), jnp.mean(accept)

    @jax.jit
    def block(state: WalkerState, params, protons, step_size):
        (electrons, current, key), accepted = jax.lax.scan(
            lambda c, x: move(c, x, params, protons, step_size), tuple(state), None, length=n_steps)
        return WalkerState(electrons, current, key), jnp.mean(accepted)

    return block


def tune_step_size(step_size: float, acceptance: float, target: float = 0.5, bounds: tuple[float, float] = (1e-3, 10.0)) -> float:
    """A new step size (bohr): sigma exp(acceptance - target), clipped to ``bounds``."""
    return float(np.clip(step_size * np.exp(acceptance - target), *bounds))
