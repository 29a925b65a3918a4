"""The ``thermoflow vfe`` run config: ``seed`` + ``[state]`` + ``[structure]`` + ``[potential]`` + ``[flow]`` + ``[base]`` + ``[vfe]``.

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

from thermoflow.workflows.config import StrictModel, load_config
from thermoflow.workflows.config_sections import PotentialConfig
from thermoflow.workflows.md_config import FixedCellRunConfig


class FlowSection(StrictModel):
    """The periodic equivariant backflow flow (:func:`thermoflow.flows.periodic.make_periodic_flow`)."""

    n_layers: int = Field(2, ge=1, description="interaction layers")
    one_body: int = Field(16, ge=1, description="width of the one-particle stream")
    two_body: int = Field(16, ge=1, description="width of the two-particle stream")


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
