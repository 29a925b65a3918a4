"""Occupation models: the autoregressive network (VAN) against enumeration of all K^D states."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize
import scipy.stats

from thermoflow.nct import occupations
from thermoflow.nct.flow import make_realnvp
from thermoflow.nct.loss import make_free_energy_model
from thermoflow.io.checkpoint import load_latest_checkpoint
from thermoflow.nct.train import evaluate, train
from thermoflow.phonons import harmonic_thermodynamics
from thermoflow.phonons.modes import HarmonicModes
from thermoflow.units import HBAR_EV, KB_EV_PER_K

K = 3
EPS = np.array([0.021, 0.012, 0.017])  # eV, not sorted: the network orders the modes by energy
KT = 0.04  # eV
STATES = jnp.array(list(itertools.product(range(K), repeat=len(EPS))))


def random_network(model, seed, scale=1.0):
    """Autoregressive parameters with every leaf moved by N(0, scale^2) noise (masks still apply)."""
    params = model.init(jax.random.PRNGKey(seed))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def enumerated_log_p(model, params, states=STATES):
    return jax.vmap(model.log_probability, in_axes=(None, 0))(params, states)


def test_autoregressive_probabilities_normalise_and_samples_follow_them():
    """Random network, D = 3, K = 3: sum_n p_n = 1; ancestral frequencies match p_n (chi-square);
    the sampled entropy -mean ln p matches the enumerated one within 4 sigma."""
    model = occupations.make_occupations("autoregressive", EPS, KT, K, n_hidden=8)
    params = random_network(model, seed=0, scale=0.6)
    log_p = enumerated_log_p(model, params)
    p = np.exp(np.asarray(log_p))
    np.testing.assert_allclose(p.sum(), 1.0, atol=1e-12)
    marginals = [np.bincount(np.asarray(STATES)[:, k], weights=p, minlength=K) for k in range(len(EPS))]
    product = np.prod([m[np.asarray(STATES)[:, k]] for k, m in enumerate(marginals)], axis=0)
    assert np.abs(p - product).max() > 0.01 and p.min() > 1e-4  # correlated, and every state sampled

    n_samples = 100_000
    levels = np.asarray(jax.jit(model.sample, static_argnums=2)(params, jax.random.PRNGKey(1), n_samples))
    counts = np.bincount(np.ravel_multi_index(levels.T, (K,) * len(EPS)), minlength=K ** len(EPS))
    chi2 = np.sum((counts - n_samples * p) ** 2 / (n_samples * p))
    assert scipy.stats.chi2.sf(chi2, K ** len(EPS) - 1) > 1e-4, chi2

    sampled = -np.asarray(enumerated_log_p(model, params, jnp.asarray(levels)))
    exact = -np.sum(p * np.log(p))
    assert abs(sampled.mean() - exact) < 4 * sampled.std() / np.sqrt(n_samples)
    # the conditional means average to the exact mean levels (tower property)
    mean_levels = occupations.estimate_mean_levels(model, params, jax.random.PRNGKey(2), 20_000)
    exact_levels = p @ np.asarray(STATES)
    np.testing.assert_allclose(mean_levels, exact_levels, atol=0.02)


def test_autoregressive_starts_as_the_harmonic_product_spectrum():
    """At initialisation ln p_n of the network equals the product spectrum's for every state."""
    product = occupations.make_occupations("product", EPS, KT, K)
    network = occupations.make_occupations("autoregressive", EPS, KT, K, n_hidden=8)
    params = network.init(jax.random.PRNGKey(3))
    np.testing.assert_allclose(enumerated_log_p(network, params), enumerated_log_p(product, product.init(None)), rtol=0, atol=1e-12)


def test_reinforce_gradient_matches_enumeration():
    """d/dphi (E_p[E_n] - kT S[p]) for a fixed random energy table: the REINFORCE surrogate's
    gradient, averaged over 24 batches, agrees with jax.grad of the enumerated sum (4.5 sigma)."""
    model = occupations.make_occupations("autoregressive", EPS, KT, K, n_hidden=4)
    params = random_network(model, seed=4, scale=0.7)
    table = jnp.asarray(np.random.default_rng(5).normal(0.0, 0.03, K ** len(EPS)))  # E_n, eV
    index = jnp.asarray(K ** np.arange(len(EPS))[::-1])  # state -> row of the table

    def exact_free_energy(p):
        log_p = enumerated_log_p(model, p)
        return jnp.sum(jnp.exp(log_p) * (table + KT * log_p))

    @jax.jit
    def estimated_gradient(p, key):
        levels = model.sample(p, key, 1024)

        def surrogate(q):
            log_p = jax.vmap(model.log_probability, in_axes=(None, 0))(q, levels)
            return occupations.free_energy_surrogate(log_p, table[levels @ index], KT)

        return jax.grad(surrogate)(p)

    exact = jax.tree_util.tree_leaves(jax.grad(exact_free_energy)(params))
    runs = [jax.tree_util.tree_leaves(estimated_gradient(params, jax.random.PRNGKey(10 + i))) for i in range(24)]
    sharp = 0
    for i, g in enumerate(exact):
        est = np.stack([np.asarray(r[i]).ravel() for r in runs])
        mean, se = est.mean(axis=0), est.std(axis=0, ddof=1) / np.sqrt(len(est))
        g = np.asarray(g).ravel()
        assert np.all(np.abs(mean - g) < 4.5 * se + 1e-10), (i, mean, g, se)
        sharp += int(np.sum(np.abs(g) > 6 * se))
    assert sharp >= 10  # enough components where the comparison is sharp


# a tiny coupled system: one atom, V = k/2 |u|^2 + lam sum u_d^4 + mu sum_{d<e} u_d^2 u_e^2; in
# the harmonic basis of the spring (identity flow) the state energies E_n do not separate into
# modes, so the best occupations are correlated and beat every product spectrum
SPRING, QUARTIC, COUPLING, MASS = 1.0, 0.5, 10.0, 1.0  # eV/A^2, eV/A^4, eV/A^4, amu
TEMPERATURE_K = 800.0


def coupled_atom(quartic=QUARTIC, coupling=COUPLING):
    omega = np.sqrt(SPRING / MASS) * np.ones(3)
    modes = HarmonicModes(
        reference_positions=np.zeros((1, 3)), cell=10.0 * np.eye(3), masses=np.array([MASS]), energy0_eV=0.0,
        omega=omega, modes=np.eye(3), imaginary=np.zeros(3, dtype=bool), n_translations_removed=0,
    )

    def energy_fn(positions, cell):
        u2 = positions[0] ** 2
        return 0.5 * SPRING * jnp.sum(u2) + quartic * jnp.sum(u2**2) + coupling * (u2[0] * u2[1] + u2[1] * u2[2] + u2[2] * u2[0])

    # E_n = <Phi_n|H|Phi_n> from <s^2>_n = n + 1/2, <s^4>_n = (6 n^2 + 6 n + 3)/4, u = l s
    n = np.asarray(STATES, dtype=float)
    eps, l4 = HBAR_EV * omega[0], (HBAR_EV / (MASS * omega[0])) ** 2
    s2, s4 = n + 0.5, (6 * n**2 + 6 * n + 3) / 4
    pairs = s2[:, 0] * s2[:, 1] + s2[:, 1] * s2[:, 2] + s2[:, 2] * s2[:, 0]
    energies = eps * s2.sum(axis=1) + quartic * l4 * s4.sum(axis=1) + coupling * l4 * pairs
    return energy_fn, modes, energies


def free_energy_by_enumeration(log_p, energies, kT):
    """sum_n p_n (E_n + kT ln p_n), eV."""
    return float(jnp.sum(jnp.exp(log_p) * (energies + kT * log_p)))


def best_product_free_energy(energies, kT):
    """min over product spectra of sum_n p_n E_n - kT S (BFGS on the (3, K) logits), eV."""
    product = occupations.make_occupations("product", np.ones(3), 1.0, K)

    def f(x):
        log_p = enumerated_log_p(product, x.reshape(3, K))
        return jnp.sum(jnp.exp(log_p) * (energies + kT * log_p))

    res = scipy.optimize.minimize(jax.jit(f), np.zeros(3 * K), jac=jax.jit(jax.grad(f)), method="BFGS", options={"gtol": 1e-12})
    return float(res.fun)


def test_autoregressive_estimator_is_exact_at_the_start_on_a_harmonic_atom():
    """Harmonic atom, network at its start (the harmonic product spectrum): the training estimator
    gives the analytic truncated F, E and S, with zero variance, as the product option does."""
    energy_fn, modes, _ = coupled_atom(quartic=0.0, coupling=0.0)
    kT = KB_EV_PER_K * TEMPERATURE_K
    model = make_free_energy_model(
        energy_fn, modes, make_realnvp(3, 2, 4), kT_eV=kT, n_levels=K, batch_size=64, freeze_flow=True, occupations="autoregressive",
    )
    metrics = jax.jit(model.loss)(model.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))[1]
    exact = harmonic_thermodynamics(modes.phonon_energies_eV, kT, n_levels=K)
    np.testing.assert_allclose(float(metrics["free_energy"]), exact.free_energy_eV, rtol=1e-12)
    np.testing.assert_allclose(float(metrics["energy"]), exact.energy_eV, rtol=1e-12)
    np.testing.assert_allclose(float(metrics["entropy"]), exact.entropy_kB, rtol=1e-10)
    assert float(metrics["energy_stderr"]) < 1e-12 and float(metrics["local_energy_variance"]) > 1e-6


def test_autoregressive_training_reaches_the_correlated_optimum(tmp_path):
    """Occupations only (identity flow) on a coupled atom at 800 K, K = 3: training the network
    brings F (by enumeration at the trained parameters) to the exact optimum over all p_n,
    -kT ln sum_n exp(-E_n/kT), below the best product spectrum; the estimator of the final
    evaluation agrees with it within error bars; the run is interrupted and resumed halfway."""
    energy_fn, modes, energies = coupled_atom()
    kT = KB_EV_PER_K * TEMPERATURE_K
    f_exact = float(-kT * jax.scipy.special.logsumexp(-energies / kT))
    f_product = best_product_free_energy(energies, kT)
    model = make_free_energy_model(
        energy_fn, modes, make_realnvp(3, 2, 4), kT_eV=kT, n_levels=K, batch_size=512, freeze_flow=True,
        laplacian="exact", occupations="autoregressive", occupation_hidden=16, clip_width=0.0,
    )  # unclipped: clipping the heavy-tailed coupling energies biases the occupation gradient (F ends ~1.4 meV high)
    occ = model.occupations

    def enumerated(params):
        return free_energy_by_enumeration(enumerated_log_p(occ, params[occ.param_name]), energies, kT)

    f_start = enumerated(model.init(jax.random.PRNGKey(0)))
    steps = 300
    opt = optax.adam(optax.cosine_decay_schedule(0.03, steps, alpha=0.01))
    # interrupted halfway and resumed: the checkpoint restores the network's parameters exactly
    path = tmp_path / "c.npz"
    half = train(model, opt, steps=steps, seed=0, checkpoint_path=path, checkpoint_every=50, stop_after=steps // 2)
    tree = load_latest_checkpoint(path, {"params": half.params, "opt_state": half.opt_state})[0]
    for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves({"params": half.params, "opt_state": half.opt_state})):
        np.testing.assert_array_equal(a, b)
    result = train(model, opt, steps=steps, seed=0, checkpoint_path=path, checkpoint_every=50, resume=True)
    np.testing.assert_array_equal(result.history["step"], np.arange(steps))
    f_trained = enumerated(result.params)
    print(f"F - F_exact (meV): start {1e3 * (f_start - f_exact):.3f}, best product {1e3 * (f_product - f_exact):.3f}, "
          f"trained {1e3 * (f_trained - f_exact):.4f}")
    assert f_product - f_exact > 5e-4  # the correlation the product spectrum misses: ~1 meV
    assert f_trained >= f_exact - 1e-12  # Gibbs-Bogoliubov-Feynman
    assert f_trained - f_exact < 0.25 * (f_product - f_exact)

    batches = evaluate(model, result.params, seed=1, n_batches=8)["free_energy"]
    mean, err = batches.mean(), batches.std(ddof=1) / np.sqrt(len(batches))
    assert abs(mean - f_trained) < 4 * err and abs(mean - f_exact) < 4 * err + (f_trained - f_exact)

