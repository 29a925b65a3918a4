"""Run configuration: one TOML file, validated by pydantic before any computation.

Every field has a description and units in its name. ``load_config`` merges ``--set`` style
overrides (``"nct.steps=200"``, values parsed as TOML literals) and reports every invalid
field by its dotted path with the reason.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from ase.data import chemical_symbols
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from thermoflow.nct.hamiltonian import LAPLACIAN_METHODS
from thermoflow.structures.build import LATTICES
from thermoflow.workflows.config_sections import HarmonicReferenceConfig, PhononMeshConfig, PotentialConfig, StrictModel


class StructureConfig(StrictModel):
    """Where the crystal comes from: a file, or a standard lattice."""

    file: str | None = Field(None, description="ASE-readable structure file (POSCAR, CIF, extxyz); relative to the config file")
    spacegroup: int | None = Field(
        None, ge=1, le=230, description="build from a space group (number, standard setting) and structure.sites instead of "
        "a file or lattice; cell from structure.a_A (cubic) or structure.cell_parameters",
    )
    sites: list[tuple[str, tuple[float, float, float]]] | None = Field(
        None, description="with structure.spacegroup: [symbol, [x, y, z]] per Wyckoff orbit, fractional coordinates of one "
        "representative, e.g. LaH10: [['La', [0, 0, 0]], ['H', [0.25, 0.25, 0.25]], ['H', [0.378, 0.378, 0.378]]]",
    )
    cell_parameters: tuple[float, float, float, float, float, float] | None = Field(
        None, description="with structure.spacegroup: a, b, c (Angstrom), alpha, beta, gamma (degrees)",
    )
    lattice: Literal[LATTICES] | None = Field(None, description="standard lattice instead of a file: fcc, bcc, hcp, diamond, sc")  # type: ignore[valid-type]
    symbol: str | None = Field(None, description="chemical symbol for a standard lattice, e.g. 'Ne'")
    a_A: float | None = Field(None, gt=0, description="lattice constant of the conventional cell, Angstrom")
    supercell: tuple[int, int, int] = Field((1, 1, 1), description="repetitions of the cell along its lattice vectors")
    volume_per_atom_A3: float | None = Field(None, gt=0, description="rescale isotropically to this volume per atom, Angstrom^3")
    mass_amu: float | None = Field(None, gt=0, description="override the atomic mass of every atom, amu")
    min_distance_A: float = Field(0.5, ge=0, description="smallest allowed interatomic distance, Angstrom (overlapping atoms are an input error)")
    relax_positions: bool = Field(
        False, description="relax the atomic positions on the potential at fixed cell before the harmonic analysis "
        "(static minimum; the structure's space group is kept), e.g. free Wyckoff parameters such as cI16's x",
    )

    @field_validator("symbol")
    @classmethod
    def _known_element(cls, symbol):
        if symbol is not None and symbol not in chemical_symbols[1:]:
            raise ValueError(f"unknown chemical symbol {symbol!r} (e.g. 'Li', 'Ne', 'H')")
        return symbol

    @model_validator(mode="after")
    def _one_source(self):
        if sum(x is not None for x in (self.file, self.lattice, self.spacegroup)) != 1:
            raise ValueError("give exactly one of structure.file, structure.lattice or structure.spacegroup")
        if self.spacegroup is not None:
            if not self.sites:
                raise ValueError("structure.sites is required with structure.spacegroup ([symbol, [x, y, z]] per Wyckoff orbit)")
            for symbol, _ in self.sites:
                if symbol not in chemical_symbols[1:]:
                    raise ValueError(f"structure.sites: unknown chemical symbol {symbol!r}")
            if (self.a_A is None) == (self.cell_parameters is None):
                raise ValueError("give exactly one of structure.a_A (cubic) or structure.cell_parameters with structure.spacegroup")
        elif self.sites is not None or self.cell_parameters is not None:
            raise ValueError("structure.sites and structure.cell_parameters go with structure.spacegroup")
        if self.lattice is not None:
            if self.symbol is None:
                raise ValueError("structure.symbol is required with structure.lattice")
            if self.a_A is None and self.volume_per_atom_A3 is None:
                raise ValueError("give structure.a_A or structure.volume_per_atom_A3 with structure.lattice")
        if any(n < 1 for n in self.supercell):
            raise ValueError(f"structure.supercell entries must be >= 1, got {list(self.supercell)}")
        return self


class FlowConfig(StrictModel):
    """The flow of the NCT states: RealNVP couplings, or the quadratic (cubic-anharmonic) flow."""

    kind: Literal["realnvp", "quadratic"] = Field(
        "realnvp",
        description="realnvp: coupling layers (n_layers, hidden); quadratic: autoregressive quadratic layers, "
        "initialised from first-order perturbation theory in the cubic force constants (thermoflow/nct/quadratic.py)",
    )
    n_layers: int = Field(4, ge=1, description="realnvp: affine coupling layers")
    hidden: int = Field(64, ge=1, description="realnvp: width of the conditioner hidden layers")
    max_log_scale: float = Field(2.0, gt=0, description="realnvp: bound on |log scale| per coupling layer")
    linear: bool = Field(False, description="learnable linear layer (mode mixing and scaling, identity at start) before the other layers")
    network_precision: Literal["float64", "float32"] = Field(
        "float64", description="realnvp: precision of the conditioner networks (float32 for GPUs; parameters, coupling maps, "
        "energies and accumulations stay float64; measured bias in docs/benchmarks.md)",
    )
    pairs: int = Field(2, ge=1, description="quadratic: pairs of mode orderings (two layers each)")
    init: Literal["perturbative", "identity"] = Field(
        "perturbative", description="quadratic: start from the first-order perturbative map (needs cubic force constants) or the identity"
    )
    cubic_samples: int = Field(512, ge=16, description="quadratic, perturbative: Gaussian samples (one Hessian each) for the cubic force constants; a multiple of 16")
    cubic_chunk_size: int = Field(
        2, ge=1,
        description="quadratic, perturbative: samples whose Hessians are built at once for the cubic force constants. Memory "
        "grows with this times the atoms (lithium_dp4: 2 samples of 108 atoms 10.5 GB; 8 of 54 atoms over 15.7 GB, killed)",
    )
    learning_rate_scale: float | None = Field(
        None, gt=0,
        description="flow learning rate / nct.learning_rate (unset: 1 for realnvp, 0.01 for quadratic, whose D^3 "
        "coefficients Adam would otherwise each move by ~learning_rate per step)",
    )

    trainable: bool = Field(
        True,
        description="train the flow with the occupations (true) or keep its initial map while the occupations and the cell "
        "train (false: no flow gradient or optimiser moments). Unset: false for the quadratic flow's perturbative start, "
        "true otherwise. Measured: training the perturbative quadratic flow gained nothing on neon's default job and in "
        "16 / 32-atom lithium cells and raised F beyond ~150 modes (Adam's steps on the D^3 noisy coefficients; "
        "docs/methods.md)",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_trainable(cls, data):
        """An unset ``trainable`` holds the perturbative quadratic flow and trains every other one
        (resolved here, so config.resolved.toml records the choice)."""
        if isinstance(data, dict) and data.get("trainable") is None:
            kind, init = (data.get(name, cls.model_fields[name].default) for name in ("kind", "init"))
            quadratic = kind == "quadratic" and init == "perturbative"
            data = {**data, "trainable": not quadratic}
        return data

    @model_validator(mode="after")
    def _cubic_groups(self):
        if not self.trainable and self.learning_rate_scale is not None:
            raise ValueError(
                "nct.flow.learning_rate_scale has no effect on a held flow (nct.flow.trainable = false, the default of the "
                "perturbative quadratic flow): leave it unset, or set nct.flow.trainable = true to train the flow"
            )
        if self.network_precision != "float64" and self.kind != "realnvp":
            raise ValueError("nct.flow.network_precision applies to the realnvp networks only (kind = 'realnvp')")
        if self.cubic_samples % 16:
            raise ValueError(f"nct.flow.cubic_samples must be a multiple of 16 (8 groups of antithetic pairs), got {self.cubic_samples}")
        return self

    @property
    def flow_learning_rate_scale(self) -> float:
        if self.learning_rate_scale is not None:
            return self.learning_rate_scale
        return 0.01 if self.kind == "quadratic" else 1.0


class ReferenceConfig(StrictModel):
    """The harmonic basis of the NCT states: the Hessian's modes, or the self-consistent Gaussian."""

    kind: Literal["harmonic", "scha"] = Field(
        "scha",
        description="harmonic: modes of the Hessian at R0; scha: the best Gaussian density matrix on the true "
        "potential (self-consistent harmonic approximation), reported on its own and used as the NCT basis",
    )
    n_samples: int = Field(1024, ge=2, description="scha: Gaussian samples per iteration (even)")
    iterations: int = Field(40, ge=1, description="scha: damped self-consistency iterations")
    mixing: float = Field(0.5, gt=0, le=1, description="scha: damping of each iteration, in (0, 1]")
    averaging_fraction: float = Field(0.25, gt=0, le=1, description="scha: final fraction of iterates averaged")
    eval_samples: int = Field(8192, ge=2, description="scha: independent samples of the final F, E evaluation")
    symmetrise: bool = Field(
        True, description="scha: project each curvature estimate onto the matrices invariant under the structure's space "
        "group (spglib; skipped with a warning when the potential lacks that symmetry): unbiased, far less noise",
    )
    relax_centroid: bool = Field(
        False, description="scha: optimise the Gaussian's centre too (Newton steps on the mean force, projected onto the "
        "displacements the space group allows: free Wyckoff coordinates move, fixed sites do not); the NCT basis and R0 "
        "are then the quantum average positions",
    )
    start: str | None = Field(
        None, description="scha: start the self-consistency from this stored Gaussian (a run directory's "
        "gaussian_reference.npz, e.g. of a neighbouring temperature; same structure and supercell) instead of the "
        "harmonic modes (and from its centroid, with relax_centroid); relative to the config file",
    )

    @model_validator(mode="after")
    def _even(self):
        if self.n_samples % 2:
            raise ValueError(f"nct.reference.n_samples must be even (antithetic pairs), got {self.n_samples}")
        return self


class StateConfig(StrictModel):
    """The thermodynamic state every task works at."""

    temperature_K: float = Field(gt=0, description="temperature, K")
    pressure_GPa: float | None = Field(
        None, description="external pressure, GPa: NCT then minimises the Gibbs free energy G = F + P V over the strain "
        "of the cell (NPT; isotropic, or per direction with nct.cell_strain); unset: fixed cell (NVT)",
    )


class NCTConfig(StrictModel):
    """Variational free-energy optimisation (NVT, or NPT when ``state.pressure_GPa`` is set)."""

    n_levels: int = Field(4, ge=1, le=32, description="harmonic-oscillator levels K per mode")
    batch_size: int = Field(128, ge=2, description="samples per training step")
    steps: int = Field(500, ge=1, description="training steps")
    learning_rate: float = Field(1e-3, gt=0, description="peak learning rate (Adam)")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="optax optimiser")
    schedule: Literal["constant", "cosine", "exponential"] = Field("cosine", description="learning-rate schedule")
    final_lr_fraction: float = Field(0.1, gt=0, le=1, description="final / peak learning rate for decaying schedules")
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up steps before the schedule")
    grad_clip_norm: float | None = Field(10.0, gt=0, description="global gradient-norm clipping (null disables)")
    freeze_flow: bool = Field(False, description="keep harmonic wavefunctions, optimise occupations only")
    occupations: Literal["product", "autoregressive"] = Field(
        "product", description="occupation probabilities: product (independent modes, exact entropy) or autoregressive "
        "(a masked network over the modes' levels, VAN: correlated occupations, entropy estimated from the samples)",
    )
    occupation_hidden: int = Field(64, ge=1, description="autoregressive occupations: hidden units of the masked network")
    laplacian: Literal[LAPLACIAN_METHODS] = Field("auto", description="kinetic energy: auto (the flow's analytic jet if it has one, else folx), folx, exact (forward-over-reverse), hutchinson or jet")  # type: ignore[valid-type]
    clip_width: float = Field(5.0, ge=0, description="clip local energies at median +- width x mean abs deviation in the gradient (0: off)")
    chunk_size: int | None = Field(None, ge=1, description="local energies of at most this many samples at once (bounds memory, faster on CPU; unset: whole batch)")
    averaging_fraction: float = Field(0.25, gt=0, le=1, description="final fraction of steps averaged for the reported values")
    checkpoint_every: int = Field(50, ge=1, description="steps between checkpoints")
    max_rollbacks: int = Field(3, ge=0, description="non-finite steps tolerated (each rolls back and halves the learning rate)")
    flow: FlowConfig = Field(default_factory=FlowConfig, description="flow architecture")
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig, description="harmonic basis: Hessian modes or self-consistent Gaussian")
    training_stress: bool = Field(
        False, description="also estimate the stress tensor and the virial pressure at every training step (metrics.csv "
        "columns stress_xx_GPa ... and pressure_GPa); costs one ln|Psi| gradient and one virial per sample, 1.8x (LJ) to "
        "4.8x (Deep Potential) a step. The final evaluation always estimates them",
    )
    eval_batches: int = Field(16, ge=0, description="batches of fresh exact samples at the final parameters for the reported F, E (0: report the training-trace average; else >= 2)")
    strain_learning_rate: float = Field(
        1e-3, gt=0, description="NPT: peak Adam learning rate of the strain (about the largest strain change per step)",
    )
    cell_strain: Literal["isotropic", "orthorhombic"] = Field(
        "isotropic", description="NPT: one isotropic strain of the cell, or orthorhombic: a strain per Cartesian direction "
        "(lattice vectors along x, y, z; the kinetic energy per direction is exact for the Gaussian level, freeze_flow, "
        "and from three directional Laplacians with a flow: the flow's jet when nct.laplacian uses it, else folx, exact or hutchinson)",
    )
    strain_samples: int | None = Field(
        16, ge=2, description="NPT: samples per step whose potential strain derivative drives the strain (unbiased subset; "
        "the derivative costs 2-3 energies on a Deep Potential); unset: the whole batch. The final evaluation uses all",
    )
    strain_derivative: Literal["auto", "forward", "central_difference"] = Field(
        "auto", description="NPT training: the potential's strain derivative by forward-mode autodiff (exact) or by "
        "central differences of two energies (within ~2e-8 GPa; for compressed Deep Potentials, whose energies come from "
        "tables and derivatives from the network at the cost of 4-5 energies); auto: central differences for a compressed "
        "potential, forward mode otherwise. The final evaluation's pressure comes from the virial either way",
    )

    @model_validator(mode="after")
    def _warmup_within_run(self):
        if self.eval_batches == 1:
            raise ValueError("nct.eval_batches must be 0 (training-trace average) or >= 2 (an error bar needs two batches)")
        if self.warmup_steps >= self.steps:
            raise ValueError(f"nct.warmup_steps ({self.warmup_steps}) must be smaller than nct.steps ({self.steps})")
        window = self.steps - int(self.steps * (1.0 - self.averaging_fraction))
        if window < 2:
            raise ValueError(
                f"nct.steps = {self.steps} with nct.averaging_fraction = {self.averaging_fraction} averages {window} step(s); "
                "the training-trace error bar needs at least 2: raise nct.steps or nct.averaging_fraction"
            )
        return self


class ParallelConfig(StrictModel):
    """Devices the batch of samples is split over (data parallelism, :mod:`thermoflow.parallel`)."""

    devices: Literal["all"] | Annotated[int, Field(ge=1)] = Field(
        "all", description="'all' local devices (GPUs, or the one CPU device) or their number N; the batch size must be a "
        "multiple of it. Results do not depend on it beyond round-off, so a run may resume on another device count",
    )
    distributed: bool = Field(
        False, description="join a multi-process run (several hosts, or a process per GPU) through jax.distributed: the "
        "coordinator, process count and index come from the launcher's environment (Slurm, Open MPI, JAX_COORDINATOR_ADDRESS) "
        "or from `thermoflow run --coordinator --num-processes --process-id`; 'all' devices are then those of every process",
    )


class RunConfig(StrictModel):
    """A complete thermoflow run."""

    seed: int = Field(0, ge=0, description="random seed for parameters and sampling")
    state: StateConfig
    structure: StructureConfig
    potential: PotentialConfig
    nct: NCTConfig
    harmonic: HarmonicReferenceConfig = Field(default_factory=HarmonicReferenceConfig, description="how the harmonic reference's Hessian is computed")
    phonons: PhononMeshConfig = Field(default_factory=PhononMeshConfig, description="thermoflow phonons: q-point mesh analysis")
    parallel: ParallelConfig = Field(default_factory=ParallelConfig, description="devices the batch is split over")

    @model_validator(mode="before")
    @classmethod
    def _moved_fields(cls, data):
        if isinstance(data, dict) and isinstance(data.get("nct"), dict) and "temperature_K" in data["nct"]:
            raise ValueError("nct.temperature_K has moved to the [state] section: write [state] temperature_K = ... instead")
        return data


class ConfigError(ValueError):
    """Invalid configuration; the message names each offending field and the fix."""


DEFAULT_CONFIG = "default_neon.toml"


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a table")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", value)``, the value parsed as a TOML literal if possible."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.field=value")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def read_config_dict(path: str | Path | None) -> tuple[dict, Path]:
    """Raw TOML dict and the directory relative paths refer to (embedded default if None)."""
    if path is None:
        text = resources.files("thermoflow.workflows").joinpath(DEFAULT_CONFIG).read_text()
        return tomllib.loads(text), Path.cwd()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text()), path.resolve().parent
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def read_run_config(path: str | Path) -> RunConfig:
    """The validated config of a run directory's ``config.resolved.toml``, with the defaults of the
    thermoflow version that wrote it where they have changed since: a resolved config without
    ``nct.flow.trainable`` was written before 2026-12-05, when every flow trained.

    Raises:
        ConfigError: missing file, bad TOML or invalid fields.
    """
    data, _ = read_config_dict(path)
    flow = data.get("nct", {}).get("flow")
    if flow is not None and "trainable" not in flow:
        flow["trainable"] = True
    return validate_config(data)


def validate_config(data: dict, model: type[BaseModel] = RunConfig):
    """Validate a raw dict as ``model`` (a run config by default; ``MDRunConfig`` for MD);
    raise :class:`ConfigError` naming every bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            parts = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
            if len(parts) > 1 and parts[0] == "potential" and parts[1] == str(data.get("potential", {}).get("kind")):
                del parts[1]  # the discriminator tag, not a field
            loc = ".".join(parts)
            msg = err["msg"].removeprefix("Value error, ")
            lines.append(f"  {loc or '(top level)'}: {msg}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, model: type[BaseModel] = RunConfig) -> tuple[RunConfig, Path]:
    """Read, override and validate a run config.

    Args:
        path: TOML file, or None for the embedded default job.
        overrides: ``"section.field=value"`` strings applied in order.
        model: the pydantic model of the config (``RunConfig``; ``MDRunConfig`` for ``thermoflow md``).

    Returns:
        ``(config, base_dir)``; relative file names in the config are resolved against base_dir.

    Raises:
        ConfigError: missing file, bad TOML, bad override or invalid fields.
    """
    data, base = read_config_dict(path)
    for text in overrides or []:
        set_dotted(data, *parse_override(text))
    return validate_config(data, model), base


def resolve_path(base: Path, name: str) -> Path:
    """A config file name relative to the config's directory (absolute names unchanged)."""
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p
