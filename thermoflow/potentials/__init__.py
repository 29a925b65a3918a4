"""Potentials: pure JAX ``energy_fn(positions, cell) -> eV`` and their derivatives."""

from thermoflow.potentials.ase_bridge import EnergyFnCalculator
from thermoflow.potentials.base import EnergyFn, forces, hessian, virial
from thermoflow.potentials.harmonic import make_einstein_energy_fn, make_harmonic_energy_fn
from thermoflow.potentials.neighbors import NeighborList, NeighborListFns, allocate_neighbor_list, make_neighbor_list
from thermoflow.potentials.pair import (
    lattice_images,
    lennard_jones_pair_fn,
    make_lennard_jones_energy_fn,
    make_morse_energy_fn,
    make_pair_energy_fn,
    make_pair_energy_fn_neighbors,
    morse_pair_fn,
    with_fresh_neighbors,
)
from thermoflow.potentials.plugin import load_target, make_plugin_energy_fn

__all__ = [
    "EnergyFn",
    "NeighborList",
    "NeighborListFns",
    "allocate_neighbor_list",
    "lennard_jones_pair_fn",
    "make_neighbor_list",
    "make_pair_energy_fn_neighbors",
    "morse_pair_fn",
    "with_fresh_neighbors",
    "EnergyFnCalculator",
    "forces",
    "hessian",
    "virial",
    "lattice_images",
    "load_target",
    "make_einstein_energy_fn",
    "make_harmonic_energy_fn",
    "make_lennard_jones_energy_fn",
    "make_morse_energy_fn",
    "make_pair_energy_fn",
    "make_plugin_energy_fn",
]
