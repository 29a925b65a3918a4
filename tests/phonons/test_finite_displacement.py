"""Symmetry-reduced finite-displacement Hessians (phonopy) against the exact autodiff Hessian."""

import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from thermoflow.phonons.finite_displacement import phonopy_hessian
from thermoflow.potentials import hessian, make_lennard_jones_energy_fn


@pytest.fixture(scope="module")
def neon32():
    atoms = bulk("Ne", "fcc", a=4.464, cubic=True).repeat((2, 2, 2))
    pos, cell = atoms.get_positions(), atoms.cell.array
    lj = make_lennard_jones_energy_fn(0.0031, 2.74, 8.2, cell)
    exact = np.asarray(hessian(lj, jnp.asarray(pos), jnp.asarray(cell)))
    return atoms, lj, exact


def test_phonopy_hessian_matches_autodiff_with_second_order_error(neon32):
    """fcc has one symmetry-distinct atom: two displaced cells (+-delta) give all 96 x 96 entries;
    central differences converge as delta^2 to the exact Hessian."""
    atoms, lj, exact = neon32
    errors = {}
    for delta in (0.04, 0.02):
        result = phonopy_hessian(lj, atoms.get_positions(), atoms.cell.array, atoms.numbers, displacement_A=delta)
        assert result.n_displacements == 2
        assert result.space_group.startswith("Fm-3m")
        np.testing.assert_allclose(result.hessian, result.hessian.T, atol=0)
        errors[delta] = np.max(np.abs(result.hessian - exact)) / np.max(np.abs(exact))
    print(f"relative max error: {errors}")
    assert errors[0.02] < 1.5e-3  # measured 9.8e-4: LJ neon is stiff, V'''' / V'' ~ 10 / A^2
    assert errors[0.04] / errors[0.02] == pytest.approx(4.0, rel=0.15)


def test_phonopy_hessian_of_a_distorted_cell_uses_more_displacements(neon32):
    """Symmetry broken by one displaced atom: still exact to O(delta^2), with many more displaced cells."""
    atoms, lj, _ = neon32
    pos = atoms.get_positions().copy()
    pos[0] += [0.05, 0.02, -0.01]
    exact = np.asarray(hessian(lj, jnp.asarray(pos), jnp.asarray(atoms.cell.array)))
    result = phonopy_hessian(lj, pos, atoms.cell.array, atoms.numbers, displacement_A=0.01)
    assert result.n_displacements > 2
    assert np.max(np.abs(result.hessian - exact)) < 5e-4 * np.max(np.abs(exact))  # measured 2.4e-4, O(delta^2)


@pytest.mark.parametrize("kwargs", [{"displacement_A": 0.0}, {"batch_size": 0}])
def test_phonopy_hessian_rejects_bad_arguments(neon32, kwargs):
    atoms, lj, _ = neon32
    with pytest.raises(ValueError):
        phonopy_hessian(lj, atoms.get_positions(), atoms.cell.array, atoms.numbers, **kwargs)


def test_harmonic_section_selects_phonopy_and_caches_the_hessian(tmp_path, caplog):
    """[harmonic] hessian = 'phonopy' gives the autodiff modes (default neon); the Hessian is stored in
    the run directory and read back for the same potential and structure, recomputed for another one;
    an ASE calculator goes through phonopy too (it has forces, no second derivative)."""
    from thermoflow.workflows.build import HESSIAN_CACHE, build_modes
    from thermoflow.workflows.config import ConfigError, load_config

    cell1 = ["structure.supercell=[1, 1, 1]", "potential.cutoff_A=7.0"]
    exact_cfg, base = load_config(None, cell1)
    _, _, exact = build_modes(exact_cfg, base)
    cfg, _ = load_config(None, cell1 + ["harmonic.hessian='phonopy'"])
    _, _, first = build_modes(cfg, base, cache_dir=tmp_path)
    assert (tmp_path / HESSIAN_CACHE).is_file()
    np.testing.assert_allclose(first.omega, exact.omega, rtol=1e-5)
    with caplog.at_level("INFO"):
        _, _, again = build_modes(cfg, base, cache_dir=tmp_path)
    assert "read from" in caplog.text
    np.testing.assert_array_equal(again.omega, first.omega)
    caplog.clear()
    other, _ = load_config(None, ["structure.supercell=[1, 1, 1]", "potential.cutoff_A=6.0", "harmonic.hessian='phonopy'"])
    with caplog.at_level("INFO"):
        build_modes(other, base, cache_dir=tmp_path)
    assert "recomputing" in caplog.text

    ase_cfg, _ = load_config(None, ["structure.supercell=[1, 1, 1]", "harmonic.hessian='phonopy'",
                                    "potential={kind='ase', calculator='ase.calculators.lj:LennardJones', "
                                    "options={epsilon=0.0031, sigma=2.74, rc=7.0, smooth=false}}"])
    _, _, via_ase = build_modes(ase_cfg, base)
    np.testing.assert_allclose(via_ase.omega, exact.omega, rtol=1e-4)
    with pytest.raises(ConfigError, match="autodiff"):
        bad, _ = load_config(None, ["structure.supercell=[1, 1, 1]", "harmonic.hessian='autodiff'",
                                    "potential={kind='ase', calculator='ase.calculators.lj:LennardJones', options={}}"])
        build_modes(bad, base)
