"""Normalizing flows for classical particles in periodic cells (the proton flow of the deep variational free energy)."""
