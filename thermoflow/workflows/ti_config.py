"""The ``[ti]`` section and the thermodynamic-integration run config (``thermoflow ti CONFIG``).

A TI config is ``seed`` + ``[state]`` + ``[structure]`` + ``[potential]`` (the sections of an NCT or
MD run) + ``[ti]``. Validated by pydantic before any computation, every error naming its field.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from thermoflow.workflows.config import HarmonicReferenceConfig, StrictModel
from thermoflow.workflows.md_config import FixedCellRunConfig


class TIConfig(StrictModel):
    """Thermodynamic integration from a harmonic or Einstein crystal with classical Langevin MD."""

    n_lambda: int = Field(8, ge=1, le=64, description="Gauss-Legendre nodes lambda_i in (0, 1), one Langevin run each")
    equilibration_steps: int = Field(2000, ge=0, description="MD steps per node before sampling (a multiple of ti.block_steps)")
    production_steps: int = Field(20000, ge=1, description="sampled MD steps per node (a multiple of ti.block_steps)")
    block_steps: int = Field(500, ge=1, description="MD steps per jitted call (progress and timing granularity)")
    timestep_fs: float = Field(1.0, gt=0, description="timestep, fs (about 1/20 of the shortest phonon period or less)")
    friction_per_ps: float = Field(
        10.0, gt=0, description="Langevin friction gamma, 1/ps (about the phonon frequencies: short correlation times)",
    )
    reference: Literal["harmonic", "einstein"] = Field(
        "harmonic", description="harmonic: the potential's own Hessian at the structure (imaginary modes refused); "
        "einstein: independent springs ti.einstein_spring_eV_per_A2 on every atom",
    )
    einstein_spring_eV_per_A2: float | None = Field(
        None, gt=0, description="einstein: spring constant, eV/A^2; unset: the spring whose Einstein crystal has the "
        "harmonic crystal's mean-square displacement",
    )

    @model_validator(mode="after")
    def _consistent(self):
        for name in ("equilibration_steps", "production_steps"):
            if getattr(self, name) % self.block_steps:
                raise ValueError(f"ti.{name} ({getattr(self, name)}) must be a multiple of ti.block_steps ({self.block_steps})")
        if self.production_steps < 16:
            raise ValueError(f"ti.production_steps ({self.production_steps}) must be >= 16 (blocking error bars)")
        if self.einstein_spring_eV_per_A2 is not None and self.reference != "einstein":
            raise ValueError("ti.einstein_spring_eV_per_A2 is only used with ti.reference = 'einstein'")
        return self


class TIRunConfig(FixedCellRunConfig):
    """A complete ``thermoflow ti`` run (node i draws its velocities and noise from fold_in(seed, i))."""

    _npt_task: ClassVar[str] = "thermodynamic integration"

    ti: TIConfig = Field(default_factory=TIConfig, description="thermodynamic integration settings")
    harmonic: HarmonicReferenceConfig = Field(default_factory=HarmonicReferenceConfig, description="how the harmonic reference's Hessian is computed")
