"""Molecular dynamics: velocity Verlet, Langevin BAOAB, the quantum thermal bath (QTB) and adQTB."""

from thermoflow.md.integrators import (
    MDState,
    NoiseSource,
    kinetic_energy,
    make_block_fn,
    make_langevin,
    make_nve,
    make_white_noise,
    maxwell_boltzmann_velocities,
    temperature_K,
)
from thermoflow.md.qtb import QTBState, deviation_spectrum, make_qtb_noise, quantum_spectrum

__all__ = [
    "MDState",
    "NoiseSource",
    "QTBState",
    "deviation_spectrum",
    "kinetic_energy",
    "make_block_fn",
    "make_langevin",
    "make_nve",
    "make_qtb_noise",
    "make_white_noise",
    "maxwell_boltzmann_velocities",
    "quantum_spectrum",
    "temperature_K",
]
