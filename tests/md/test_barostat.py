"""Stochastic cell rescaling: the ideal-gas volume distribution, <P_aa> = P0, and the bulk modulus."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from thermoflow.analysis.statistics import blocking_stderr
from thermoflow.md import integrators
from thermoflow.md.barostat import make_stochastic_cell_rescaling, static_bulk_modulus_GPa
from thermoflow.potentials.pair import make_lennard_jones_energy_fn
from thermoflow.units import GPA_PER_EV_PER_A3, KB_EV_PER_K


def _npt_series(energy_fn, positions, cell, masses, kind, pressure_GPa, kT, compressibility_per_GPa, *, timestep_fs,
                time_constant_ps, friction_per_ps, n_blocks, block, zero_net_force, seed=0):
    barostat = make_stochastic_cell_rescaling(kind, pressure_GPa, kT, timestep_fs, time_constant_ps, compressibility_per_GPa, masses)
    init_fn, step_fn = integrators.make_langevin(energy_fn, cell, masses, timestep_fs, friction_per_ps,
                                                 integrators.make_white_noise(kT), zero_net_force=zero_net_force, barostat=barostat)
    key = jax.random.PRNGKey(seed)
    state = init_fn(key, positions, integrators.maxwell_boltzmann_velocities(key, masses, kT, remove_drift=zero_net_force))
    block_fn = integrators.make_block_fn(step_fn, block, masses)
    state, _ = block_fn(state)  # equilibration
    volumes, pressures, lengths = [], [], []
    for _ in range(n_blocks):
        state, obs = block_fn(state)
        volumes.append(np.asarray(obs.volume))
        pressures.append(np.asarray(obs.pressure_diagonal))
        lengths.append(np.asarray(obs.cell_lengths))
    return state, np.concatenate(volumes), np.concatenate(pressures), np.concatenate(lengths)


def test_ideal_gas_volume_is_that_of_the_isothermal_isobaric_ensemble():
    """Four free atoms (U = 0) at constant pressure: rho(V) ~ V^N exp(-P0 V / kT) with the measure dV, so
    <V> = (N + 1) kT / P0 = 5 kT / P0 and <V^2> / <V>^2 = (N + 2) / (N + 1) (a barostat with the wrong
    k_B T / V term gives 4 or 6 kT / P0), and the instantaneous pressure averages to P0."""
    n_atoms, kT = 4, 300.0 * KB_EV_PER_K
    pressure = 5 * kT / 500.0  # eV/A^3: <V> = 500 A^3
    masses = jnp.full((n_atoms,), 4.0)
    positions = jax.random.uniform(jax.random.PRNGKey(1), (n_atoms, 3), minval=0.0, maxval=7.9)
    _, volumes, pressures, _ = _npt_series(
        lambda x, c: 0.0 * jnp.sum(x) + 0.0 * jnp.sum(c), positions, 7.937 * jnp.eye(3), masses, "isotropic",
        pressure * GPA_PER_EV_PER_A3, kT, 1.0 / (pressure * GPA_PER_EV_PER_A3), timestep_fs=2.0, time_constant_ps=0.1,
        friction_per_ps=20.0, n_blocks=40, block=10000, zero_net_force=False,
    )
    v = blocking_stderr(volumes / 500.0)
    second = blocking_stderr((volumes / 500.0) ** 2)
    p = blocking_stderr(pressures.mean(axis=1) / pressure)
    print(f"ideal gas: <V> P0 / kT = {5 * v.mean:.3f} +- {5 * v.stderr:.3f} (exact 5); <V^2>/<V>^2 = "
          f"{second.mean / v.mean**2:.3f} (exact 1.2); <P> / P0 = {p.mean:.3f} +- {p.stderr:.3f}")
    assert v.stderr < 0.02
    assert abs(v.mean - 1.0) < 4 * v.stderr + 0.01
    assert abs(second.mean / v.mean**2 - 1.2) < 0.05
    assert abs(p.mean - 1.0) < 4 * p.stderr + 0.01


def _box_distribution_mean_length(kind, n_atoms, kT, pressure, kappa, length0, extra_power=0):
    """<L> of the exact isothermal-isobaric distribution of free atoms in a box with the cell energy
    U = (kappa / 2) sum_a (L_a - L0)^2: rho ~ V^(N + extra_power) exp(-(U + P0 V) / kT) with the measure dV
    (isotropic, cubic box, dV = 3 L^2 dL) or dL_1 dL_2 dL_3 (orthorhombic), by quadrature."""
    grid = np.linspace(0.3 * length0, 2.0 * length0, 801 if kind == "isotropic" else 161)
    if kind == "isotropic":
        log_w = (3 * (n_atoms + extra_power) + 2) * np.log(grid) - (1.5 * kappa * (grid - length0) ** 2 + pressure * grid**3) / kT
        w = np.exp(log_w - log_w.max())
        return float(np.sum(w * grid) / np.sum(w))
    l1, l2, l3 = np.meshgrid(grid, grid, grid, indexing="ij")
    volume = l1 * l2 * l3
    log_w = (n_atoms + extra_power) * np.log(volume) - (0.5 * kappa * ((l1 - length0) ** 2 + (l2 - length0) ** 2 + (l3 - length0) ** 2)
                                                      + pressure * volume) / kT
    w = np.exp(log_w - log_w.max())
    return float(np.sum(w * l1) / np.sum(w))


@pytest.mark.parametrize("kind", ["isotropic", "orthorhombic"])
def test_elastic_box_lengths_follow_the_exact_distribution(kind):
    """Two free atoms in a box whose lattice vectors are springs, U = (kappa / 2) sum_a (L_a - L0)^2, at
    300 K and 0.5 GPa: the mean box length equals the exact <L> of rho ~ V^N exp(-(U + P0 V) / kT) with
    the module's volume measure (dV isotropic, dL_1 dL_2 dL_3 orthorhombic) within 4 sigma + 0.1 %; a
    measure off by one power of V (the k_B T / V term wrong) lies > 5 sigma away. The mean pressure
    tensor equals P0 (per axis for orthorhombic), the isotropic lengths move together, the cell stays
    diagonal."""
    n_atoms, kT, kappa, length0, p_gpa = 2, 300.0 * KB_EV_PER_K, 0.65, 2.0, 0.5
    pressure = p_gpa / GPA_PER_EV_PER_A3

    def energy_fn(positions, cell):
        return 0.5 * kappa * jnp.sum((jnp.linalg.norm(cell, axis=1) - length0) ** 2) + 0.0 * jnp.sum(positions)

    masses = jnp.full((n_atoms,), 4.0)
    positions = jnp.array([[0.3, 0.4, 0.5], [1.2, 1.1, 1.0]])
    compressibility = 1.0 / (kappa / (3.0 * length0) * GPA_PER_EV_PER_A3)  # 1 / (V d^2U/dV^2) of the cubic box
    state, volumes, pressures, lengths = _npt_series(
        energy_fn, positions, length0 * jnp.eye(3), masses, kind, p_gpa, kT, compressibility, timestep_fs=2.0,
        time_constant_ps=0.05, friction_per_ps=20.0, n_blocks=20, block=25000, zero_net_force=False,
    )
    exact = _box_distribution_mean_length(kind, n_atoms, kT, pressure, kappa, length0)
    wrong = [_box_distribution_mean_length(kind, n_atoms, kT, pressure, kappa, length0, extra_power=k) for k in (-1, 1)]
    b = blocking_stderr(lengths.mean(axis=1) if kind == "isotropic" else lengths[:, 0])
    p = [blocking_stderr(pressures[:, a] * GPA_PER_EV_PER_A3) for a in range(3)]
    print(f"{kind}: <L> = {b.mean:.5f} +- {b.stderr:.5f} A, exact {exact:.5f} (measure V^(N-1) / V^(N+1): "
          f"{wrong[0]:.5f} / {wrong[1]:.5f}); <P_aa> = {[f'{c.mean:.4f} +- {c.stderr:.4f}' for c in p]} GPa (target {p_gpa})")
    assert abs(b.mean - exact) < 4 * b.stderr + 1e-3 * exact
    assert min(abs(w - exact) for w in wrong) > 5 * b.stderr
    for c in p if kind == "orthorhombic" else [blocking_stderr(pressures.mean(axis=1) * GPA_PER_EV_PER_A3)]:
        assert abs(c.mean - p_gpa) < 4 * c.stderr + 0.01 * p_gpa
    if kind == "isotropic":
        np.testing.assert_allclose(lengths[:, 0], lengths[:, 1], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(state.cell) - np.diag(np.diag(np.asarray(state.cell))), 0.0, atol=1e-12)


def test_static_bulk_modulus_matches_the_energy_volume_curve_and_refuses_unstable_structures():
    """B from the virial pressure equals V d^2E/dV^2 from a finite-difference energy-volume curve
    (fcc LJ at its cubic cell), and a structure under tension beyond the spinodal is refused."""
    atoms = bulk("Ne", "fcc", a=4.40, cubic=True)
    cell, positions = np.asarray(atoms.cell.array), np.asarray(atoms.get_positions())
    energy_fn = make_lennard_jones_energy_fn(0.0031, 2.74, 6.0, cell)
    modulus = static_bulk_modulus_GPa(energy_fn, jnp.asarray(positions), jnp.asarray(cell))
    h = 1e-3
    energies = [float(energy_fn(jnp.asarray(positions * s), jnp.asarray(cell * s))) for s in ((1 - h) ** (1 / 3), 1.0, (1 + h) ** (1 / 3))]
    volume = abs(np.linalg.det(cell))
    curvature = (energies[0] - 2 * energies[1] + energies[2]) / (h * volume) ** 2
    np.testing.assert_allclose(modulus, volume * curvature * GPA_PER_EV_PER_A3, rtol=5e-3)  # O(strain^2) of both differences
    stretched = 1.25  # far beyond the LJ inflection point
    with pytest.raises(ValueError, match="mechanically unstable"):
        static_bulk_modulus_GPa(energy_fn, jnp.asarray(positions * stretched), jnp.asarray(cell * stretched))


def test_triclinic_cell_entries_follow_the_exact_distribution():
    """Two free atoms in a triclinic box whose six standard-form entries are springs, U = (kappa / 2)
    sum_a (h_aa - L0)^2 + (kappa_s / 2) sum_{a > b} h_ab^2, written rotation invariantly through the
    Cholesky factor of the metric h h^T (so the virial is symmetric, as for any physical potential),
    at 300 K and 0.5 GPa. With the measure of the six entries (module docstring), V = h_xx h_yy h_zz
    does not involve the off-diagonal entries, so they are exact Gaussians, <h_ab^2> = kT / kappa_s,
    and each diagonal entry has the orthorhombic box's exact <L>. A measure with another weight of the
    diagonal entries (e.g. the Ito term left out, or the Jacobian h_xx h_yy^2 h_zz^3 of the strain
    chart) would move <h_yy> and <h_zz> apart from <h_xx>; it is checked per entry. The cell stays
    lower triangular and <P_ab> = P0 delta_ab."""
    n_atoms, kT, kappa, kappa_s, length0, p_gpa = 2, 300.0 * KB_EV_PER_K, 0.65, 0.4, 2.0, 0.5
    pressure = p_gpa / GPA_PER_EV_PER_A3

    def energy_fn(positions, cell):
        standard = jnp.linalg.cholesky(cell @ cell.T)  # lower triangular, rotation invariant
        off = standard[jnp.array([1, 2, 2]), jnp.array([0, 0, 1])]
        return 0.5 * kappa * jnp.sum((jnp.diagonal(standard) - length0) ** 2) + 0.5 * kappa_s * jnp.sum(off**2) + 0.0 * jnp.sum(positions)

    masses = jnp.full((n_atoms,), 4.0)
    positions = jnp.array([[0.3, 0.4, 0.5], [1.2, 1.1, 1.0]])
    cell0 = jnp.array([[length0, 0.0, 0.0], [0.2, length0, 0.0], [-0.1, 0.15, length0]])
    compressibility = 1.0 / (kappa / (3.0 * length0) * GPA_PER_EV_PER_A3)
    barostat = make_stochastic_cell_rescaling("triclinic", p_gpa, kT, 2.0, 0.05, compressibility, masses)
    init_fn, step_fn = integrators.make_langevin(energy_fn, cell0, masses, 2.0, 20.0, integrators.make_white_noise(kT),
                                                 zero_net_force=False, barostat=barostat)
    key = jax.random.PRNGKey(0)
    state = init_fn(key, positions, integrators.maxwell_boltzmann_velocities(key, masses, kT, remove_drift=False))

    @jax.jit
    def block(state):
        def body(s, _):
            s = step_fn(s)
            return s, (s.cell, jnp.diagonal(s.virial))
        return jax.lax.scan(body, state, None, length=25000)

    state, _ = block(state)
    cells = []
    for _ in range(20):
        state, (c, _) = block(state)
        cells.append(np.asarray(c)[::5])
    cells = np.concatenate(cells)
    exact = _box_distribution_mean_length("orthorhombic", n_atoms, kT, pressure, kappa, length0)
    diag = [blocking_stderr(cells[:, a, a]) for a in range(3)]
    off = [blocking_stderr(cells[:, a, b] ** 2 * kappa_s / kT) for a, b in ((1, 0), (2, 0), (2, 1))]
    print(f"triclinic: <h_aa> = {[f'{d.mean:.5f} +- {d.stderr:.5f}' for d in diag]} A (exact {exact:.5f}); "
          f"<h_ab^2> kappa_s / kT = {[f'{o.mean:.3f} +- {o.stderr:.3f}' for o in off]} (exact 1)")
    for d in diag:
        assert abs(d.mean - exact) < 4 * d.stderr + 1e-3 * exact
    for o in off:
        assert abs(o.mean - 1.0) < 4 * o.stderr + 0.02
    np.testing.assert_allclose(cells[:, [0, 0, 1], [1, 2, 2]], 0.0, atol=1e-12)
