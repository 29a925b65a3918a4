"""DeePMD adapter: reproduce deepmd-kit's TensorFlow reference values and check the contract.

Reference data: ``shared/models/lithium/reference.json`` (energies, forces and virials of seven
lithium configurations from deepmd-kit 3.2.0 on the upstream TensorFlow frozen graphs, see
``shared/models/README.md``), expected beside the repository checkout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("deepmd", reason='deepmd-kit not installed: pip install "thermoflow[deepmd]"')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from thermoflow.potentials.deepmd import (  # noqa: E402
    _import_deepmd,
    load_deepmd_model,
    make_deepmd_energy_fn,
)

jax.config.update("jax_enable_x64", True)

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
MODEL_DIR = SHARED / "models" / "lithium"
REFERENCE_FILE = MODEL_DIR / "reference.json"
if not REFERENCE_FILE.is_file():
    pytest.skip(
        f"shared lithium DeePMD data not found at {MODEL_DIR}; the tests expect the 'shared/' "
        "data directory beside the repository checkout",
        allow_module_level=True,
    )

# deepmd-kit 3.2 reads flax variables through a deprecated accessor on every call.
pytestmark = pytest.mark.filterwarnings("ignore:'.value' access is now deprecated")

REFERENCE = json.loads(REFERENCE_FILE.read_text())
CASES = REFERENCE["cases"]
MODEL_NAMES = ("lithium_dp0.dp", "lithium_dp4.dp")
BCC_DISPLACED = next(i for i, c in enumerate(CASES) if c["name"] == "bcc_2x2x2_disp0.15")
CI16 = next(i for i, c in enumerate(CASES) if c["name"].startswith("cI16"))
# XLA's backend optimisations cost more compile time than these few evaluations save.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _case(index):
    case = CASES[index]
    positions = np.asarray(case["positions"], dtype=np.float64)
    return positions, np.asarray(case["cell"], dtype=np.float64)


def _energy_forces_virial_fn(energy_fn):
    """Jitted (energy eV, forces (n, 3) eV/A, virial (3, 3) eV) in one backward pass.

    Virial W = -dE/d(strain) with positions and cell strained together, deepmd-kit's sign
    convention (W = -sum_i r_i (x) F_i for a cluster).
    """

    def strained(positions, strain, cell):
        deform = jnp.eye(3) + strain
        return energy_fn(positions @ deform, cell @ deform)

    def evaluate(positions, cell):
        energy, (grad_r, grad_strain) = jax.value_and_grad(strained, argnums=(0, 1))(
            positions, jnp.zeros((3, 3)), cell
        )
        return energy, -grad_r, -0.5 * (grad_strain + grad_strain.T)

    return jax.jit(evaluate, compiler_options=FAST_COMPILE)


@pytest.fixture(scope="module")
def models():
    return {name: load_deepmd_model(MODEL_DIR / name) for name in MODEL_NAMES}


@pytest.fixture(scope="module")
def evaluators(models):
    """Per model: energy function and its jitted (E, F, W) for the bcc 2x2x2 reference cell
    (one periodic image per direction) and for the 5 A cI16 cell (two images)."""
    out = {}
    for name, model in models.items():
        for key, index in (("bcc", BCC_DISPLACED), ("cI16", CI16)):
            energy_fn = make_deepmd_energy_fn(model, _case(index)[1])
            out[name, key] = (energy_fn, _energy_forces_virial_fn(energy_fn))
    return out


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("index", range(len(CASES)), ids=[c["name"] for c in CASES])
def test_reproduces_deepmd_kit_reference(evaluators, model_name, index):
    positions, cell = _case(index)
    energy_fn, evaluate = evaluators[model_name, "cI16" if index == CI16 else "bcc"]
    assert energy_fn.n_images == ((2, 2, 2) if index == CI16 else (1, 1, 1))
    energy, forces, virial = evaluate(positions, cell)
    expected = REFERENCE["models"][model_name][index]
    n_atoms = positions.shape[0]
    assert abs(float(energy) - expected["energy"]) / n_atoms < 1e-6
    np.testing.assert_allclose(forces, np.asarray(expected["forces"]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(virial, np.asarray(expected["virial"]), rtol=0, atol=1e-5)


@pytest.mark.slow  # the reference tests already run the jitted energy against deepmd-kit
def test_jit_matches_eager(evaluators):
    positions, cell = _case(BCC_DISPLACED)
    energy_fn, evaluate = evaluators["lithium_dp4.dp", "bcc"]
    eager = energy_fn(positions, cell)
    np.testing.assert_allclose(eager, evaluate(positions, cell)[0], rtol=1e-13, atol=0)


def test_vmap_matches_loop(evaluators):
    positions, cell = _case(BCC_DISPLACED)
    energy_fn, evaluate = evaluators["lithium_dp4.dp", "bcc"]
    rng = np.random.default_rng(0)
    batch_positions = np.stack([positions, positions + 0.05 * rng.standard_normal(positions.shape)])
    strain = np.array([[0.01, 0.004, 0.0], [0.004, -0.005, 0.002], [0.0, 0.002, 0.003]])
    batch_cells = np.stack([cell, cell @ (np.eye(3) + strain)])
    batched_fn = jax.jit(jax.vmap(energy_fn), compiler_options=FAST_COMPILE)
    batched = batched_fn(batch_positions, batch_cells)
    looped = [evaluate(r, h)[0] for r, h in zip(batch_positions, batch_cells)]
    np.testing.assert_allclose(batched, looped, rtol=1e-13, atol=0)
    assert abs(looped[0] - looped[1]) > 1e-3  # the two configurations really differ


def test_forces_are_minus_gradient_by_finite_difference(evaluators):
    positions, cell = _case(BCC_DISPLACED)
    _, evaluate = evaluators["lithium_dp4.dp", "bcc"]
    forces = evaluate(positions, cell)[1]
    step = 1e-4
    shifted = np.zeros_like(positions)
    shifted[5, 1] = step
    e_plus = evaluate(positions + shifted, cell)[0]
    e_minus = evaluate(positions - shifted, cell)[0]
    finite_difference = -(e_plus - e_minus) / (2 * step)
    assert abs(forces[5, 1]) > 1e-2  # a component that is not zero by symmetry
    np.testing.assert_allclose(finite_difference, forces[5, 1], rtol=0, atol=1e-6)


def test_translation_invariance_across_cell_boundary(evaluators):
    positions, cell = _case(BCC_DISPLACED)
    _, evaluate = evaluators["lithium_dp4.dp", "bcc"]
    energy, forces, virial = evaluate(positions, cell)
    moved = positions + np.array([0.37, -1.21, 2.93])  # several atoms leave the cell
    assert np.any(moved @ np.linalg.inv(cell) < 0) and np.any(moved @ np.linalg.inv(cell) >= 1)
    energy_moved, forces_moved, virial_moved = evaluate(moved, cell)
    np.testing.assert_allclose(energy_moved, energy, rtol=1e-13, atol=0)
    np.testing.assert_allclose(forces_moved, forces, rtol=0, atol=1e-10)
    np.testing.assert_allclose(virial_moved, virial, rtol=0, atol=1e-10)


def test_too_small_cell_is_rejected(evaluators):
    energy_fn, _ = evaluators["lithium_dp4.dp", "bcc"]  # built for one image per direction
    positions, small_cell = _case(CI16)  # 5 A cube: rcut 6 A needs two images
    with pytest.raises(ValueError, match="Rebuild the energy function"):
        energy_fn.check_cell(small_cell)
    with pytest.raises(ValueError, match="cell too small"):
        energy_fn(positions, small_cell)
    energy_fn.check_cell(_case(BCC_DISPLACED)[1])  # the reference cell itself is fine
    # A traced cell cannot raise: the energy is NaN rather than silently wrong.
    assert np.isnan(jax.jit(energy_fn, compiler_options=FAST_COMPILE)(positions, small_cell))


def test_more_neighbours_than_sel_gives_nan(evaluators):
    energy_fn, evaluate = evaluators["lithium_dp4.dp", "cI16"]
    assert energy_fn.neighbor_list == "compact"
    rng = np.random.default_rng(1)
    dense_cell = 3.05 * np.eye(3)  # 16 atoms in 28 A^3: ~60 neighbours within 3 A, sel is 25
    positions = rng.uniform(0.0, 3.05, size=(16, 3))
    assert np.isnan(evaluate(positions, dense_cell)[0])


def test_sorted_neighbor_list_matches_compact(models, evaluators):
    positions, cell = _case(BCC_DISPLACED)
    sorted_fn = make_deepmd_energy_fn(models["lithium_dp4.dp"], cell, neighbor_list="sorted")
    compact = evaluators["lithium_dp4.dp", "bcc"][1](positions, cell)[0]
    energy = jax.jit(sorted_fn, compiler_options=FAST_COMPILE)(positions, cell)
    np.testing.assert_allclose(energy, compact, rtol=1e-13, atol=0)


def test_matmul_precision_is_not_left_at_tf32(models):
    assert jax.config.jax_default_matmul_precision != "tensorfloat32"


def test_missing_model_file_and_missing_deepmd(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_deepmd_model(tmp_path / "absent.dp")
    monkeypatch.setitem(sys.modules, "deepmd.jax.env", None)
    with pytest.raises(ImportError, match=r"thermoflow\[deepmd\]"):
        _import_deepmd()


@pytest.mark.parametrize("model_name", [pytest.param("lithium_dp0.dp", marks=pytest.mark.slow), "lithium_dp4.dp"])
def test_compressed_model_reproduces_the_network(model_name):
    """Tabulated embedding networks (quintic Hermite, adaptive blocks): energies of all seven
    reference configurations within 1e-9 eV/atom of the network (the issue's target is 1e-5;
    measured ~1e-12) and of deepmd-kit's reference; forces and virials are the network's, and central
    differences of the tabulated energies under an isotropic strain give the network's -tr(W) within 1e-6 GPa."""
    from thermoflow.nct.loss import STRAIN_DIFFERENCE_STEP
    from thermoflow.units import GPA_PER_EV_PER_A3
    from thermoflow.potentials.deepmd_compress import make_compressed_deepmd_energy_fn

    for key, index_set in (("bcc", [i for i in range(len(CASES)) if i != CI16]), ("cI16", [CI16])):
        cell0 = _case(index_set[0])[1]
        compressed = make_compressed_deepmd_energy_fn(MODEL_DIR / model_name, cell0)
        full = make_deepmd_energy_fn(compressed.model, cell0)
        energy = jax.jit(compressed, compiler_options=FAST_COMPILE)
        reference = jax.jit(full, compiler_options=FAST_COMPILE)
        evaluate = _energy_forces_virial_fn(compressed)
        for index in index_set:
            positions, cell = _case(index)
            n = positions.shape[0]
            e_c, e_f = float(energy(positions, cell)), float(reference(positions, cell))
            assert abs(e_c - e_f) / n < 1e-9, (CASES[index]["name"], e_c - e_f)
            expected = REFERENCE["models"][model_name][index]
            e, f, w = evaluate(positions, cell)
            assert abs(float(e) - expected["energy"]) / n < 1e-6
            np.testing.assert_allclose(f, np.asarray(expected["forces"]), rtol=0, atol=1e-5)
            np.testing.assert_allclose(w, np.asarray(expected["virial"]), rtol=0, atol=1e-5)
            # NPT's central-difference strain derivative of the tabulated energies (nct.strain_derivative)
            # against the network's virial: dE / d(cell scale) = -tr(W)
            h = STRAIN_DIFFERENCE_STEP
            difference = (float(energy(positions * (1 + h), cell * (1 + h))) - float(energy(positions * (1 - h), cell * (1 - h)))) / (2 * h)
            error_GPa = abs(difference + float(np.trace(w))) / (3 * abs(np.linalg.det(cell))) * GPA_PER_EV_PER_A3
            assert error_GPa < 1e-6, (CASES[index]["name"], difference, -float(np.trace(w)))
    for entry in compressed.compression.values():
        assert entry["max_relative_error"] < 1e-9


@pytest.mark.slow  # builds three sets of tables
def test_compressed_model_refuses_pairs_closer_than_its_tables():
    """Two atoms 1.0 A apart lie outside tables built for 1.2 A: NaN, never an extrapolation."""
    from thermoflow.potentials.deepmd_compress import make_compressed_deepmd_energy_fn

    positions, cell = _case(BCC_DISPLACED)
    close = positions.copy()
    close[1] = close[0] + np.array([1.0, 0.0, 0.0])
    compressed = make_compressed_deepmd_energy_fn(MODEL_DIR / "lithium_dp4.dp", cell, min_distance_A=1.2)
    assert np.isfinite(float(compressed(positions, cell)))
    assert np.isnan(float(compressed(close, cell)))
    assert np.isfinite(float(make_compressed_deepmd_energy_fn(MODEL_DIR / "lithium_dp4.dp", cell, min_distance_A=0.9)(close, cell)))
