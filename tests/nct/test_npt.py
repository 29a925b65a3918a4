"""NPT: the Gibbs free energy over an isotropic strain, and the pressure against -dF/dV."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import crystals
from helpers import perturbed_params
from thermoflow.nct.flow import make_realnvp
from thermoflow.nct.quadratic import make_quadratic_flow
from thermoflow.nct.loss import make_free_energy_model
from thermoflow.nct.train import evaluate, make_optimizer, train
from thermoflow.phonons import compute_harmonic_modes
from thermoflow.phonons.scha import optimise_gaussian
from thermoflow.potentials import make_lennard_jones_energy_fn, virial
from thermoflow.structures import build_lattice, to_arrays
from thermoflow.units import GPA_PER_EV_PER_A3, KB_EV_PER_K


def neon_cell(a_A, mass=None):
    """fcc Lennard-Jones neon, conventional 4-atom cell: (energy_fn, harmonic modes)."""
    pos, cell, masses = to_arrays(build_lattice("Ne", "fcc", a_A=a_A))
    if mass is not None:
        masses = np.full_like(masses, mass)
    lj = make_lennard_jones_energy_fn(0.0031, 2.74, 8.2, 1.1 * cell)
    return lj, compute_harmonic_modes(lj, pos, cell, masses)


def test_strain_gradient_and_pressure_are_the_exact_derivative_of_the_free_energy_estimator():
    """At a nonzero strain, the per-step pressure metric and jax.grad of the loss with respect to
    the strain equal central differences of the (same-sample) F and G estimators; at zero strain
    the NPT pressure equals the NVT virial pressure on the same samples."""
    energy_fn, modes = crystals.anharmonic_neon()
    kT = KB_EV_PER_K * 20.0
    flow = make_realnvp(modes.n_modes, 2, 8)
    p_star = 0.1 / GPA_PER_EV_PER_A3
    kwargs = dict(kT_eV=kT, n_levels=3, batch_size=32)
    model = make_free_energy_model(energy_fn, modes, flow, pressure_eV_per_A3=p_star, **kwargs)
    base = model.init(jax.random.PRNGKey(0))
    params = {**base, "flow": perturbed_params(flow, scale=0.05), "strain": jnp.asarray(0.004)}
    key = jax.random.PRNGKey(7)
    loss = jax.jit(model.loss)
    _, metrics = loss(params, key)
    h = 1e-6
    f = {d: float(loss({**params, "strain": params["strain"] + d}, key)[1]["free_energy"]) for d in (-h, h)}
    g = {d: float(loss({**params, "strain": params["strain"] + d}, key)[1]["gibbs_free_energy"]) for d in (-h, h)}
    v0 = abs(np.linalg.det(modes.cell))
    numerical_p = -(f[h] - f[-h]) / (2 * h) / (3 * v0 * (1 + 0.004) ** 2)
    print("pressure", float(metrics["pressure"]), "numerical", numerical_p)
    assert np.isclose(float(metrics["pressure"]), numerical_p, rtol=1e-6)
    grads = jax.jit(jax.grad(lambda p: model.loss(p, key)[0]))(params)
    assert np.isclose(float(grads["strain"]), (g[h] - g[-h]) / (2 * h), rtol=1e-6)
    assert np.isclose(float(metrics["volume"]), v0 * 1.004**3)
    # zero strain: the NVT virial estimator on the same samples
    nvt = make_free_energy_model(energy_fn, modes, flow, stress=True, **kwargs)
    at_zero = {**params, "strain": jnp.zeros(())}
    p_npt = float(loss(at_zero, key)[1]["pressure"])
    p_nvt = float(jax.jit(nvt.loss)({k: at_zero[k] for k in ("flow", "logits")}, key)[1]["pressure"])
    assert np.isclose(p_npt, p_nvt, rtol=1e-10)


@pytest.mark.parametrize("cell_strain", ["isotropic", "orthorhombic"])
def test_central_difference_strain_derivative_equals_the_forward_mode_one(cell_strain):
    """nct.strain_derivative = "central_difference" (for compressed potentials): the per-step
    pressures and the strain gradient of the loss equal forward mode's on the same samples to 1e-7
    relative (two energies per direction instead of a forward-mode derivative)."""
    energy_fn, modes = crystals.anharmonic_neon()
    kwargs = dict(kT_eV=KB_EV_PER_K * 20.0, n_levels=3, batch_size=32, freeze_flow=True, strain_samples=8,
                  pressure_eV_per_A3=0.1 / GPA_PER_EV_PER_A3, cell_strain=cell_strain)
    flow = make_realnvp(modes.n_modes, 1, 4)
    forward, central = (make_free_energy_model(energy_fn, modes, flow, strain_derivative=d, **kwargs)
                        for d in ("forward", "central_difference"))
    strain = jnp.asarray([0.004, -0.002, 0.001]) if cell_strain == "orthorhombic" else jnp.asarray(0.003)
    params = {**forward.init(jax.random.PRNGKey(0)), "strain": strain}
    key = jax.random.PRNGKey(7)
    results = [jax.jit(jax.value_and_grad(lambda p, m=m: m.loss(p, key), has_aux=True))(params) for m in (forward, central)]
    (_, m_forward), g_forward = results[0]
    (_, m_central), g_central = results[1]
    names = ["pressure"] + ([f"pressure_{a}" for a in "xyz"] if cell_strain == "orthorhombic" else [])
    for name in names:
        assert np.isclose(float(m_central[name]), float(m_forward[name]), rtol=1e-7), name
    np.testing.assert_allclose(np.asarray(g_central["strain"]), np.asarray(g_forward["strain"]), rtol=1e-7)
    assert np.all(np.abs(np.asarray(g_forward["strain"])) > 0)
    with pytest.raises(ValueError, match="unknown strain derivative"):
        make_free_energy_model(energy_fn, modes, flow, strain_derivative="backward", **kwargs)


def test_auto_strain_derivative_takes_central_differences_for_compressed_potentials_only():
    from thermoflow.nct.loss import resolve_strain_derivative

    def plain(positions, cell):
        return 0.0

    def compressed(positions, cell):
        return 0.0

    compressed.compression = {"se_e2_a": {}}
    assert resolve_strain_derivative("auto", plain) == "forward"
    assert resolve_strain_derivative("auto", compressed) == "central_difference"
    assert resolve_strain_derivative("forward", compressed) == "forward"
    assert resolve_strain_derivative("central_difference", plain) == "central_difference"


@pytest.mark.slow  # default-budget trim (2026-12-02): the exact estimator-derivative test stays
def test_pressure_equals_minus_the_volume_derivative_of_the_self_consistent_free_energy():
    """Compressed fcc neon at 20 K: the virial pressure of the self-consistent Gaussian state (NCT
    estimator, harmonic states of its basis with thermal occupations) against -dF_G/dV from
    independent self-consistent Gaussians at neighbouring volumes (envelope theorem: the
    Gaussian family is closed under the isotropic strain)."""
    kT = KB_EV_PER_K * 20.0
    a0, da = 4.25, 0.01
    settings = dict(n_samples=2048, n_iterations=30, n_eval_samples=65536, seed=0)
    fg = {}
    for a in (a0 - da, a0 + da):
        lj, modes = neon_cell(a)
        g = optimise_gaussian(lj, modes, kT, **settings)
        fg[a] = (g.free_energy_eV, g.free_energy_stderr_eV, abs(np.linalg.det(modes.cell)))
    dv = fg[a0 + da][2] - fg[a0 - da][2]
    numerical = -(fg[a0 + da][0] - fg[a0 - da][0]) / dv
    numerical_err = np.hypot(fg[a0 + da][1], fg[a0 - da][1]) / dv
    lj, modes = neon_cell(a0)
    g = optimise_gaussian(lj, modes, kT, **settings)
    flow = make_realnvp(modes.n_modes, 1, 4)
    model = make_free_energy_model(lj, g.modes, flow, kT_eV=kT, n_levels=8, batch_size=4096, freeze_flow=True, stress=True)
    batches = evaluate(model, model.init(jax.random.PRNGKey(0)), seed=0, n_batches=8)["pressure"]
    p, p_err = batches.mean(), batches.std(ddof=1) / np.sqrt(len(batches))
    print(f"virial P = {p * GPA_PER_EV_PER_A3:.5f} +- {p_err * GPA_PER_EV_PER_A3:.5f} GPa, "
          f"-dF_G/dV = {numerical * GPA_PER_EV_PER_A3:.5f} +- {numerical_err * GPA_PER_EV_PER_A3:.5f} GPa")
    assert p * GPA_PER_EV_PER_A3 > 0.1  # compressed: a real test of the sign and size
    # finite-difference curvature error at da / a = 0.2 %: well below 0.5 %
    assert abs(p - numerical) < 4 * np.hypot(p_err, numerical_err) + 0.005 * abs(p)


def test_npt_reaches_the_static_equation_of_state_in_the_classical_static_limit():
    """A very heavy, cold crystal (m = 1e8 amu, 0.005 K: zero-point and thermal pressure about
    1e-3 of the total): NPT training from a = 4.25 A (static P = -0.015 GPa) must find the volume
    where the static lattice pressure -dE0/dV (an independent root search on the perfect
    lattice) equals P* = 0.05 GPa."""
    a_ref = 4.25
    p_star = 0.05 / GPA_PER_EV_PER_A3
    lj, modes = neon_cell(a_ref, mass=1.0e8)
    pos0, cell0 = modes.reference_positions, modes.cell

    def static_pressure(scale):
        w = virial(lj, jnp.asarray(pos0 * scale), jnp.asarray(cell0 * scale))
        return float(jnp.trace(w)) / (3 * abs(np.linalg.det(cell0)) * scale**3)

    scale_static = scipy.optimize.brentq(lambda x: static_pressure(x) - p_star, 0.95, 1.02, xtol=1e-12)
    flow = make_realnvp(modes.n_modes, 1, 4)
    model = make_free_energy_model(lj, modes, flow, kT_eV=KB_EV_PER_K * 0.005, n_levels=2, batch_size=16,
                                   freeze_flow=True, pressure_eV_per_A3=p_star)
    steps = 300
    optimizer = make_optimizer("adam", 1e-3, schedule="cosine", steps=steps, final_fraction=0.01, grad_clip_norm=None)
    result = train(model, optimizer, steps=steps, seed=0)
    strain = float(result.params["strain"])
    print(f"static EOS scale {scale_static:.6f}, NPT {1 + strain:.6f}, last pressures (GPa)",
          result.history["pressure"][-3:] * GPA_PER_EV_PER_A3)
    assert scale_static < 0.995  # a real compression (about 1.4 % linear)
    assert abs(1 + strain - scale_static) < 2e-4
    g = result.history["gibbs_free_energy"]
    assert g[-1] < g[0]


@pytest.mark.parametrize(("freeze_flow", "flow_kind"), [(True, "realnvp"), (False, "realnvp"), (False, "quadratic")])
def test_orthorhombic_strain_gradient_is_the_exact_derivative_and_agrees_with_the_stress_tensor(freeze_flow, flow_kind):
    """Orthorhombic NPT, at the Gaussian level (harmonic states of the basis, exact kinetic energy
    per direction) and with a trained flow (directional Laplacians by folx for RealNVP, by the
    analytic jet in three Cartesian metrics for the quadratic flow): at an unequal strain the
    per-direction pressures are -(1 + e_a)/V times the exact e_a-derivative of the (same-sample) F
    estimator and jax.grad of the loss is that of the G estimator; at the Gaussian level the
    forward-mode pressures equal -sigma_aa of the virial stress tensor (kinetic tensor of the
    harmonic states, an independent code path) to round-off."""
    energy_fn, modes = crystals.anharmonic_neon()
    kT = KB_EV_PER_K * 20.0
    flow = make_realnvp(modes.n_modes, 1, 4) if flow_kind == "realnvp" else make_quadratic_flow(modes.n_modes, 1)
    p_star = 0.1 / GPA_PER_EV_PER_A3
    kwargs = dict(kT_eV=kT, n_levels=3, batch_size=32, freeze_flow=freeze_flow, pressure_eV_per_A3=p_star, cell_strain="orthorhombic")
    model = make_free_energy_model(energy_fn, modes, flow, **kwargs)
    strain = jnp.asarray([0.004, -0.002, 0.001])
    params = {**model.init(jax.random.PRNGKey(0)), "strain": strain}
    if not freeze_flow:
        # the quadratic flow's D^3 shift coefficients add up: smaller entries keep the displacements (and pairs near the cut-off) tame
        params["flow"] = perturbed_params(flow, scale=0.05 if flow_kind == "realnvp" else 0.002)
    assert model.init(jax.random.PRNGKey(0))["strain"].shape == (3,)
    key = jax.random.PRNGKey(7)
    loss = jax.jit(model.loss)
    _, metrics = loss(params, key)
    h = 1e-6
    volume = abs(np.linalg.det(modes.cell)) * float(jnp.prod(1 + strain))
    assert np.isclose(float(metrics["volume"]), volume)
    grads = jax.jit(jax.grad(lambda p: model.loss(p, key)[0]))(params)
    for a, axis in enumerate("xyz"):
        shifted = {d: loss({**params, "strain": strain.at[a].add(d)}, key)[1] for d in (-h, h)}
        d_f = (float(shifted[h]["free_energy"]) - float(shifted[-h]["free_energy"])) / (2 * h)
        d_g = (float(shifted[h]["gibbs_free_energy"]) - float(shifted[-h]["gibbs_free_energy"])) / (2 * h)
        numerical_p = -(1 + float(strain[a])) * d_f / volume
        print(axis, float(metrics[f"pressure_{axis}"]) * GPA_PER_EV_PER_A3, numerical_p * GPA_PER_EV_PER_A3)
        assert np.isclose(float(metrics[f"pressure_{axis}"]), numerical_p, rtol=1e-6)
        assert np.isclose(float(grads["strain"][a]), d_g, rtol=1e-6)
    pressures = np.array([float(metrics[f"pressure_{axis}"]) for axis in "xyz"])
    assert np.isclose(float(metrics["pressure"]), pressures.mean())
    # the strain must matter per direction for the test to mean anything
    assert np.ptp(pressures) * GPA_PER_EV_PER_A3 > 0.01
    if not freeze_flow:
        return
    with_stress = make_free_energy_model(energy_fn, modes, flow, stress=True, **kwargs)
    m = jax.jit(with_stress.loss)(params, key)[1]
    np.testing.assert_allclose([float(m[f"pressure_{axis}"]) for axis in "xyz"], pressures, rtol=1e-9)
    np.testing.assert_allclose(-np.diagonal(np.asarray(m["stress"])), pressures, rtol=1e-9)


def test_orthorhombic_npt_restores_the_cubic_cell_of_the_static_equation_of_state():
    """A heavy, cold fcc crystal (classical static limit, as above) started from a cell stretched
    by 2 % along z: orthorhombic NPT must return to the cubic cell whose static pressure is P*,
    each lattice parameter on its own (x and y compressed, z more)."""
    a_ref, stretch = 4.25, 1.02
    p_star = 0.05 / GPA_PER_EV_PER_A3
    pos, cell, masses = to_arrays(build_lattice("Ne", "fcc", a_A=a_ref))
    axes = np.array([1.0, 1.0, stretch])
    pos, cell = pos * axes, cell * axes
    lj = make_lennard_jones_energy_fn(0.0031, 2.74, 8.2, 1.1 * cell)
    modes = compute_harmonic_modes(lj, pos, cell, np.full_like(masses, 1.0e8))

    def static_pressure(scale):
        w = virial(lj, jnp.asarray(pos / axes * scale), jnp.asarray(cell / axes * scale))
        return float(jnp.trace(w)) / (3 * abs(np.linalg.det(cell / axes)) * scale**3)

    scale_static = scipy.optimize.brentq(lambda x: static_pressure(x) - p_star, 0.95, 1.02, xtol=1e-12)
    flow = make_realnvp(modes.n_modes, 1, 4)
    model = make_free_energy_model(lj, modes, flow, kT_eV=KB_EV_PER_K * 0.005, n_levels=2, batch_size=16,
                                   freeze_flow=True, pressure_eV_per_A3=p_star, cell_strain="orthorhombic")
    steps = 400
    optimizer = make_optimizer("adam", 1e-3, schedule="cosine", steps=steps, final_fraction=0.01, grad_clip_norm=None)
    result = train(model, optimizer, steps=steps, seed=0)
    lattice = a_ref * axes * (1 + np.asarray(result.params["strain"]))
    print(f"static EOS a = {a_ref * scale_static:.5f} A, orthorhombic NPT a = {lattice}, last pressures (GPa)",
          [result.history[f"pressure_{x}"][-1] * GPA_PER_EV_PER_A3 for x in "xyz"])
    assert np.all(np.abs(lattice / (a_ref * scale_static) - 1) < 3e-4)

