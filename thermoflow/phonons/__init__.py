"""Harmonic phonons: modes, frequencies and exact harmonic thermodynamics."""

from thermoflow.phonons.modes import (
    HarmonicModes,
    compute_harmonic_modes,
    dynamical_matrix,
    modes_from_hessian,
    translation_vectors,
)
from thermoflow.phonons.scha import GaussianInstabilityError, GaussianReference, optimise_gaussian
from thermoflow.phonons.thermo import HarmonicThermo, harmonic_thermodynamics

__all__ = [
    "GaussianInstabilityError",
    "GaussianReference",
    "HarmonicModes",
    "HarmonicThermo",
    "compute_harmonic_modes",
    "dynamical_matrix",
    "harmonic_thermodynamics",
    "modes_from_hessian",
    "optimise_gaussian",
    "translation_vectors",
]
