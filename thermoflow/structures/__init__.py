"""Structures in (files, standard lattices, supercells); arrays out."""

from thermoflow.structures.build import (
    LATTICES,
    build_lattice,
    make_supercell,
    read_structure,
    scale_to_volume,
    to_arrays,
)

__all__ = ["LATTICES", "build_lattice", "make_supercell", "read_structure", "scale_to_volume", "to_arrays"]
