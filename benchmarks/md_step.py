"""MD speed: thermoflow's jitted Langevin blocks against ASE's Langevin on the same potential.

Run by hand from the repository root (lithium rows need ../shared and the deepmd extra):

    python benchmarks/md_step.py                          # LJ neon 32-500 atoms, Li dp4 16-128 atoms
    python benchmarks/md_step.py --lj 4 6 --li 2 3 4 5 --steps 200 --repeats 3
    python benchmarks/md_step.py --cell-list 1000 4000 [--dense-too]   # LJ argon, cell-list neighbour lists

Each row times the same classical Langevin dynamics (1 fs for Li, 5 fs for Ne, friction 1/ps):
- thermoflow: ``make_langevin`` + ``make_block_fn`` (``--steps`` steps in one jitted lax.scan),
  forces and virial from one backward pass (the run's default), median of ``--repeats`` blocks
  after compilation; also with the quantum thermal bath (filter length 1024), and NPT
  (isotropic stochastic cell rescaling);
- ASE: ``ase.md.langevin.Langevin`` stepping on the host, forces from
  ``thermoflow.potentials.ase_bridge.EnergyFnCalculator`` (the same energy_fn, jit-compiled energy
  and forces, one call per step), ``--ase-steps`` steps after 5 warm-up steps.
Both use float64. The potentials are dense (no neighbour lists: O(N^2 x images) for the pair sum,
fixed periodic images for DeePMD), so the large-N rows show the cost of that.

``--cell-list N ...`` times instead Langevin MD of fcc LJ argon (eps 10.4 meV, sigma 3.40 A, cutoff
8.5 A = 2.5 sigma, 5 fs, 80 K, friction 1/ps) at N atoms on cell-list neighbour lists (skin 1 A,
rebuilt inside the jitted blocks when needed): consecutive blocks of ``--steps`` steps after a
compiling one, the median ms/step, and the rebuilds in the timed blocks; ``--dense-too`` adds the
dense pair sum on the same system (O(N^2) memory: slow or out of memory from a few thousand atoms).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import thermoflow  # noqa: F401  (float64)
from timing import seconds
from thermoflow.md import integrators
from thermoflow.md.barostat import make_stochastic_cell_rescaling, static_bulk_modulus_GPa
from thermoflow.md.qtb import make_qtb_noise
from thermoflow.potentials.ase_bridge import EnergyFnCalculator
from thermoflow.units import KB_EV_PER_K

SHARED = Path(__file__).resolve().parents[2] / "shared"


def neon(repeat: int):
    from ase.build import bulk

    from thermoflow.potentials.pair import make_lennard_jones_energy_fn

    atoms = bulk("Ne", "fcc", a=4.464, cubic=True).repeat(repeat)
    return f"Ne fcc LJ ({len(atoms)})", atoms, make_lennard_jones_energy_fn(0.0031, 2.74, 8.2, atoms.cell.array), 5.0, 20.0


def lithium(repeat: int):
    from thermoflow.potentials.deepmd_compress import make_compressed_deepmd_energy_fn
    from thermoflow.structures import make_supercell, read_structure, scale_to_volume

    atoms = scale_to_volume(make_supercell(read_structure(SHARED / "structures" / "lithium" / "bcc.vasp"), (repeat,) * 3), 19.2)
    energy_fn = make_compressed_deepmd_energy_fn(str(SHARED / "models" / "lithium" / "lithium_dp4.dp"), atoms.cell.array,
                                                 type_map_symbols=atoms.get_chemical_symbols())
    return f"Li bcc dp4 compressed ({len(atoms)})", atoms, energy_fn, 1.0, 100.0


def thermoflow_ns_per_day(atoms, energy_fn, timestep_fs, temperature, thermostat, steps, repeats) -> float:
    masses = jnp.asarray(atoms.get_masses())
    cell, positions = jnp.asarray(atoms.cell.array), jnp.asarray(atoms.get_positions())
    kT = KB_EV_PER_K * temperature
    barostat = None
    if thermostat == "qtb":
        species = np.zeros(len(atoms), dtype=int)
        noise = make_qtb_noise(kT, timestep_fs, 1.0, masses, species, cutoff_THz=250.0 / timestep_fs, filter_length=1024)
    else:
        noise = integrators.make_white_noise(kT)
    if thermostat == "npt":
        beta = 1.0 / static_bulk_modulus_GPa(energy_fn, positions, cell)
        barostat = make_stochastic_cell_rescaling("isotropic", 0.0, kT, timestep_fs, 1.0, beta, masses)
    init_fn, step_fn = integrators.make_langevin(energy_fn, cell, masses, timestep_fs, 1.0, noise, barostat=barostat)
    key = jax.random.PRNGKey(0)
    state = init_fn(key, positions, integrators.maxwell_boltzmann_velocities(key, masses, kT))
    block_fn = integrators.make_block_fn(step_fn, steps, masses)
    per_step = seconds(block_fn, state, repeats=repeats) / steps
    return timestep_fs * 1e-6 / per_step * 86400.0, per_step


def ase_ns_per_day(atoms, energy_fn, timestep_fs, temperature, steps) -> tuple[float, float]:
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    atoms = atoms.copy()
    atoms.calc = EnergyFnCalculator(energy_fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(0))
    dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature, friction=1.0 / (1000.0 * units.fs),
                   fixcm=False, rng=np.random.default_rng(1))
    dyn.run(5)  # compilation and warm-up
    t0 = time.perf_counter()
    dyn.run(steps)
    per_step = (time.perf_counter() - t0) / steps
    return timestep_fs * 1e-6 / per_step * 86400.0, per_step


ARGON = dict(epsilon_eV=0.0104, sigma_A=3.40, cutoff_A=8.5, a_A=5.26, skin_A=1.0, timestep_fs=5.0, temperature_K=80.0)


def fcc_repeats(n_atoms: int) -> tuple[int, int, int]:
    """The most nearly cubic repeats (r1 <= r2 <= r3) of the 4-atom fcc cell with 4 r1 r2 r3 = n_atoms.

    Raises:
        ValueError: if ``n_atoms`` is not a multiple of 4.
    """
    if n_atoms % 4:
        raise ValueError(f"fcc supercells hold multiples of 4 atoms, got {n_atoms}")
    m = n_atoms // 4
    triples = [(a, b, m // (a * b)) for a in range(1, m + 1) for b in range(a, m + 1) if m % (a * b) == 0 and m // (a * b) >= b]
    return min(triples, key=lambda t: t[2] / t[0])


def cell_list_row(n_atoms: int, steps: int, repeats: int, dense_too: bool) -> str:
    """One table row: LJ argon Langevin MD with cell lists (and optionally dense), ms/step."""
    from ase.build import bulk

    from thermoflow.potentials.neighbors import allocate_neighbor_list
    from thermoflow.potentials.pair import lennard_jones_pair_fn, make_lennard_jones_energy_fn, make_pair_energy_fn_neighbors

    p = ARGON
    atoms = bulk("Ar", "fcc", a=p["a_A"], cubic=True).repeat(fcc_repeats(n_atoms))
    masses = jnp.asarray(atoms.get_masses())
    cell, positions = jnp.asarray(atoms.cell.array), jnp.asarray(atoms.get_positions())
    kT = KB_EV_PER_K * p["temperature_K"]
    noise = integrators.make_white_noise(kT)
    key = jax.random.PRNGKey(0)
    velocities = integrators.maxwell_boltzmann_velocities(key, masses, kT)
    t0 = time.perf_counter()
    fns = allocate_neighbor_list(positions, cell, p["cutoff_A"], p["skin_A"])
    allocate_s = time.perf_counter() - t0
    energy_fn = make_pair_energy_fn_neighbors(lennard_jones_pair_fn(p["epsilon_eV"], p["sigma_A"]), p["cutoff_A"], p["skin_A"])
    runs = [("cell list", energy_fn, fns.update, jax.jit(fns.build)(positions, cell))]
    if dense_too:
        dense = make_lennard_jones_energy_fn(p["epsilon_eV"], p["sigma_A"], p["cutoff_A"], atoms.cell.array)
        runs.append(("dense", dense, None, ()))
    cells = []
    for _, fn, update, neighbors in runs:
        init_fn, step_fn = integrators.make_langevin(fn, cell, masses, p["timestep_fs"], 1.0, noise, neighbor_update_fn=update)
        block_fn = integrators.make_block_fn(step_fn, steps, masses)
        state = jax.block_until_ready(block_fn(init_fn(key, positions, velocities, neighbors))[0])  # compiles
        builds0 = int(state.neighbors.n_builds) if update else 0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            state = jax.block_until_ready(block_fn(state)[0])
            times.append(time.perf_counter() - t0)
        per_step = 1000.0 * sorted(times)[len(times) // 2] / steps
        if update:
            overflow = " OVERFLOW" if bool(state.neighbors.overflow) else ""
            cells.append(f"{per_step:.3g} ms ({int(state.neighbors.n_builds) - builds0} rebuilds{overflow})")
        else:
            cells.append(f"{per_step:.3g} ms")
    if not dense_too:
        cells.append("-")
    return (f"| Ar fcc LJ ({len(atoms)}, {fcc_repeats(n_atoms)}) | {fns.n_cells} | {fns.max_neighbors} | "
            f"{allocate_s:.2f} s | {cells[0]} | {cells[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lj", type=int, nargs="*", default=[2, 3, 4, 5], help="fcc conventional-cell repeats (4 atoms each)")
    parser.add_argument("--li", type=int, nargs="*", default=[2, 3, 4], help="bcc repeats (2 atoms each)")
    parser.add_argument("--steps", type=int, default=100, help="steps per jitted block")
    parser.add_argument("--ase-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cell-list", type=int, nargs="*", default=None, metavar="N_ATOMS",
                        help="time LJ argon MD with cell-list neighbour lists at these atom counts (multiples of 4) instead")
    parser.add_argument("--dense-too", action="store_true", help="with --cell-list: also the dense pair sum")
    args = parser.parse_args()
    if args.cell_list is not None:
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} "
              f"({jax.default_backend()}), float64; Langevin blocks of {args.steps} steps, median of {args.repeats} consecutive blocks")
        print("| system | cells | neighbour slots | allocation | cell list ms/step (rebuilds) | dense ms/step |")
        print("| --- | --- | --- | --- | --- | --- |")
        for n_atoms in args.cell_list:
            print(cell_list_row(n_atoms, args.steps, args.repeats, args.dense_too), flush=True)
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} "
          f"({jax.default_backend()}), float64; blocks of {args.steps} steps, median of {args.repeats}")
    print("| system | thermoflow Langevin ns/day (ms/step) | thermoflow QTB | thermoflow NPT | ASE Langevin ns/day (ms/step) | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    systems = [lambda r=r: neon(r) for r in args.lj]
    if (SHARED / "models" / "lithium" / "lithium_dp4.dp").is_file():
        systems += [lambda r=r: lithium(r) for r in args.li]
    else:
        print(f"# lithium rows skipped: {SHARED / 'models' / 'lithium'} not found")
    for build in systems:
        name, atoms, energy_fn, dt, temperature = build()
        rows = {kind: thermoflow_ns_per_day(atoms, energy_fn, dt, temperature, kind, args.steps, args.repeats)
                for kind in ("langevin", "qtb", "npt")}
        ase_rate, ase_step = ase_ns_per_day(atoms, energy_fn, dt, temperature, args.ase_steps)
        cells = " | ".join(f"{rate:.3g} ({1000 * step:.3g})" for rate, step in rows.values())
        print(f"| {name} | {cells} | {ase_rate:.3g} ({1000 * ase_step:.3g}) | {rows['langevin'][0] / ase_rate:.2f} |", flush=True)


if __name__ == "__main__":
    main()
