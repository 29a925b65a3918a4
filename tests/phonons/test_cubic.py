"""Cubic force constants by Stein's lemma and the bubble free energy, against exact references."""

import itertools

import numpy as np
import pytest

import crystals
from thermoflow.phonons.cubic import bubble_free_energy, cubic_force_constants
from thermoflow.units import KB_EV_PER_K

KT = KB_EV_PER_K * 600.0  # kT ~ hbar omega: the thermal (difference-frequency) terms matter


def triad_phi3(g, modes):
    """Exact Phi_abc of g u_x u_y u_z in the mass-weighted modes of the triad."""
    mass = crystals.CUBIC_TRIAD["mass"]
    cart = np.zeros((3, 3, 3))
    for p in itertools.permutations(range(3)):
        cart[p] = g / mass**1.5
    e = modes.modes  # (3, 3): Cartesian x mode
    return np.einsum("ijk,ia,jb,kc->abc", cart, e, e, e)


def test_bubble_formula_is_second_order_perturbation_theory():
    """F3 equals the g^2 term of the exact (diagonalised) free energy at finite temperature."""
    g = 0.02
    _, modes = crystals.cubic_triad(g=g, quartic=0.0)
    f = {s: crystals.cubic_triad_exact_free_energy(KT, g=s * g, quartic=0.0, n_basis=12) for s in (-1, 0, 1)}
    second_order = 0.5 * (f[1] + f[-1] - 2 * f[0])
    f3 = bubble_free_energy(triad_phi3(g, modes), modes.omega, KT)
    print(f"exact g^2 term {second_order:.6e} eV, bubble formula {f3:.6e} eV")
    assert second_order < 0
    assert f3 == pytest.approx(second_order, rel=2e-3)


@pytest.mark.parametrize("symmetrise", [False, True])
def test_stein_cubic_force_constants_are_exact_for_cubic_plus_quartic(symmetrise, caplog):
    """Antithetic whitened samples cancel the even (harmonic, quartic) parts of the Hessian and
    reproduce the cubic part exactly: <d^3 V> = Phi3 since d^3 of the quartic is odd. The
    triad's springs break the cubic symmetry of its box: symmetrisation must notice and be skipped."""
    energy_fn, modes = crystals.cubic_triad()
    cubic = cubic_force_constants(energy_fn, modes, KT, n_samples=96, n_groups=4, seed=3, symmetrise=symmetrise)
    assert ("does not have the symmetry" in caplog.text) == symmetrise
    exact = triad_phi3(crystals.CUBIC_TRIAD["g"], modes)
    assert np.max(np.abs(cubic.phi3 - exact)) < 1e-10 * np.max(np.abs(exact))
    # noise-free groups: the unbiased F3 equals the plug-in value, with a vanishing error bar
    assert cubic.bubble_free_energy_eV == pytest.approx(bubble_free_energy(exact, modes.omega, KT), rel=1e-9)
    assert cubic.bubble_free_energy_stderr_eV < 1e-9 * abs(cubic.bubble_free_energy_eV)


@pytest.mark.parametrize("kwargs", [{"n_groups": 2}, {"n_samples": 100, "n_groups": 4}])
def test_cubic_force_constants_reject_bad_arguments(kwargs):
    energy_fn, modes = crystals.cubic_triad()
    with pytest.raises(ValueError):
        cubic_force_constants(energy_fn, modes, KT, **kwargs)


def test_symmetrisation_keeps_invariant_and_removes_symmetry_breaking_parts():
    """On fcc neon (4 atoms) the exact cubic force constants at R0 are invariant; a random tensor
    is not; the projector is idempotent."""
    import jax
    import jax.numpy as jnp

    from thermoflow.phonons.cubic import symmetrise_cubic
    from thermoflow.phonons.symmetry import potential_has_symmetry, space_group_operations
    from thermoflow.phonons.scha import make_mode_potential

    energy_fn, modes = crystals.anharmonic_neon()
    assert potential_has_symmetry(energy_fn, modes, space_group_operations(modes))
    potential = make_mode_potential(energy_fn, modes)
    hvp = jax.jit(lambda v: jax.jvp(jax.hessian(potential), (jnp.zeros(modes.n_modes),), (v,))[1])
    exact = np.stack([np.asarray(hvp(v)) for v in jnp.eye(modes.n_modes)])
    assert np.max(np.abs(symmetrise_cubic(exact, modes) - exact)) < 1e-12 * np.max(np.abs(exact))
    noise = np.random.default_rng(0).normal(size=exact.shape)
    noise = (noise + noise.transpose(0, 2, 1) + noise.transpose(1, 0, 2) + noise.transpose(1, 2, 0) + noise.transpose(2, 0, 1) + noise.transpose(2, 1, 0)) / 6
    projected = symmetrise_cubic(noise, modes)
    assert np.linalg.norm(projected) < 0.5 * np.linalg.norm(noise)
    assert np.allclose(symmetrise_cubic(projected, modes), projected, atol=1e-12)


def _symmetrise_cubic_plain(phi3, modes, operations):
    """The space-group average over every operation on the whole Cartesian tensor (one pass per
    operation): the reference for the reduced algorithm of :func:`symmetrise_cubic`."""
    e = np.asarray(modes.modes)
    n = modes.n_atoms
    cart = np.einsum("ia,jb,kc,abc->ijk", e, e, e, phi3, optimize=True).reshape(n, 3, n, 3, n, 3)
    for group in operations:
        acc = np.zeros_like(cart)
        for rot, perm in group:
            inv = np.argsort(perm)
            acc += np.einsum("xa,yb,zc,iajbkc->ixjykz", rot, rot, rot, cart[inv][:, :, inv][:, :, :, :, inv], optimize=True)
        cart = acc / len(group)
    return np.einsum("ia,jb,kc,ijk->abc", e, e, e, cart.reshape(3 * n, 3 * n, 3 * n), optimize=True)


@pytest.mark.parametrize("crystal_name", ["fcc-conventional-doubled", "bcc-2x2x2", "cI16"])
def test_reduced_symmetrisation_equals_the_average_over_every_operation(crystal_name):
    """The primitive-slice symmetrisation (translation orbits' representatives only) equals the
    plain average over all translations and cosets on a random symmetric tensor, for a
    symmorphic cell with 1 atom per primitive cell (fcc neon 8 atoms, bcc 16) and the
    non-symmorphic cI16 (I-43d: screw axes, 8 atoms per primitive cell)."""
    from ase.build import bulk
    from ase.spacegroup import crystal

    from thermoflow.phonons import compute_harmonic_modes
    from thermoflow.phonons.cubic import symmetrise_cubic
    from thermoflow.phonons.symmetry import space_group_operations
    from thermoflow.potentials import make_lennard_jones_energy_fn

    atoms = {
        "fcc-conventional-doubled": lambda: bulk("Ne", "fcc", a=4.464, cubic=True).repeat((1, 1, 2)),
        "bcc-2x2x2": lambda: bulk("Li", "bcc", a=3.4, cubic=True).repeat(2),
        "cI16": lambda: crystal("Li", [(0.045, 0.045, 0.045)], spacegroup=220, cellpar=[6.0] * 3 + [90] * 3),
    }[crystal_name]()
    lj = make_lennard_jones_energy_fn(0.01, 2.2, 4.0, atoms.cell.array)
    modes = compute_harmonic_modes(lj, atoms.get_positions(), atoms.cell.array, atoms.get_masses())
    ops = space_group_operations(modes)
    noise = np.random.default_rng(3).normal(size=(modes.n_modes,) * 3)
    noise = sum(noise.transpose(p) for p in [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]) / 6
    reference = _symmetrise_cubic_plain(noise, modes, ops)
    assert np.linalg.norm(reference) < 0.5 * np.linalg.norm(noise)
    np.testing.assert_allclose(symmetrise_cubic(noise, modes, ops), reference, atol=1e-12 * np.abs(noise).max())


def test_interrupted_cubic_force_constants_resume_their_groups(tmp_path, monkeypatch):
    """Each group's estimate is stored as it is done: after an interruption the same call computes
    only the missing groups and returns the uninterrupted result bit for bit; a group file of other
    settings is refused. A quintic term makes the groups differ (the triad alone is noise-free)."""
    from thermoflow.phonons import cubic as cubic_module

    triad, modes = crystals.cubic_triad()
    r0 = modes.reference_positions

    def energy_fn(positions, cell):
        return triad(positions, cell) + 2e-3 * (((positions - r0) / 0.1) ** 5).sum()

    settings = dict(n_samples=32, n_groups=4, seed=3, symmetrise=False)
    full = cubic_force_constants(energy_fn, modes, KT, **settings)

    class Interrupted(Exception):
        pass

    save, saved = cubic_module.save_progress, []

    def save_then_stop(*args):
        save(*args)
        saved.append(args[2])
        if len(saved) == 2:
            raise Interrupted

    monkeypatch.setattr(cubic_module, "save_progress", save_then_stop)
    with pytest.raises(Interrupted):
        cubic_force_constants(energy_fn, modes, KT, progress_dir=tmp_path / "groups", **settings)
    sample, drawn = cubic_module.antithetic_normals, []
    monkeypatch.setattr(cubic_module, "save_progress", save)
    monkeypatch.setattr(cubic_module, "antithetic_normals", lambda *args: (drawn.append(1), sample(*args))[1])
    resumed = cubic_force_constants(energy_fn, modes, KT, progress_dir=tmp_path / "groups", **settings)
    assert len(drawn) == 2  # groups 3 and 4 only
    assert not np.allclose(resumed.phi3, triad_phi3(crystals.CUBIC_TRIAD["g"], modes))  # the quintic term is felt
    np.testing.assert_array_equal(resumed.phi3, full.phi3)
    assert resumed.bubble_free_energy_eV == full.bubble_free_energy_eV
    assert resumed.bubble_free_energy_stderr_eV == full.bubble_free_energy_stderr_eV > 0
    with pytest.raises(ValueError, match="other settings \\(seed\\)"):
        cubic_force_constants(energy_fn, modes, KT, progress_dir=tmp_path / "groups", **{**settings, "seed": 4})
