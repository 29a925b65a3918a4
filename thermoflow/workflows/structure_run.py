"""Structure of the trained NCT state: ``thermoflow structure RUN_DIR``.

Draws exact nuclear configurations from a finished run's density matrix (states n ~ p_n, then
s ~ |Psi_n|^2, R = R0 + B s; an NPT run's trained strain scales positions and cell),
and writes into the run directory::

    rdf.csv          r_A, then per ordered species pair a_b: g (NCT state) with its standard
                     error, n (mean number of b atoms within r of an a atom), and g of the
                     self-consistent Gaussian (basis) state as a reference
    rdf.png          g(r) of the NCT state and of the Gaussian, with the static lattice's shells
    structure.json   space group of the reference structure, of its own quench and of each
                     quenched sample (fraction back in the reference group), quenched energies,
                     Wyckoff x of I-43d structures with its spread, rms displacement per species
    quenched.extxyz  the quenched configurations (energies in the frame info)

Quenches are local minimisations of the run's potential at the sample's cell (ASE FIRE), the
"inherent structures" of the quantum state.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from thermoflow.analysis.structure import (
    I43D_NUMBER,
    coordination_shells,
    default_rdf_range,
    quench,
    radial_distribution,
    space_group,
    wyckoff_x_16c,
)
from thermoflow.io.atomic import atomic_write_text
from thermoflow.phonons.scha import mode_variances
from thermoflow.potentials.ase_bridge import EnergyFnCalculator
from thermoflow.units import HBAR_EV
from thermoflow.workflows import plots
from thermoflow.workflows.finished_run import load_finished_run

log = logging.getLogger(__name__)

#: the experimental cI16 lithium x as found (secondary sources; see docs/structure.md)
CI16_EXPERIMENT = (
    "M. Hanfland et al., Nature 408, 174 (2000), doi:10.1038/35041515: cI16 Li, a = 5.2716 A at 38.9 GPa; "
    "x = 0.055 as transcribed in ../shared/structures/lithium/cI16.vasp, x = 0.049 in a transcription of the "
    "AFLOW prototype A_cI16_220_c (which cites the same data); the primary table was not accessible to check"
)


def _gaussian_mode_variances(run) -> np.ndarray:
    """<s_k^2> = (1/2) coth(hbar omega_k / 2kT) of the basis oscillators at thermal occupation of
    all levels (the self-consistent Gaussian, or the harmonic state), shape (D,)."""
    basis = run.setup.basis
    return mode_variances(basis.omega, run.setup.kT_eV) * basis.omega / HBAR_EV


def _sample_configurations(run, n_samples: int, key: jax.Array, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (M, N, 3) A of the trained state and of the Gaussian basis state, and the cell."""
    model, params, n_modes = run.model, run.params, run.setup.basis.n_modes
    configuration = jax.jit(jax.vmap(model.configuration, in_axes=(None, 0)))
    sample = jax.jit(model.sample, static_argnums=2)
    k_nct, k_gauss = jax.random.split(key)
    chunks = []
    for start in range(0, n_samples, batch_size):
        _, s = sample(params, jax.random.fold_in(k_nct, start), min(batch_size, n_samples - start))
        chunks.append(np.asarray(configuration(params, s)[0]))
    s_gauss = jax.random.normal(k_gauss, (n_samples, n_modes)) * np.sqrt(_gaussian_mode_variances(run))
    gaussian = np.asarray(configuration(params, s_gauss)[0])
    cell = np.asarray(model.configuration(params, jnp.zeros(n_modes))[1])
    return np.concatenate(chunks), gaussian, cell


def _rms_displacement(positions: np.ndarray, reference: np.ndarray, symbols: np.ndarray) -> dict[str, float]:
    """sqrt(<|u|^2>) per species over samples and atoms, u = R - R_ref, Angstrom."""
    u2 = np.sum((positions - reference[None]) ** 2, axis=-1)
    return {s: float(np.sqrt(u2[:, symbols == s].mean())) for s in dict.fromkeys(symbols.tolist())}


def _gaussian_rms_displacement(run, symbols: np.ndarray) -> dict[str, float]:
    """Exact sqrt(<|u|^2>) per species of the Gaussian basis state: sum_k B_ik^2 <s_k^2>, with an
    NPT run's strain (the Cartesian components of positions scale with the cell), Angstrom."""
    basis = run.setup.basis
    scale = 1.0 + np.asarray(run.params.get("strain", 0.0), dtype=float)
    u2 = ((basis.displacement_matrix() ** 2 @ _gaussian_mode_variances(run)).reshape(-1, 3) * scale**2).sum(axis=1)
    return {s: float(np.sqrt(u2[symbols == s].mean())) for s in dict.fromkeys(symbols.tolist())}


def _stats(values: list[float]) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "min": float(v.min()), "max": float(v.max())}


def _write_rdf_csv(path: Path, rdf, gaussian_rdf) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = [f"{a}_{b}" for a, b in rdf.pairs]
    writer.writerow(["r_A"] + [c for n in names for c in (f"g_{n}", f"g_{n}_stderr", f"n_{n}", f"g_{n}_gaussian")])
    for k, r in enumerate(rdf.r_A):
        row = [f"{r:.6f}"]
        for p in range(len(names)):
            row += [f"{rdf.g[p, k]:.6g}", f"{rdf.g_stderr[p, k]:.3g}", f"{rdf.coordination[p, k]:.6g}", f"{gaussian_rdf.g[p, k]:.6g}"]
        writer.writerow(row)
    atomic_write_text(path, buffer.getvalue())


def _quench_all(calculator, starts: np.ndarray, cell: np.ndarray, numbers: np.ndarray, fmax: float, symprec: float) -> list[dict]:
    out = []
    for r in starts:
        q = quench(calculator, r, cell, numbers, fmax_eV_per_A=fmax)
        symbol, number = space_group(q.positions, cell, numbers, symprec)
        entry = {"positions": q.positions, "energy_eV": q.energy_eV, "converged": q.converged, "n_steps": q.n_steps,
                 "max_force_eV_per_A": q.max_force_eV_per_A, "space_group": symbol, "space_group_number": number}
        if number == I43D_NUMBER:
            entry["wyckoff_x"] = wyckoff_x_16c(q.positions, cell, numbers, symprec)
        out.append(entry)
    return out


def run_structure(run_dir: Path, *, n_samples: int = 256, n_quench: int = 8, seed: int = 0, r_max_A: float | None = None,
                  n_bins: int = 200, symprec_A: float = 1e-2, fmax_eV_per_A: float = 1e-4, batch_size: int = 256,
                  base: Path | None = None) -> dict:
    """g(r), quenched structures, space groups and Wyckoff x of the trained state in ``run_dir``.

    Args:
        run_dir: a finished NCT run directory.
        n_samples: exact configurations drawn from the trained density matrix for g(r) and the
            rms displacements.
        n_quench: how many of them to quench (local minimisation, FIRE at the sample's cell).
        seed: sampling seed.
        r_max_A: largest distance of g(r), Angstrom (default 2.5 x the nearest-neighbour distance, short of the
            shortest lattice translation, where self-images start
            of the reference structure).
        n_bins: histogram bins of g(r).
        symprec_A: spglib distance tolerance for space groups and Wyckoff x, Angstrom.
        fmax_eV_per_A: quench convergence: largest atomic force, eV/A.
        batch_size: samples drawn per call.
        base: the directory the run config's file names are relative to (default: recorded in
            the run directory).

    Returns:
        The dictionary written to structure.json.

    Raises:
        ConfigError: no finished run in ``run_dir`` or its basis is missing.
        ValueError: n_samples < 2, n_quench < 0 or n_quench > n_samples.
    """
    if n_samples < 2 or not 0 <= n_quench <= n_samples:
        raise ValueError(f"need n_samples >= 2 and 0 <= n_quench <= n_samples, got {n_samples} and {n_quench}")
    run_dir = Path(run_dir)
    t0 = time.perf_counter()
    run = load_finished_run(run_dir, base)
    atoms = run.setup.atoms
    symbols, numbers = np.asarray(atoms.get_chemical_symbols()), atoms.get_atomic_numbers()
    n_atoms = len(atoms)
    positions, gaussian, cell = _sample_configurations(run, n_samples, jax.random.PRNGKey(seed), batch_size)
    reference = np.asarray(run.model.configuration(run.params, jnp.zeros(run.setup.basis.n_modes))[0])
    if r_max_A is None:
        r_max_A = default_rdf_range(reference, cell)
    rdf = radial_distribution(positions, cell, symbols, r_max_A, n_bins)
    gaussian_rdf = radial_distribution(gaussian, cell, symbols, r_max_A, n_bins)
    _write_rdf_csv(run_dir / "rdf.csv", rdf, gaussian_rdf)
    shells = coordination_shells(reference, cell, symbols, r_max_A)
    label = "self-consistent Gaussian" if run.setup.gaussian is not None else "harmonic thermal state"
    plots.plot_rdf(run_dir / "rdf.png", rdf, gaussian_rdf, shells, label)
    log.info("g(r) from %d samples up to %.2f A; quenching %d of them", n_samples, r_max_A, n_quench)

    calculator = EnergyFnCalculator(run.setup.energy_fn)
    lattice_energy = float(run.setup.energy_fn(jnp.asarray(reference), jnp.asarray(cell)))
    ref_symbol, ref_number = space_group(reference, cell, numbers, symprec_A)
    (ref_quench,) = _quench_all(calculator, reference[None], cell, numbers, fmax_eV_per_A, symprec_A)
    quenched = _quench_all(calculator, positions[:n_quench], cell, numbers, fmax_eV_per_A, symprec_A)

    def summary(q: dict) -> dict:
        return {k: v for k, v in q.items() if k != "positions"}

    out = {
        "reference_space_group": ref_symbol,
        "reference_space_group_number": ref_number,
        "reference_static_energy_eV_per_atom": lattice_energy / n_atoms,
        "reference_quenched": {**summary(ref_quench), "energy_eV_per_atom": ref_quench["energy_eV"] / n_atoms},
        "n_quenched": n_quench,
        "quenched_space_groups": {},
        "fraction_in_reference_space_group": None,
        "quenched_energy_minus_reference_quench_meV_per_atom": None,
        "rms_displacement_A": _rms_displacement(positions, reference, symbols),
        "rms_displacement_gaussian_A": _gaussian_rms_displacement(run, symbols),
        "nearest_shell_A": {f"{a}_{b}": s[0][0] for (a, b), s in shells.items() if s},
    }
    if quenched:
        names = [f"{q['space_group']} ({q['space_group_number']})" for q in quenched]
        out["quenched_space_groups"] = {n: names.count(n) for n in dict.fromkeys(names)}
        out["fraction_in_reference_space_group"] = float(np.mean([q["space_group_number"] == ref_number for q in quenched]))
        out["quenched_energy_eV_per_atom"] = _stats([q["energy_eV"] / n_atoms for q in quenched])
        out["quenched_energy_minus_reference_quench_meV_per_atom"] = _stats([1e3 * (q["energy_eV"] - ref_quench["energy_eV"]) / n_atoms for q in quenched])
        out["quenched_all_converged"] = all(q["converged"] for q in quenched)
        out["quenched"] = [summary(q) for q in quenched]
    if ref_number == I43D_NUMBER or any("wyckoff_x" in q for q in quenched):
        xs = [q["wyckoff_x"] for q in quenched if "wyckoff_x" in q]
        out["wyckoff_x_16c"] = {
            "reference": wyckoff_x_16c(reference, cell, numbers, symprec_A) if ref_number == I43D_NUMBER else None,
            "reference_quenched": ref_quench.get("wyckoff_x"),
            "quenched_samples": _stats(xs) if xs else None,
            "n_quenched_in_I-43d": len(xs),
            "experiment": CI16_EXPERIMENT,
        }
    out.update({
        "n_atoms": n_atoms, "n_samples": n_samples, "seed": seed, "r_max_A": r_max_A, "n_bins": n_bins,
        "symprec_A": symprec_A, "quench": f"ASE FIRE at the sample's cell to max force {fmax_eV_per_A:g} eV/A",
        "volume_A3_per_atom": abs(float(np.linalg.det(cell))) / n_atoms,
        "method": "exact samples of the trained density matrix (n ~ p_n, s ~ |Psi_n|^2, R = R0 + B s); Gaussian "
                  "reference: the basis oscillators at thermal occupation, no flow",
        "wall_seconds": time.perf_counter() - t0,
    })
    if quenched:
        _write_extxyz(run_dir / "quenched.extxyz", quenched, cell, numbers)
    atomic_write_text(run_dir / "structure.json", json.dumps(out, indent=2) + "\n")
    return out


def _write_extxyz(path: Path, quenched: list[dict], cell: np.ndarray, numbers: np.ndarray) -> None:
    from ase import Atoms
    from ase.io import write

    frames = []
    for k, q in enumerate(quenched):
        frame = Atoms(numbers=numbers, positions=q["positions"], cell=cell, pbc=True)
        frame.info.update({"sample": k, "energy_eV": q["energy_eV"], "space_group": q["space_group"]})
        frames.append(frame)
    buffer = io.StringIO()
    write(buffer, frames, format="extxyz")
    atomic_write_text(path, buffer.getvalue())
