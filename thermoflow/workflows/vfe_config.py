"""The ``thermoflow vfe`` run configs: classical particles on a potential (``seed`` + ``[state]`` + ``[structure]`` +
``[potential]`` + ``[flow]`` + ``[base]`` + ``[vfe]``), or protons with quantum electrons (``seed`` + ``[state]`` +
``[hydrogen]`` + ``[flow]`` + ``[wavefunction]`` + ``[vfe]``, :class:`VFEElectronsRunConfig`).

The deep variational free energy of N identical classical particles (:mod:`thermoflow.flows.classical`):
the structure gives the particles (one species; their positions only seed nothing but the cell and N)
and the periodic cell, the potential the energy U(X); the flow's base is uniform or the Boltzmann
density of a base potential whose ln Z is computed by annealed importance sampling. Validated by
pydantic before any computation, every error naming its field.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from thermoflow.workflows.config import StateConfig, StrictModel, load_config, read_config_dict
from thermoflow.workflows.config_sections import PotentialConfig
from thermoflow.workflows.md_config import FixedCellRunConfig
from thermoflow.workflows.vmc_config import WavefunctionConfig


class FlowSection(StrictModel):
    """The periodic equivariant backflow flow (:func:`thermoflow.flows.periodic.make_periodic_flow`)."""

    n_layers: int = Field(2, ge=1, description="interaction layers")
    one_body: int = Field(16, ge=1, description="width of the one-particle stream")
    two_body: int = Field(16, ge=1, description="width of the two-particle stream")
    lipschitz_bound: float | None = Field(
        None, gt=0, lt=1, description="keep the flow from folding: samples where the backflow's Jacobian has a spectral norm "
        "above this are penalised in the training loss (||dg/dX|| < 1 everywhere makes the flow a diffeomorphism); unset: off",
    )
    lipschitz_weight: float = Field(100.0, gt=0, description="weight of that penalty, k_B T per unit squared excess")


class BaseSection(StrictModel):
    """The flow's base distribution."""

    kind: Literal["uniform", "potential"] = Field(
        "uniform", description="uniform in the cell, or the Boltzmann density of base.potential at the same temperature "
        "(its ln Z by annealed importance sampling; its error bar adds to F's)",
    )
    potential: PotentialConfig | None = Field(None, description="base.kind = 'potential': the base potential, same keys as [potential]")
    ais_walkers: int = Field(512, ge=2, description="annealed importance sampling: independent chains")
    ais_temperatures: int = Field(50, ge=1, description="annealed importance sampling: intermediate densities beta_k = (k/K)^2")
    ais_mcmc_steps: int = Field(5, ge=1, description="annealed importance sampling: Metropolis moves per walker and temperature")

    @model_validator(mode="after")
    def _potential_given(self):
        if (self.kind == "potential") != (self.potential is not None):
            raise ValueError("base.potential goes with base.kind = 'potential' (and is required there)")
        return self


class VFESection(StrictModel):
    """Training and evaluation."""

    walkers: int = Field(256, ge=2, description="Metropolis walkers (configurations per step)")
    steps: int = Field(200, ge=0, description="optimisation steps")
    mcmc_steps: int = Field(10, ge=1, description="Metropolis moves per walker per step")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate")
    clip_width: float | None = Field(5.0, gt=0, description="gradient: f = kT ln p + U clipped to median +- width x mean abs deviation")
    target_acceptance: float = Field(0.5, gt=0, lt=1, description="the Metropolis step is tuned towards this acceptance")
    initial_step_size_A: float = Field(0.2, gt=0, description="initial Metropolis step, Angstrom")
    eval_blocks: int = Field(20, ge=2, description="final evaluation: Metropolis blocks at the trained parameters (error bars over blocks)")
    eval_mcmc_steps: int = Field(10, ge=1, description="final evaluation: moves per walker per block")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    max_rollbacks: int = Field(3, ge=0, description="non-finite steps tolerated (each rolls back with half the learning rate)")


class VFERunConfig(FixedCellRunConfig):
    """A complete ``thermoflow vfe`` run."""

    _npt_task: ClassVar[str] = "the variational free energy"
    flow: FlowSection = Field(default_factory=FlowSection, description="the flow")
    base: BaseSection = Field(default_factory=BaseSection, description="the flow's base distribution")
    vfe: VFESection = Field(default_factory=VFESection, description="training and evaluation")


def load_vfe_config(path: str | Path, overrides: list[str] | None = None) -> tuple[VFERunConfig, Path]:
    """Read, override and validate a VFE run config; ``(config, base_dir)``.

    Raises:
        ConfigError: missing file, bad TOML, bad override or invalid fields (each named).
    """
    return load_config(path, overrides, model=VFERunConfig)


class HydrogenSection(StrictModel):
    """Protons and electrons (one electron per proton) in a cubic cell at density parameter r_s."""

    rs_bohr: float = Field(gt=0, description="Wigner-Seitz radius r_s, bohr (volume per proton 4 pi r_s^3 / 3)")
    n_protons: int = Field(ge=2, description="protons in the cell (as many electrons: ceil(n/2) spin up, floor(n/2) down)")
    mass_amu: float = Field(1.00784, gt=0, description="proton (nucleus) mass, amu (deuterium: 2.01410)")
    min_proton_distance_bohr: float = Field(
        0.8, ge=0, description="the initial proton walkers: uniform positions at least this far apart (the flow starts uniform)",
    )


class JointVFESection(StrictModel):
    """Joint training of the proton flow and the electrons' wavefunction, and the final evaluation."""

    walkers: int = Field(64, ge=2, description="proton walkers (configurations per step)")
    electron_walkers: int = Field(8, ge=1, description="electron walkers per proton walker (and per twist)")
    steps: int = Field(200, ge=0, description="optimisation steps")
    proton_mcmc_steps: int = Field(50, ge=1, description="proton Metropolis moves per walker per step")
    electron_mcmc_steps: int = Field(100, ge=1, description="electron Metropolis moves per walker per step (after the protons moved)")
    flow_learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate of the flow")
    optimizer: Literal["adam", "minsr"] = Field("adam", description="the wavefunction's optimiser (minsr: an N x N solve, N = walkers x electron_walkers)")
    learning_rate: float = Field(1e-3, gt=0, description="the wavefunction's Adam learning rate, or minSR step tau")
    schedule: Literal["constant", "cosine", "exponential"] = Field(
        "constant", description="both learning rates (flow and wavefunction) decay on this schedule to final_lr_fraction at vfe.steps")
    final_lr_fraction: float = Field(0.1, gt=0, le=1, description="final / initial learning rate for decaying schedules")
    damping: float = Field(1e-3, gt=0, description="minsr: diagonal shift")
    clip_width: float | None = Field(5.0, gt=0, description="gradients: f and E_loc clipped to median +- width x mean abs deviation")
    target_acceptance: float = Field(0.5, gt=0, lt=1, description="both Metropolis step sizes are tuned towards this acceptance")
    initial_proton_step_bohr: float = Field(0.1, gt=0, description="initial proton Metropolis step, bohr")
    initial_electron_step_bohr: float = Field(0.2, gt=0, description="initial electron Metropolis step, bohr")
    equilibration_blocks: int = Field(10, ge=0, description="electron Metropolis blocks (of electron_mcmc_steps) before the first step")
    chunk_size: int | None = Field(None, ge=1, description="local energies of this many electron walkers at a time (memory); unset: all walkers x electron_walkers at once")
    sparse_laplacian: bool = Field(False, description="folx with sparse jets (as vmc.sparse_laplacian)")
    eval_blocks: int = Field(20, ge=2, description="final evaluation at the trained parameters: blocks of one step's moves each")
    quench_beta: float = Field(100.0, ge=1, description="structure: the final proton samples are annealed on p(X)^beta, beta rising "
                               "geometrically from 1 to this (1: no quench)")
    quench_stages: int = Field(10, ge=1, description="structure: annealing stages (proton_mcmc_steps moves each)")
    molecule_max_bond_A: float = Field(1.0, gt=0, description="structure: mutual nearest neighbours closer than this are molecules, A")
    checkpoint_every: int = Field(20, ge=1, description="steps between checkpoints")
    max_rollbacks: int = Field(3, ge=0, description="non-finite steps tolerated (each rolls back with half the learning rates)")


class ScanSection(StrictModel):
    """An equation-of-state scan over densities at the state's temperature (one run per density, warm-started in order)."""

    rs_bohr: list[float] = Field(min_length=1, description="densities r_s, bohr, run in this order (each warm-starts the next)")

    @model_validator(mode="after")
    def _positive(self):
        if any(not r > 0 for r in self.rs_bohr) or len(set(self.rs_bohr)) != len(self.rs_bohr):
            raise ValueError(f"scan.rs_bohr must hold distinct positive values, got {self.rs_bohr}")
        return self


class VFEElectronsRunConfig(StrictModel):
    """A complete ``thermoflow vfe`` run with quantum electrons (dense hydrogen): ``seed`` + ``[state]`` +
    ``[hydrogen]`` + ``[flow]`` + ``[wavefunction]`` + ``[vfe]``."""

    seed: int = Field(0, ge=0, description="random seed of the parameters and the walkers")
    state: StateConfig
    hydrogen: HydrogenSection
    flow: FlowSection = Field(default_factory=FlowSection, description="the proton flow")
    base: BaseSection = Field(default_factory=BaseSection, description="the proton flow's base distribution (base.potential: "
                              "a potential of hydrogen in eV and Angstrom, e.g. a Deep Potential; it sees the species and the cell)")
    wavefunction: WavefunctionConfig = Field(default_factory=WavefunctionConfig, description="the electrons' trial wavefunction "
                                             "(twist or twist_grid: the twists E(X) is averaged over, one wavefunction each)")
    vfe: JointVFESection = Field(default_factory=JointVFESection, description="joint training and evaluation")
    scan: ScanSection | None = Field(None, description="an r_s scan (hydrogen.rs_bohr is then not used); unset: one run at hydrogen.rs_bohr")

    @model_validator(mode="after")
    def _fixed_cell(self):
        if self.state.pressure_GPa is not None:
            raise ValueError("state.pressure_GPa: the hydrogen variational free energy runs at fixed r_s; remove it (scan r_s for the EOS)")
        if self.base.potential is not None and self.base.potential.kind == "harmonic":
            raise ValueError("base.potential.kind = 'harmonic' needs reference sites, which a hydrogen run does not have; "
                             "use a potential of the positions alone (deepmd, python, ase, pair potentials)")
        return self


def load_any_vfe_config(path: str | Path, overrides: list[str] | None = None) -> tuple[VFERunConfig | VFEElectronsRunConfig, Path]:
    """A ``thermoflow vfe`` config of either kind: with a ``[hydrogen]`` section the protons-and-electrons run
    (:class:`VFEElectronsRunConfig`), else the classical one (:class:`VFERunConfig`); ``(config, base_dir)``.

    Raises:
        ConfigError: missing file, bad TOML, bad override or invalid fields (each named).
    """
    data, _ = read_config_dict(path)
    model = VFEElectronsRunConfig if "hydrogen" in data else VFERunConfig
    return load_config(path, overrides, model=model)
