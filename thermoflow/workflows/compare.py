"""Phase comparison: free energies of several crystal structures on a temperature grid, their
differences, and where they cross. ``thermoflow compare COMPARE.toml``.

A comparison file is a run config (``[potential]``, ``[nct]``, ``seed``, and ``[state]`` whose
``pressure_GPa``, if set, makes every point NPT) plus a ``[compare]`` section::

    [compare]
    temperatures_K = [50, 100, 150, 200]
    reference = "bcc"                 # Delta G is relative to this phase
    [[compare.phases]]
    name = "bcc"
    structure = { file = "bcc.vasp", supercell = [2, 2, 2], volume_per_atom_A3 = 19.2 }
    [[compare.phases]]
    name = "fcc"
    structure = { file = "fcc.vasp", supercell = [2, 2, 2], volume_per_atom_A3 = 19.2 }
    # potential = { ... }             # optional: this phase's own potential

Every (phase, temperature) point is its own run directory ``OUT/<phase>/<T>K`` written by the
NCT workflow: a finished point is read back and skipped, an interrupted one is resumed from its
checkpoint. The points go through an executor (``[compare.executor]``: ``kind = "local"`` (default),
``"dask"`` or ``"slurm"``, :mod:`thermoflow.workflows.executors`) and the summary is made from
their results.json files::

    summary.csv, summary.json   G (NPT) or F (NVT) per phase and temperature with error bars,
                                Delta G to the reference phase, crossing temperatures, the NCT
                                and harmonic entropies and -T (S - S_harm) (meV/atom)
    free_energies.png, free_energy_differences.png, entropies.png

The points run temperature by temperature, the phases of one temperature in one ``map`` call.
With ``compare.warm_start`` (default) a point's self-consistent Gaussian starts from the one the
same phase stored at the previous temperature (``nct.reference.start``) and runs
``compare.warm_start_iterations`` iterations: the Gaussian changes little between neighbouring
temperatures, and the cold start from the harmonic modes is the most expensive part of a point.
The flow still starts at each point from its own perturbative (or identity) map.

With ``[compare.harmonic_correction]`` (``mesh = [32, 32, 32]``, ``force_constants_min_atoms``) each
phase also gets its harmonic finite-size (q-point sampling) correction, F_harm of the infinite
crystal on a dense q-mesh (force constants of a large supercell by phonopy, interpolated) minus
the harmonic F of the point's own supercell (its results.json), both at the phase's harmonic
reference structure (:mod:`thermoflow.phonons.qmesh`; stored in ``OUT/<phase>/harmonic_mesh.json``).
The summary then adds the corrected values, differences and crossings. It corrects the harmonic
part of the size effect only: the anharmonic part still needs larger cells.

The crossing temperature between two grid points where Delta G changes sign is the zero of the
linear interpolation; its error bar is the standard deviation over a parametric bootstrap (every
point's value drawn from a normal distribution with its standard error).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from thermoflow.io.atomic import atomic_write_text
from thermoflow.units import KB_EV_PER_K, MEV_PER_EV
from thermoflow.workflows import plots
from thermoflow.workflows.config import ConfigError, StructureConfig, StrictModel, read_config_dict, validate_config
from thermoflow.workflows.executors import ExecutorConfig, make_executor

log = logging.getLogger(__name__)


class PhaseConfig(StrictModel):
    """One crystal structure of a comparison."""

    name: str = Field(min_length=1, description="label; also the point directories' name")
    structure: StructureConfig
    potential: dict[str, Any] | None = Field(None, description="this phase's own [potential] (default: the shared one)")
    nct: dict[str, Any] | None = Field(
        None, description="this phase's [nct] settings that differ from the shared ones, merged over them table by table "
        "(e.g. { cell_strain = \"orthorhombic\" } for a non-cubic phase)",
    )

    @model_validator(mode="after")
    def _safe_name(self):
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"phase name {self.name!r}: use letters, digits, '-' and '_' (it names a directory)")
        return self


class HarmonicCorrectionConfig(StrictModel):
    """``[compare.harmonic_correction]``: the harmonic q-point (finite-size) correction of each phase."""

    mesh: list[int] = Field(min_length=3, max_length=3, description="Gamma-centred q-point mesh of the primitive cell, e.g. [32, 32, 32]")
    force_constants_min_atoms: int = Field(
        200, ge=1, description="force constants from the smallest n x n x n repetition of the phase's unit cell with at least this many atoms",
    )
    displacement_A: float = Field(1e-3, gt=0, description="phonopy displacement, Angstrom")

    @model_validator(mode="after")
    def _positive(self):
        if min(self.mesh) < 1:
            raise ValueError(f"mesh entries must be >= 1, got {self.mesh}")
        return self


class CompareSection(StrictModel):
    """The ``[compare]`` section."""

    temperatures_K: list[float] = Field(min_length=1, description="temperature grid, K")
    reference: str = Field(description="phase that Delta G is relative to")
    phases: list[PhaseConfig] = Field(min_length=2, description="the structures compared")
    bootstrap_samples: int = Field(2000, ge=10, description="parametric bootstrap draws for the crossing temperatures")
    warm_start: bool = Field(
        True, description="start each point's self-consistent Gaussian from the same phase's Gaussian at the next lower "
        "temperature (nct.reference.start), with compare.warm_start_iterations iterations",
    )
    warm_start_iterations: int = Field(
        12, ge=1, description="self-consistency iterations of a warm-started point (at most nct.reference.iterations)",
    )
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig, description="where the points run ([compare.executor])")
    harmonic_correction: HarmonicCorrectionConfig | None = Field(
        None, description="add each phase's harmonic finite-size correction (dense q-mesh minus the point's supercell, "
        "at the harmonic reference) and report corrected values, differences and crossings too",
    )

    @model_validator(mode="after")
    def _consistent(self):
        names = [p.name for p in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be distinct, got {names}")
        if self.reference not in names:
            raise ValueError(f"compare.reference {self.reference!r} is not one of the phases {names}")
        if any(t <= 0 for t in self.temperatures_K) or len(set(self.temperatures_K)) != len(self.temperatures_K):
            raise ValueError("compare.temperatures_K must be distinct and > 0")
        return self


def load_comparison(path: Path, overrides: list[str] | None = None) -> tuple[CompareSection, dict, Path]:
    """Read a comparison file: ``(compare section, the shared run-config dict, base directory)``.

    Raises:
        ConfigError: missing file, bad TOML, or an invalid comparison or point config (each point's
            config is validated before anything runs).
    """
    from pydantic import ValidationError

    from thermoflow.workflows.config import set_dotted, parse_override

    data, base = read_config_dict(path)
    for text in overrides or []:
        set_dotted(data, *parse_override(text))
    if "compare" not in data:
        raise ConfigError(f"{path} has no [compare] section (see thermoflow/workflows/compare.py)")
    try:
        section = CompareSection.model_validate(data.pop("compare"))
    except ValidationError as exc:
        lines = [f"  {'.'.join(['compare'] + [str(p) for p in e['loc']])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]
        raise ConfigError("invalid [compare] section:\n" + "\n".join(lines)) from None
    for phase in section.phases:
        point_config(data, phase, section.temperatures_K[0])  # fail early, naming the field
    return section, data, base


def point_config(shared: dict, phase: PhaseConfig, temperature_K: float):
    """The validated run config of one (phase, temperature) point."""
    data = json.loads(json.dumps(shared))  # a deep copy
    data["structure"] = phase.structure.model_dump(exclude_none=True)
    if phase.potential is not None:
        data["potential"] = phase.potential
    if phase.nct:
        data["nct"] = _merged(data.get("nct", {}), phase.nct)
    data["state"] = {**data.get("state", {}), "temperature_K": temperature_K}
    return validate_config(data)


def _merged(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` merged over it, nested tables key by key (both left unchanged)."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _warm_started(shared: dict, phase: PhaseConfig, temperature_K: float, previous: Path, iterations: int) -> dict:
    """``shared`` with the point's self-consistent Gaussian started from the one stored in the
    run directory ``previous`` (the same phase at the next lower temperature), if there is one."""
    config = point_config(shared, phase, temperature_K)
    stored = previous / "gaussian_reference.npz"
    if config.nct.reference.kind != "scha" or not stored.is_file():
        return shared
    data = json.loads(json.dumps(shared))
    reference = data.setdefault("nct", {}).setdefault("reference", {})
    reference["start"] = str(stored.resolve())
    reference["iterations"] = min(iterations, config.nct.reference.iterations)
    return data


def _temperature_label(t: float) -> str:
    return f"{t:g}K"


def run_point(point: tuple[dict, str, float, str, str]) -> dict:
    """Run (or read back, or resume) one point: ``(shared config, phase json, T, base, out)``."""
    from thermoflow.workflows.nct_run import run_nct

    shared, phase_json, temperature, base, out = point
    phase = PhaseConfig.model_validate_json(phase_json)
    out = Path(out)
    results = out / "results.json"
    if results.is_file():
        res = json.loads(results.read_text())
        if res.get("completed"):
            log.info("%s at %g K: finished, read back from %s", phase.name, temperature, out)
            return res
    config = point_config(shared, phase, temperature)
    # a point interrupted before its first training checkpoint still has its finished stages
    # (Gaussian, cubic force constants: most of a point's cost): resume reads them back
    resume = (out / "config.resolved.toml").is_file()
    log.info("%s at %g K: %s in %s", phase.name, temperature, "resuming" if resume else "running", out)
    return run_nct(config, Path(base), out, resume=resume, progress=False, log_every=0)


def _column(rows: list[dict], key: str) -> np.ndarray:
    """One results.json value per point, NaN where missing or undefined (None)."""
    return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)


def _nullable(values: np.ndarray) -> list:
    """A list for JSON with None for NaN (undefined values, e.g. the harmonic entropy of an unstable crystal)."""
    return [None if not np.isfinite(v) else float(v) for v in values]


def crossing_temperatures(temperatures: np.ndarray, delta: np.ndarray, stderr: np.ndarray, *, n_bootstrap: int, seed: int = 0) -> list[dict]:
    """Temperatures where ``delta`` (on the ascending grid ``temperatures``) changes sign.

    Returns:
        One dict per sign change: ``temperature_K`` (linear interpolation), ``stderr_K``
        (parametric bootstrap standard deviation; draws without a crossing in the same interval are
        dropped, and their fraction is ``bootstrap_missing_fraction``) and the bracketing
        ``interval_K``.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in np.nonzero(np.sign(delta[:-1]) * np.sign(delta[1:]) < 0)[0]:
        t0, t1 = temperatures[i], temperatures[i + 1]

        def zero(d0, d1):
            return t0 + (t1 - t0) * d0 / (d0 - d1)

        d0 = rng.normal(delta[i], stderr[i], n_bootstrap)
        d1 = rng.normal(delta[i + 1], stderr[i + 1], n_bootstrap)
        ok = np.sign(d0) * np.sign(d1) < 0
        draws = zero(d0[ok], d1[ok])
        out.append({
            "temperature_K": float(zero(delta[i], delta[i + 1])),
            "stderr_K": float(draws.std(ddof=1)) if ok.sum() > 1 else None,
            "interval_K": [float(t0), float(t1)],
            "bootstrap_missing_fraction": float(1 - ok.mean()),
        })
    return out


def run_compare(path: Path, out_dir: Path, *, overrides: list[str] | None = None, executor=None) -> dict:
    """Run a phase comparison (see module docstring) and write its summary.

    Returns:
        The dictionary written to summary.json.

    Raises:
        ConfigError: an invalid comparison file.
    """
    section, shared, base = load_comparison(Path(path), overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    temps = np.array(sorted(section.temperatures_K))
    owned = executor is None
    executor = executor or make_executor(section.executor, out_dir)
    try:
        results = _run_points(section, shared, base, out_dir, temps, executor)
    finally:
        if owned:
            executor.close()
    mesh = None
    if section.harmonic_correction is not None:
        mesh = {phase.name: mesh_free_energies(section.harmonic_correction, point_config(shared, phase, float(temps[0])), base,
                                               out_dir / phase.name, temps) for phase in section.phases}
    return _summarise(section, shared, out_dir, temps, results, mesh)


def mesh_free_energies(correction: HarmonicCorrectionConfig, config, base: Path, phase_dir: Path, temps: np.ndarray) -> np.ndarray:
    """The phase's harmonic vibrational F per atom (eV) of the infinite crystal on the correction's
    q-mesh at ``temps`` (:func:`thermoflow.workflows.phonon_run.unit_cell_phonons`), stored in
    ``phase_dir/harmonic_mesh.json`` and read back when the settings and temperatures match."""
    from thermoflow.workflows.phonon_run import unit_cell_phonons

    path = phase_dir / "harmonic_mesh.json"
    settings = {"correction": correction.model_dump(), "structure": config.structure.model_dump(mode="json"),
                "potential": config.potential.model_dump(mode="json"), "temperatures_K": [float(t) for t in temps]}
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("settings") == settings:
            return np.array([np.nan if f is None else f for f in stored["vibrational_free_energy_eV_per_atom"]])
    phonons = unit_cell_phonons(config, base, min_atoms=correction.force_constants_min_atoms, displacement_A=correction.displacement_A)
    mesh = phonons.mesh_thermodynamics(correction.mesh, temps)
    if mesh.undefined_reason:
        log.warning("%s: no harmonic finite-size correction: %s", phase_dir.name, mesh.undefined_reason)
    phase_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({
        "settings": settings,
        "force_constants_supercell": np.diag(phonons.supercell_matrix).tolist(),
        "force_constants_atoms": phonons.n_supercell_atoms,
        "n_irreducible_qpoints": mesh.n_qpoints,
        "vibrational_free_energy_eV_per_atom": _nullable(mesh.free_energy_eV_per_atom),
        "entropy_kB_per_atom": _nullable(mesh.entropy_kB_per_atom),
        "zero_point_energy_eV_per_atom": None if mesh.undefined_reason else mesh.zero_point_energy_eV_per_atom,
        "undefined_reason": mesh.undefined_reason,
    }, indent=2) + "\n")
    return mesh.free_energy_eV_per_atom


def _run_points(section: CompareSection, shared: dict, base: Path, out_dir: Path, temps: np.ndarray, executor) -> list[dict]:
    """Every point's results, in the order (temperature, phase)."""
    # temperature by temperature (an interrupted comparison has every phase at its first
    # temperatures), the phases of one temperature in one map (parallel on a cluster executor);
    # a warm start reads the same phase's run directory at the previous temperature
    results = []
    for i, t in enumerate(temps):
        points = []
        for phase in section.phases:
            point_shared = shared
            if section.warm_start and i > 0:
                previous = out_dir / phase.name / _temperature_label(temps[i - 1])
                point_shared = _warm_started(shared, phase, float(t), previous, section.warm_start_iterations)
            points.append((point_shared, phase.model_dump_json(), float(t), str(base), str(out_dir / phase.name / _temperature_label(t))))
        results.extend(executor.map(run_point, points))
    return results


def _summarise(section: CompareSection, shared: dict, out_dir: Path, temps: np.ndarray, results: list[dict],
               mesh: dict[str, np.ndarray] | None = None) -> dict:
    """summary.csv / summary.json and the plots from the points' results; ``mesh``: each phase's
    infinite-crystal harmonic vibrational F (eV/atom) at ``temps``, for the finite-size correction."""
    n_phases = len(section.phases)
    npt = shared.get("state", {}).get("pressure_GPa") is not None
    key = "gibbs_free_energy" if npt else "free_energy"
    table: dict[str, dict[str, np.ndarray]] = {}
    for i, phase in enumerate(section.phases):
        rows = results[i::n_phases]
        table[phase.name] = {
            "value": np.array([r[f"{key}_eV_per_atom"] for r in rows]),
            "stderr": np.array([r[f"{key}_stderr_eV_per_atom"] for r in rows]),
            "volume": _column(rows, "volume_A3_per_atom"),
            "pressure": _column(rows, "pressure_GPa"),
            "entropy": _column(rows, "entropy_kB_per_atom"),
            "harmonic_entropy": _column(rows, "harmonic_entropy_kB_per_atom"),
        }
        if mesh is not None:
            # F_harm(mesh) - F_harm(the point's supercell), both at the harmonic reference structure
            table[phase.name]["correction"] = np.asarray(mesh[phase.name]) - _column(rows, "harmonic_vibrational_free_energy_eV_per_atom")
    ref = table[section.reference]
    summary: dict[str, Any] = {
        "quantity": f"{'G = F + P V at ' + str(shared['state']['pressure_GPa']) + ' GPa' if npt else 'F at the given structures (NVT)'}, eV/atom",
        "reference_phase": section.reference,
        "temperatures_K": temps.tolist(),
        "phases": {},
    }
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    corrected = mesh is not None
    writer.writerow(["phase", "temperature_K", f"{key}_eV_per_atom", f"{key}_stderr_eV_per_atom",
                     "delta_eV_per_atom", "delta_stderr_eV_per_atom", "volume_A3_per_atom", "pressure_GPa",
                     "entropy_kB_per_atom", "harmonic_entropy_kB_per_atom", "anharmonic_entropy_term_meV_per_atom"]
                    + (["harmonic_finite_size_correction_eV_per_atom", f"corrected_{key}_eV_per_atom", "corrected_delta_eV_per_atom"] if corrected else []))
    for name, row in table.items():
        delta = row["value"] - ref["value"]
        delta_err = np.zeros_like(delta) if name == section.reference else np.hypot(row["stderr"], ref["stderr"])
        # -T (S - S_harm): the free energy the anharmonic entropy contributes (Zhang et al. 2025, Fig. 2b)
        entropy_term = -KB_EV_PER_K * temps * (row["entropy"] - row["harmonic_entropy"]) * MEV_PER_EV
        entry = {"value_eV_per_atom": row["value"].tolist(), "stderr_eV_per_atom": row["stderr"].tolist(),
                 "delta_eV_per_atom": delta.tolist(), "delta_stderr_eV_per_atom": delta_err.tolist(),
                 "entropy_kB_per_atom": _nullable(row["entropy"]), "harmonic_entropy_kB_per_atom": _nullable(row["harmonic_entropy"]),
                 "anharmonic_entropy_term_meV_per_atom": _nullable(entropy_term)}
        if name != section.reference:
            entry["crossings"] = crossing_temperatures(temps, delta, delta_err, n_bootstrap=section.bootstrap_samples)
        if corrected:
            fixed = row["value"] + row["correction"]
            fixed_delta = fixed - (ref["value"] + ref["correction"])
            row["corrected_delta"] = fixed_delta
            entry.update({"harmonic_finite_size_correction_eV_per_atom": _nullable(row["correction"]),
                          "corrected_value_eV_per_atom": _nullable(fixed), "corrected_delta_eV_per_atom": _nullable(fixed_delta)})
            if name != section.reference and np.all(np.isfinite(fixed_delta)):
                entry["corrected_crossings"] = crossing_temperatures(temps, fixed_delta, delta_err, n_bootstrap=section.bootstrap_samples)
        summary["phases"][name] = entry
        for j, t in enumerate(temps):
            writer.writerow([name, t, row["value"][j], row["stderr"][j], delta[j], delta_err[j], row["volume"][j], row["pressure"][j],
                             row["entropy"][j], row["harmonic_entropy"][j], entropy_term[j]]
                            + ([row["correction"][j], row["value"][j] + row["correction"][j], row["corrected_delta"][j]] if corrected else []))
    atomic_write_text(out_dir / "summary.csv", buffer.getvalue())
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    label = "G" if npt else "F"
    plots.plot_phase_curves(out_dir / "free_energies.png", temps,
                            {n: (r["value"] * 1e3, r["stderr"] * 1e3) for n, r in table.items()}, f"{label} (meV/atom)")
    plots.plot_phase_curves(out_dir / "free_energy_differences.png", temps,
                            {n: (np.asarray(e["delta_eV_per_atom"]) * 1e3, np.asarray(e["delta_stderr_eV_per_atom"]) * 1e3)
                             for n, e in summary["phases"].items() if n != section.reference},
                            f"{label} - {label}({section.reference}) (meV/atom)", zero_line=True)
    if corrected:
        plots.plot_phase_curves(out_dir / "corrected_free_energy_differences.png", temps,
                                {n: (np.asarray(e["corrected_delta_eV_per_atom"], dtype=float) * 1e3, np.asarray(e["delta_stderr_eV_per_atom"]) * 1e3)
                                 for n, e in summary["phases"].items() if n != section.reference},
                                f"{label} - {label}({section.reference}), harmonic finite-size corrected (meV/atom)", zero_line=True)
    entropies = {}
    for name, row in table.items():  # the NCT entropy is exact for the trained state: no error band
        entropies[f"{name} (NCT)"] = (row["entropy"], np.zeros_like(temps))
        if np.all(np.isfinite(row["harmonic_entropy"])):
            entropies[f"{name} (harmonic)"] = (row["harmonic_entropy"], np.zeros_like(temps))
    plots.plot_phase_curves(out_dir / "entropies.png", temps, entropies, "entropy (k_B/atom)")
    return summary
