"""Occupation probabilities p_n of the NCT density matrix: a product spectrum or an autoregressive model.

Product spectrum (``kind = "product"``, the default): p_n = prod_k p_k(n_k), each mode k a
softmax over its levels n_k = 0..K-1 with learnable logits (D, K), initialised at the harmonic
Boltzmann weights exp(-n hbar omega_k / kT). Its entropy is the sum of the mode entropies and
its mean excitation sum_k hbar omega_k <n_k> is analytic: both exact, with exact gradients.

Autoregressive (``kind = "autoregressive"``, a variational autoregressive network, VAN):
p_n = prod_i p(n_{o_i} | n_{o_<i}) with the conditionals from one masked network pass
(:mod:`thermoflow.nct.autoregressive`), the modes o ordered by increasing phonon energy. It
starts as the product spectrum above (last layer zero, harmonic logits as its bias), so a run
starts where the product option starts. ln p_n is exact (one pass); samples are ancestral (D
sequential steps); entropy and <H0> are no longer analytic and are estimated from the same
samples, see :mod:`thermoflow.nct.loss`.

Both sit behind one record of pure functions, :class:`OccupationModel`.

References: Q. Zhang, X. Wang, R. Shi, X. Ren, H. Wang, L. Wang, "Neural canonical
transformations for quantum anharmonic solids of lithium", Phys. Rev. Lett. 134, 246101 (2025),
arXiv:2409.09813; D. Wu, L. Wang, P. Zhang, Phys. Rev. Lett. 122, 080602 (2019),
doi:10.1103/PhysRevLett.122.080602 (VAN).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.nct import autoregressive

#: the occupation models of :func:`make_occupations`
OCCUPATION_KINDS = ("product", "autoregressive")


def harmonic_logits(phonon_energies_eV: np.ndarray, kT_eV: float, n_levels: int) -> jax.Array:
    """Logits (n_modes, K) = -n hbar omega_k / kT: the harmonic Boltzmann occupations.

    Raises:
        ValueError: if kT is not positive or n_levels < 1.
    """
    if not kT_eV > 0:
        raise ValueError(f"kT must be positive, got {kT_eV}")
    if n_levels < 1:
        raise ValueError("n_levels must be >= 1")
    e = jnp.asarray(phonon_energies_eV, dtype=jnp.float64)
    return -e[:, None] * jnp.arange(n_levels)[None, :] / kT_eV


def log_probability(logits: jax.Array, levels: jax.Array) -> jax.Array:
    """ln p_n for one state: ``logits`` (n_modes, K), integer ``levels`` (n_modes,) -> scalar."""
    return _sum_selected(jax.nn.log_softmax(logits, axis=-1), levels)


def sample_levels(key: jax.Array, logits: jax.Array, n_samples: int) -> jax.Array:
    """Independent states n ~ p_n, integer array (n_samples, n_modes)."""
    return jax.random.categorical(key, logits, axis=-1, shape=(n_samples, logits.shape[0]))


def entropy(logits: jax.Array) -> jax.Array:
    """Exact entropy -sum_n p_n ln p_n of the product distribution, in units of k_B."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp)


def probabilities(logits: jax.Array) -> jax.Array:
    """Mode occupation probabilities p_k(n), shape (n_modes, K)."""
    return jax.nn.softmax(logits, axis=-1)


@dataclasses.dataclass(frozen=True)
class OccupationModel:
    """A distribution p_n over the level vectors n (D,) of the D modes, as pure functions.

    Attributes:
        kind: one of :data:`OCCUPATION_KINDS`.
        param_name: the entry of the NCT parameters that holds this model's parameters
            (``"logits"`` for the product spectrum, ``"occupations"`` for the network).
        init: ``init(key) -> params`` (the product spectrum ignores the key).
        conditional_log_probabilities: ``(params, levels (D,)) -> (D, K)``: row k holds
            ln p(n_k = j | the levels of the modes before k in the model's order), for the
            state ``levels``; for the product spectrum the rows are the marginals, the same for
            every state.
        log_probability: ``(params, levels (D,)) -> ln p_n``, exact, one network pass.
        sample: ``(params, key, n_samples) -> levels``, integer (n_samples, D), independent
            exact samples.
        entropy: ``params -> S`` (k_B), exact and differentiable; None when S must be estimated
            from samples (autoregressive).
        mean_levels: ``params -> <n_k>`` (D,), exact and differentiable; None when it must be
            estimated from samples (see :func:`estimate_mean_levels`).
    """

    kind: str
    param_name: str
    init: Callable
    conditional_log_probabilities: Callable
    log_probability: Callable
    sample: Callable
    entropy: Callable | None
    mean_levels: Callable | None


def make_occupations(kind: str, phonon_energies_eV: np.ndarray, kT_eV: float, n_levels: int, *, n_hidden: int = 64) -> OccupationModel:
    """The occupation model ``kind``, equal to the harmonic Boltzmann product spectrum at its start.

    Args:
        kind: ``"product"`` (logits (D, K)) or ``"autoregressive"`` (a masked network with
            ``n_hidden`` tanh units, modes ordered by increasing phonon energy; parameters
            O(2 D K n_hidden)).
        phonon_energies_eV: (D,) hbar omega_k of the basis, eV.
        kT_eV: thermal energy, eV.
        n_levels: levels K per mode.
        n_hidden: hidden units of the autoregressive network.

    Raises:
        ValueError: for an unknown kind, kT <= 0, n_levels < 1 or n_hidden < 1.

    References: D. Wu, L. Wang, P. Zhang, Phys. Rev. Lett. 122, 080602 (2019),
    doi:10.1103/PhysRevLett.122.080602; M. Germain et al., arXiv:1502.03509 (MADE).
    """
    logits0 = harmonic_logits(phonon_energies_eV, kT_eV, n_levels)
    if kind == "product":
        return OccupationModel(
            kind=kind,
            param_name="logits",
            init=lambda key: logits0,
            conditional_log_probabilities=lambda logits, levels: jax.nn.log_softmax(logits, axis=-1),
            log_probability=log_probability,
            sample=lambda logits, key, n_samples: sample_levels(key, logits, n_samples),
            entropy=entropy,
            mean_levels=lambda logits: probabilities(logits) @ jnp.arange(logits.shape[-1]),
        )
    if kind != "autoregressive":
        raise ValueError(f"unknown occupation model {kind!r}; choose one of {OCCUPATION_KINDS}")
    if n_hidden < 1:
        raise ValueError(f"the autoregressive occupations need n_hidden >= 1, got {n_hidden}")
    order = np.argsort(np.asarray(phonon_energies_eV), kind="stable")  # position i holds mode order[i]
    inverse = np.argsort(order)

    def conditionals(params, levels):
        return jax.nn.log_softmax(autoregressive.conditional_logits(params, levels[order]), axis=-1)[inverse]

    return OccupationModel(
        kind=kind,
        param_name="occupations",
        # folded, so that the flow's initialisation from the same key is independent of it
        init=lambda key: autoregressive.init_params(jax.random.fold_in(key, 1), logits0[order], n_hidden),
        conditional_log_probabilities=conditionals,
        log_probability=lambda params, levels: _sum_selected(conditionals(params, levels), levels),
        sample=lambda params, key, n_samples: autoregressive.sample(params, key, n_samples)[:, inverse],
        entropy=None,
        mean_levels=None,
    )


def _sum_selected(log_p: jax.Array, levels: jax.Array) -> jax.Array:
    """sum_k log_p[k, levels[k]]: ln p_n from the (D, K) (conditional) log-probabilities."""
    return jnp.sum(jnp.take_along_axis(log_p, levels[:, None], axis=-1))


def conditional_mean_levels(model: OccupationModel, params, levels: jax.Array) -> jax.Array:
    """E[n_k | the levels before k] (D,) at the state ``levels`` (D,): for every model,
    E_n[conditional mean] = <n_k> (tower property); the product spectrum gives <n_k> itself."""
    log_p = model.conditional_log_probabilities(params, levels)
    return jnp.exp(log_p) @ jnp.arange(log_p.shape[-1])


def estimate_mean_levels(model: OccupationModel, params, key: jax.Array, n_samples: int = 4096) -> jax.Array:
    """Mean level <n_k> (D,) of every mode (dimensionless, 0..K-1).

    Exact if the model has it (product spectrum), else the average of the conditional means
    E[n_k | n_<k] over ``n_samples`` ancestral samples drawn with ``key`` (unbiased, with less
    variance than the sampled levels themselves).
    """
    if model.mean_levels is not None:
        return model.mean_levels(params)

    @jax.jit
    def estimate(params, key):
        levels = model.sample(params, key, n_samples)
        return jnp.mean(jax.vmap(conditional_mean_levels, in_axes=(None, None, 0))(model, params, levels), axis=0)

    return estimate(params, key)


def baseline_weights(values: jax.Array) -> jax.Array:
    """REINFORCE weights (v_i - mean v) B / (B - 1) of a batch ``values`` (B,), gradient stopped.

    The batch mean as the baseline, and the factor B/(B-1) removes the O(1/B) bias of each
    sample's own share of it: E[w_i grad ln p_i] = E[v grad ln p] exactly for i.i.d. samples.

    References: R. J. Williams, Mach. Learn. 8, 229 (1992), doi:10.1007/BF00992696.
    """
    n = values.shape[0]
    return jax.lax.stop_gradient((values - jnp.mean(values)) * n / (n - 1))


def free_energy_surrogate(log_p: jax.Array, energies: jax.Array, kT_eV: float) -> jax.Array:
    """Surrogate whose gradient estimates d/dphi (E_p[E_n] - kT S[p]) by REINFORCE.

    With f_i = E_i + kT ln p_i (the local free energy; ``energies`` (B,) eV need only have the
    state's energy E_n as their mean), d/dphi E_p[f] = E[f d ln p / dphi] (E[d ln p] = 0 removes
    the explicit derivative of ln p), estimated with :func:`baseline_weights`.

    Args:
        log_p: ln p of the B i.i.d. samples, differentiable in the model parameters phi.
        energies: (B,) energies of the samples (their gradient is not used), eV.
        kT_eV: thermal energy, eV.

    Returns:
        A scalar (eV); only its gradient is meaningful, not its value.

    References: D. Wu, L. Wang, P. Zhang, Phys. Rev. Lett. 122, 080602 (2019),
    doi:10.1103/PhysRevLett.122.080602.
    """
    return jnp.mean(baseline_weights(energies + kT_eV * jax.lax.stop_gradient(log_p)) * log_p)
