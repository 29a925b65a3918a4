"""MD with cell-list neighbour lists: the same trajectory as the dense pair sum (rebuilds inside
the jitted blocks, a rerun after an overflow), and bit-for-bit resume."""

import json
import logging

import ase.io
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thermoflow.md import integrators
from thermoflow.potentials.neighbors import allocate_neighbor_list, make_neighbor_list
from thermoflow.potentials.pair import lennard_jones_pair_fn, make_lennard_jones_energy_fn, make_pair_energy_fn_neighbors
from thermoflow.structures import build_lattice, make_supercell, to_arrays
from thermoflow.units import KB_EV_PER_K
from thermoflow.workflows import md_run
from thermoflow.workflows.config import ConfigError, validate_config
from thermoflow.workflows.md_config import MDRunConfig

EPS, SIGMA, CUTOFF, SKIN = 0.0104, 3.40, 6.0, 0.3  # argon; a thin skin, so that lists are rebuilt within a few blocks


@pytest.mark.slow  # default-budget trim (2026-12-02); run with -m slow
def test_langevin_with_neighbor_lists_follows_the_dense_trajectory():
    """108-atom LJ argon at 120 K, 4 blocks of 10 steps of 5 fs: positions, velocities and energies
    with lists (rebuilt inside the blocks) equal the dense run's to 1e-10 (measured: 3e-13 A)."""
    atoms = make_supercell(build_lattice("Ar", "fcc", a_A=5.26), (3, 3, 3))
    pos, cell, masses = (jnp.asarray(a) for a in to_arrays(atoms))
    kT = KB_EV_PER_K * 120.0
    noise = integrators.make_white_noise(kT)
    dense = make_lennard_jones_energy_fn(EPS, SIGMA, CUTOFF, np.asarray(cell))
    fns = allocate_neighbor_list(pos, cell, CUTOFF, SKIN)
    listed = make_pair_energy_fn_neighbors(lennard_jones_pair_fn(EPS, SIGMA), CUTOFF, SKIN)
    key = jax.random.PRNGKey(0)
    velocities = integrators.maxwell_boltzmann_velocities(key, masses, kT)
    runs = []
    for energy_fn, update, neighbors in ((dense, None, ()), (listed, fns.update, fns.build(pos, cell))):
        init_fn, step_fn = integrators.make_langevin(energy_fn, cell, masses, 5.0, 5.0, noise, neighbor_update_fn=update)
        block_fn = integrators.make_block_fn(step_fn, 10, masses)
        state = init_fn(key, pos, velocities, neighbors)
        for _ in range(4):
            state, obs = block_fn(state)
        runs.append((state, obs))
    (a, obs_a), (b, obs_b) = runs
    assert int(b.neighbors.n_builds) >= 2 and not bool(b.neighbors.overflow)
    assert float(jnp.abs(a.positions - pos).max()) > SKIN  # the atoms moved beyond the skin
    deviation = float(jnp.abs(a.positions - b.positions).max())
    print(f"{int(b.neighbors.n_builds)} builds; largest position deviation {deviation:.2g} A")
    assert deviation < 1e-10
    np.testing.assert_allclose(b.velocities, a.velocities, rtol=0, atol=1e-10)
    np.testing.assert_allclose(obs_b.potential_energy, obs_a.potential_energy, rtol=1e-12)
    np.testing.assert_allclose(b.virial, a.virial, rtol=0, atol=1e-9)


CONFIG = {
    "seed": 5,
    "state": {"temperature_K": 150.0},
    "structure": {"lattice": "fcc", "symbol": "Ar", "a_A": 5.26, "supercell": [3, 3, 3]},
    "potential": {"kind": "lennard_jones", "epsilon_eV": EPS, "sigma_A": SIGMA, "cutoff_A": CUTOFF},
    "md": {"timestep_fs": 5.0, "steps": 60, "friction_per_ps": 5.0, "trajectory_every": 10, "thermo_every": 10,
           "checkpoint_every": 20, "neighbor_skin_A": SKIN},
}


def _config(state=None, **md):
    data = json.loads(json.dumps(CONFIG))
    data["md"].update(md)
    data["state"].update(state or {})
    return validate_config(data, MDRunConfig)


def _tight_allocation(monkeypatch):
    """Make md_run's first allocation hold exactly as many atoms per cell as the fullest cell has
    (no headroom; the crystal's lattice planes sit on the cell boundaries), so that the list
    overflows at its first rebuild and that block is run again."""
    original = md_run.allocate_neighbor_list
    calls = []

    def tight(positions, cell, cutoff_A, skin_A, *, previous=None, **kwargs):
        fns = original(positions, cell, cutoff_A, skin_A, previous=previous, **kwargs)
        calls.append(previous)
        if len(calls) > 1:
            return fns
        frac = np.asarray(positions) @ np.linalg.inv(np.asarray(cell))
        triples = np.floor((frac - np.floor(frac)) * np.asarray(fns.n_cells)).astype(int)
        per_cell = np.unique(triples, axis=0, return_counts=True)[1].max()
        return make_neighbor_list(cutoff_A, skin_A, max_neighbors=fns.max_neighbors, max_atoms_per_cell=int(per_cell),
                                  n_cells=fns.n_cells, search=fns.search)

    monkeypatch.setattr(md_run, "allocate_neighbor_list", tight)


@pytest.mark.slow  # default-budget trim (2026-12-03): cell lists stay tested against the dense trajectory and for bit-for-bit resume
def test_md_run_with_cell_lists_matches_the_dense_run_across_an_overflow(tmp_path, monkeypatch, caplog):
    """``thermoflow md`` with md.neighbor_list = 'cell_list' and capacities without headroom (a
    block overflows and is run again with larger ones) reproduces the dense run's trajectory to
    1e-10 A (measured: 4e-14 A)."""
    _tight_allocation(monkeypatch)
    dense = md_run.run_md(_config(neighbor_list="dense"), tmp_path, tmp_path / "dense", log_every=None)
    with caplog.at_level(logging.INFO, logger=md_run.__name__):
        listed = md_run.run_md(_config(neighbor_list="cell_list"), tmp_path, tmp_path / "listed", log_every=None)
    assert "neighbour list overflow" in caplog.text
    with np.load(tmp_path / "dense" / "checkpoints" / "state.npz") as d, np.load(tmp_path / "listed" / "checkpoints" / "state.npz") as c:
        positions_d, positions_l = d["leaf_00000"], c["leaf_00000"]  # MDState.positions after 60 steps, full precision
        np.testing.assert_allclose(c["leaf_00001"], d["leaf_00001"], rtol=0, atol=1e-10)  # velocities
    deviation = np.abs(positions_d - positions_l).max()
    print(f"largest position deviation dense vs cell list: {deviation:.2g} A")
    assert deviation < 1e-10
    frames = ase.io.read(tmp_path / "listed" / "trajectory.extxyz", index=":")
    assert len(frames) == 7 and np.abs(frames[-1].get_positions() - frames[0].get_positions()).max() > SKIN
    np.testing.assert_allclose(listed["potential_energy_eV_per_atom"], dense["potential_energy_eV_per_atom"], rtol=1e-12)


@pytest.mark.slow  # ~25 s; dense-path resume and the cell-list trajectory tests stay in the default run
def test_md_run_with_cell_lists_resumes_bit_for_bit(tmp_path):
    """An interrupted + resumed cell-list run (npt: the cell changes too) reproduces the
    uninterrupted one bit for bit: lists are rebuilt from the checkpointed positions in both."""
    config = _config({"pressure_GPa": 0.5}, neighbor_list="cell_list", ensemble="npt", barostat_time_ps=0.5,
                     compressibility_per_GPa=0.3)
    full = md_run.run_md(config, tmp_path, tmp_path / "full", log_every=None)
    part = md_run.run_md(config, tmp_path, tmp_path / "part", log_every=None, stop_after=30)
    assert part == {"completed": False, "steps_done": 30}
    md_run.run_md(config, tmp_path, tmp_path / "part", resume=True, log_every=None)
    assert (tmp_path / "part" / "thermo.csv").read_text() == (tmp_path / "full" / "thermo.csv").read_text()
    frames_f = ase.io.read(tmp_path / "full" / "trajectory.extxyz", index=":")
    frames_p = ase.io.read(tmp_path / "part" / "trajectory.extxyz", index=":")
    assert len(frames_f) == len(frames_p) == 7
    for ff, fp in zip(frames_f, frames_p):
        np.testing.assert_array_equal(ff.get_positions(), fp.get_positions())
        np.testing.assert_array_equal(ff.get_cell()[:], fp.get_cell()[:])
    assert not np.array_equal(frames_f[0].get_cell()[:], frames_f[-1].get_cell()[:])
    assert full["completed"]


@pytest.mark.slow  # compiles two DeePMD MD blocks
def test_lithium_deepmd_md_with_cell_lists_matches_dense(tmp_path, shared_dir):
    """54-atom bcc lithium (dp4) at 300 K, 40 steps of 1 fs: the cell-list run's checkpointed
    positions equal the dense run's to 1e-10 A."""
    pytest.importorskip("deepmd")
    data = {
        "seed": 1, "state": {"temperature_K": 300.0},
        "structure": {"file": str(shared_dir / "structures" / "lithium" / "bcc.vasp"), "supercell": [3, 3, 3],
                      "volume_per_atom_A3": 19.2},
        "potential": {"kind": "deepmd", "model": str(shared_dir / "models" / "lithium" / "lithium_dp4.dp")},
        "md": {"timestep_fs": 1.0, "steps": 40, "trajectory_every": 20, "thermo_every": 10, "checkpoint_every": 40,
               "neighbor_skin_A": 0.3},
    }
    states = []
    for mode in ("dense", "cell_list"):
        data["md"]["neighbor_list"] = mode
        md_run.run_md(validate_config(data, MDRunConfig), tmp_path, tmp_path / mode, log_every=None)
        with np.load(tmp_path / mode / "checkpoints" / "state.npz") as c:
            states.append(c["leaf_00000"])
    deviation = np.abs(states[0] - states[1]).max()
    print(f"lithium dp4: largest position deviation dense vs cell list {deviation:.2g} A")
    assert deviation < 1e-10


def test_cell_list_is_refused_for_potentials_without_one():
    data = json.loads(json.dumps(CONFIG))
    data["potential"] = {"kind": "harmonic", "einstein_spring_eV_per_A2": 0.05}
    data["md"].update(neighbor_list="cell_list", zero_net_force=False)
    with pytest.raises(ConfigError, match="md.neighbor_list = 'cell_list' is implemented for the potential kinds"):
        validate_config(data, MDRunConfig)
