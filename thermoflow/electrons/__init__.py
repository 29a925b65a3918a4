"""Electrons of dense hydrogen in a periodic cell: Coulomb energy by Ewald summation (Hartree atomic
units inside; eV, Angstrom and GPa at the boundary)."""

from thermoflow.electrons.ewald import EwaldSum, ewald_parameters, make_ewald_sum, reciprocal_vectors

__all__ = ["EwaldSum", "ewald_parameters", "make_ewald_sum", "reciprocal_vectors"]
