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


def anharmonic_neon():
    """fcc neon (conventional cell doubled along z: 8 atoms, 21 modes, tetragonal supercell) on its
    full Lennard-Jones potential: ``(energy_fn, harmonic modes)``. (Cells whose phonons are all at
    time-reversal-invariant momenta, e.g. 2 x 2 x 2 primitive cells, have no cubic coupling.)"""
    from ase.build import bulk

    atoms = bulk("Ne", "fcc", a=4.464, cubic=True).repeat((1, 1, 2))
    pos, cell, masses = atoms.get_positions(), atoms.cell.array, atoms.get_masses()
    lj = make_lennard_jones_energy_fn(0.0031, 2.74, 8.2, cell)
    return lj, compute_harmonic_modes(lj, pos, cell, masses)


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


#: the cubic triad: one atom (mass amu) with springs k_x, k_y, k_z (eV/A^2), V3 = g x y z (eV/A^3)
#: and a quartic confinement lam sum_d u_d^4 (eV/A^4) that keeps it bounded
CUBIC_TRIAD = {"springs": (1.0, 1.7, 2.6), "g": 1.2, "quartic": 0.3, "mass": 2.0}


def cubic_triad(g=None, quartic=None):
    """One atom in V = sum_d k_d u_d^2 / 2 + g u_x u_y u_z + lam sum_d u_d^4 (distinct
    frequencies, one distinct-mode cubic coupling): ``(energy_fn, harmonic modes)``, 3 modes."""
    springs = jnp.asarray(CUBIC_TRIAD["springs"])
    g = CUBIC_TRIAD["g"] if g is None else g
    quartic = CUBIC_TRIAD["quartic"] if quartic is None else quartic
    mass = CUBIC_TRIAD["mass"]

    def energy_fn(positions, cell):
        u = positions[0]
        return 0.5 * jnp.sum(springs * u**2) + g * u[0] * u[1] * u[2] + quartic * jnp.sum(u**4)

    pos, cell = np.zeros((1, 3)), 10.0 * np.eye(3)
    return energy_fn, compute_harmonic_modes(energy_fn, pos, cell, np.array([mass]))


def cubic_triad_exact_free_energy(kT, g=None, quartic=None, n_basis=14):
    """-kT ln Tr exp(-H/kT) of the cubic triad by exact diagonalisation in a product
    harmonic-oscillator basis, eV."""
    from thermoflow.units import HBAR_EV

    g = CUBIC_TRIAD["g"] if g is None else g
    quartic = CUBIC_TRIAD["quartic"] if quartic is None else quartic
    mass = CUBIC_TRIAD["mass"]
    big = n_basis + 4
    a = np.diag(np.sqrt(np.arange(1, big)), 1)
    ops = []
    for k in CUBIC_TRIAD["springs"]:
        omega = np.sqrt(k / mass)
        x = np.sqrt(HBAR_EV / (2 * mass * omega)) * (a + a.T)
        h = np.diag(HBAR_EV * omega * (np.arange(n_basis) + 0.5)) + quartic * np.linalg.matrix_power(x, 4)[:n_basis, :n_basis]
        ops.append((x[:n_basis, :n_basis], h))
    eye = np.eye(n_basis)
    (x0, h0), (x1, h1), (x2, h2) = ops
    h = np.kron(np.kron(h0, eye), eye) + np.kron(np.kron(eye, h1), eye) + np.kron(np.kron(eye, eye), h2)
    h += g * np.kron(np.kron(x0, x1), x2)
    e = np.linalg.eigvalsh(h)
    return float(e[0] - kT * np.log(np.sum(np.exp(-(e - e[0]) / kT))))
