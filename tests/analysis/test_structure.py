"""Structure analysis: g(r) of perfect lattices, ideal gas and triclinic cells; quench back to fcc;
Wyckoff x of I-43d in any setting; the ASE calculator adapter of an energy_fn."""

import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.io import read
from ase.spacegroup import crystal

from thermoflow.analysis.structure import (
    coordination_shells,
    molecular_centres,
    powder_xrd,
    quench,
    radial_distribution,
    space_group,
    wyckoff_x_16c,
)
from thermoflow.potentials import EnergyFnCalculator, make_lennard_jones_energy_fn


def _integrated_coordination(rdf, pair=0):
    """4 pi rho_b int_0^r g r'^2 dr' at each bin's upper edge, from g itself."""
    shell_volume = 4.0 * np.pi / 3.0 * np.diff(rdf.edges_A**3)
    return rdf.density_A3[pair] * np.cumsum(rdf.g[pair] * shell_volume)


@pytest.mark.parametrize("lattice, shells", [("bcc", (8, 6)), ("fcc", (12, 6))])
def test_perfect_lattice_g_integrates_to_shell_coordination_numbers(lattice, shells):
    a = 3.5
    atoms = bulk("Li", lattice, a=a, cubic=True).repeat(3)
    first = a * np.sqrt(3) / 2 if lattice == "bcc" else a / np.sqrt(2)
    r_max = 1.2 * a  # beyond the second shell (a), below the third
    rdf = radial_distribution(atoms.positions, atoms.cell.array, atoms.get_chemical_symbols(), r_max, n_bins=240)
    n = _integrated_coordination(rdf)
    np.testing.assert_allclose(n, rdf.coordination[0], rtol=1e-12)
    between = np.searchsorted(rdf.edges_A[1:], 0.5 * (first + a))
    assert n[between] == pytest.approx(shells[0], abs=1e-9)
    assert n[-1] == pytest.approx(shells[0] + shells[1], abs=1e-9)
    assert coordination_shells(atoms.positions, atoms.cell.array, atoms.get_chemical_symbols(), r_max)[("Li", "Li")] == [
        pytest.approx((first, shells[0])), pytest.approx((a, shells[1]))]


def test_ideal_gas_g_is_one_within_statistical_error():
    rng = np.random.default_rng(0)
    cell = np.array([[9.0, 0.0, 0.0], [2.0, 8.5, 0.0], [-1.0, 1.5, 10.0]])
    n_atoms, n_configs = 40, 40
    positions = rng.uniform(size=(n_configs, n_atoms, 3)) @ cell
    species = np.array(["A"] * 25 + ["B"] * 15)
    rdf = radial_distribution(positions, cell, species, r_max=6.0, n_bins=12)  # 6 A < shortest lattice vector
    assert rdf.pairs == (("A", "A"), ("A", "B"), ("B", "A"), ("B", "B"))
    z = (rdf.g[:, 2:] - 1.0) / rdf.g_stderr[:, 2:]  # the first bins hold a handful of pairs
    assert np.abs(z).max() < 4.5
    assert abs(np.mean(z)) < 4.5 / np.sqrt(z.size)
    np.testing.assert_allclose(rdf.g[1], rdf.g[2])  # g_AB = g_BA
    # n_AB counts B around A with rho_B = N_B / V: the ratio of the cross coordinations is N_B / N_A
    np.testing.assert_allclose(rdf.coordination[1] * 25, rdf.coordination[2] * 15)


def test_triclinic_cell_gives_the_same_g_as_the_cubic_cell_of_the_same_crystal():
    atoms = bulk("Ne", "fcc", a=4.464, cubic=True).repeat(2)
    positions = atoms.positions + np.random.default_rng(1).normal(scale=0.1, size=atoms.positions.shape)
    cubic = atoms.cell.array
    skewed = np.array([[2, 1, 0], [1, 1, 0], [0, 1, 1]]) @ cubic  # unimodular: the same lattice
    assert round(abs(np.linalg.det(skewed) / np.linalg.det(cubic))) == 1 and not np.allclose(skewed, np.diag(np.diag(skewed)))
    wrapped = (np.linalg.solve(skewed.T, positions.T).T % 1.0) @ skewed
    r_max = 9.0  # beyond half of every cell width
    ref = radial_distribution(positions, cubic, atoms.get_chemical_symbols(), r_max, n_bins=90)
    tri = radial_distribution(wrapped, skewed, atoms.get_chemical_symbols(), r_max, n_bins=90)
    np.testing.assert_allclose(tri.g, ref.g, atol=1e-10)
    np.testing.assert_allclose(tri.coordination, ref.coordination, atol=1e-10)
    assert ref.coordination[0, -1] > 70  # several shells, far beyond the minimum-image range


@pytest.fixture(scope="module")
def lennard_jones_neon():
    """fcc neon 2 x 2 x 2 (32 atoms), its Lennard-Jones energy_fn and one calculator (compiled once)."""
    atoms = bulk("Ne", "fcc", a=4.464, cubic=True).repeat(2)
    energy_fn = make_lennard_jones_energy_fn(0.0031, 2.74, 8.2, atoms.cell.array)
    return atoms, energy_fn, EnergyFnCalculator(energy_fn)


def test_quench_returns_displaced_lennard_jones_fcc_to_fm3m_and_the_lattice_energy(lennard_jones_neon):
    atoms, energy_fn, calculator = lennard_jones_neon
    cell, numbers = atoms.cell.array, atoms.numbers
    lattice_energy = float(energy_fn(jnp.asarray(atoms.positions), jnp.asarray(cell)))
    displaced = atoms.positions + np.random.default_rng(2).normal(scale=0.15, size=atoms.positions.shape)
    assert space_group(displaced, cell, numbers) == ("P1", 1)
    result = quench(calculator, displaced, cell, numbers, fmax_eV_per_A=1e-5)
    assert result.converged and result.max_force_eV_per_A < 1e-5
    assert space_group(result.positions, cell, numbers) == ("Fm-3m", 225)
    assert result.energy_eV == pytest.approx(lattice_energy, abs=1e-9 * len(atoms))
    with pytest.raises(ValueError, match="optimizer"):
        quench(calculator, displaced, cell, numbers, optimizer="CG")


def test_energy_fn_calculator_forces_and_stress(lennard_jones_neon):
    atoms, energy_fn, calculator = lennard_jones_neon
    atoms = atoms.copy()
    atoms.positions += np.random.default_rng(3).normal(scale=0.1, size=atoms.positions.shape)
    atoms.calc = calculator
    r, h = jnp.asarray(atoms.positions), jnp.asarray(atoms.cell.array)
    assert atoms.get_potential_energy() == pytest.approx(float(energy_fn(r, h)), rel=1e-12)
    # independently of autodiff: central differences of the energy (ASE's force and stress signs)
    np.testing.assert_allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5), atol=1e-8)
    np.testing.assert_allclose(atoms.get_stress(), calculate_numerical_stress(atoms, eps=1e-5), atol=1e-9)
    assert np.abs(atoms.get_stress()).max() > 1e-4  # a displaced, strained crystal: the checks bite


X_16C = 0.05


def _ci16(x=X_16C, a=5.0):
    return crystal("Li", [(x, x, x)], spacegroup=220, cellpar=[a, a, a, 90, 90, 90])


@pytest.mark.parametrize("transform", ["as built", "rigid shift", "inverted", "2x2x2 supercell", "primitive rotated"])
def test_wyckoff_x_of_i43d_in_any_setting(transform):
    atoms = _ci16()
    assert len(atoms) == 16
    positions, cell = atoms.positions, atoms.cell.array
    if transform == "rigid shift":
        positions = positions + np.array([0.37, -1.21, 2.9])
    elif transform == "inverted":
        positions = -positions
    elif transform == "2x2x2 supercell":
        big = atoms.repeat(2)
        positions, cell = big.positions, big.cell.array
    elif transform == "primitive rotated":
        primitive = 0.5 * np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]]) @ cell
        scaled = np.linalg.solve(primitive.T, positions.T).T % 1.0
        keep = np.unique(np.round(scaled, 8) % 1.0, axis=0)  # 8 atoms
        angle = 0.3
        rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        cell = primitive @ rotation.T
        positions = keep @ cell
        assert len(positions) == 8
    numbers = np.full(len(positions), 3)
    assert space_group(positions, cell, numbers) == ("I-43d", 220)
    assert wyckoff_x_16c(positions, cell, numbers) == pytest.approx(X_16C, abs=1e-6)


def test_wyckoff_x_is_reported_in_its_convention_independent_range_and_needs_i43d():
    for x, expected in [(0.09, 0.09), (0.2, 0.05), (-0.03, 0.03)]:
        atoms = _ci16(x)
        assert wyckoff_x_16c(atoms.positions, atoms.cell.array, atoms.numbers) == pytest.approx(expected, abs=1e-6)
    bcc = bulk("Li", "bcc", a=3.5, cubic=True)
    with pytest.raises(ValueError, match="not I-43d"):
        wyckoff_x_16c(bcc.positions, bcc.cell.array, bcc.numbers)


def test_wyckoff_x_of_the_shared_ci16_structure(shared_dir):
    path = shared_dir / "structures" / "lithium" / "cI16.vasp"
    if not path.is_file():
        pytest.skip(f"{path} not found (the shared cI16 lithium structure)")
    atoms = read(path)
    assert space_group(atoms.positions, atoms.cell.array, atoms.numbers, symprec_A=1e-4) == ("I-43d", 220)
    # the file's header: x = 0.055 (Hanfland et al. 2000), written with 7-8 significant digits
    assert wyckoff_x_16c(atoms.positions, atoms.cell.array, atoms.numbers, symprec_A=1e-4) == pytest.approx(0.055, abs=1e-6)


def test_default_rdf_range_stops_short_of_the_periodic_self_image():
    """bcc 2x2x2 (cube edge 2a): 2.5 nearest-neighbour distances (2.5 x sqrt(3) a / 2 = 2.17 a)
    would reach the atoms' own images at 2a; a 4x4x4 supercell keeps 2.5 d_nn."""
    from ase.build import bulk

    from thermoflow.analysis.structure import default_rdf_range, shortest_lattice_translation

    a = 3.44
    small = bulk("Li", "bcc", a=a, cubic=True).repeat((2, 2, 2))
    assert shortest_lattice_translation(small.cell.array) == pytest.approx(2 * a)
    assert default_rdf_range(small.positions, small.cell.array) == pytest.approx(0.98 * 2 * a)
    large = bulk("Li", "bcc", a=a, cubic=True).repeat((4, 4, 4))
    assert default_rdf_range(large.positions, large.cell.array) == pytest.approx(2.5 * np.sqrt(3) * a / 2)
    # a skewed basis of the same lattice has the same shortest translation
    skewed = small.cell.array.copy()
    skewed[2] += skewed[0] + skewed[1]
    assert shortest_lattice_translation(skewed) == pytest.approx(2 * a)


def test_molecular_centres_of_a_molecular_fcc_crystal_and_of_lone_atoms():
    """H2 molecules (0.74 A, along z) on fcc sites, shuffled and wrapped: every atom paired, every bond 0.74 A, the
    centres on the fcc lattice (Fm-3m); a simple cubic lattice of atoms (no mutual pair shorter than the bound) pairs none."""
    fcc = bulk("H", "fcc", a=4.0, cubic=True).repeat(2)
    cell = np.asarray(fcc.cell)
    atoms = np.concatenate([fcc.positions + [0.0, 0.0, 0.37], fcc.positions - [0.0, 0.0, 0.37]])
    atoms = atoms[np.random.default_rng(0).permutation(len(atoms))]
    frac = np.linalg.solve(cell.T, atoms.T).T
    atoms = (frac % 1.0) @ cell  # molecules cut by the cell boundary
    molecules = molecular_centres(atoms, cell, 1.0)
    assert molecules.paired_fraction == 1.0 and len(molecules.pairs) == 32
    np.testing.assert_allclose(molecules.bond_lengths_A, 0.74, atol=1e-12)
    assert space_group(molecules.centres_A, cell, [1] * 32) == ("Fm-3m", 225)
    sc = bulk("H", "sc", a=1.5).repeat(3)
    assert molecular_centres(sc.positions, np.asarray(sc.cell), 1.0).paired_fraction == 0.0
    with pytest.raises(ValueError):
        molecular_centres(sc.positions, np.asarray(sc.cell), 0.0)


def test_powder_xrd_peaks_obey_bragg():
    """Simple cubic lattice (a = 3 A) at lambda = 1 A: the (100), (110), (111) peaks at 2 arcsin(lambda sqrt(h^2+k^2+l^2) / 2a)."""
    pytest.importorskip("pymatgen")
    from scipy.signal import find_peaks

    sc = bulk("H", "sc", a=3.0).repeat(2)
    two_theta, intensity = powder_xrd(sc.positions, np.asarray(sc.cell), "H", wavelength_A=1.0)
    peaks = two_theta[find_peaks(intensity, height=5.0)[0]][:3]
    expected = np.degrees(2 * np.arcsin(np.sqrt([1.0, 2.0, 3.0]) / 6.0))
    np.testing.assert_allclose(peaks, expected, atol=0.03)  # the 0.02-degree grid
    assert intensity.max() == pytest.approx(100.0)
