"""The potential contract and quantities derived from it by automatic differentiation.

A potential is a pure JAX function ``energy_fn(positions, cell) -> energy``:

* ``positions``: (n_atoms, 3) Cartesian positions, Angstrom (atoms may sit outside the cell);
* ``cell``: (3, 3) lattice vectors as rows, Angstrom;
* returns the Born-Oppenheimer energy, a scalar in eV.

It must be jit-, vmap- and grad-safe; forces, Hessians and the virial below follow from it.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

EnergyFn = Callable[[jax.Array, jax.Array], jax.Array]


def forces(energy_fn: EnergyFn, positions: jax.Array, cell: jax.Array) -> jax.Array:
    """Forces -dE/dR, shape (n_atoms, 3), eV/Angstrom."""
    return -jax.grad(energy_fn)(positions, cell)


def hessian(energy_fn: EnergyFn, positions: jax.Array, cell: jax.Array) -> jax.Array:
    """Cartesian Hessian d^2E / dR_ia dR_jb, shape (3 n_atoms, 3 n_atoms), eV/Angstrom^2.

    Symmetrised, (H + H^T) / 2, to remove round-off asymmetry.
    """
    n = positions.shape[0]
    h = jax.jit(jax.hessian(energy_fn))(positions, cell).reshape(3 * n, 3 * n)
    return 0.5 * (h + h.T)


def virial(energy_fn: EnergyFn, positions: jax.Array, cell: jax.Array) -> jax.Array:
    """Virial tensor, shape (3, 3), eV.

    Computed as ``W = -dE/d(epsilon)`` at zero strain, where the homogeneous strain
    ``epsilon`` deforms positions and cell together, ``R -> R (1 + epsilon)`` and
    ``h -> h (1 + epsilon)``. This is deepmd-kit's and ASE's convention
    (stress = -W / volume).
    """

    def strained_energy(strain):
        deform = jnp.eye(3, dtype=positions.dtype) + strain
        return energy_fn(positions @ deform, cell @ deform)

    w = -jax.grad(strained_energy)(jnp.zeros((3, 3), dtype=positions.dtype))
    return 0.5 * (w + w.T)
