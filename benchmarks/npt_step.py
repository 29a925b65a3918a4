"""Cost of NPT against NVT per training step, of the stress evaluation, and of the spectrum.

Run by hand from the repository root:

    python benchmarks/npt_step.py                         # the default neon job's crystal (32 atoms, LJ)
    python benchmarks/npt_step.py --deepmd ../shared/models/lithium/lithium_dp4.dp   # bcc Li 16 atoms, dp4
    python benchmarks/npt_step.py --deepmd ../shared/models/lithium/lithium_dp4.dp --compress --repeat 3 --held
        # bcc Li 54 atoms on the compressed model, the lithium production settings, with the flow held

Settings are the default job's (quadratic flow, 2 pairs, batch 128, chunks of 16, K = 4) on the
harmonic basis (the cost does not depend on the basis). Each row is the median of --repeats
jitted calls after compilation: a training step (gradient of the loss) in NVT and in NPT (the
strain gradient adds one forward-mode derivative of the potential per sample, or per sample of
the nct.strain_samples subset), one evaluation
batch with the pressure and stress tensor (one ln|Psi| gradient and one strain gradient of the
potential per sample), and one state of the excitation spectrum (a batch of local energies;
the spectrum costs (modes + 1) of them per batch of samples). The orthorhombic rows
(nct.cell_strain) add three strain tangents per sample of the subset and, with the flow, replace
the quadratic flow's analytic Laplacian (jet) by its jet in three Cartesian metrics (the default)
or by three directional folx Laplacians (nct.laplacian = "folx"); the Gaussian-level rows
(nct.freeze_flow) compare the isotropic and orthorhombic strain without a flow. With --held only
the rows of the production default are timed: the perturbative flow held (the gradient is taken
with respect to the occupation logits and the strain only, as nct.flow.trainable = false does),
and the strain derivative is also taken by central differences (nct.strain_derivative, the
default for compressed models). A compressed model (--compress) gives energies from its tables and
every derivative, the strain derivative of NPT included, from the network.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import thermoflow  # noqa: F401  (float64)
from timing import seconds
from thermoflow.nct.loss import make_free_energy_model
from thermoflow.nct.quadratic import make_quadratic_flow
from thermoflow.phonons import compute_harmonic_modes
from thermoflow.units import GPA_PER_EV_PER_A3, KB_EV_PER_K


def crystal(deepmd: Path | None, repeat: int = 2, compress: bool = False):
    if deepmd is None:
        from ase.build import bulk

        from thermoflow.potentials import make_lennard_jones_energy_fn

        atoms = bulk("Ne", "fcc", a=4.464, cubic=True).repeat(2)
        energy_fn = make_lennard_jones_energy_fn(0.0031, 2.74, 8.2, atoms.cell.array)
        return "fcc Ne, 32 atoms, Lennard-Jones", atoms, energy_fn, 20.0
    from ase.build import bulk

    from thermoflow.potentials.deepmd import make_deepmd_energy_fn
    from thermoflow.potentials.deepmd_compress import make_compressed_deepmd_energy_fn

    atoms = bulk("Li", "bcc", a=(2 * 19.2) ** (1 / 3), cubic=True).repeat(repeat)
    make = make_compressed_deepmd_energy_fn if compress else make_deepmd_energy_fn
    energy_fn = make(deepmd, atoms.cell.array)
    return f"bcc Li, {len(atoms)} atoms, {deepmd.stem}{' compressed' if compress else ''}", atoms, energy_fn, 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deepmd", type=Path, default=None, help="a DP model: bcc lithium on it instead of the LJ neon crystal")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--strain-samples", type=int, default=16, help="nct.strain_samples of the second NPT row")
    parser.add_argument("--repeat", type=int, default=2, help="bcc Li: conventional cells per direction (2: 16 atoms, 3: 54)")
    parser.add_argument("--compress", action="store_true", help="bcc Li: the compressed model (tabulated embeddings)")
    parser.add_argument("--held", action="store_true", help="only the production rows: flow held, NVT / NPT / evaluation")
    args = parser.parse_args()
    name, atoms, energy_fn, temperature = crystal(args.deepmd, args.repeat, args.compress)
    modes = compute_harmonic_modes(energy_fn, atoms.get_positions(), atoms.cell.array, atoms.get_masses())
    flow = make_quadratic_flow(modes.n_modes, 2)
    kw = dict(kT_eV=KB_EV_PER_K * temperature, n_levels=4, batch_size=args.batch, chunk_size=args.chunk_size)
    nvt = make_free_energy_model(energy_fn, modes, flow, **kw)
    # forward mode explicitly (the default, auto, takes central differences on a compressed model)
    npt = make_free_energy_model(energy_fn, modes, flow, pressure_eV_per_A3=1.0 / GPA_PER_EV_PER_A3, strain_derivative="forward", **kw)
    npt_subset = make_free_energy_model(energy_fn, modes, flow, pressure_eV_per_A3=1.0 / GPA_PER_EV_PER_A3,
                                        strain_samples=args.strain_samples, strain_derivative="forward", **kw)
    npt_ortho, npt_ortho_folx = (
        make_free_energy_model(energy_fn, modes, flow, pressure_eV_per_A3=1.0 / GPA_PER_EV_PER_A3,
                               strain_samples=args.strain_samples, cell_strain="orthorhombic", laplacian=lap, **kw)
        for lap in ("auto", "folx"))
    gaussian_iso, gaussian_ortho = (
        make_free_energy_model(energy_fn, modes, flow, pressure_eV_per_A3=1.0 / GPA_PER_EV_PER_A3, freeze_flow=True,
                               strain_samples=args.strain_samples, cell_strain=c, **kw)
        for c in ("isotropic", "orthorhombic"))
    npt_central = make_free_energy_model(energy_fn, modes, flow, pressure_eV_per_A3=1.0 / GPA_PER_EV_PER_A3,
                                         strain_samples=args.strain_samples, strain_derivative="central_difference", **kw)
    stress = make_free_energy_model(energy_fn, modes, flow, stress=True, **kw)
    key = jax.random.PRNGKey(0)
    rng = np.random.default_rng(0)
    p_nvt = nvt.init(key)
    p_nvt["flow"] = jax.tree_util.tree_map(lambda x: jnp.asarray(1e-3 * rng.normal(size=x.shape)), p_nvt["flow"])
    p_npt = {**p_nvt, "strain": jnp.zeros(())}
    p_ortho = {**p_nvt, "strain": jnp.zeros(3)}

    def grad_of(model):
        return jax.jit(jax.grad(lambda p, k: model.loss(p, k)[0]))

    def held_grad_of(model):
        """The gradient with respect to everything but the flow (held at its start)."""
        def gradient(p, k):
            trained = {name: v for name, v in p.items() if name != "flow"}
            return jax.grad(lambda t: model.loss({**t, "flow": p["flow"]}, k)[0])(trained)
        return jax.jit(gradient)

    if args.held:
        rows = [
            ("NVT training step, flow held", seconds(held_grad_of(nvt), p_nvt, key, repeats=args.repeats)),
            (f"NPT training step, flow held, strain from {args.strain_samples} samples", seconds(held_grad_of(npt_subset), p_npt, key, repeats=args.repeats)),
            (f"NPT training step, flow held, {args.strain_samples} samples, central differences", seconds(held_grad_of(npt_central), p_npt, key, repeats=args.repeats)),
            ("NPT training step, flow held, strain from all samples", seconds(held_grad_of(npt), p_npt, key, repeats=args.repeats)),
            ("NVT training step, flow trained", seconds(grad_of(nvt), p_nvt, key, repeats=args.repeats)),
            ("evaluation batch with pressure + stress tensor", seconds(jax.jit(stress.loss), p_nvt, key, repeats=args.repeats)),
        ]
        report(name, modes, args, rows)
        return
    rows = [
        ("NVT training step (loss gradient)", seconds(grad_of(nvt), p_nvt, key, repeats=args.repeats)),
        ("NPT training step, strain from all samples", seconds(grad_of(npt), p_npt, key, repeats=args.repeats)),
        (f"NPT training step, strain from {args.strain_samples} samples (default)", seconds(grad_of(npt_subset), p_npt, key, repeats=args.repeats)),
        (f"NPT orthorhombic step, {args.strain_samples} samples (directional jets)", seconds(grad_of(npt_ortho), p_ortho, key, repeats=args.repeats)),
        (f"NPT orthorhombic step, {args.strain_samples} samples (directional folx)", seconds(grad_of(npt_ortho_folx), p_ortho, key, repeats=args.repeats)),
        (f"Gaussian level (no flow), NPT isotropic, {args.strain_samples} samples", seconds(grad_of(gaussian_iso), p_npt, key, repeats=args.repeats)),
        (f"Gaussian level (no flow), NPT orthorhombic, {args.strain_samples} samples", seconds(grad_of(gaussian_ortho), p_ortho, key, repeats=args.repeats)),
        ("evaluation batch with pressure + stress tensor", seconds(jax.jit(stress.loss), p_nvt, key, repeats=args.repeats)),
    ]
    levels = jnp.zeros((args.batch, modes.n_modes), dtype=jnp.int32)
    s = nvt.sample_states(p_nvt["flow"], key, levels)
    local = jax.jit(lambda p, lv, x, k: nvt.local_energies(p, lv, x, jax.random.split(k, args.batch)))
    rows.append(("one spectrum state (a batch of local energies)", seconds(local, p_nvt, levels, s, key, repeats=args.repeats)))
    report(name, modes, args, rows)


def report(name, modes, args, rows) -> None:
    """Print the table: seconds per call and the ratio to the first row (an NVT step)."""
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, JAX {jax.__version__} on {jax.default_backend()}")
    print(f"# {name}, {modes.n_modes} modes, quadratic flow 2 pairs, batch {args.batch}, chunks of {args.chunk_size}, K = 4")
    base = rows[0][1]
    print(f"{'':<64} {'s':>8} {'/ NVT step':>10}")
    for label, t in rows:
        print(f"{label:<64} {t:8.3f} {t / base:10.2f}")


if __name__ == "__main__":
    main()
