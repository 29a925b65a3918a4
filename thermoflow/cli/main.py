"""Command line: ``thermoflow run [CONFIG] [--out DIR] [--resume] [--set k=v]``, ``thermoflow phonons``, ``thermoflow scha``."""

from __future__ import annotations

import contextlib
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

app = typer.Typer(add_completion=False, help="thermoflow: quantum anharmonic free energies of crystals.", pretty_exceptions_enable=False)
console = Console()

_CONFIG_ARG = typer.Argument(None, help="TOML config file; omit for the embedded default job (fcc neon, LJ, 20 K)")
_SET_OPT = typer.Option([], "--set", help="override a config field, e.g. --set nct.steps=200 (repeatable)")


_STATE = {"debug": False}


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="show the Python traceback of an error")) -> None:
    """thermoflow: quantum anharmonic free energies of crystals."""
    _STATE["debug"] = debug


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=console, show_path=False)])
    # JAX probes for TPU/GPU plug-ins at start-up and logs each failure at INFO: noise on a CPU machine
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)


@contextlib.contextmanager
def _user_errors():
    """Every failure ends in one ``error:`` line and a non-zero exit (``--debug``: the traceback)."""
    try:
        yield
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        console.print("[red]error:[/] interrupted; a run continues from its last checkpoint with --resume --out DIR")
        raise typer.Exit(130) from None
    except Exception as exc:  # noqa: BLE001 - the CLI boundary: everything becomes one clear line
        if _STATE["debug"]:
            raise
        message = str(exc) or type(exc).__name__
        kind = "" if isinstance(exc, (ValueError, FileNotFoundError)) else f"{type(exc).__name__}: "
        console.print(f"[red]error:[/] {kind}{message}", soft_wrap=True)
        console.print("(run with thermoflow --debug ... for the traceback)", style="dim")
        raise typer.Exit(1) from None


def _load(config: Optional[Path], overrides: list[str], model=None, loader=None):
    """``(config, base)`` validated as ``model`` (default the NCT run), or by ``loader(path, overrides)``; a config error exits with 2."""
    from thermoflow.workflows.config import ConfigError, RunConfig, load_config

    try:
        if loader is not None:
            return loader(config, overrides)
        return load_config(config, overrides, model or RunConfig)
    except ConfigError as exc:
        if _STATE["debug"]:
            raise
        console.print(f"[red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


def _default_out(config: Optional[Path], kind: str) -> Path:
    stem = config.stem if config is not None else "default"
    return Path("runs") / f"{stem}-{kind}-{datetime.now():%Y%m%d-%H%M%S}"


def _load_run(config: Path, overrides: list[str], model, out: Optional[Path], resume: bool, kind: str, loader=None):
    """``(config, base, run directory)`` of a resumable command (md, ti, vmc, vfe); ``--resume`` needs ``--out``."""
    cfg, base = _load(config, overrides, model, loader)
    if resume and out is None:
        console.print("[red]error:[/] --resume needs --out DIR (the run directory to continue)")
        raise typer.Exit(2)
    return cfg, base, out or _default_out(config, kind)


@app.command()
def run(
    config: Optional[Path] = _CONFIG_ARG,
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/<config>-nct-<time>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    overrides: list[str] = _SET_OPT,
    progress: bool = typer.Option(True, help="show progress: a bar on a terminal, otherwise a log line every --log-every steps"),
    log_every: int = typer.Option(0, "--log-every", min=0, help="steps between progress lines when not on a terminal (0: about 20 lines per run)"),
    coordinator: Optional[str] = typer.Option(None, "--coordinator", help="multi-process run: host:port of process 0 (else from the environment)"),
    num_processes: Optional[int] = typer.Option(None, "--num-processes", min=1, help="multi-process run: number of processes"),
    process_id: Optional[int] = typer.Option(None, "--process-id", min=0, help="multi-process run: index of this process"),
) -> None:
    """Optimise the NCT variational free energy (NVT, or NPT with state.pressure_GPa) and write a run directory.

    Several processes (hosts, or one per GPU) run one job when `parallel.distributed = true` or the
    multi-process options are given: launch the same command in each (srun, mpirun), all with the
    same --out on a shared file system; process 0 writes the run directory.
    """
    _setup_logging()
    cfg, base = _load(config, overrides)
    if resume and out is None:
        console.print("[red]error:[/] --resume needs --out DIR (the run directory to continue)")
        raise typer.Exit(2)
    if cfg.parallel.distributed or coordinator or num_processes or process_id is not None:
        if out is None:
            console.print("[red]error:[/] a multi-process run needs --out DIR (the same directory for every process)")
            raise typer.Exit(2)
        from thermoflow.parallel import initialize_distributed

        with _user_errors():
            initialize_distributed(coordinator, num_processes, process_id)
    out = out or _default_out(config, "nct")
    from thermoflow.workflows.nct_run import jax_device_summary, run_nct

    logging.getLogger(__name__).info(jax_device_summary())
    bar = progress and sys.stderr.isatty()
    with _user_errors():
        res = run_nct(cfg, base, out, resume=resume, progress=bar, log_every=log_every if progress and not bar else None)
    _print_summary(res, out)


def _print_summary(res: dict, out: Path) -> None:
    m = 1000.0
    table = Table(title=f"NCT free energy, {res['n_atoms']} atoms, {res['temperature_K']:g} K (meV/atom)")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    harmonic = res["harmonic_free_energy_eV_per_atom"] is not None
    table.add_row("harmonic F", f"{res['harmonic_free_energy_eV_per_atom'] * m:.4f}" if harmonic else "undefined (imaginary modes)")
    if "gaussian_free_energy_eV_per_atom" in res:
        table.add_row("self-consistent Gaussian F (SCHA)", f"{res['gaussian_free_energy_eV_per_atom'] * m:.4f} +- {res['gaussian_free_energy_stderr_eV_per_atom'] * m:.4f}")
    table.add_row("NCT F", f"{res['free_energy_eV_per_atom'] * m:.4f} +- {res['free_energy_stderr_eV_per_atom'] * m:.4f}")
    if res.get("anharmonic_correction_eV_per_atom") is not None:
        table.add_row("NCT F - harmonic F", f"{res['anharmonic_correction_eV_per_atom'] * m:+.4f} +- {res['free_energy_stderr_eV_per_atom'] * m:.4f}")
    if res.get("flow_minus_gaussian_eV_per_atom") is not None:
        table.add_row("NCT F - Gaussian F", f"{res['flow_minus_gaussian_eV_per_atom'] * m:+.4f} +- {res['flow_minus_gaussian_stderr_eV_per_atom'] * m:.4f}")
    if "gaussian_plus_bubble_free_energy_eV_per_atom" in res:
        table.add_row("Gaussian + bubble F (perturbative)", f"{res['gaussian_plus_bubble_free_energy_eV_per_atom'] * m:.4f} +- {res['gaussian_plus_bubble_free_energy_stderr_eV_per_atom'] * m:.4f}")
    if harmonic:
        table.add_row("harmonic ZPE", f"{res['harmonic_zero_point_energy_eV_per_atom'] * m:.4f}")
    table.add_row("NCT E", f"{res['energy_eV_per_atom'] * m:.4f} +- {res['energy_stderr_eV_per_atom'] * m:.4f}")
    table.add_row("NCT S (k_B/atom)", f"{res['entropy_kB_per_atom']:.4f}")
    if res.get("pressure_GPa") is not None:
        table.add_row("NCT pressure (GPa, virial)", f"{res['pressure_GPa']:.4f} +- {res['pressure_stderr_GPa']:.4f}")
    if "gibbs_free_energy_eV_per_atom" in res:
        table.add_row(f"NCT G = F + PV at {res['pressure_target_GPa']:g} GPa", f"{res['gibbs_free_energy_eV_per_atom'] * m:.4f} +- {res['gibbs_free_energy_stderr_eV_per_atom'] * m:.4f}")
        table.add_row("volume (A^3/atom; reference)", f"{res['volume_A3_per_atom']:.4f} ({res['reference_volume_A3_per_atom']:.4f})")
        lengths = (sum(x * x for x in vector) ** 0.5 for vector in res["cell_A"])
        table.add_row("cell vector lengths (A)", " / ".join(f"{x:.4f}" for x in lengths))
    table.add_row("seconds per step", f"{res['seconds_per_step']:.3f}")
    console.print(table)
    console.print(f"run directory: {out}")


_OUT_OPT = typer.Option(None, "--out", help="output directory")


@app.command()
def phonons(config: Optional[Path] = _CONFIG_ARG, out: Optional[Path] = _OUT_OPT, overrides: list[str] = _SET_OPT) -> None:
    """Harmonic analysis alone: frequencies, imaginary modes, harmonic F, E, S, ZPE."""
    _analysis(config, out, overrides, "phonons", lambda r: f"harmonic phonons, {r['n_atoms']} atoms, {r['n_modes']} modes")


@app.command()
def scha(config: Optional[Path] = _CONFIG_ARG, out: Optional[Path] = _OUT_OPT, overrides: list[str] = _SET_OPT) -> None:
    """Self-consistent harmonic approximation alone: the best Gaussian F, E, S and renormalised modes."""
    _analysis(config, out, overrides, "scha", lambda r: f"self-consistent Gaussian, {r['n_atoms']} atoms, {r['temperature_K']:g} K")


@app.command()
def compare(
    config: Path = typer.Argument(..., help="comparison file: a run config plus a \\[compare] section"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory (default: runs/<config>-compare-<time>); rerun with the same --out to skip finished points and resume the rest"),
    overrides: list[str] = _SET_OPT,
) -> None:
    """Free energies of several phases on a temperature grid, their differences and crossings."""
    _setup_logging()
    from thermoflow.workflows.compare import run_compare

    out = out or _default_out(config, "compare")
    with _user_errors():
        summary = run_compare(config, out, overrides=overrides)
    table = Table(title=f"{summary['quantity']} relative to {summary['reference_phase']} (meV/atom)")
    table.add_column("T (K)")
    names = [n for n in summary["phases"] if n != summary["reference_phase"]]
    for n in names:
        table.add_column(n, justify="right")
    for j, t in enumerate(summary["temperatures_K"]):
        cells = [f"{summary['phases'][n]['delta_eV_per_atom'][j] * 1e3:+.4f} +- {summary['phases'][n]['delta_stderr_eV_per_atom'][j] * 1e3:.4f}" for n in names]
        table.add_row(f"{t:g}", *cells)
    console.print(table)
    for n in names:
        for c in summary["phases"][n]["crossings"]:
            err = "undetermined" if c["stderr_K"] is None else f"{c['stderr_K']:.1f}"
            console.print(f"{n} crosses {summary['reference_phase']} at {c['temperature_K']:.1f} +- {err} K")
    console.print(f"output directory: {out}")


@app.command()
def spectrum(
    run_dir: Path = typer.Argument(..., help="a finished NCT run directory"),
    samples: int = typer.Option(1024, "--samples", min=2, help="exact samples per state (cost: (modes + 1) x samples local energies)"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    batch: int = typer.Option(256, "--batch", min=1, help="samples per evaluation call"),
    base: Optional[Path] = typer.Option(None, "--base", help="directory the run config's file names are relative to (default: recorded in the run)"),
) -> None:
    """Anharmonic phonon spectrum of a trained run: excitation energies E(e_k) - E(0), ZPE, DOS."""
    _setup_logging()
    from thermoflow.workflows.spectrum_run import run_spectrum

    with _user_errors():
        res = run_spectrum(run_dir, n_samples=samples, seed=seed, batch_size=batch, base=base)
    _print_dict(f"anharmonic phonon spectrum, {res['n_atoms']} atoms, {res['n_modes']} modes", res, run_dir)


@app.command()
def structure(
    run_dir: Path = typer.Argument(..., help="a finished NCT run directory"),
    samples: int = typer.Option(256, "--samples", min=2, help="exact configurations drawn from the trained state for g(r)"),
    quench: int = typer.Option(8, "--quench", min=0, help="how many of them to quench (local minimisation) for space groups"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    r_max: Optional[float] = typer.Option(None, "--r-max", min=0.1, help="largest g(r) distance, A (default: 2.5 nearest-neighbour distances)"),
    symprec: float = typer.Option(1e-2, "--symprec", min=1e-6, help="spglib distance tolerance, A"),
    base: Optional[Path] = typer.Option(None, "--base", help="directory the run config's file names are relative to (default: recorded in the run)"),
) -> None:
    """Structure of a trained run: g(r), quenched samples, space groups, Wyckoff x (cI16). For a `thermoflow vfe` run with
    [hydrogen]: its final proton samples annealed on p^beta, molecules, space groups and the XRD pattern (--seed only)."""
    _setup_logging()
    from thermoflow.workflows.structure_run import run_structure

    if (run_dir / "config.resolved.toml").is_file() and "[hydrogen]" in (run_dir / "config.resolved.toml").read_text():
        from thermoflow.workflows.vfe_hydrogen_run import vfe_hydrogen_structure

        with _user_errors():
            res = vfe_hydrogen_structure(run_dir, seed=seed)
        _print_dict("structure of the trained proton flow (annealed samples)", res, run_dir)
        return
    with _user_errors():
        res = run_structure(run_dir, n_samples=samples, n_quench=quench, seed=seed, r_max_A=r_max, symprec_A=symprec, base=base)
    shown = {}
    for key, value in res.items():  # one level of nesting as dotted keys; the per-sample list stays in the file
        if key not in ("quenched", "method", "quench"):
            shown.update({f"{key}.{k}": v for k, v in value.items() if k != "experiment"} if isinstance(value, dict) else {key: value})
    _print_dict(f"structure of the trained state, {res['n_atoms']} atoms, {res['n_samples']} samples", shown, run_dir)


@app.command()
def md(
    config: Path = typer.Argument(..., help="MD config: seed and the state, structure, potential and md sections"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/<config>-md-<time>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    overrides: list[str] = _SET_OPT,
    log_every: int = typer.Option(0, "--log-every", min=0, help="steps between progress lines (0: about 20 lines per run)"),
    export_lammps: Optional[Path] = typer.Option(
        None, "--export-lammps", help="write a LAMMPS data file and input deck of this run to this directory instead of running it"),
) -> None:
    """Molecular dynamics: NVE, classical Langevin, quantum thermal bath (qtb) or adaptive QTB (adqtb); NVT or NPT."""
    _setup_logging()
    from thermoflow.workflows.md_config import MDRunConfig

    if export_lammps is not None:
        from thermoflow.workflows.lammps_export import export_lammps as write_lammps

        cfg, base = _load(config, overrides, MDRunConfig)
        with _user_errors():
            written = write_lammps(cfg, base, export_lammps)
        typer.echo(f"LAMMPS deck: {written['input']} (data: {written['data']}; atom types {' '.join(written['atom_types'])})")
        return
    cfg, base, out = _load_run(config, overrides, MDRunConfig, out, resume, "md")
    from thermoflow.workflows.md_run import run_md

    with _user_errors():
        res = run_md(cfg, base, out, resume=resume, log_every=log_every)
    _print_dict(f"molecular dynamics, {res['n_atoms']} atoms, {res['ensemble']} {res['thermostat'] or ''}", res, out)


@app.command()
def ti(
    config: Path = typer.Argument(..., help="TI config: seed and the state, structure, potential and ti sections"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/<config>-ti-<time>)"),
    resume: bool = typer.Option(False, "--resume", help="read back the finished lambda nodes in --out and run the rest"),
    overrides: list[str] = _SET_OPT,
) -> None:
    """Classical free energy by thermodynamic integration from the harmonic (or Einstein) crystal, Langevin MD."""
    _setup_logging()
    from thermoflow.workflows.ti_config import TIRunConfig

    cfg, base, out = _load_run(config, overrides, TIRunConfig, out, resume, "ti")
    from thermoflow.workflows.ti_run import run_ti

    with _user_errors():
        res = run_ti(cfg, base, out, resume=resume)
    _print_dict(f"thermodynamic integration, {res['n_atoms']} atoms, {res['reference']} reference", res, out)


@app.command()
def vmc(
    config: Path = typer.Argument(..., help="VMC config: seed and the system, wavefunction and vmc sections"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/<config>-vmc-<time>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    overrides: list[str] = _SET_OPT,
    log_every: int = typer.Option(0, "--log-every", min=0, help="steps between progress lines (0: about 20 lines per run)"),
) -> None:
    """Electronic ground state by variational Monte Carlo: electrons + fixed protons (or jellium) in a periodic cell."""
    _setup_logging()
    from thermoflow.workflows.vmc_config import VMCRunConfig

    cfg, base, out = _load_run(config, overrides, VMCRunConfig, out, resume, "vmc")
    from thermoflow.workflows.vmc_run import run_vmc

    with _user_errors():
        res = run_vmc(cfg, base, out, resume=resume, log_every=log_every)
    shown = {k: v for k, v in res.items() if not isinstance(v, list)}
    _print_dict(f"VMC, {res.get('n_electrons', '?')} electrons, {res.get('n_protons', '?')} protons", shown, out)


@app.command()
def vfe(
    config: Path = typer.Argument(..., help="VFE config: seed and the state, structure, potential, flow, base and vfe sections; "
                                  "or, for protons with quantum electrons, the state, hydrogen, flow, wavefunction and vfe sections"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default: runs/<config>-vfe-<time>)"),
    resume: bool = typer.Option(False, "--resume", help="continue the run in --out from its last checkpoint"),
    overrides: list[str] = _SET_OPT,
    log_every: int = typer.Option(0, "--log-every", min=0, help="steps between progress lines (0: about 20 lines per run)"),
) -> None:
    """Deep variational free energy: a periodic flow for classical particles trained on a potential, or jointly with the
    electrons' wavefunction for dense hydrogen (a [hydrogen] section)."""
    _setup_logging()
    from thermoflow.workflows.vfe_config import VFEElectronsRunConfig, load_any_vfe_config

    cfg, base, out = _load_run(config, overrides, None, out, resume, "vfe", loader=load_any_vfe_config)
    with _user_errors():
        if isinstance(cfg, VFEElectronsRunConfig):
            from thermoflow.workflows.vfe_hydrogen_run import run_vfe_hydrogen, run_vfe_hydrogen_scan

            run = run_vfe_hydrogen_scan if cfg.scan is not None else run_vfe_hydrogen
            res = run(cfg, base, out, resume=resume, log_every=log_every)
        else:
            from thermoflow.workflows.vfe_run import run_vfe

            res = run_vfe(cfg, base, out, resume=resume, log_every=log_every)
    _print_dict(f"VFE, {res.get('n_particles', res.get('n_protons', '?'))} particles", res, out)


@app.command()
def analyze(
    path: Path = typer.Argument(..., help="a thermoflow md run directory, or an extxyz trajectory"),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory (default: RUN_DIR/analysis, or <file stem>_analysis)"),
    skip: int = typer.Option(0, "--skip", min=0, help="frames dropped at the start (equilibration)"),
    every: int = typer.Option(1, "--every", min=1, help="keep every K-th frame"),
    fit_window: Optional[tuple[float, float]] = typer.Option(None, "--fit-window", help="START END of the MSD fit for D, ps (default: 20-80 percent of a block)"),
    blocks: int = typer.Option(5, "--blocks", min=2, help="independent blocks for the error bar of D"),
    r_max: Optional[float] = typer.Option(None, "--r-max", min=0.1, help="largest g(r) distance, A (default: 2.5 nearest-neighbour distances)"),
    timestep_fs: Optional[float] = typer.Option(None, "--timestep-fs", min=0.0, help="MD timestep, fs (a bare file; frames' step x this is their time)"),
    origins: int = typer.Option(8, "--origins", min=1, help="time origins of the permutation-reordered MSD'"),
    rdf_frames: int = typer.Option(100, "--rdf-frames", min=1, help="g(r) from at most this many frames, evenly spaced"),
) -> None:
    """Trajectory analysis: MSD, D, permutation-reordered MSD', VACF, vibrational DOS, g(r)."""
    _setup_logging()
    from thermoflow.workflows.analyze_run import run_analyze

    with _user_errors():
        res = run_analyze(path, out, timestep_fs=timestep_fs, skip=skip, every=every, fit_window_ps=fit_window, n_blocks=blocks,
                          r_max_A=r_max, n_origins=origins, rdf_frames=rdf_frames)
    shown = {k: v for k, v in res.items() if not isinstance(v, dict) and k != "method"}
    for s, d in res["diffusion"].items():
        shown[f"D {s} (A^2/ps)"] = f"{d['D_A2_per_ps']:.4g} +- {d['D_stderr_A2_per_ps']:.2g}"
        shown[f"D {s} (cm^2/s)"] = f"{d['D_cm2_per_s']:.4g} +- {d['D_stderr_cm2_per_s']:.2g}"
        shown[f"MSD' {s} in the window (A^2)"] = res["msd_reordered_in_fit_window_A2"][s]
    _print_dict(f"trajectory analysis, {res['n_atoms']} atoms, {res['n_frames']} frames", shown, res.get("output", path))


def _analysis(config: Optional[Path], out: Optional[Path], overrides: list[str], kind: str, title) -> None:
    """The shared shell of the analysis commands: load, run ``run_<kind>``, print its results."""
    _setup_logging()
    cfg, base = _load(config, overrides)
    out = out or _default_out(config, kind)
    from thermoflow.workflows import phonon_run

    with _user_errors():
        res = getattr(phonon_run, f"run_{kind}")(cfg, base, out)
    _print_dict(title(res), res, out)


def _print_dict(title: str, res: dict, out: Path) -> None:
    table = Table(title=title)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    def fmt(value):
        if isinstance(value, float):
            return f"{value:.6g}"
        if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
            return ", ".join(f"{v:.6g}" for v in value)
        return str(value)

    for key, value in res.items():
        for sub, item in (value.items() if isinstance(value, dict) else [(None, value)]):
            table.add_row(key if sub is None else f"{key}.{sub}", fmt(item))
    console.print(table)
    console.print(f"output: {out}")


if __name__ == "__main__":
    app()
