"""Unit conventions and the only place where unit constants are defined.

Public boundaries use ASE units: energy eV, length Angstrom, mass amu, temperature K,
pressure GPa. Time is then the ASE time unit Angstrom * sqrt(amu / eV) (about 10.18 fs) and
angular frequencies ``omega`` are in radians per ASE time unit, so that ``HBAR_EV * omega`` is
an energy in eV.
"""

from ase import units as _ase

#: Boltzmann constant, eV / K.
KB_EV_PER_K: float = float(_ase.kB)
#: Reduced Planck constant in eV * (ASE time unit).
HBAR_EV: float = float(_ase._hbar * _ase.J * _ase.s)
#: One femtosecond in ASE time units.
ASE_TIME_PER_FS: float = float(_ase.fs)
#: One picosecond in ASE time units (MD timesteps, frictions per ps and frequencies in THz).
ASE_TIME_PER_PS: float = 1000.0 * ASE_TIME_PER_FS
#: Conversion of a pressure in eV / A^3 to GPa.
GPA_PER_EV_PER_A3: float = float(1.0 / _ase.GPa)
#: One bohr (Hartree atomic unit of length) in Angstrom; the electronic code works in bohr inside.
BOHR_A: float = float(_ase.Bohr)
#: One Hartree in eV; the electronic code works in Hartree inside.
EV_PER_HARTREE: float = float(_ase.Hartree)
#: A pressure in Hartree / bohr^3 in GPa (about 29421 GPa).
GPA_PER_HARTREE_PER_BOHR3: float = float(_ase.Hartree / _ase.Bohr**3 / _ase.GPa)
#: meV per eV.
MEV_PER_EV: float = 1000.0


def omega_to_thz(omega):
    """Angular frequency (rad / ASE time) -> ordinary frequency in THz (cycles / ps)."""
    return omega * ASE_TIME_PER_PS / (2.0 * 3.141592653589793)


def thz_to_omega(frequency_thz):
    """Ordinary frequency in THz (cycles / ps) -> angular frequency (rad / ASE time)."""
    return frequency_thz * 2.0 * 3.141592653589793 / ASE_TIME_PER_PS


def omega_to_mev(omega):
    """Angular frequency (rad / ASE time) -> phonon energy hbar * omega in meV."""
    return omega * HBAR_EV * MEV_PER_EV
