"""Molecular dynamics: velocity Verlet, Langevin BAOAB, the quantum thermal bath (QTB) and adQTB,
stochastic cell rescaling (NPT)."""

from thermoflow.md.barostat import Barostat, make_stochastic_cell_rescaling, pressure_tensor, static_bulk_modulus_GPa
from thermoflow.md.integrators import (
    BlockObservables,
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
    "Barostat",
    "BlockObservables",
    "MDState",
    "NoiseSource",
    "QTBState",
    "deviation_spectrum",
    "kinetic_energy",
    "make_block_fn",
    "make_stochastic_cell_rescaling",
    "make_langevin",
    "make_nve",
    "make_qtb_noise",
    "make_white_noise",
    "maxwell_boltzmann_velocities",
    "pressure_tensor",
    "quantum_spectrum",
    "static_bulk_modulus_GPa",
    "temperature_K",
]
