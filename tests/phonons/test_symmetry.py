"""Space-group projection of force-constant matrices."""

import numpy as np

import crystals
from thermoflow.phonons.symmetry import space_group_operations, symmetrise_force_constants


def test_projection_keeps_the_harmonic_hessian_and_removes_symmetry_breaking_noise():
    """Tetragonal fcc neon supercell (8 atoms, 21 modes): the harmonic curvature diag(omega^2) in
    its own modes is invariant; a random symmetric matrix loses most of its norm, stays symmetric,
    and its projection is invariant under every operation (idempotent); the projection is linear
    and self-adjoint (an orthogonal projector)."""
    _, modes = crystals.anharmonic_neon()
    ops = space_group_operations(modes)
    assert len(ops[0]) == 8 and len(ops[1]) == 16  # 8 pure translations (fcc centring x 2 cells) x point group 4/mmm
    exact = np.diag(modes.omega**2)
    np.testing.assert_allclose(symmetrise_force_constants(exact, modes, ops), exact, atol=1e-12 * exact.max())

    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=exact.shape) for _ in range(2))
    a, b = (a + a.T) / 2, (b + b.T) / 2
    pa, pb = symmetrise_force_constants(a, modes, ops), symmetrise_force_constants(b, modes, ops)
    assert np.linalg.norm(pa) < 0.5 * np.linalg.norm(a)
    np.testing.assert_allclose(pa, pa.T, atol=1e-12)
    np.testing.assert_allclose(symmetrise_force_constants(pa, modes, ops), pa, atol=1e-12)
    assert abs(np.sum(pa * b) - np.sum(a * pb)) < 1e-12 * np.linalg.norm(a) * np.linalg.norm(b)

    # invariance under each operation: Phi_c(p(i), p(j)) = R Phi_c(i, j) R^T in Cartesian blocks
    n = modes.n_atoms
    cart = (modes.modes @ pa @ modes.modes.T).reshape(n, 3, n, 3)
    for group in ops:
        for rot, perm in group:
            moved = np.empty_like(cart)
            moved[np.ix_(perm, range(3), perm, range(3))] = np.einsum("xa,iajb,yb->ixjy", rot, cart, rot)
            np.testing.assert_allclose(moved, cart, atol=1e-12)


def test_vector_projection_keeps_the_free_wyckoff_coordinate_only():
    """cI16 (I-43d, 16c (x, x, x), 16 atoms, on a Lennard-Jones potential for its modes): the only
    invariant displacement is the change of x, which the projection keeps; any vector goes onto it
    (an orthogonal projector: idempotent, self-adjoint). In fcc every site is fixed: a mean force
    projects to zero, and the SCHA with a relaxed centroid leaves the atoms where they are."""
    from ase.spacegroup import crystal

    from thermoflow.phonons import compute_harmonic_modes, optimise_gaussian
    from thermoflow.phonons.symmetry import symmetrise_vector
    from thermoflow.potentials import make_lennard_jones_energy_fn
    from thermoflow.units import KB_EV_PER_K

    def ci16(x):
        return crystal("Li", [(x, x, x)], spacegroup=220, cellpar=[6.0, 6.0, 6.0, 90, 90, 90])

    x, h = 0.045, 1e-6
    atoms = ci16(x)
    assert len(atoms) == 16
    lj = make_lennard_jones_energy_fn(0.01, 2.2, 4.0, atoms.cell.array)
    modes = compute_harmonic_modes(lj, atoms.get_positions(), atoms.cell.array, atoms.get_masses())
    ops = space_group_operations(modes)
    d = (ci16(x + h).get_positions() - ci16(x - h).get_positions()).reshape(-1) / (2 * h)
    v_x = modes.modes.T @ (np.sqrt(atoms.get_masses()[0]) * d)
    v_x /= np.linalg.norm(v_x)
    np.testing.assert_allclose(symmetrise_vector(v_x, modes, ops), v_x, atol=1e-10)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, modes.n_modes))
    pa = symmetrise_vector(a, modes, ops)
    np.testing.assert_allclose(pa, (a @ v_x) * v_x, atol=1e-10)
    assert abs(pa @ b - a @ symmetrise_vector(b, modes, ops)) < 1e-10

    energy_fn, fcc = crystals.anharmonic_neon()
    assert np.abs(symmetrise_vector(a[:fcc.n_modes], fcc)).max() < 1e-12
    g = optimise_gaussian(energy_fn, fcc, KB_EV_PER_K * 20.0, n_samples=64, n_iterations=3, n_eval_samples=64, relax_centroid=True)
    assert np.abs(g.centroid_shift_A).max() < 1e-12
    np.testing.assert_allclose(g.modes.reference_positions, fcc.reference_positions, atol=1e-12)
