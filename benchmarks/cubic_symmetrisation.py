"""Space-group projection of cubic force constants: representative slices vs every operation.

Run by hand from the repository root:

    python benchmarks/cubic_symmetrisation.py                  # fcc 108, bcc 54, bcc 128
    python benchmarks/cubic_symmetrisation.py --cases fcc-108 --plain-operations 4

The cubic force constants of the quadratic flow's perturbative start
(:func:`thermoflow.phonons.cubic.cubic_force_constants`) are projected onto the space-group-invariant
tensors once per sample group (8 groups). :func:`thermoflow.phonons.cubic.symmetrise_cubic` averages the
slices whose first atom represents a translation orbit and rebuilds the tensor once; the plain
algorithm (kept in tests/phonons/test_cubic.py as the reference) moves the whole (3N)^3 tensor once
per operation. The plain time is extrapolated from ``--plain-operations`` timed operations plus its
two basis transforms (a whole plain projection of fcc 108 is ~30 min). Lithium lattices at
19.2 A^3/atom with random symmetric tensors and Lennard-Jones modes (the projection's cost does not
depend on the potential). The machine's facts are printed with the table.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from ase.build import bulk

from thermoflow.phonons import compute_harmonic_modes
from thermoflow.phonons.cubic import symmetrise_cubic
from thermoflow.phonons.symmetry import space_group_operations
from thermoflow.potentials import make_lennard_jones_energy_fn

CASES = {  # name: (lattice, conventional cubic cell parameter at 19.2 A^3/atom, repetitions)
    "bcc-54": ("bcc", (2 * 19.2) ** (1 / 3), 3),
    "fcc-108": ("fcc", (4 * 19.2) ** (1 / 3), 3),
    "bcc-128": ("bcc", (2 * 19.2) ** (1 / 3), 4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--plain-operations", type=int, default=2, help="plain-algorithm operations timed (then extrapolated)")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {platform.system()}, numpy {np.__version__}")
    print("| cell | modes | operations (translations + cosets) | reduced (s) | plain, extrapolated (s) | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.cases:
        lattice, a, reps = CASES[name]
        atoms = bulk("Li", lattice, a=a, cubic=True).repeat(reps)
        lj = make_lennard_jones_energy_fn(0.01, 2.2, 4.0, atoms.cell.array)
        modes = compute_harmonic_modes(lj, atoms.get_positions(), atoms.cell.array, atoms.get_masses())
        ops = space_group_operations(modes)
        phi = np.random.default_rng(0).normal(size=(modes.n_modes,) * 3)
        t = time.perf_counter()
        symmetrise_cubic(phi, modes, ops)
        reduced = time.perf_counter() - t
        e, n = np.asarray(modes.modes), modes.n_atoms
        t = time.perf_counter()
        cart = np.einsum("ia,jb,kc,abc->ijk", e, e, e, phi, optimize=True).reshape(n, 3, n, 3, n, 3)
        transform = time.perf_counter() - t
        timed = [op for group in ops for op in group][: args.plain_operations]
        t = time.perf_counter()
        for rot, perm in timed:
            inv = np.argsort(perm)
            np.einsum("xa,yb,zc,iajbkc->ixjykz", rot, rot, rot, cart[inv][:, :, inv][:, :, :, :, inv], optimize=True)
        per_op = (time.perf_counter() - t) / len(timed)
        n_ops = sum(len(g) for g in ops)
        plain = 2 * transform + n_ops * per_op
        print(f"| {name} | {modes.n_modes} | {n_ops} ({len(ops[0])} + {len(ops[1])}) | {reduced:.1f} | {plain:.0f} | {plain / reduced:.0f}x |", flush=True)


if __name__ == "__main__":
    main()
