"""Config sections shared by every task type: the strict base model, ``[potential]`` and ``[harmonic]``.

Split from :mod:`thermoflow.workflows.config` (which re-exports these names); validated by pydantic.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StrictModel(BaseModel):
    """Base of every config section: unknown fields rejected, frozen, no inf/nan."""

    # inf / nan are never meaningful inputs (a learning rate of inf passed validation before)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class LennardJonesConfig(StrictModel):
    """Lennard-Jones pair potential, shifted to zero at the cutoff."""

    kind: Literal["lennard_jones"]
    epsilon_eV: float = Field(gt=0, description="well depth epsilon, eV")
    sigma_A: float = Field(gt=0, description="length scale sigma, Angstrom")
    cutoff_A: float = Field(gt=0, description="cutoff radius, Angstrom (may exceed half the cell)")


class MorseConfig(StrictModel):
    """Morse pair potential, shifted to zero at the cutoff."""

    kind: Literal["morse"]
    depth_eV: float = Field(gt=0, description="well depth D, eV")
    alpha_per_A: float = Field(gt=0, description="inverse width a, 1/Angstrom")
    r0_A: float = Field(gt=0, description="equilibrium distance r0, Angstrom")
    cutoff_A: float = Field(gt=0, description="cutoff radius, Angstrom")


class HarmonicConfig(StrictModel):
    """Harmonic potential about the structure's positions."""

    kind: Literal["harmonic"]
    force_constants_file: str | None = Field(None, description=".npy file of (3N, 3N) force constants, eV/Angstrom^2")
    einstein_spring_eV_per_A2: float | None = Field(None, gt=0, description="Einstein crystal spring constant instead, eV/Angstrom^2")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.force_constants_file is None) == (self.einstein_spring_eV_per_A2 is None):
            raise ValueError("give exactly one of force_constants_file or einstein_spring_eV_per_A2")
        return self


def _finite_options(options: dict[str, Any]) -> dict[str, Any]:
    """Reject inf / nan anywhere inside a plug-in's keyword arguments (nested lists and tables too)."""

    def walk(value, where):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"options.{where} is {value}: only finite numbers are meaningful")
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}.{key}" if where else str(key))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")

    walk(options, "")
    return options


class PythonPotentialConfig(StrictModel):
    """A user's own JAX potential: ``target(**options) -> energy_fn(positions, cell)``."""

    kind: Literal["python"]
    target: str = Field(description="'package.module:factory' returning energy_fn(positions, cell) -> eV")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the factory")

    _check_options = field_validator("options")(_finite_options)


class DeepmdConfig(StrictModel):
    """A deepmd-kit 3.x Deep Potential model (needs ``pip install "thermoflow[deepmd]"``)."""

    kind: Literal["deepmd"]
    model: str = Field(description="deepmd-kit .dp model file; relative to the config file")
    skin_A: float = Field(0.5, ge=0, description="margin added to the model cutoff when choosing periodic images, Angstrom")
    compress: bool = Field(
        False, description="tabulate the se_e2_a / se_e3 embedding networks (energies ~2x faster, ~1e-12 eV/atom from the "
        "network; derivatives still from the network): thermoflow/potentials/deepmd_compress.py",
    )
    compress_min_distance_A: float = Field(1.2, gt=0, description="compress: closest pair the tables cover, Angstrom (closer: NaN energy)")


class AseCalculatorConfig(StrictModel):
    """Any ASE calculator through a host callback (forces from the calculator; no autodiff Hessian)."""

    kind: Literal["ase"]
    calculator: str = Field(description="'package.module:factory' returning an ASE calculator")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the factory")
    hessian_displacement_A: float = Field(0.01, gt=0, description="displacement for the finite-difference Hessian of the harmonic reference, Angstrom")

    _check_options = field_validator("options")(_finite_options)


PotentialConfig = Annotated[
    Union[LennardJonesConfig, MorseConfig, HarmonicConfig, PythonPotentialConfig, DeepmdConfig, AseCalculatorConfig],
    Field(discriminator="kind"),
]


class PhononMeshConfig(StrictModel):
    """`thermoflow phonons`: the infinite crystal's harmonic thermodynamics on a q-point mesh, from the force
    constants of a (large) supercell, next to the run's supercell (its q-point sampling error)."""

    mesh: list[int] | None = Field(
        None, min_length=3, max_length=3,
        description="Gamma-centred q-point mesh of the primitive cell's Brillouin zone, e.g. [32, 32, 32]; unset: no mesh analysis",
    )
    force_constants_supercell: list[int] | None = Field(
        None, min_length=3, max_length=3,
        description="repetitions of the structure's unit cell for the force constants (phonopy displacements); unset: structure.supercell",
    )
    temperatures_K: list[float] | None = Field(None, min_length=1, description="temperatures of the mesh table, K; unset: state.temperature_K")
    displacement_A: float = Field(1e-3, gt=0, description="phonopy displacement, Angstrom (error O(delta^2))")

    @model_validator(mode="after")
    def _positive(self):
        for name in ("mesh", "force_constants_supercell"):
            value = getattr(self, name)
            if value is not None and min(value) < 1:
                raise ValueError(f"phonons.{name} entries must be >= 1, got {value}")
        if self.temperatures_K is not None and min(self.temperatures_K) <= 0:
            raise ValueError(f"phonons.temperatures_K must be positive, got {self.temperatures_K}")
        return self


class HarmonicReferenceConfig(StrictModel):
    """How the Hessian of the harmonic reference (the phonon modes at the structure) is computed."""

    hessian: Literal["auto", "autodiff", "phonopy", "finite_difference"] = Field(
        "auto", description="autodiff: exact, 3N Hessian-vector products; phonopy: symmetry-reduced plus-minus displacements "
        "(a few force calls for high-symmetry crystals, error O(delta^2)); finite_difference: central differences of every "
        "coordinate (6N force calls); auto: autodiff, or finite_difference for an ASE calculator (no second derivative)",
    )
    displacement_A: float | None = Field(
        None, gt=0, description="phonopy / finite_difference displacement, Angstrom; unset: 0.001 for phonopy (float64 forces "
        "of a JAX potential; lithium dp4: 3e-3 relative at 0.01, falling as delta^2), potential.hessian_displacement_A or 0.01 for finite_difference",
    )
    cache: bool = Field(True, description="store the Hessian in the run directory (harmonic_hessian.npz) and reuse it on resume")
