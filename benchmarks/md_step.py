"""MD speed: thermoflow's jitted Langevin blocks against ASE's Langevin on the same potential.

Run by hand from the repository root (lithium rows need ../shared and the deepmd extra):

    python benchmarks/md_step.py                          # LJ neon 32-500 atoms, Li dp4 16-128 atoms
    python benchmarks/md_step.py --lj 4 6 --li 2 3 4 5 --steps 200 --repeats 3

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lj", type=int, nargs="*", default=[2, 3, 4, 5], help="fcc conventional-cell repeats (4 atoms each)")
    parser.add_argument("--li", type=int, nargs="*", default=[2, 3, 4], help="bcc repeats (2 atoms each)")
    parser.add_argument("--steps", type=int, default=100, help="steps per jitted block")
    parser.add_argument("--ase-steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
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
