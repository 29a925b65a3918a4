"""Variational Monte Carlo energy minimisation: the energy-gradient estimator and one jitted step.

For a real wavefunction and a Hermitian H the gradient of E = <E_loc>_{|psi|^2} is

    dE/dtheta = 2 E[(E_loc - E) d ln|psi| / dtheta],

estimated over the walkers. For a complex wavefunction (twisted boundary conditions) with real
parameters, O = d ln psi / dtheta = d ln|psi| + i d arg psi and complex E_loc,

    dE/dtheta = 2 Re E[(E_loc - E)^* (O - E[O])] = 2 E[(Re E_loc - E) d ln|psi| + (Im E_loc - E[Im E_loc]) d arg psi]

(from dE = [<dpsi|H|psi> + <psi|H|dpsi>] / <psi|psi> - E d<psi|psi> / <psi|psi>; the centring of
either factor drops out in expectation, and centring removes the dependence on a global phase).
The imaginary term is absent for a real wavefunction. Local energies (real and imaginary parts
separately) are clipped to median +- 5 x their mean absolute deviation in the gradient only
(FermiNet's clipping: the heavy tails of E_loc near nodes and coalescences otherwise dominate the
noise). One step = a Metropolis block with the current
parameters, the local energies, the gradient and an optax update.

References: Foulkes et al., Rev. Mod. Phys. 73, 33 (2001), doi:10.1103/RevModPhys.73.33;
F. Becca and S. Sorella, Quantum Monte Carlo Approaches for Correlated Systems (Cambridge, 2017),
doi:10.1017/9781316417041 (the energy gradient / forces of complex wavefunctions);
D. Pfau, J. S. Spencer, A. G. de G. Matthews and W. M. C. Foulkes, Phys. Rev. Research 2, 033429
(2020), doi:10.1103/PhysRevResearch.2.033429 (clipping, FermiNet).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from thermoflow.electrons import mcmc
from thermoflow.optimize import clip_to_median

#: local energies are clipped to median +- CLIP_WIDTH x mean absolute deviation in the gradient
CLIP_WIDTH = 5.0


class VMCStats(NamedTuple):
    """Per-step monitors: ``energy`` (mean of Re E_loc, Hartree), ``variance`` (mean |E_loc - <E_loc>|^2,
    Hartree^2), ``acceptance``, ``energy_imaginary`` (mean of Im E_loc: zero in expectation, Hartree)."""

    energy: jax.Array
    variance: jax.Array
    acceptance: jax.Array
    energy_imaginary: jax.Array = 0.0


def vmc_stats(local_energies: jax.Array, acceptance: jax.Array) -> VMCStats:
    """:class:`VMCStats` of (n_walkers,) local energies, real or complex."""
    mean = jnp.mean(local_energies)
    return VMCStats(jnp.real(mean), jnp.var(local_energies), acceptance, jnp.imag(mean))


def is_complex_wavefunction(log_psi: Callable, params, electrons: jax.Array, protons: jax.Array) -> bool:
    """Whether ``log_psi`` returns a complex phase (traced shape only, no evaluation); ``electrons`` (n_e, 3)."""
    return bool(jnp.issubdtype(jax.eval_shape(lambda x: log_psi(params, x, protons)[0], electrons).dtype, jnp.complexfloating))


def energy_gradient(log_psi: Callable, params, electrons: jax.Array, protons: jax.Array, local_energies: jax.Array, *,
                    clip_width: float | None = CLIP_WIDTH, weights: jax.Array | None = None):
    """The VMC gradient estimate (module docstring), a pytree like ``params``:
    2 mean[(clip(Re E_loc) - mean) d ln|psi|] (+ 2 mean[(clip(Im E_loc) - mean) d arg psi] for complex psi).

    Args:
        log_psi: ``(params, electrons (n_e, 3), protons (n_p, 3)) -> (sign, ln|psi|)``; a complex sign
            (phase) marks a complex wavefunction.
        electrons: (n_walkers, n_e, 3) bohr, distributed as |psi|^2 (or weighted by ``weights``).
        local_energies: (n_walkers,) Hartree at ``electrons``, complex for a complex wavefunction.
        clip_width: clip the real and imaginary parts of E_loc to median +- this x their mean absolute
            deviation; ``None``: no clipping.
        weights: (n_walkers,) normalised weights of the configurations (quadrature or reweighting);
            ``None``: equal weights 1 / n_walkers.

    Raises:
        ValueError: real local energies for a complex wavefunction (pass the complex ones).

    References: doi:10.1103/RevModPhys.73.33; doi:10.1017/9781316417041; doi:10.1103/PhysRevResearch.2.033429.
    """
    n = local_energies.shape[0]
    w = jnp.full(n, 1.0 / n) if weights is None else weights
    complex_psi = is_complex_wavefunction(log_psi, params, electrons[0], protons)
    if complex_psi and not jnp.iscomplexobj(local_energies):
        raise ValueError("the wavefunction is complex: pass its complex local energies (LocalEnergy.total), not their real part")
    real = clip_to_median(jnp.real(local_energies), clip_width)
    centred_real = jax.lax.stop_gradient(real - jnp.sum(w * real))
    imag = clip_to_median(jnp.imag(local_energies), clip_width)
    centred_imag = jax.lax.stop_gradient(imag - jnp.sum(w * imag))

    def surrogate(p):
        signs, logs = jax.vmap(lambda x: log_psi(p, x, protons))(electrons)
        value = 2.0 * jnp.sum(w * centred_real * logs)
        if complex_psi:
            value = value + 2.0 * jnp.sum(w * centred_imag * jnp.angle(signs))
        return value

    return jax.grad(surrogate)(params)


def map_walkers(fn: Callable, walkers: jax.Array, chunk_size: int | None):
    """``fn`` over the leading (walker) axis: vmapped at once (``chunk_size`` None), or ``chunk_size``
    walkers at a time (``jax.lax.map``; memory ~ chunk_size, the same result)."""
    if chunk_size is None or chunk_size >= walkers.shape[0]:
        return jax.vmap(fn)(walkers)
    return jax.lax.map(fn, walkers, batch_size=chunk_size)


def make_sampler(log_psi: Callable, local_energy: Callable, n_mcmc_steps: int, chunk_size: int | None = None) -> Callable:
    """``sample(params, walkers, protons, step_size) -> (walkers, local energies (n_walkers,) Hartree,
    acceptance)``: ln|psi| of the walkers re-evaluated at ``params`` (after a parameter update), a
    Metropolis block, the local energies (complex for a complex wavefunction), ``chunk_size`` walkers
    at a time (None: all at once; the forward Laplacian's memory grows with it); traced inside the
    optimisers' jitted steps.
    """
    block = mcmc.make_metropolis_block(log_psi, n_mcmc_steps)

    def energies(p, xs, r):
        return map_walkers(lambda x: local_energy(p, x, r).total, xs, chunk_size)

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
        return params, opt_state, walkers, vmc_stats(e_loc, acceptance)

    return step
