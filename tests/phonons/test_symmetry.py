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
