"""Small crystals shared by the tests (importable: tests/ is on sys.path, see conftest.py)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import scipy.linalg
from ase import Atoms

from thermoflow.phonons import HarmonicModes, compute_harmonic_modes
from thermoflow.potentials import hessian, make_harmonic_energy_fn, make_lennard_jones_energy_fn, make_plugin_energy_fn
from thermoflow.structures import build_lattice, to_arrays


def harmonic_neon():
    """fcc neon (conventional cell: 4 atoms, 9 modes, two degenerate shells of 6 and 3) with the
    exact harmonic expansion of its Lennard-Jones potential: ``(energy_fn, exact modes)``."""
    pos, cell, masses = to_arrays(build_lattice("Ne", "fcc", a_A=4.464))
    lj = make_lennard_jones_energy_fn(0.0031, 2.74, 8.2, cell)
    fc = np.asarray(hessian(lj, jnp.asarray(pos), jnp.asarray(cell)))
    e0 = float(lj(jnp.asarray(pos), jnp.asarray(cell)))
    energy_fn = make_harmonic_energy_fn(pos, fc, e0)
    return energy_fn, compute_harmonic_modes(energy_fn, pos, cell, masses)


def mismatched_reference(modes: HarmonicModes, frequency_scale=0.8, angle=0.4, seed=0) -> HarmonicModes:
    """A deliberately wrong harmonic reference: frequencies x ``frequency_scale`` and the
    polarisation vectors rotated by a random orthogonal matrix exp(A), A antisymmetric with
    entries ~ ``angle``, which mixes modes within and across degenerate subspaces."""
    a = np.random.default_rng(seed).normal(size=(modes.n_modes, modes.n_modes))
    rotation = scipy.linalg.expm(angle * (a - a.T) / 2)
    return dataclasses.replace(modes, omega=frequency_scale * modes.omega, modes=modes.modes @ rotation)


#: the anharmonic atom of the exact-diagonalisation tests: k (eV/A^2), lam, mu (eV/A^4), mass (amu)
ANHARMONIC_ATOM = {"spring_eV_per_A2": 1.0, "quartic_eV_per_A4": 2.0, "coupling_eV_per_A4": 2.0}
ANHARMONIC_ATOM_MASS = 1.0


def anharmonic_atom():
    """One atom in V = k/2 |u|^2 + lam sum_d u_d^4 + mu sum_{d<e} u_d^2 u_e^2 (the ``python``
    plug-in ``anharmonic_models:make_anharmonic_atom``): ``(energy_fn, harmonic modes)``, 3 modes."""
    atoms = Atoms("H", positions=[[0.0, 0.0, 0.0]], cell=10.0 * np.eye(3), pbc=True, masses=[ANHARMONIC_ATOM_MASS])
    energy_fn = make_plugin_energy_fn("anharmonic_models:make_anharmonic_atom", ANHARMONIC_ATOM, atoms=atoms)
    return energy_fn, compute_harmonic_modes(energy_fn, atoms.get_positions(), atoms.cell.array, atoms.get_masses())
