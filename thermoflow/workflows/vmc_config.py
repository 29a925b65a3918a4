"""The ``thermoflow vmc`` run config: ``seed`` + ``[system]`` + ``[wavefunction]`` + ``[vmc]``.

Electrons (and fixed protons, charges +-1) in a cubic periodic cell at density parameter r_s;
Hartree atomic units inside the run, eV / GPa beside them in the results. Validated by pydantic
before any computation, every error naming its field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from thermoflow.workflows.config import StrictModel, load_config

#: proton arrangements: cubic lattices (n_electrons = atoms per conventional cell x m^3), uniform
#: random positions, an ASE-readable structure file (rescaled to r_s), or none (jellium)
PROTON_LATTICES = {"sc": 1, "bcc": 2, "fcc": 4}


class SystemConfig(StrictModel):
    """Electrons and fixed protons in a cubic cell."""

    rs_bohr: float = Field(gt=0, description="Wigner-Seitz radius r_s, bohr (volume per electron 4 pi r_s^3 / 3)")
    n_electrons: int = Field(ge=1, description="electrons in the cell: ceil(n/2) spin up, floor(n/2) down (odd n: jellium needs an even n)")
    protons: Literal["none", "sc", "bcc", "fcc", "random", "file"] = Field(
        "bcc", description="none: jellium (uniform positive background); sc/bcc/fcc: a cubic lattice of n_electrons protons; "
        "random: uniform positions; file: system.structure_file (ASE-readable, its fractional positions in the cubic cell of r_s)",
    )
    structure_file: str | None = Field(None, description="protons = 'file': structure file; relative to the config file")
    min_proton_distance_bohr: float = Field(0.8, ge=0, description="protons = 'random': smallest allowed proton-proton distance, bohr")
    n_configurations: int = Field(
        1, ge=1, description="protons = 'random': proton configurations; more than one trains one network on the ensemble",
    )
    frames: str | None = Field(
        None, description="protons = 'file': ASE index of the frames to use (e.g. ':' or '0:40:2'; several frames train one "
        "network on the ensemble); unset: the first frame",
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.n_electrons % 2 and self.protons == "none":
            raise ValueError(f"system.n_electrons must be even for jellium (half spin up, half down), got {self.n_electrons}")
        if self.protons in PROTON_LATTICES:
            m = round((self.n_electrons / PROTON_LATTICES[self.protons]) ** (1 / 3))
            if PROTON_LATTICES[self.protons] * m**3 != self.n_electrons:
                sizes = ", ".join(str(PROTON_LATTICES[self.protons] * k**3) for k in range(1, 5))
                raise ValueError(f"system.protons = {self.protons!r} holds {sizes}, ... protons in a cubic cell, not {self.n_electrons}")
        if (self.protons == "file") != (self.structure_file is not None):
            raise ValueError("system.structure_file goes with system.protons = 'file' (and is required there)")
        if self.n_configurations > 1 and self.protons != "random":
            raise ValueError("system.n_configurations > 1 needs system.protons = 'random' (for a file, use system.frames)")
        if self.frames is not None and self.protons != "file":
            raise ValueError("system.frames goes with system.protons = 'file'")
        return self


class WavefunctionConfig(StrictModel):
    """The trial wavefunction."""

    kind: Literal["slater_jastrow", "network"] = Field(
        "network", description="slater_jastrow: plane-wave determinants x RPA Jastrow with cusps (few parameters); network: the "
        "periodic FermiNet/DeepSolid-style network (thermoflow/electrons/network.py), equal to slater_jastrow at initialisation",
    )
    n_layers: int = Field(2, ge=1, description="network: interaction layers")
    one_body: int = Field(32, ge=1, description="network: width of the one-electron stream")
    two_body: int = Field(8, ge=1, description="network: width of the two-electron stream")
    n_determinants: int = Field(1, ge=1, description="network: determinant products summed in psi (they share features and backflow)")
    antisymmetry: Literal["determinants", "geminal"] = Field(
        "determinants", description="network: determinants: det Phi_up det Phi_down; geminal: det of the singlet pair "
        "function sum_a c_a Phi_a(r up) Phi_a(r' down) over the occupied + wavefunction.geminal_extra_orbitals orbitals "
        "(equal spin counts)",
    )
    geminal_extra_orbitals: int = Field(
        8, ge=1, description="geminal: unoccupied plane-wave orbitals per spin added to the pair function (completed to a full shell)",
    )
    envelope: Literal["plane_wave", "atomic"] = Field(
        "plane_wave", description="network: plane_wave (solids, the default) or atomic: orbitals x sum over protons of "
        "exp(-sigma d), for atoms and molecules in large cells (needs protons)",
    )
    network_precision: Literal["float64", "float32"] = Field(
        "float64", description="network: dtype of the one- and two-electron streams (orbitals, determinants, Jastrow and "
        "all accumulations stay float64); float32 is faster on GPUs and somewhat on CPUs",
    )
    twist: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="fractional twist t (k_s = t B): psi(r + L) = exp(i k_s . L) psi; both spins at +k_s; "
        "a degenerate Fermi level takes the occupation of lowest exchange energy",
    )
    twist_grid: int | None = Field(
        None, ge=1, description="twist-average over the shifted n x n x n Monkhorst-Pack grid, reduced by t -> -t: one run "
        "per twist in twist-NNN/ subdirectories, averaged with the grid weights (replaces wavefunction.twist)",
    )

    @model_validator(mode="after")
    def _one_twist_source(self):
        if self.twist_grid is not None and any(self.twist):
            raise ValueError("give wavefunction.twist or wavefunction.twist_grid, not both")
        if self.kind == "slater_jastrow" and (self.antisymmetry != "determinants" or self.envelope != "plane_wave"
                                              or self.n_determinants != 1):
            raise ValueError("wavefunction.antisymmetry, envelope and n_determinants are options of kind = 'network'")
        return self


class VMCConfig(StrictModel):
    """Optimisation and sampling."""

    walkers: int = Field(256, ge=2, description="Metropolis walkers (samples per step)")
    steps: int = Field(200, ge=0, description="optimisation steps")
    mcmc_steps: int = Field(10, ge=1, description="Metropolis moves per walker per step (and per evaluation block)")
    equilibration_blocks: int = Field(50, ge=0, description="Metropolis blocks before the first step (burn-in, step-size tuning)")
    optimizer: Literal["adam", "minsr"] = Field(
        "adam", description="adam, or minsr (stochastic reconfiguration in sample space: an N x N solve, N = walkers)",
    )
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate, or minSR step tau (~0.01-0.1)")
    damping: float = Field(1e-3, gt=0, description="minsr: diagonal shift of the quantum geometric tensor")
    clip_width: float | None = Field(5.0, gt=0, description="adam: clip E_loc to median +- this x mean abs. deviation in the gradient")
    target_acceptance: float = Field(0.5, gt=0, lt=1, description="the Metropolis step size is tuned towards this acceptance")
    initial_step_size_bohr: float = Field(0.2, gt=0, description="Metropolis step size before tuning, bohr")
    sparse_laplacian: bool = Field(
        False, description="folx with sparse jets (the two-electron stream's derivatives stay sparse): faster local "
        "energies (kinetic part 1.6x at the published network size), about 4x slower compilation",
    )
    chunk_size: int | None = Field(
        None, ge=1, description="local energies of this many walkers at a time (memory; same results); unset: all walkers at once",
    )
    eval_blocks: int = Field(32, ge=0, description="final evaluation at the trained parameters: Metropolis blocks (0: none; else >= 2)")
    forces: bool = Field(
        False, description="final evaluation: forces on the protons (zero-variance Assaraf-Caffarel estimator, eV/A, blocking "
        "errors; no Pulay terms)",
    )
    configurations_per_step: int | None = Field(
        None, ge=1, description="ensemble: proton configurations drawn for each step (without replacement); unset: all",
    )
    holdout: int = Field(
        0, ge=0, description="the last this many proton configurations are not trained on, only evaluated (held out: "
        "the transfer of the ensemble-trained network)",
    )
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    max_rollbacks: int = Field(3, ge=0, description="non-finite steps tolerated (each rolls back and halves the learning rate)")

    @model_validator(mode="after")
    def _eval(self):
        if self.eval_blocks == 1:
            raise ValueError("vmc.eval_blocks must be 0 or >= 2 (an error bar needs two blocks)")
        return self


class VMCRunConfig(StrictModel):
    """A complete ``thermoflow vmc`` run."""

    seed: int = Field(0, ge=0, description="random seed of the parameters, the protons (random) and the walkers")
    system: SystemConfig
    wavefunction: WavefunctionConfig = Field(default_factory=WavefunctionConfig, description="trial wavefunction")
    vmc: VMCConfig = Field(default_factory=VMCConfig, description="optimisation and sampling")

    @model_validator(mode="after")
    def _holdout(self):
        if self.system.protons == "random" and self.vmc.holdout >= self.system.n_configurations:
            raise ValueError(f"vmc.holdout = {self.vmc.holdout} leaves no configuration to train on "
                             f"(system.n_configurations = {self.system.n_configurations})")
        if self.vmc.holdout and not self.vmc.eval_blocks:
            raise ValueError("vmc.holdout needs vmc.eval_blocks >= 2 (held-out configurations are only evaluated)")
        return self


def load_vmc_config(path: str | Path, overrides: list[str] | None = None) -> tuple[VMCRunConfig, Path]:
    """Read, override and validate a VMC run config; ``(config, base_dir)``.

    Raises:
        ConfigError: missing file, bad TOML, bad override or invalid fields (each named).
    """
    return load_config(path, overrides, model=VMCRunConfig)
