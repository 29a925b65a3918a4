"""ASE calculator bridge: ASE's own Lennard-Jones against thermoflow's pure-JAX Lennard-Jones."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.lj import LennardJones

from thermoflow.potentials import base
from thermoflow.potentials.ase_bridge import (
    finite_difference_hessian,
    load_calculator_factory,
    make_ase_energy_fn,
)
from thermoflow.potentials.pair import make_lennard_jones_energy_fn

jax.config.update("jax_enable_x64", True)

# Argon (epsilon, sigma: Rahman, Phys. Rev. 136, A405 (1964)); the cutoff lies between the
# third (6.44 A) and fourth (7.44 A) neighbour shells, so the small displacements below never
# move a pair across it (ASE's shifted LJ has a force jump there).
EPSILON_EV, SIGMA_A, CUTOFF_A, LATTICE_A = 0.0104, 3.4, 7.0, 5.26


@pytest.fixture(scope="module")
def argon():
    """fcc argon, conventional cell doubled along x (8 atoms), one atom displaced."""
    atoms = bulk("Ar", "fcc", a=LATTICE_A, cubic=True).repeat((2, 1, 1))
    positions = atoms.get_positions()
    positions[3] += [0.12, -0.05, 0.08]
    cell = np.asarray(atoms.get_cell())
    calculator = LennardJones(epsilon=EPSILON_EV, sigma=SIGMA_A, rc=CUTOFF_A, smooth=False)
    reference_fn = make_lennard_jones_energy_fn(EPSILON_EV, SIGMA_A, CUTOFF_A, cell)
    energy_fn = make_ase_energy_fn(calculator, atoms.get_chemical_symbols())
    return {
        "positions": positions,
        "cell": cell,
        "symbols": atoms.get_chemical_symbols(),
        "calculator": calculator,
        "energy_fn": energy_fn,
        "reference_fn": reference_fn,
    }


def test_energy_and_forces_match_pure_jax(argon):
    r, h = argon["positions"], argon["cell"]
    energy_fn, reference_fn = argon["energy_fn"], argon["reference_fn"]
    np.testing.assert_allclose(energy_fn(r, h), reference_fn(r, h), rtol=1e-12, atol=0)
    expected = base.forces(reference_fn, r, h)
    assert np.abs(expected).max() > 1e-3  # the displaced atom makes forces non-zero
    np.testing.assert_allclose(base.forces(energy_fn, r, h), expected, rtol=0, atol=1e-12)
    jitted = jax.jit(jax.value_and_grad(energy_fn))(r, h)
    np.testing.assert_allclose(jitted[0], reference_fn(r, h), rtol=1e-12, atol=0)
    np.testing.assert_allclose(-jitted[1], expected, rtol=0, atol=1e-12)


def test_grad_returns_the_calculators_forces(argon):
    r, h = argon["positions"], argon["cell"]
    grad = jax.grad(argon["energy_fn"])(r, h)
    atoms = bulk("Ar", "fcc", a=LATTICE_A, cubic=True).repeat((2, 1, 1))
    atoms.set_positions(r)
    atoms.calc = LennardJones(epsilon=EPSILON_EV, sigma=SIGMA_A, rc=CUTOFF_A)
    np.testing.assert_array_equal(-np.asarray(grad), atoms.get_forces())


def test_cell_gradient_and_virial_from_stress(argon):
    r, h = argon["positions"], argon["cell"]
    energy_fn, reference_fn = argon["energy_fn"], argon["reference_fn"]
    np.testing.assert_allclose(
        jax.grad(energy_fn, argnums=1)(r, h),
        jax.grad(reference_fn, argnums=1)(r, h),
        rtol=0,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        base.virial(energy_fn, r, h), base.virial(reference_fn, r, h), rtol=0, atol=1e-12
    )


def test_vmap_matches_loop(argon):
    r, h = argon["positions"], argon["cell"]
    energy_fn = argon["energy_fn"]
    rng = np.random.default_rng(0)
    batch_r = r + 0.05 * rng.standard_normal((3, *r.shape))
    batch_h = np.stack([h, h * 1.01, h @ np.array([[1, 0.01, 0], [0, 1, 0], [0, 0, 0.99]])])
    energies = jax.jit(jax.vmap(energy_fn))(batch_r, batch_h)
    grads = jax.vmap(jax.grad(energy_fn))(batch_r, batch_h)
    for i in range(3):
        np.testing.assert_allclose(energies[i], energy_fn(batch_r[i], batch_h[i]), rtol=1e-13)
        np.testing.assert_allclose(grads[i], jax.grad(energy_fn)(batch_r[i], batch_h[i]), atol=1e-14)
    assert np.ptp(np.asarray(energies)) > 1e-3


def test_hessian_by_autodiff_is_unavailable(argon):
    with pytest.raises((ValueError, TypeError, NotImplementedError)):
        jax.hessian(argon["energy_fn"])(argon["positions"], argon["cell"])


@pytest.mark.parametrize("source", ["calculator", "energy_fn"])
def test_finite_difference_hessian_matches_autodiff(argon, source):
    r, h = argon["positions"], argon["cell"]
    exact = np.asarray(base.hessian(argon["reference_fn"], r, h))
    if source == "calculator":
        approx = finite_difference_hessian(
            argon["calculator"], r, h, symbols=argon["symbols"], displacement=0.005
        )
    else:
        approx = finite_difference_hessian(argon["energy_fn"], r, h, displacement=0.005)
    assert approx.shape == (3 * len(r), 3 * len(r))
    np.testing.assert_array_equal(approx, approx.T)
    assert np.linalg.norm(approx - exact) / np.linalg.norm(exact) < 1e-4
    np.testing.assert_allclose(approx, exact, rtol=0, atol=1e-4 * np.abs(exact).max())


def test_finite_difference_hessian_input_errors(argon):
    r, h = argon["positions"], argon["cell"]
    with pytest.raises(ValueError, match="symbols"):
        finite_difference_hessian(argon["calculator"], r, h)
    with pytest.raises(ValueError, match="displacement"):
        finite_difference_hessian(argon["energy_fn"], r, h, displacement=0.0)
    with pytest.raises(TypeError, match="calculator"):
        finite_difference_hessian(42, r, h)


class _EnergyForcesOnly(Calculator):
    """An ASE calculator without stress (delegates to Lennard-Jones)."""

    implemented_properties = ["energy", "forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        lj = LennardJones(epsilon=EPSILON_EV, sigma=SIGMA_A, rc=CUTOFF_A)
        lj.calculate(self.atoms, ["energy", "forces"], system_changes)
        self.results = {"energy": lj.results["energy"], "forces": lj.results["forces"]}


def test_calculator_without_stress(argon):
    r, h = argon["positions"], argon["cell"]
    energy_fn = make_ase_energy_fn(_EnergyForcesOnly(), [18] * len(r))  # atomic numbers
    np.testing.assert_allclose(
        jax.grad(energy_fn)(r, h), jax.grad(argon["reference_fn"])(r, h), rtol=0, atol=1e-12
    )
    with pytest.raises(NotImplementedError, match="stress"):
        jax.grad(energy_fn, argnums=1)(r, h)


def test_wrong_shapes_are_rejected(argon):
    with pytest.raises(ValueError, match="positions must have shape"):
        argon["energy_fn"](argon["positions"][:-1], argon["cell"])
    with pytest.raises(ValueError, match="empty"):
        make_ase_energy_fn(argon["calculator"], [])


def test_load_calculator_factory():
    assert load_calculator_factory("ase.calculators.lj:LennardJones") is LennardJones
    with pytest.raises(ValueError, match="package.module:function"):
        load_calculator_factory("ase.calculators.lj.LennardJones")
    with pytest.raises(ImportError, match="thermoflow_no_such_module"):
        load_calculator_factory("thermoflow_no_such_module:Calculator")
    with pytest.raises(AttributeError, match="NoSuchCalculator"):
        load_calculator_factory("ase.calculators.lj:NoSuchCalculator")


def test_pure_jax_reference_is_the_shifted_lennard_jones(argon):
    """Guards the reference itself: a dimer inside the cutoff, by hand."""
    cell = 30.0 * np.eye(3)
    reference_fn = make_lennard_jones_energy_fn(EPSILON_EV, SIGMA_A, CUTOFF_A, cell)
    distance = 3.9
    positions = jnp.array([[0.0, 0.0, 0.0], [distance, 0.0, 0.0]])

    def phi(x):
        return 4 * EPSILON_EV * ((SIGMA_A / x) ** 12 - (SIGMA_A / x) ** 6)

    np.testing.assert_allclose(
        reference_fn(positions, cell), phi(distance) - phi(CUTOFF_A), rtol=1e-12
    )
