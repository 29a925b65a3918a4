"""Harmonic thermodynamics on q-point meshes from interpolated force constants (phonopy)."""

import numpy as np
import pytest
from ase.build import bulk

from thermoflow.phonons import compute_harmonic_modes, harmonic_thermodynamics
from thermoflow.phonons.qmesh import interpolated_phonons, thermodynamics_from_frequencies
from thermoflow.potentials.pair import make_lennard_jones_energy_fn
from thermoflow.units import KB_EV_PER_K

TEMPERATURES_K = [5.0, 20.0, 40.0]


def lennard_jones_for(atoms):
    return make_lennard_jones_energy_fn(0.0031, 2.74, 8.2, atoms.cell.array)


@pytest.fixture(scope="module")
def neon():
    unit = bulk("Ne", "fcc", a=4.464, cubic=True)
    return unit, interpolated_phonons(lennard_jones_for, unit, [2, 2, 2])


def test_commensurate_points_reproduce_the_supercell_gamma_point(neon):
    """The Gamma-point Hessian of a supercell is the dynamical matrix at the q-points commensurate
    with it: the mesh sum over those points (conventional fcc cell x 2 = 32 primitive cells) equals
    the 32-atom cell's own harmonic F, S, ZPE (translations removed) to the finite-displacement error."""
    unit, phonons = neon
    on_points = phonons.commensurate_thermodynamics(np.diag([2, 2, 2]), TEMPERATURES_K)
    assert on_points.n_qpoints == 32 and on_points.undefined_reason is None
    cell = unit.repeat((2, 2, 2))
    modes = compute_harmonic_modes(lennard_jones_for(cell), cell.get_positions(), cell.cell.array, cell.get_masses())
    for k, t in enumerate(TEMPERATURES_K):
        th = harmonic_thermodynamics(modes.phonon_energies_eV, KB_EV_PER_K * t)
        assert on_points.free_energy_eV_per_atom[k] == pytest.approx(th.free_energy_eV / len(cell), abs=1e-7)
        assert on_points.entropy_kB_per_atom[k] == pytest.approx(th.entropy_kB / len(cell), rel=1e-5)
    assert on_points.zero_point_energy_eV_per_atom == pytest.approx(th.zero_point_energy_eV / len(cell), rel=1e-5)


def test_dense_meshes_converge_and_differ_from_the_small_cell(neon):
    """The mesh average converges with the mesh (16^3 vs 32^3 within 0.02 meV/atom at 40 K) to a
    value the 32-atom cell misses by more than 0.3 meV/atom (its q-point sampling error), and
    force constants of a larger supercell change it by less than 0.03 meV/atom."""
    unit, phonons = neon
    coarse, fine = (phonons.mesh_thermodynamics(m, TEMPERATURES_K) for m in ([16] * 3, [32] * 3))
    assert abs(fine.free_energy_eV_per_atom[-1] - coarse.free_energy_eV_per_atom[-1]) < 2e-5
    gamma = phonons.commensurate_thermodynamics(np.diag([2, 2, 2]), TEMPERATURES_K)
    assert abs(fine.free_energy_eV_per_atom[-1] - gamma.free_energy_eV_per_atom[-1]) > 3e-4
    larger = interpolated_phonons(lennard_jones_for, unit, [3, 3, 3]).mesh_thermodynamics([32] * 3, TEMPERATURES_K)
    assert abs(larger.free_energy_eV_per_atom[-1] - fine.free_energy_eV_per_atom[-1]) < 3e-5
    assert np.all(np.diff(fine.entropy_kB_per_atom) > 0)


def test_imaginary_modes_leave_the_harmonic_thermodynamics_undefined():
    nu = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, -0.5]])
    q = np.array([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]])
    result = thermodynamics_from_frequencies(nu, np.ones(2), q, [10.0])
    assert result.undefined_reason is not None and "imaginary" in result.undefined_reason
    assert np.isnan(result.free_energy_eV_per_atom).all()
    with pytest.raises(ValueError, match="translations"):
        thermodynamics_from_frequencies(np.zeros((1, 6)), np.ones(1), np.zeros((1, 3)), [10.0])
