"""The ``[md]`` section and the MD run config (``thermoflow md CONFIG``).

An MD run config is ``seed`` + ``[state]`` + ``[structure]`` + ``[potential]`` + ``[md]``: the
same state, structure and potential sections as an NCT run, so one crystal and potential serve
both methods. Validated by pydantic before any computation, every error naming its field.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from thermoflow.workflows.config import PotentialConfig, StateConfig, StructureConfig, StrictModel, load_config


#: md.neighbor_list = "auto" uses cell lists from this many atoms on (dense pair sums below)
NEIGHBOR_LIST_MIN_ATOMS = 500

#: largest change of gamma_r / gamma per segment and unit relative deviation (A_gamma x segment duration):
#: the linearised adaptation converges for < 2 and averages the noisy one-segment spectra only well below 1
MAX_ADAPTATION_PER_SEGMENT = 0.5


class MDConfig(StrictModel):
    """Molecular dynamics: integrator, thermostat, lengths and output intervals."""

    ensemble: Literal["nve", "nvt", "npt"] = Field(
        "nvt", description="nve: velocity Verlet; nvt: Langevin BAOAB with md.thermostat; npt: nvt plus stochastic cell "
        "rescaling (md.barostat) at state.pressure_GPa",
    )
    thermostat: Literal["langevin", "qtb", "adqtb"] = Field(
        "langevin", description="nvt random force: langevin (classical white noise), qtb (quantum thermal bath), "
        "adqtb (adaptive QTB: corrects zero-point-energy leakage)",
    )
    timestep_fs: float = Field(1.0, gt=0, description="timestep, fs")
    steps: int = Field(1000, ge=1, description="MD steps (a multiple of md.trajectory_every)")
    friction_per_ps: float = Field(1.0, gt=0, description="Langevin friction gamma, 1/ps (QTB: much smaller than the frequencies of interest)")
    qtb_cutoff_THz: float | None = Field(
        None, gt=0, description="qtb/adqtb: cutoff frequency of the quantum noise spectrum, THz (about 2-3x the highest "
        "phonon frequency; below the Nyquist frequency 1/(2 timestep)); unset: half the Nyquist frequency",
    )
    qtb_filter_length: int = Field(
        1024, ge=16, description="qtb/adqtb: filter length L in steps (even): memory of the coloured noise, segment length "
        "of the FDT spectra, frequency resolution 1/(L timestep)",
    )
    adqtb_rate_per_ps: float = Field(
        0.05, gt=0, description="adqtb: adaptation rate A_gamma, change of gamma_r/gamma per ps per unit relative FDT deviation "
        "(1/A_gamma is the relaxation time of gamma_r towards gamma in a harmonic crystal); A_gamma x "
        "qtb_filter_length x timestep (the change per segment) must stay <= 0.5",
    )
    qtb_kernel_oversampling: int | None = Field(
        None, ge=1, description="qtb/adqtb: the noise filter has this many times qtb_filter_length taps, on a frequency grid "
        "as many times finer than the adaptation bins (so that the realised gamma_r(omega) is the adapted one; costs as many "
        "times the noise memory and convolution); unset: 4 for adqtb, 1 for qtb",
    )
    barostat: Literal["isotropic", "orthorhombic", "triclinic"] = Field(
        "isotropic", description="npt: isotropic (volume only, any cell), orthorhombic (the three lengths of a cell with "
        "axes along x, y, z fluctuate independently) or triclinic (lengths and angles; the cell is rotated into ASE's "
        "standard lower-triangular form first); stochastic cell rescaling, Bernetti & Bussi 2020",
    )
    barostat_time_ps: float = Field(1.0, gt=0, description="npt: barostat time constant tau_p, ps (at least 20 timesteps)")
    compressibility_per_GPa: float | None = Field(
        None, gt=0, description="npt: isothermal compressibility beta_T used by the barostat, 1/GPa (sets only the volume "
        "relaxation time); unset: 1 / the static bulk modulus of the potential at the initial structure",
    )
    zero_net_force: bool = Field(
        True, description="remove the total random force and the initial drift (3 fewer degrees of freedom); false for "
        "potentials that are not translation invariant (harmonic/Einstein)",
    )
    trajectory_every: int = Field(10, ge=1, description="steps between trajectory frames (trajectory.extxyz) and progress checks")
    thermo_every: int = Field(1, ge=1, description="steps between rows of thermo.csv")
    checkpoint_every: int = Field(1000, ge=1, description="steps between checkpoints (a multiple of md.trajectory_every)")
    averaging_fraction: float = Field(0.5, gt=0, le=1, description="final fraction of the run averaged for results.json (the rest is equilibration)")
    neighbor_list: Literal["auto", "dense", "cell_list"] = Field(
        "auto", description="neighbours of lennard_jones / morse / deepmd potentials: dense (all pairs over fixed periodic "
        "images, O(N^2)), cell_list (cell-list neighbour lists with a skin, O(N), the same energies to round-off; deepmd: "
        "se_e2_a / se_e2_r / se_e3 descriptors), or auto: cell_list from "
        f"{NEIGHBOR_LIST_MIN_ATOMS} atoms on where it applies. Other potentials always run dense",
    )
    neighbor_skin_A: float = Field(
        1.0, gt=0, description="cell_list: skin of the neighbour lists, Angstrom (the list holds pairs within cutoff + skin "
        "and is rebuilt when an atom has moved skin/2, or the cell changed as much)",
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.ensemble == "nve" and self.thermostat != "langevin":
            raise ValueError(f"md.thermostat = {self.thermostat!r} needs md.ensemble = 'nvt' (nve has no thermostat)")
        if self.ensemble == "npt" and self.barostat_time_ps * 1000.0 < 20.0 * self.timestep_fs:
            raise ValueError(
                f"md.barostat_time_ps ({self.barostat_time_ps}) must be at least 20 timesteps ({20.0 * self.timestep_fs / 1000.0:g} ps)"
            )
        if self.steps % self.trajectory_every:
            raise ValueError(f"md.steps ({self.steps}) must be a multiple of md.trajectory_every ({self.trajectory_every})")
        if self.checkpoint_every % self.trajectory_every:
            raise ValueError(f"md.checkpoint_every ({self.checkpoint_every}) must be a multiple of md.trajectory_every ({self.trajectory_every})")
        if self.qtb_filter_length % 2:
            raise ValueError(f"md.qtb_filter_length must be even, got {self.qtb_filter_length}")
        per_segment = self.adqtb_rate_per_ps * self.qtb_filter_length * self.timestep_fs / 1000.0
        if self.thermostat == "adqtb" and per_segment > MAX_ADAPTATION_PER_SEGMENT:
            raise ValueError(
                f"md.adqtb_rate_per_ps ({self.adqtb_rate_per_ps}) x md.qtb_filter_length x md.timestep_fs = {per_segment:.3g} "
                f"per segment: above {MAX_ADAPTATION_PER_SEGMENT} the adaptation overshoots and gamma_r oscillates between its "
                f"bounds; lower md.adqtb_rate_per_ps to <= {MAX_ADAPTATION_PER_SEGMENT * 1000.0 / (self.qtb_filter_length * self.timestep_fs):.3g}"
            )
        nyquist = 1000.0 / (2.0 * self.timestep_fs)
        if self.qtb_cutoff_THz is not None and self.qtb_cutoff_THz >= nyquist:
            raise ValueError(
                f"md.qtb_cutoff_THz ({self.qtb_cutoff_THz}) must lie below the Nyquist frequency {nyquist:g} THz of "
                f"md.timestep_fs = {self.timestep_fs}: lower the cutoff or the timestep"
            )
        window = int(self.steps * self.averaging_fraction) // self.thermo_every
        if window < 2:
            raise ValueError(
                f"md.steps x md.averaging_fraction / md.thermo_every gives {window} averaged row(s); the error bars need at "
                "least 2: raise md.steps or md.averaging_fraction, or lower md.thermo_every"
            )
        return self

    @property
    def cutoff_THz(self) -> float:
        """The QTB cutoff, THz (half the Nyquist frequency when unset)."""
        return self.qtb_cutoff_THz if self.qtb_cutoff_THz is not None else 250.0 / self.timestep_fs


#: potential kinds whose energy has a neighbour-list evaluation (md.neighbor_list)
NEIGHBOR_LIST_KINDS = ("lennard_jones", "morse", "deepmd")


class FixedCellRunConfig(StrictModel):
    """``seed`` + ``[state]`` + ``[structure]`` + ``[potential]`` of a run at the structure's fixed cell
    (the MD and thermodynamic-integration runs; ``state.pressure_GPa`` is refused)."""

    #: what the pressure error says runs at a fixed cell
    _npt_task: ClassVar[str] = "this task"

    seed: int = Field(0, ge=0, description="random seed of the initial velocities and the noise")
    state: StateConfig
    structure: StructureConfig
    potential: PotentialConfig

    def _constant_pressure(self) -> bool:
        """Whether this run samples at constant pressure (then state.pressure_GPa is required)."""
        return False

    @model_validator(mode="after")
    def _fixed_cell(self):
        if self._constant_pressure():
            if self.state.pressure_GPa is None:
                raise ValueError("state.pressure_GPa is required at constant pressure (md.ensemble = 'npt')")
        elif self.state.pressure_GPa is not None:
            raise ValueError(
                f"state.pressure_GPa: {self._npt_task} runs at the structure's fixed cell; remove it{self._npt_hint}"
            )
        return self

    #: how to run at constant pressure instead, appended to the pressure error
    _npt_hint: ClassVar[str] = ""


class MDRunConfig(FixedCellRunConfig):
    """A complete ``thermoflow md`` run."""

    _npt_task: ClassVar[str] = "nve/nvt molecular dynamics"
    _npt_hint: ClassVar[str] = " or set md.ensemble = 'npt'"

    md: MDConfig = Field(default_factory=MDConfig, description="molecular dynamics settings")

    def _constant_pressure(self) -> bool:
        return self.md.ensemble == "npt"

    @model_validator(mode="after")
    def _neighbor_list_applies(self):
        if self.md.neighbor_list == "cell_list" and self.potential.kind not in NEIGHBOR_LIST_KINDS:
            raise ValueError(
                f"md.neighbor_list = 'cell_list' is implemented for the potential kinds {list(NEIGHBOR_LIST_KINDS)}, not "
                f"potential.kind = {self.potential.kind!r}: use md.neighbor_list = 'auto' or 'dense'"
            )
        return self


def load_md_config(path: str | Path, overrides: list[str] | None = None) -> tuple[MDRunConfig, Path]:
    """Read, override and validate an MD run config; ``(config, base_dir)``.

    Raises:
        ConfigError: missing file, bad TOML, bad override or invalid fields (each named).
    """
    return load_config(path, overrides, model=MDRunConfig)
