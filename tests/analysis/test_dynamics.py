"""MSD, diffusion, permutation-reordered MSD', VACF and VDOS on trajectories with known answers."""

import numpy as np
import pytest
from ase.build import bulk
from ase.geometry import find_mic, minkowski_reduce

from thermoflow.analysis import dynamics

#: a strongly skewed triclinic cell (A): angles far from 90 degrees, Minkowski reduction changes the basis
SKEWED = np.array([[5.0, 0.0, 0.0], [4.2, 2.6, 0.0], [-3.9, 1.4, 3.5]])


def _shortest_lattice_vector(cell):
    return np.linalg.norm(minkowski_reduce(cell)[0], axis=1).min()


def test_fft_msd_equals_the_direct_average_over_time_origins():
    """The FFT algorithm reproduces (1/(M - m)) sum_k |r(k + m) - r(k)|^2 lag by lag."""
    x = np.random.default_rng(1).normal(size=(60, 5, 3)).cumsum(axis=0)
    direct = np.array([[np.mean(np.sum((x[m:, i] - x[:60 - m, i]) ** 2, axis=-1)) for i in range(5)] for m in range(60)])
    np.testing.assert_allclose(dynamics.atom_msd(x), direct, rtol=1e-10, atol=1e-10)
    species = np.array(["H", "H", "Li", "H", "Li"])
    per_species = dynamics.mean_square_displacement(x, species)
    np.testing.assert_allclose(per_species, np.stack([direct[:, [0, 1, 3]].mean(1), direct[:, [2, 4]].mean(1)]), rtol=1e-10, atol=1e-10)


def test_minimum_image_in_a_triclinic_cell():
    """u shorter than half the shortest lattice vector is its own minimum image: u + n . cell -> u
    for large integer n (up to 40 cells away), in agreement with ASE's find_mic; and a trajectory
    wrapped into the skewed cell unwraps back to the continuous one."""
    rng = np.random.default_rng(2)
    half = 0.5 * _shortest_lattice_vector(SKEWED)
    u = rng.normal(size=(500, 3))
    u *= (0.999 * half * rng.uniform(size=500) / np.linalg.norm(u, axis=1))[:, None]
    v = u + rng.integers(-40, 41, size=(500, 3)) @ SKEWED
    np.testing.assert_allclose(dynamics.minimum_image(v, SKEWED), u, atol=1e-9)
    np.testing.assert_allclose(dynamics.minimum_image(v, SKEWED), find_mic(v, SKEWED)[0], atol=1e-9)
    # a naive fractional rounding in the unreduced cell fails on this cell (the test can tell)
    frac = np.linalg.solve(SKEWED.T, v.T).T
    assert np.abs((frac - np.round(frac)) @ SKEWED - u).max() > 0.1

    steps = rng.normal(scale=0.1 * half, size=(100, 6, 3))
    continuous = rng.uniform(0, 3, size=(6, 3)) + steps.cumsum(axis=0)
    frac = np.linalg.solve(SKEWED.T, continuous.reshape(-1, 3).T).T
    wrapped = ((frac % 1.0) @ SKEWED).reshape(continuous.shape)
    assert np.abs(wrapped - continuous).max() > 3.0
    unwrapped = dynamics.unwrap_positions(wrapped, SKEWED)
    np.testing.assert_allclose(unwrapped - unwrapped[0] + continuous[0], continuous, atol=1e-9)


def _brownian(seed, n_particles=64, n_frames=2000, dt_ps=0.01, D=0.5):
    """Independent random walks: Gaussian steps of variance 2 D dt per component, A."""
    rng = np.random.default_rng(seed)
    return rng.normal(scale=np.sqrt(2 * D * dt_ps), size=(n_frames, n_particles, 3)).cumsum(axis=0)


def test_brownian_diffusion_coefficient_within_its_error_bar():
    """Random walks of D = 0.5 A^2/ps: the fitted D agrees with the exact value within 4 error
    bars. The centre-of-mass drift removal makes the exact value D (1 - 1/N) (each walker is
    measured against the mean of N). Over 24 seeds the block error bar matches the scatter of D."""
    D, n, dt = 0.5, 64, 0.01
    exact = D * (1 - 1 / n)
    species = np.array(["A"] * n)
    estimates, errors = [], []
    for seed in range(24):
        x = dynamics.remove_drift(_brownian(seed, n_particles=n, dt_ps=dt, D=D))
        res = dynamics.diffusion_coefficient(x, species, dt, window_ps=(0.5, 2.5), n_blocks=5)
        estimates.append(res.D_A2_per_ps[0])
        errors.append(res.D_stderr_A2_per_ps[0])
        if seed == 0:
            assert abs(res.D_A2_per_ps[0] - exact) < 4 * res.D_stderr_A2_per_ps[0]
            assert res.D_stderr_A2_per_ps[0] < 0.05 * exact
            assert res.D_cm2_per_s[0] == pytest.approx(1e-4 * res.D_A2_per_ps[0])
    estimates, errors = np.array(estimates), np.array(errors)
    assert abs(estimates.mean() - exact) < 4 * estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert 0.6 < estimates.std(ddof=1) / np.sqrt(np.mean(errors**2)) < 1.6
    # without drift removal the same walks give D itself
    raw = dynamics.diffusion_coefficient(_brownian(0, n_particles=n, dt_ps=dt, D=D), species, dt, (0.5, 2.5))
    assert abs(raw.D_A2_per_ps[0] - D) < 4 * raw.D_stderr_A2_per_ps[0]


def test_diffusion_window_beyond_a_block_is_refused():
    x = _brownian(0, n_particles=4, n_frames=100)
    with pytest.raises(ValueError, match="within one block's duration"):
        dynamics.diffusion_coefficient(x, ["A"] * 4, 0.01, window_ps=(0.1, 0.5), n_blocks=5)


def _rocksalt():
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True).repeat((2, 2, 1))  # 32 atoms, 16 Na + 16 Cl
    return atoms.get_positions(), atoms.cell.array, np.array(atoms.get_chemical_symbols())


def _neighbour_swaps(positions, species, kind):
    """A permutation exchanging disjoint pairs of nearest like neighbours of ``kind``."""
    perm = np.arange(len(species))
    free = set(np.flatnonzero(species == kind))
    for i in sorted(free):
        if i not in free:
            continue
        free.discard(i)
        others = sorted(free)
        if not others:
            break
        j = others[int(np.argmin(np.linalg.norm(positions[others] - positions[i], axis=1)))]
        free.discard(j)
        perm[i], perm[j] = j, i
    return perm


def test_site_exchange_leaves_the_reordered_msd_at_zero():
    """A static rocksalt crystal whose like atoms swap sites with neighbours halfway through (and
    one atom jumps by a lattice vector, a wrap): MSD' = 0 at every lag while the MSD is large.
    With vibrations, MSD' of the exchanging crystal equals that of the non-exchanging one exactly;
    swapping Na with Cl (across species) is not a permutation MSD' may undo."""
    sites, cell, species = _rocksalt()
    n_frames = 40
    perm = _neighbour_swaps(sites, species, "Na")[_neighbour_swaps(sites, species, "Cl")]
    static = np.repeat(sites[None], n_frames, axis=0)
    exchanged = static.copy()
    exchanged[20:] = sites[perm]
    exchanged[30:, 5] += cell[1]
    unwrapped = dynamics.unwrap_positions(exchanged, cell)
    msd = dynamics.mean_square_displacement(unwrapped, species)
    reordered = dynamics.reordered_msd(unwrapped, cell, species, n_origins=4)
    assert np.abs(reordered).max() < 1e-20
    nn = 5.64 / np.sqrt(2)
    assert msd[:, 20:].max() > 0.5 * nn**2  # the jump of a neighbour distance shows in the MSD

    noise = np.random.default_rng(3).normal(scale=0.1, size=static.shape)
    vibrating = static + noise
    vibrating_exchanged = vibrating.copy()
    vibrating_exchanged[20:] = vibrating[20:][:, perm]
    plain = dynamics.reordered_msd(vibrating, cell, species, n_origins=1)
    swapped = dynamics.reordered_msd(vibrating_exchanged, cell, species, n_origins=1)
    np.testing.assert_allclose(swapped, plain, rtol=1e-12, atol=1e-14)
    from_origin = np.sum((vibrating - vibrating[0]) ** 2, axis=-1)  # (frames, atoms): the identity permutation
    identity = np.stack([from_origin[:, species == s].mean(axis=1) for s in ("Na", "Cl")])
    assert np.all(plain <= identity + 1e-12)
    assert plain[:, 1:].mean() > 0.5 * 6 * 0.1**2  # ~ 2 x 3 sigma^2 for independent vibrations

    cross = static.copy()
    na, cl = np.flatnonzero(species == "Na")[0], np.flatnonzero(species == "Cl")[0]
    cross[20:, [na, cl]] = sites[[cl, na]]
    assert dynamics.reordered_msd(cross, cell, species, n_origins=1)[:, 20:].min() > 0.5 * nn**2 / 16


def test_reordered_msd_grows_under_diffusion():
    """Random walks started on the lattice: MSD' rises from 0 towards the value of random sites,
    far above what site exchange allows, and stays below the MSD."""
    sites, cell, species = _rocksalt()
    walk = sites + _brownian(4, n_particles=len(sites), n_frames=200, dt_ps=0.01, D=1.0)
    reordered = dynamics.reordered_msd(walk, cell, species, n_origins=1)
    msd = dynamics.mean_square_displacement(walk, species)
    assert reordered[:, -1].min() > 1.0  # A^2: sites lost
    assert np.all(reordered[:, -1] < msd[:, -1])


@pytest.mark.parametrize("finite_differences", [False, True], ids=["velocities", "finite-differences"])
def test_vdos_of_harmonic_oscillators_peaks_at_their_frequencies(finite_differences):
    """x(t) = A cos(2 pi nu t + phi) per component, species A at 3 THz, B at 7.5 THz: each partial
    VDOS peaks at its frequency (within one grid step) with > 90 % of its weight within 0.5 THz,
    and integrates to 3 N_s (a check of the transform's normalisation against C(0))."""
    rng = np.random.default_rng(5)
    dt, n_frames = 0.01, 2000
    t = np.arange(n_frames) * dt
    species = np.array(["A"] * 6 + ["B"] * 4)
    nu = np.where(species == "A", 3.0, 7.5)[:, None]  # THz
    amplitude, phase = rng.uniform(0.05, 0.2, size=(10, 3)), rng.uniform(0, 2 * np.pi, size=(10, 3))
    arg = 2 * np.pi * nu[None] * t[:, None, None] + phase[None]
    if finite_differences:
        velocities = dynamics.finite_difference_velocities(amplitude * np.cos(arg), dt)
    else:
        velocities = -2 * np.pi * nu[None] * amplitude * np.sin(arg)  # A/ps
    vacf = dynamics.velocity_autocorrelation(velocities, species)
    dos = dynamics.vibrational_dos(vacf, dt, [6, 4])
    f = dos.frequency_THz
    step = f[1] - f[0]
    for s, (target, count) in enumerate([(3.0, 6), (7.5, 4)]):
        assert abs(f[np.argmax(dos.dos_per_THz[s])] - target) <= step + 1e-12
        assert np.trapezoid(dos.dos_per_THz[s], f) == pytest.approx(3 * count, rel=1e-10)
        near = np.abs(f - target) <= 0.5
        assert np.trapezoid(np.where(near, dos.dos_per_THz[s], 0.0), f) > 0.9 * 3 * count
    assert f[-1] == pytest.approx(1 / (2 * dt))
