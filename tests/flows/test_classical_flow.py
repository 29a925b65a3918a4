"""The periodic particle flow and the classical variational free energy against exact references.

References used here: the ideal gas, F = -k_B T ln(V^N / (N! lambda^{3N})) with lambda from CODATA
constants (scipy.constants, independent of thermoflow.units); two particles with the pair potential
U = -A sum_a cos(2 pi f_a) of their fractional separation f, whose configurational integral is
V^2 I0(A / k_B T)^3 (I0 the modified Bessel function: the integral of exp(kappa cos 2 pi f) over
a period), also reached by annealed importance sampling from the uniform density and used as the
flow's base distribution; the score-function gradient identity grad F = E_p[(f - F) grad ln p], checked by
quadrature over the relative coordinate (exact up to the quadrature error, 6e-5 relative) and statistically with
the training loss on Metropolis samples.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.constants as const
import scipy.special as special
from jax.flatten_util import ravel_pytree

from thermoflow.flows import classical
from thermoflow.flows.ais import annealed_importance_sampling
from thermoflow.flows.periodic import make_periodic_flow
from thermoflow.flows.sampling import init_walkers, make_metropolis_block
from thermoflow.lattice import fractional_phases, pair_inputs, pair_inputs_from_phases, pair_phases, pair_phases_within, smooth_periodic_distance
from thermoflow.optimize import optimise
from thermoflow.units import KB_EV_PER_K

TRICLINIC = np.array([[3.0, 0.0, 0.0], [0.4, 3.5, 0.0], [-0.3, 0.5, 4.0]])
TEMPERATURE_K = 1000.0
KT = KB_EV_PER_K * TEMPERATURE_K


def _random_params(flow, key, scale):
    """Parameters with non-zero output weights (the flow is the identity at init)."""
    params = flow.init(key)
    k1, k2 = jax.random.split(jax.random.fold_in(key, 1))
    return {**params, "weight_two": scale * jax.random.normal(k1, params["weight_two"].shape),
            "weight_one": scale * jax.random.normal(k2, params["weight_one"].shape)}


def test_smooth_periodic_distance_any_lattice():
    """|d| for small d; invariant under lattice vectors of a triclinic cell (the plain sin(pi f) form is not)."""
    cell = jnp.asarray(TRICLINIC)
    d = jnp.array([1e-3, -2e-3, 1.5e-3])
    assert abs(float(smooth_periodic_distance(d, cell)) - float(jnp.linalg.norm(d))) < 1e-8
    r = jnp.array([0.7, -1.1, 2.2])
    for shift in (cell[0], cell[1] - 2 * cell[2], cell[0] + cell[1] + cell[2]):
        assert abs(float(smooth_periodic_distance(r + shift, cell) - smooth_periodic_distance(r, cell))) < 1e-12


def test_pair_phases_equal_the_phases_of_the_displacements():
    """The angle-difference identities of pair_phases give the pair inputs of every displacement r_j - r_i to
    round-off (triclinic cell, particles up to two cells apart)."""
    cell = jnp.asarray(TRICLINIC)
    a = jax.random.uniform(jax.random.PRNGKey(0), (5, 3), minval=-2.0, maxval=2.0) @ cell
    b = jax.random.uniform(jax.random.PRNGKey(1), (4, 3), minval=-2.0, maxval=2.0) @ cell
    sin, cos = pair_phases(fractional_phases(a, cell), fractional_phases(b, cell))
    assert sin.shape == cos.shape == (5, 4, 3)
    direct = pair_inputs(b[None, :, :] - a[:, None, :], cell)
    np.testing.assert_allclose(pair_inputs_from_phases(sin, cos, cell), direct, rtol=0, atol=1e-13)
    # within one set: the same off the diagonal, the quarter-lattice-vector placeholder on it
    sin, cos = pair_phases_within(fractional_phases(a, cell))
    within = pair_inputs(a[None, :, :] - a[:, None, :], cell)
    off = ~np.eye(5, dtype=bool)
    np.testing.assert_allclose(np.asarray(pair_inputs_from_phases(sin, cos, cell))[off], np.asarray(within)[off], rtol=0, atol=1e-13)
    np.testing.assert_array_equal(np.diagonal(sin, axis1=0, axis2=1), 1.0)
    np.testing.assert_array_equal(np.diagonal(cos, axis1=0, axis2=1), 0.0)


def test_flow_symmetries_and_log_density():
    """Permutation equivariance, translation invariance and periodicity of the backflow in a triclinic
    cell; ln p against the log-determinant of a finite-difference Jacobian and of the dense jacfwd one."""
    n = 4
    flow = make_periodic_flow(TRICLINIC, n, n_layers=2, one_body=8, two_body=8)
    params = _random_params(flow, jax.random.PRNGKey(0), 0.05)
    x = jax.random.uniform(jax.random.PRNGKey(1), (n, 3)) @ jnp.asarray(TRICLINIC)
    g = flow.backflow(params, x)
    sign, log_p = flow.log_density(params, x)
    assert float(jnp.max(jnp.abs(g))) > 1e-3  # not the identity
    perm = jnp.array([2, 0, 3, 1])
    assert float(jnp.max(jnp.abs(flow.backflow(params, x[perm]) - g[perm]))) < 1e-12
    assert abs(float(flow.log_density(params, x[perm])[1] - log_p)) < 1e-10
    assert float(jnp.max(jnp.abs(flow.backflow(params, x + jnp.array([0.3, -1.2, 0.7])) - g))) < 1e-12
    for a in range(3):
        moved = x.at[1].add(jnp.asarray(TRICLINIC[a]) - jnp.asarray(TRICLINIC[(a + 1) % 3]))
        assert float(jnp.max(jnp.abs(flow.backflow(params, moved) - g))) < 1e-12
    forward = lambda v: np.asarray(flow.forward(params, jnp.asarray(v).reshape(n, 3))).reshape(-1)  # noqa: E731
    v, h = np.asarray(x).reshape(-1), 1e-5
    jac = np.array([(forward(v + h * e) - forward(v - h * e)) / (2 * h) for e in np.eye(3 * n)]).T
    fd_sign, fd_logdet = np.linalg.slogdet(jac)
    assert fd_sign == float(sign) == 1.0
    assert abs(fd_logdet - n * math.log(abs(np.linalg.det(TRICLINIC))) - float(log_p)) < 1e-6
    # the structured (row-wise reverse-mode) Jacobian against slogdet of the dense jacfwd, and its spectral norm
    dense = jax.jacfwd(lambda flat: flow.backflow(params, flat.reshape(n, 3)).reshape(-1))(x.reshape(-1))
    dense_sign, dense_logdet = jnp.linalg.slogdet(jnp.eye(3 * n) + dense)
    assert float(dense_sign) == 1.0
    assert abs(float(dense_logdet) - n * math.log(abs(np.linalg.det(TRICLINIC))) - float(log_p)) < 1e-12
    _, log_p_again, norm = flow.log_density_and_norm(params, x)
    assert float(log_p_again) == float(log_p)
    assert abs(float(norm) - float(np.linalg.norm(np.asarray(dense), 2))) < 1e-12


def test_density_is_normalised():
    """E_{X uniform}[V^N p(X)] = 1 for a non-trivial flow (degree-1 map with a positive Jacobian)."""
    n = 2
    flow = make_periodic_flow(TRICLINIC, n, n_layers=1, one_body=8, two_body=8)
    params = _random_params(flow, jax.random.PRNGKey(3), 0.1)
    x = jax.random.uniform(jax.random.PRNGKey(4), (20000, n, 3)) @ jnp.asarray(TRICLINIC)
    sign, log_p = jax.jit(jax.vmap(flow.log_density, in_axes=(None, 0)))(params, x)
    assert bool(jnp.all(sign > 0))
    ratio = np.exp(np.asarray(log_p) + n * math.log(flow.volume))
    assert np.std(ratio) > 0.05  # the density is far from uniform
    assert abs(np.mean(ratio) - 1.0) < 4 * np.std(ratio) / math.sqrt(len(ratio))


def test_ideal_gas_is_exact_at_the_identity():
    """U = 0: the identity flow (uniform density) gives the exact ideal-gas F with zero variance; E = 3/2 N kT, P = N kT / V."""
    n, mass = 3, 1.008
    cell = np.eye(3) * 4.0
    model = classical.make_classical_free_energy(lambda x, c: 0.0 * jnp.sum(x), make_periodic_flow(cell, n),
                                                 temperature_K=TEMPERATURE_K, mass_amu=mass)
    h, kB = const.h, const.k
    wavelength = h / math.sqrt(2 * math.pi * mass * const.atomic_mass * kB * TEMPERATURE_K) * 1e10  # Angstrom
    assert abs(classical.thermal_wavelength(mass, TEMPERATURE_K) / wavelength - 1.0) < 1e-6
    exact = -KT * (n * math.log(64.0) - math.lgamma(n + 1) - 3 * n * math.log(wavelength))
    params = model.flow.init(jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (16, n, 3)) @ jnp.asarray(cell)
    _, metrics = model.loss(params, x)
    assert abs(float(metrics["free_energy"]) - exact) < 1e-6 * abs(exact)
    assert float(metrics["free_energy_stderr"]) < 1e-12
    assert abs(float(metrics["energy"]) - 1.5 * n * KT) < 1e-12
    potential, pressure = model.potential_and_pressure(x)
    assert float(jnp.max(jnp.abs(potential))) == 0.0 and float(jnp.max(jnp.abs(pressure - n * KT / 64.0))) < 1e-12
    with pytest.raises(ValueError, match="positive"):
        classical.thermal_wavelength(1.0, 0.0)


def _pair_energy(kappa):
    """U = -kappa kT sum_a cos(2 pi f_a) of the fractional separation of two particles."""
    def energy(x, cell):
        frac = (x[0] - x[1]) @ jnp.linalg.inv(cell)
        return -kappa * KT * jnp.sum(jnp.cos(2 * jnp.pi * frac))

    return energy


def _pair_model(kappa, **base):
    cell = np.eye(3) * 3.0
    flow = make_periodic_flow(cell, 2, n_layers=1, one_body=8, two_body=8)
    model = classical.make_classical_free_energy(_pair_energy(kappa), flow, temperature_K=TEMPERATURE_K, mass_amu=1.008, **base)
    exact = -KT * _pair_log_partition(kappa) + model.constant_eV
    return model, exact


def _pair_log_partition(kappa):
    """ln of the configurational integral of exp(-U / kT) in the 3 A cube: V^2 I0(kappa)^3."""
    return 2 * math.log(27.0) + 3 * math.log(special.i0(kappa))


def test_annealed_importance_sampling_of_the_pair():
    """ln Z of the bound pair from the uniform density: within 4 standard errors of 2 ln V + 3 ln I0(kappa)."""
    out = annealed_importance_sampling(_pair_energy(2.0), np.eye(3) * 3.0, 2, kT_eV=KT, n_walkers=512, n_temperatures=50,
                                       mcmc_steps=5, key=jax.random.PRNGKey(0))
    exact = _pair_log_partition(2.0)
    assert 0 < out["ln_Z_stderr"] < 0.03  # measured 0.021, off by -0.004
    assert abs(out["ln_Z"] - exact) < 4 * out["ln_Z_stderr"]
    assert out["effective_sample_size"] > 300
    with pytest.raises(ValueError, match=">= 1"):
        annealed_importance_sampling(_pair_energy(2.0), np.eye(3) * 3.0, 2, kT_eV=KT, n_walkers=8, n_temperatures=0,
                                     mcmc_steps=5, key=jax.random.PRNGKey(0))


def test_base_potential_makes_the_identity_flow_exact():
    """With the target itself as the base (ln Z_b exact), the identity flow is the Boltzmann density: F exact with
    zero variance; a base potential without its ln Z is refused."""
    model, exact = _pair_model(2.0, base_energy_fn=_pair_energy(2.0), base_log_partition=_pair_log_partition(2.0))
    params = model.flow.init(jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (64, 2, 3)) * 3.0
    _, metrics = model.loss(params, x)
    assert abs(float(metrics["free_energy"]) - exact) < 1e-10 * abs(exact)
    assert float(metrics["free_energy_stderr"]) < 1e-12
    with pytest.raises(ValueError, match="ln Z"):
        classical.make_classical_free_energy(_pair_energy(2.0), model.flow, temperature_K=TEMPERATURE_K, mass_amu=1.0,
                                             base_energy_fn=_pair_energy(2.0))


def test_pair_free_energy_trained_to_the_exact_value():
    """Two particles bound by U = -A sum_a cos(2 pi f_a), A = 0.5 kT: the trained flow recovers > 95 % of
    the exact free-energy gain over the uniform density and stays above the exact F (variational)."""
    model, exact = _pair_model(0.5)
    uniform_gap = 3 * math.log(special.i0(0.5)) * KT  # F(uniform) - F(exact)
    step, transform = classical.make_train_step(model, learning_rate=2e-2, n_mcmc_steps=5)
    state = classical.initial_state(model, transform, jax.random.PRNGKey(0), 256, 0.5)
    result = optimise(step, state, steps=120)
    assert float(result.history["negative_jacobians"].max()) == 0.0
    ev = classical.evaluate(model, result.state.params, result.state.positions, jax.random.PRNGKey(5), n_blocks=10,
                            n_mcmc_steps=10, step_size=float(result.state.step_size))
    gap = ev["free_energy"] - exact
    assert gap > -4 * ev["free_energy_stderr"]
    assert gap < 0.05 * uniform_gap
    # energy of the exact Boltzmann state: 3 kT + <U>, <U> = -3 A I1(kappa) / I0(kappa)
    exact_energy = 3 * KT - 3 * 0.5 * KT * special.i1(0.5) / special.i0(0.5)
    assert abs(ev["energy"] - exact_energy) < 4 * ev["energy_stderr"] + 0.02 * KT


def test_score_function_gradient():
    """grad F = E_p[(f - F) grad ln p]: by quadrature over the relative coordinate (F(theta) itself by
    quadrature, differentiated exactly), and the training loss's gradient on Metropolis samples
    within 4 standard errors of it, along a random direction in parameter space."""
    model, _ = _pair_model(1.0)
    flow = model.flow
    params = _random_params(flow, jax.random.PRNGKey(7), 0.1)
    volume = flow.volume
    m = 20  # the periodic distance's cusp at d = 0 makes the quadrature converge as ~m^-4: 2e-6 here
    grid = (np.stack(np.meshgrid(*[np.arange(m) / m] * 3, indexing="ij"), -1).reshape(-1, 3)) @ flow.cell
    pairs = jnp.stack([jnp.asarray(grid), jnp.zeros_like(jnp.asarray(grid))], axis=1)  # x1 = d, x2 = 0

    def quadrature(p):
        """F_conf(p) = int dd V p(d, 0) (kT ln p + U) and the weights V^2 p / m^3 (summing to 1)."""
        _, log_p = jax.vmap(flow.log_density, in_axes=(None, 0))(p, pairs)
        f, _, _ = jax.vmap(model.local_free_energy, in_axes=(None, 0))(p, pairs)
        weights = volume**2 * jnp.exp(log_p) / m**3
        return jnp.sum(weights * f), weights, f, log_p

    flat, unravel = ravel_pytree(params)
    direction = unravel(jax.random.normal(jax.random.PRNGKey(8), flat.shape))
    tangent = lambda fn: jax.jvp(fn, (params,), (direction,))[1]  # noqa: E731
    exact = float(tangent(lambda p: quadrature(p)[0]))
    total, weights, f, _ = quadrature(params)
    assert abs(float(jnp.sum(weights)) - 1.0) < 1e-5
    d_log_p = tangent(lambda p: quadrature(p)[3])
    identity = float(jnp.sum(weights * (f - total) * d_log_p))
    assert abs(identity - exact) < 2e-4 * abs(exact)  # measured 6e-5 (quadrature error)
    # the loss on independent Metropolis samples
    n_walkers = 4096
    log_density = lambda p, x: flow.log_density(p, x)[1]  # noqa: E731
    block = make_metropolis_block(log_density, flow.cell, 60)
    walkers = init_walkers(log_density, params, jax.random.uniform(jax.random.PRNGKey(9), (n_walkers, 2, 3)) @ jnp.asarray(flow.cell))
    walkers, acceptance = block(walkers, params, jax.random.PRNGKey(10), 0.8)
    assert 0.2 < float(acceptance) < 0.9
    estimate = float(tangent(lambda p: model.loss(p, walkers.positions)[0]))
    f_s, _, _ = jax.vmap(model.local_free_energy, in_axes=(None, 0))(params, walkers.positions)
    contributions = (f_s - jnp.mean(f_s)) * jax.jvp(lambda p: jax.vmap(lambda x: log_density(p, x))(walkers.positions),
                                                    (params,), (direction,))[1]
    stderr = float(jnp.std(contributions)) / math.sqrt(n_walkers)
    assert abs(exact) > 4 * stderr  # a non-trivial gradient
    assert abs(estimate - exact) < 4 * stderr


def test_lipschitz_penalty():
    """kT w mean((||J|| - c)_+^2): zero below the bound, quadratic above; the loss adds it only with a bound, and the
    reported F never includes it; bounds outside (0, 1) are refused."""
    norms = jnp.array([0.5, 0.95, 1.3])
    assert float(classical.lipschitz_penalty(norms, 2.0, 0.9, 10.0)) == pytest.approx(2.0 * 10.0 * (0.05**2 + 0.4**2) / 3, rel=1e-12)
    model, _ = _pair_model(1.0)
    flow = model.flow
    params = _random_params(flow, jax.random.PRNGKey(3), 3.0)  # a strongly deformed flow: ||dg/dX|| of order 1
    x = jax.random.uniform(jax.random.PRNGKey(4), (16, 2, 3)) @ jnp.asarray(flow.cell)
    plain, metrics = model.loss(params, x)
    bounded = classical.make_classical_free_energy(_pair_energy(1.0), flow, temperature_K=TEMPERATURE_K, mass_amu=1.008,
                                                   lipschitz_bound=0.01, lipschitz_weight=5.0)
    penalised, metrics_b = bounded.loss(params, x)
    norms = jax.vmap(lambda v: flow.log_density_and_norm(params, v)[2])(x)
    assert float(metrics["jacobian_norm_max"]) == pytest.approx(float(jnp.max(norms)), rel=1e-12)
    assert float(penalised - plain) == pytest.approx(float(classical.lipschitz_penalty(norms, KT, 0.01, 5.0)), rel=1e-9)
    assert float(penalised - plain) > 0
    assert float(metrics_b["free_energy"]) == float(metrics["free_energy"])
    with pytest.raises(ValueError, match="lipschitz_bound"):
        classical.make_classical_free_energy(_pair_energy(1.0), flow, temperature_K=TEMPERATURE_K, mass_amu=1.0, lipschitz_bound=1.5)


def test_annealing_concentrates_samples_at_the_density_maximum():
    """p(X) ~ exp(2 sum_a cos(2 pi f_a)) of two particles' fractional separation f: uniform starting walkers annealed on
    p^beta, beta up to 400, end with |f_a| < 0.05 (the maximum at f = 0; the width at beta = 400 is about 0.008)."""
    from thermoflow.flows.sampling import make_annealing

    cell = np.eye(3) * 3.0
    inverse = jnp.asarray(np.linalg.inv(cell))

    def log_density(params, x):
        return params * jnp.sum(jnp.cos(2 * jnp.pi * ((x[0] - x[1]) @ inverse)))

    anneal = make_annealing(log_density, cell, 20)
    start = jax.random.uniform(jax.random.PRNGKey(0), (64, 2, 3)) @ jnp.asarray(cell)
    positions, acceptances = anneal(2.0, start, jax.random.PRNGKey(1), np.geomspace(1.0, 400.0, 12), 0.5)
    frac = np.asarray((positions[:, 0] - positions[:, 1]) @ inverse)
    frac = frac - np.round(frac)
    assert np.max(np.abs(frac)) < 0.05
    assert acceptances.shape == (12,) and np.all((acceptances > 0.05) & (acceptances < 1.0))
