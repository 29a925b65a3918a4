"""From a validated config to arrays and pure functions (structure, potential, modes)."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from ase import Atoms

from thermoflow.io.atomic import atomic_write_bytes
from thermoflow.phonons.modes import HarmonicModes, modes_from_hessian
from thermoflow.potentials.base import EnergyFn, hessian
from thermoflow.potentials.harmonic import make_einstein_energy_fn, make_harmonic_energy_fn
from thermoflow.potentials.pair import (
    lennard_jones_pair_fn,
    make_lennard_jones_energy_fn,
    make_morse_energy_fn,
    make_pair_energy_fn_neighbors,
    morse_pair_fn,
)
from thermoflow.potentials.plugin import make_plugin_energy_fn
from thermoflow.structures.build import build_from_wyckoff, build_lattice, check_distances, closest_pair, make_supercell, read_structure, scale_to_volume
from thermoflow.workflows.config import ConfigError, RunConfig, StructureConfig, resolve_path

log = logging.getLogger(__name__)


def build_structure(cfg: StructureConfig, base: Path) -> Atoms:
    """The supercell described by the structure section (file, lattice or space group, then repeat/scale)."""
    if cfg.file is not None:
        atoms = read_structure(resolve_path(base, cfg.file))
    elif cfg.spacegroup is not None:
        cellpar = cfg.cell_parameters if cfg.cell_parameters is not None else (cfg.a_A,) * 3 + (90.0,) * 3
        atoms = build_from_wyckoff([(s, p) for s, p in cfg.sites], cfg.spacegroup, cellpar)
    else:
        atoms = build_lattice(cfg.symbol, cfg.lattice, a_A=cfg.a_A, volume_per_atom_A3=None if cfg.a_A else cfg.volume_per_atom_A3)
    atoms = make_supercell(atoms, cfg.supercell)
    if cfg.volume_per_atom_A3 is not None:
        atoms = scale_to_volume(atoms, cfg.volume_per_atom_A3)
    if cfg.mass_amu is not None:
        atoms.set_masses(np.full(len(atoms), cfg.mass_amu))
    check_distances(atoms, cfg.min_distance_A)
    return atoms


def build_potential(config: RunConfig, atoms: Atoms, base: Path) -> EnergyFn:
    """The energy function of the potential section, for this structure."""
    return build_energy_fn(config.potential, atoms, base)


def build_energy_fn(pot, atoms: Atoms, base: Path) -> EnergyFn:
    """The energy function ``(positions (N, 3) A, cell (3, 3) A) -> eV`` of a validated potential section (any
    :data:`thermoflow.workflows.config_sections.PotentialConfig`) for the species and cell of ``atoms``; relative file
    names are resolved against ``base``.

    Raises:
        FileNotFoundError: a missing model or force-constants file.
    """
    cell = np.asarray(atoms.cell.array)
    if pot.kind == "lennard_jones":
        return make_lennard_jones_energy_fn(pot.epsilon_eV, pot.sigma_A, pot.cutoff_A, cell)
    if pot.kind == "morse":
        return make_morse_energy_fn(pot.depth_eV, pot.alpha_per_A, pot.r0_A, pot.cutoff_A, cell)
    if pot.kind == "harmonic":
        if pot.einstein_spring_eV_per_A2 is not None:
            return make_einstein_energy_fn(atoms.get_positions(), pot.einstein_spring_eV_per_A2)
        path = resolve_path(base, pot.force_constants_file)
        if not path.is_file():
            raise FileNotFoundError(f"potential.force_constants_file not found: {path}")
        return make_harmonic_energy_fn(atoms.get_positions(), np.load(path))
    if pot.kind == "python":
        return make_plugin_energy_fn(pot.target, pot.options, atoms=atoms)
    if pot.kind == "deepmd":
        from thermoflow.potentials.deepmd import make_deepmd_energy_fn

        path = resolve_path(base, pot.model)
        if not path.is_file():
            raise FileNotFoundError(f"potential.model not found: {path} (set it in the config or with --set potential.model=PATH)")
        if pot.compress:
            from thermoflow.potentials.deepmd_compress import make_compressed_deepmd_energy_fn

            return make_compressed_deepmd_energy_fn(path, cell, min_distance_A=pot.compress_min_distance_A,
                                                    type_map_symbols=atoms.get_chemical_symbols(), skin=pot.skin_A)
        return make_deepmd_energy_fn(path, cell, type_map_symbols=atoms.get_chemical_symbols(), skin=pot.skin_A)
    if pot.kind == "ase":
        from thermoflow.potentials.ase_bridge import load_calculator_factory, make_ase_energy_fn

        calculator = load_calculator_factory(pot.calculator)(**pot.options)
        return make_ase_energy_fn(calculator, atoms.get_chemical_symbols())
    raise ValueError(f"unknown potential kind {pot.kind!r}")  # unreachable after validation


def build_neighbor_energy(config: RunConfig, atoms: Atoms, base: Path, skin_A: float):
    """The neighbour-list energy ``energy_fn(positions, cell, neighbors) -> eV`` and its cutoff
    (Angstrom) of the potential section (pair potentials, DeePMD), or None for potentials without one.

    Raises:
        FileNotFoundError: a missing DeePMD model file.
        NotImplementedError: a DeePMD model whose descriptor has no neighbour-list evaluation.
    """
    pot = config.potential
    if pot.kind == "lennard_jones":
        return make_pair_energy_fn_neighbors(lennard_jones_pair_fn(pot.epsilon_eV, pot.sigma_A), pot.cutoff_A, skin_A), pot.cutoff_A
    if pot.kind == "morse":
        return make_pair_energy_fn_neighbors(morse_pair_fn(pot.depth_eV, pot.alpha_per_A, pot.r0_A), pot.cutoff_A, skin_A), pot.cutoff_A
    if pot.kind == "deepmd":
        from thermoflow.potentials.deepmd_listed import make_deepmd_energy_fn_neighbors

        path = resolve_path(base, pot.model)
        if not path.is_file():
            raise FileNotFoundError(f"potential.model not found: {path} (set it in the config or with --set potential.model=PATH)")
        listed = make_deepmd_energy_fn_neighbors(path, skin_A=skin_A, type_map_symbols=atoms.get_chemical_symbols(),
                                                 compress=pot.compress, min_distance_A=pot.compress_min_distance_A)
        return listed.energy_fn, listed.cutoff_A
    return None


#: force below which a relaxation of the reference positions has converged, eV/Angstrom
RELAX_FMAX_EV_PER_A = 1e-5


def relax_positions(energy_fn: EnergyFn, atoms: Atoms, *, fmax_eV_per_A: float = RELAX_FMAX_EV_PER_A, max_steps: int = 2000) -> Atoms:
    """A copy of ``atoms`` with the positions relaxed on ``energy_fn`` at fixed cell, keeping the
    structure's space group (ASE ``FixSymmetry``, spglib at 1e-3 A; BFGS).

    Raises:
        ValueError: if the relaxation does not converge to ``fmax_eV_per_A`` within ``max_steps``
            (the structure is far from a minimum, or the potential is not smooth there).

    References: ase.constraints.FixSymmetry (A. Hjorth Larsen et al., J. Phys.: Condens. Matter 29,
    273002 (2017), doi:10.1088/1361-648X/aa680e); BFGS as in ``ase.optimize``.
    """
    from ase.constraints import FixSymmetry
    from ase.optimize import BFGS

    from thermoflow.potentials.ase_bridge import EnergyFnCalculator

    relaxed = atoms.copy()
    relaxed.calc = EnergyFnCalculator(energy_fn)
    relaxed.set_constraint(FixSymmetry(relaxed, symprec=1e-3))
    opt = BFGS(relaxed, logfile=None)
    if not opt.run(fmax=fmax_eV_per_A, steps=max_steps):
        raise ValueError(
            f"structure.relax_positions: no minimum within {max_steps} BFGS steps (largest force "
            f"{np.abs(relaxed.get_forces()).max():.2g} eV/A): check the structure and its volume"
        )
    energy0 = float(energy_fn(jnp.asarray(atoms.get_positions()), jnp.asarray(atoms.cell.array)))
    shift = np.linalg.norm(relaxed.get_positions() - atoms.get_positions(), axis=1).max()
    log.info("positions relaxed at fixed cell in %d steps: energy %.6f -> %.6f eV/atom, largest shift %.4f A",
             opt.nsteps, energy0 / len(atoms), relaxed.get_potential_energy() / len(atoms), shift)
    relaxed.set_constraint()
    relaxed.calc = None
    relaxed.set_cell(atoms.cell, scale_atoms=False)  # FixSymmetry symmetrises the cell to round-off: keep the given one
    return relaxed


def build_modes(config: RunConfig, base: Path, cache_dir: Path | None = None) -> tuple[Atoms, EnergyFn, HarmonicModes]:
    """Structure (relaxed at fixed cell with ``structure.relax_positions``), potential and harmonic
    modes of a run; the Hessian is read from / stored in ``cache_dir`` (the run directory) when given."""
    atoms = build_structure(config.structure, base)
    energy_fn = build_potential(config, atoms, base)
    check_reference_energy(energy_fn, atoms, warn=not config.structure.relax_positions)
    if config.structure.relax_positions:
        atoms = relax_positions(energy_fn, atoms)
    cache = None if cache_dir is None or not config.harmonic.cache else Path(cache_dir) / HESSIAN_CACHE
    modes = harmonic_modes(config, energy_fn, atoms.get_positions(), atoms.cell.array, atoms.get_masses(), atoms.numbers, cache=cache)
    return atoms, energy_fn, modes


#: the harmonic reference's Hessian in a run directory
HESSIAN_CACHE = "harmonic_hessian.npz"


def harmonic_modes(config: RunConfig, energy_fn: EnergyFn, positions: np.ndarray, cell: np.ndarray, masses: np.ndarray,
                   numbers: np.ndarray, cache: Path | None = None) -> HarmonicModes:
    """Harmonic modes of the run's potential at ``positions`` (N, 3) A in ``cell`` (3, 3) A.

    ``masses`` and ``numbers`` (atomic numbers, for phonopy's symmetry) are (N,). The Hessian is
    taken as ``[harmonic] hessian`` says (autodiff; phonopy's symmetry-reduced displacements; central differences of every coordinate, the
    only choice besides phonopy for an ASE calculator, whose host callback has no second
    derivative). With ``cache`` (a .npz path) a stored Hessian of the same potential, method,
    positions, cell and masses is reused, and a new one is stored there.
    """
    hc = config.harmonic
    method = hc.hessian
    if method == "auto":
        method = "finite_difference" if config.potential.kind == "ase" else "autodiff"
    elif method == "autodiff" and config.potential.kind == "ase":
        raise ConfigError("harmonic.hessian = 'autodiff' cannot differentiate an ASE calculator twice: use 'phonopy' or 'finite_difference'")
    key = json.dumps({"potential": config.potential.model_dump(mode="json"), "hessian": method, "displacement_A": hc.displacement_A}, sort_keys=True)
    h = _read_hessian_cache(cache, key, positions, cell, masses)
    if h is None:
        start = time.perf_counter()
        if method == "autodiff":
            h = np.asarray(hessian(energy_fn, jnp.asarray(positions, dtype=jnp.float64), jnp.asarray(cell, dtype=jnp.float64)))
        elif method == "phonopy":
            from thermoflow.phonons.finite_displacement import phonopy_hessian

            h = phonopy_hessian(energy_fn, positions, cell, numbers, displacement_A=hc.displacement_A or 1e-3).hessian
        else:
            from thermoflow.potentials.ase_bridge import finite_difference_hessian

            delta = hc.displacement_A or getattr(config.potential, "hessian_displacement_A", 0.01)
            h = finite_difference_hessian(energy_fn, positions, cell, displacement=delta)
        log.info("harmonic Hessian (%s, %d atoms) in %.1f s", method, len(masses), time.perf_counter() - start)
        if cache is not None:
            buffer = io.BytesIO()
            np.savez(buffer, hessian=h, positions=positions, cell=cell, masses=masses, key=np.array(key))
            atomic_write_bytes(cache, buffer.getvalue())
    e0 = float(energy_fn(jnp.asarray(positions, dtype=jnp.float64), jnp.asarray(cell, dtype=jnp.float64)))
    return modes_from_hessian(h, masses, positions, cell, e0)


def _read_hessian_cache(cache: Path | None, key: str, positions, cell, masses) -> np.ndarray | None:
    """The cached Hessian if ``cache`` holds one for exactly this potential, method and structure, else None."""
    if cache is None or not cache.is_file():
        return None
    with np.load(cache) as stored:
        same = (str(stored["key"]) == key and stored["positions"].shape == np.shape(positions)
                and np.allclose(stored["positions"], positions, rtol=0, atol=1e-10)
                and np.allclose(stored["cell"], cell, rtol=0, atol=1e-10) and np.array_equal(stored["masses"], masses))
        if same:
            log.info("harmonic Hessian read from %s", cache)
            return np.array(stored["hessian"])
    log.info("%s is for another potential or structure: recomputing the Hessian", cache)
    return None


#: residual force above which the reference structure is reported as not stationary, eV/Angstrom
MAX_RESIDUAL_FORCE_EV_PER_A = 1e-3


def check_reference_energy(energy_fn: EnergyFn, atoms: Atoms, warn: bool = True) -> None:
    """Raise ValueError if the potential is not finite at the reference structure; warn (with
    ``warn``) if the structure is not a stationary point (the harmonic expansion about it assumes one)."""
    pos, cell = jnp.asarray(atoms.get_positions()), jnp.asarray(atoms.cell.array)
    energy, grad = jax.jit(jax.value_and_grad(energy_fn))(pos, cell)
    if not (np.isfinite(float(energy)) and np.all(np.isfinite(np.asarray(grad)))):
        d, i, j = closest_pair(atoms)
        raise ValueError(
            f"the potential energy is not finite at the reference structure (energy {float(energy)}; closest atoms "
            f"{i} and {j} are {d:.3f} A apart): check the structure, its volume and the potential's range"
        )
    force = float(np.abs(np.asarray(grad)).max())
    if warn and force > MAX_RESIDUAL_FORCE_EV_PER_A:
        log.warning(
            "the reference structure is not at a stationary point of the potential: largest residual force "
            "%.3g eV/A (> %.0e); the harmonic expansion about it, and the modes built on it, assume one "
            "(structure.relax_positions = true relaxes it)", force,
            MAX_RESIDUAL_FORCE_EV_PER_A,
        )
