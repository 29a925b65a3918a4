import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial.hermite import hermval
from scipy.special import factorial

from thermoflow.nct.hermite import hermite_cdf, hermite_functions, log_abs_hermite_function, sample_hermite

K = 6


def test_hermite_functions_match_textbook_formula():
    z = np.linspace(-5, 5, 101)
    psi = np.asarray(hermite_functions(jnp.asarray(z), K))
    for n in range(K):
        coef = np.zeros(n + 1)
        coef[n] = 1.0
        ref = hermval(z, coef) * np.exp(-z**2 / 2) / np.sqrt(2.0**n * factorial(n) * np.sqrt(np.pi))
        np.testing.assert_allclose(psi[:, n], ref, atol=1e-13)


def test_log_abs_matches_functions():
    z = jnp.linspace(-4.3, 4.1, 37)
    n = jnp.arange(37) % K
    ref = np.log(np.abs(np.asarray(hermite_functions(z, K))[np.arange(37), np.asarray(n)]))
    np.testing.assert_allclose(log_abs_hermite_function(z, n, K), ref, rtol=1e-12)


def test_cdf_closed_form_equals_quadrature():
    z = np.linspace(-9, 9, 40001)
    psi = np.asarray(hermite_functions(jnp.asarray(z), K))
    for n in range(K):
        dens = psi[:, n] ** 2
        num = np.concatenate([[0.0], np.cumsum(0.5 * (dens[1:] + dens[:-1]) * np.diff(z))])
        cdf = np.asarray(hermite_cdf(jnp.asarray(z), jnp.full(z.shape, n), K))
        np.testing.assert_allclose(cdf, num, atol=5e-9)
        assert abs(cdf[-1] - 1.0) < 1e-14


def test_exact_sampler_moments():
    """<z^2> = n + 1/2 (i.e. <q^2> = (n + 1/2) hbar/omega) and <z^4> = 3(2n^2 + 2n + 1)/4, within 4 s.e."""
    n_per = 100_000
    n = jnp.repeat(jnp.arange(K), n_per)
    z = np.asarray(jax.jit(sample_hermite, static_argnums=2)(jax.random.PRNGKey(42), n, K)).reshape(K, n_per)
    levels = np.arange(K)
    for moment, exact in ((2, levels + 0.5), (4, 0.75 * (2 * levels**2 + 2 * levels + 1))):
        x = z**moment
        se = x.std(axis=1) / np.sqrt(n_per)
        assert np.all(np.abs(x.mean(axis=1) - exact) < 4 * se), (moment, x.mean(axis=1), exact)
    # odd moments vanish
    assert np.all(np.abs(z.mean(axis=1)) < 4 * z.std(axis=1) / np.sqrt(n_per))
