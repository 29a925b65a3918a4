"""The periodic neural wavefunction: symmetries, the Slater-Jastrow limit, and VMC with protons."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from thermoflow.electrons import mcmc
from thermoflow.electrons.ewald import make_ewald_sum
from thermoflow.electrons.hamiltonian import SPARSE_JETS, make_local_energy
from thermoflow.electrons.jastrow import make_slater_jastrow
from thermoflow.electrons.network import make_periodic_network
from thermoflow.electrons.plane_waves import closed_shell_kvectors, cubic_cell_from_rs
from thermoflow.electrons.vmc import make_vmc_step

N_UP = 7


def _setup(seed=0):
    cell = cubic_cell_from_rs(1.5, 2 * N_UP)
    k = closed_shell_kvectors(cell, N_UP)
    net = make_periodic_network(cell, k, k, n_layers=2, one_body=16, two_body=4, seed=seed)
    params = net.init()
    # non-zero orbital couplings so that the features matter in the symmetry tests
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), 3)
    for key, name in zip(keys, ("envelope_up", "envelope_down", "backflow")):
        params[name] = 0.3 * jax.random.normal(key, params[name].shape)
    rng = np.random.default_rng(seed)
    electrons = jnp.asarray(rng.uniform(size=(2 * N_UP, 3)) @ cell)
    protons = jnp.asarray(rng.uniform(size=(2 * N_UP, 3)) @ cell)
    return cell, k, net, params, electrons, protons


def test_antisymmetry_periodicity_and_proton_permutation_invariance():
    """Exchanging two same-spin electrons flips the sign of psi at equal |psi|; moving any electron by a
    lattice vector, permuting the protons, or translating electrons and protons together leaves psi
    unchanged (1e-9 in ln|psi|); exchanging an up and a down electron changes |psi| (spins distinct)."""
    cell, _, net, params, x, protons = _setup()
    sign, log_abs = net.log_psi(params, x, protons)

    def same(s2, l2):
        return float(s2) == float(sign) and abs(float(l2) - float(log_abs)) < 1e-9

    swapped = x.at[jnp.array([2, 5])].set(x[jnp.array([5, 2])])
    s2, l2 = net.log_psi(params, swapped, protons)
    assert float(s2) == -float(sign) and abs(float(l2) - float(log_abs)) < 1e-9
    assert same(*net.log_psi(params, x.at[3].add(jnp.asarray(cell[1] - 2 * cell[0])), protons))
    assert same(*net.log_psi(params, x, protons[::-1]))
    t = jnp.array([0.37, -1.2, 0.8])
    assert same(*net.log_psi(params, x + t, protons + t))
    mixed = x.at[jnp.array([0, 9])].set(x[jnp.array([9, 0])])
    assert abs(float(net.log_psi(params, mixed, protons)[1]) - float(log_abs)) > 1e-6


def test_initial_network_is_the_slater_jastrow_wavefunction():
    """With the orbital couplings at their initial zeros the network equals the Slater-Jastrow
    wavefunction (plane waves x RPA Jastrow with the electron-proton term) at a proton configuration, to 1e-12."""
    cell, k, net, _, x, protons = _setup()
    params = net.init()
    reference = make_slater_jastrow(cell, k, k)
    s_net, l_net = net.log_psi(params, x, protons)
    s_ref, l_ref = reference.log_psi(reference.init(), x, protons)
    assert float(s_net) == float(s_ref) and abs(float(l_net) - float(l_ref)) < 1e-12


@pytest.mark.slow  # default-budget trim (2026-12-02); run with -m slow
def test_vmc_with_protons_lowers_the_energy():
    """14 electrons and 14 protons (a random configuration at r_s = 1.5): 30 Adam steps on all network
    parameters lower the mean local energy (the first five steps' mean minus the last five's > 5 x
    their combined standard error), with finite local energies throughout (folx through the network)."""
    cell, _, net, _, _, protons = _setup(seed=2)
    params = net.init()
    local_energy = make_local_energy(net.log_psi, make_ewald_sum(cell, 4 * N_UP), 2 * N_UP)
    optimizer = optax.adam(0.02)
    step = make_vmc_step(net.log_psi, local_energy, optimizer, n_mcmc_steps=5)
    opt_state = optimizer.init(params)
    key, k0 = jax.random.split(jax.random.PRNGKey(7))
    walkers = mcmc.init_walkers(net.log_psi, params, jax.random.uniform(k0, (32, 2 * N_UP, 3)) @ jnp.asarray(cell), protons, key)
    step_size, energies, variances = 0.3, [], []
    for _ in range(30):
        params, opt_state, walkers, stats = step(params, opt_state, walkers, protons, step_size)
        step_size = mcmc.tune_step_size(step_size, float(stats.acceptance))
        energies.append(float(stats.energy))
        variances.append(float(stats.variance))
    assert np.all(np.isfinite(energies))
    first, last = np.mean(energies[:5]), np.mean(energies[-5:])
    error = np.hypot(np.sqrt(np.mean(variances[:5]) / 32 / 5), np.sqrt(np.mean(variances[-5:]) / 32 / 5))
    print(f"network VMC with protons: E {first:.3f} -> {last:.3f} Ha (+- {error:.3f})")
    assert first - last > 5 * error


def test_several_determinants_and_the_atomic_envelope_keep_the_symmetries():
    """Two determinants with atomic envelopes (exponents perturbed per orbital): antisymmetry under a
    same-spin exchange, periodicity in every electron, invariance under proton permutations and a common
    translation (1e-9 in ln|psi|); with both determinants' parameters made equal psi doubles (ln 2 exactly)."""
    cell = cubic_cell_from_rs(1.5, 2 * N_UP)
    k = closed_shell_kvectors(cell, N_UP)
    net = make_periodic_network(cell, k, k, n_layers=1, one_body=8, two_body=4, n_determinants=2, envelope="atomic")
    params = net.init()
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    for key, name in zip(keys, ("envelope_up", "envelope_down", "exponent_up", "exponent_down")):
        params[name] = params[name] + 0.3 * jax.random.normal(key, params[name].shape)
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.uniform(size=(2 * N_UP, 3)) @ cell)
    protons = jnp.asarray(rng.uniform(size=(2 * N_UP, 3)) @ cell)
    sign, log_abs = net.log_psi(params, x, protons)

    def same(s2, l2):
        return float(s2) == float(sign) and abs(float(l2) - float(log_abs)) < 1e-9

    s2, l2 = net.log_psi(params, x.at[jnp.array([1, 4])].set(x[jnp.array([4, 1])]), protons)
    assert float(s2) == -float(sign) and abs(float(l2) - float(log_abs)) < 1e-9
    assert same(*net.log_psi(params, x.at[9].add(jnp.asarray(cell[2] + cell[0])), protons))
    assert same(*net.log_psi(params, x, protons[::-1]))
    t = jnp.array([-0.6, 2.1, 0.3])
    assert same(*net.log_psi(params, x + t, protons + t))

    single = make_periodic_network(cell, k, k, n_layers=1, one_body=8, two_body=4, envelope="atomic")
    one = {**params, **{name: params[name][:1] for name in ("envelope_up", "envelope_down", "exponent_up", "exponent_down")}}
    doubled = {**params, **{name: jnp.concatenate([one[name], one[name]]) for name in ("envelope_up", "envelope_down",
                                                                                     "exponent_up", "exponent_down")}}
    s1, l1 = single.log_psi(one, x, protons)
    s_d, l_d = net.log_psi(doubled, x, protons)
    assert float(s_d) == float(s1) and float(l_d) - float(l1) == pytest.approx(np.log(2.0), abs=1e-12)
    with pytest.raises(ValueError, match="needs protons"):
        net.log_psi(params, x, None)


def test_geminal_starts_at_the_slater_jastrow_state_and_keeps_the_symmetries():
    """The singlet-pairing geminal over the occupied + 12 extra plane waves equals the spin-determinant network at
    initialisation (zero twist, 1e-10 in ln|psi|: the extra orbitals start unpaired); with all its parameters
    perturbed it stays antisymmetric in each spin, periodic, invariant under common translations and
    proton permutations. At a twist the up electrons wind with exp(i k_s . L), the down ones (at -k) with
    exp(-i k_s . L), and a common translation leaves psi unchanged (its phase too: the pair function depends on r - r')."""
    from thermoflow.electrons.twists import twisted_kvectors, unoccupied_kvectors

    cell, k, net, _, x, protons = _setup()
    extra = unoccupied_kvectors(cell, k, np.zeros(3), 12)
    assert len(extra) == 12 and np.allclose(np.sort(np.linalg.norm(extra, axis=1)), np.linalg.norm(extra, axis=1))
    gem = make_periodic_network(cell, k, k, n_layers=2, one_body=16, two_body=4, geminal_kvectors=extra)
    plain = net.log_psi(net.init(), x, protons)
    start = gem.log_psi(gem.init(), x, protons)
    assert float(start[0]) == float(plain[0]) and abs(float(start[1]) - float(plain[1])) < 1e-10

    params = gem.init()
    keys = jax.random.split(jax.random.PRNGKey(5), 4)
    for key, name in zip(keys, ("envelope_up", "envelope_down", "backflow", "pairing")):
        params[name] = params[name] + 0.3 * jax.random.normal(key, params[name].shape)
    sign, log_abs = gem.log_psi(params, x, protons)
    for i, j in ((0, 4), (8, 12)):  # two up, two down electrons
        s2, l2 = gem.log_psi(params, x.at[jnp.array([i, j])].set(x[jnp.array([j, i])]), protons)
        assert float(s2) == -float(sign) and abs(float(l2) - float(log_abs)) < 1e-9
    t = jnp.array([0.4, -0.9, 1.7])
    for moved, moved_protons in ((x.at[2].add(jnp.asarray(cell[0] - cell[2])), protons), (x + t, protons + t)):
        s2, l2 = gem.log_psi(params, moved, moved_protons)
        assert float(s2) == float(sign) and abs(float(l2) - float(log_abs)) < 1e-9
    s2, l2 = gem.log_psi(params, x, protons[::-1])
    assert float(s2) == float(sign) and abs(float(l2) - float(log_abs)) < 1e-9

    twist = np.array([0.25, -0.1, 0.4])
    k_t = twisted_kvectors(cell, N_UP, twist, degeneracy="lowest_exchange")
    gem_t = make_periodic_network(cell, k_t, k_t, n_layers=1, one_body=8, two_body=4,
                                  geminal_kvectors=unoccupied_kvectors(cell, k_t, twist, 6))
    params_t = gem_t.init()
    params_t["pairing"] = params_t["pairing"] + 0.3 * jax.random.normal(keys[0], params_t["pairing"].shape)
    phase, log_t = gem_t.log_psi(params_t, x, protons)
    k_s = twist @ (2 * np.pi * np.linalg.inv(cell).T)
    lattice = cell[0] + 2 * cell[1]
    for electron, expected in ((1, np.exp(1j * k_s @ lattice)), (10, np.exp(-1j * k_s @ lattice))):
        p2, l2 = gem_t.log_psi(params_t, x.at[electron].add(jnp.asarray(lattice)), protons)
        assert abs(complex(p2) - complex(phase) * expected) < 1e-9 and abs(float(l2) - float(log_t)) < 1e-9
    t = jnp.array([0.3, 0.2, -1.1])
    p2, l2 = gem_t.log_psi(params_t, x + t, protons + t)
    assert abs(complex(p2) - complex(phase)) < 1e-9 and abs(float(l2) - float(log_t)) < 1e-9


@pytest.mark.slow  # default-budget trim (2026-12-03): an option's accuracy, ~40 s
def test_float32_streams_track_float64_and_keep_the_symmetries():
    """network_precision = 'float32' (streams in float32, orbitals and determinants in float64): ln|psi| and the
    local energy within float32 round-off of the float64 network at the same parameters, antisymmetric (the sign exactly,
    ln|psi| to float32 round-off), and
    the folx local energy (sparse jets) equal to a dense Hessian-trace evaluation of the same wavefunction."""
    cell, k, net, params, x, protons = _setup()
    single = make_periodic_network(cell, k, k, n_layers=2, one_body=16, two_body=4, seed=0, network_precision="float32")
    sign, log_abs = net.log_psi(params, x, protons)
    s32, l32 = single.log_psi(params, x, protons)
    assert float(s32) == float(sign) and abs(float(l32) - float(log_abs)) < 1e-4
    assert l32.dtype == jnp.float64
    swapped = x.at[jnp.array([2, 5])].set(x[jnp.array([5, 2])])
    s2, l2 = single.log_psi(params, swapped, protons)
    assert float(s2) == -float(s32) and float(l2) == pytest.approx(float(l32), abs=1e-5)  # sums in another order: float32 round-off
    # local energies on a small network (2 electrons, 2 protons): folx with sparse jets equals dense folx (tested
    # against exact references elsewhere); float32 streams within round-off of float64
    small_cell = cubic_cell_from_rs(1.5, 2)
    small_k = closed_shell_kvectors(small_cell, 1)
    rng = np.random.default_rng(4)
    xs, ps = jnp.asarray(rng.uniform(size=(2, 3)) @ small_cell), jnp.asarray(rng.uniform(size=(2, 3)) @ small_cell)
    kinetic = {}
    for precision, threshold in (("float64", 0), ("float64", SPARSE_JETS), ("float32", 0)):
        small = make_periodic_network(small_cell, small_k, small_k, n_layers=2, one_body=8, two_body=4, seed=1,
                                      network_precision=precision)
        small_params = small.init()
        small_params["backflow"] = 0.3 * jax.random.normal(jax.random.PRNGKey(3), small_params["backflow"].shape)
        energy = jax.jit(make_local_energy(small.log_psi, make_ewald_sum(small_cell, 4), 2, sparsity_threshold=threshold))
        kinetic[precision, threshold] = float(energy(small_params, xs, ps).kinetic)
    reference = kinetic["float64", 0]
    assert abs(kinetic["float64", SPARSE_JETS] - reference) < 1e-10 * max(1.0, abs(reference))
    assert abs(kinetic["float32", 0] - reference) < 1e-4 * max(1.0, abs(reference))
    with pytest.raises(ValueError, match="network_precision"):
        make_periodic_network(cell, k, k, network_precision="float16")
