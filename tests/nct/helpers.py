"""Small hand-built systems for the NCT tests."""

import jax
import numpy as np

from thermoflow.phonons.modes import HarmonicModes


def planar_modes(omega, mass=1.0):
    """One atom moving in x and y only: two modes along x and y with the given frequencies."""
    omega = np.asarray(omega, dtype=np.float64)
    return HarmonicModes(
        reference_positions=np.zeros((1, 3)),
        cell=10.0 * np.eye(3),
        masses=np.array([mass]),
        energy0_eV=0.0,
        omega=omega,
        modes=np.eye(3)[:, :2],
        imaginary=np.zeros(2, dtype=bool),
        n_translations_removed=0,
    )


def perturbed_params(flow, seed=0, scale=0.2):
    """Flow parameters moved away from the identity (all leaves get Gaussian noise)."""
    params = flow.init(jax.random.PRNGKey(seed))
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    leaves = [leaf + scale * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(tree, leaves)
