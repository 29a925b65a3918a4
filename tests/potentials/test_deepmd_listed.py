"""DeePMD on cell-list neighbour lists: the same energies, forces and virials as the dense adapter
(and deepmd-kit's reference) for 54-atom bcc lithium, in an orthorhombic and a sheared cell, on a
fresh list and after moves within the skin."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("deepmd", reason='deepmd-kit not installed: pip install "thermoflow[deepmd]"')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from thermoflow.potentials.base import energy_forces_virial  # noqa: E402
from thermoflow.potentials.deepmd import load_deepmd_model, make_deepmd_energy_fn  # noqa: E402
from thermoflow.potentials.deepmd_listed import make_deepmd_energy_fn_neighbors  # noqa: E402
from thermoflow.potentials.neighbors import allocate_neighbor_list  # noqa: E402

jax.config.update("jax_enable_x64", True)

MODEL_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "lithium"
REFERENCE_FILE = MODEL_DIR / "reference.json"
if not REFERENCE_FILE.is_file():
    pytest.skip(f"shared lithium DeePMD data not found at {MODEL_DIR}", allow_module_level=True)

pytestmark = pytest.mark.filterwarnings("ignore:'.value' access is now deprecated")
REFERENCE = json.loads(REFERENCE_FILE.read_text())
FAST_COMPILE = {"xla_backend_optimization_level": 0}
SKIN = 1.0


def _case(name):
    index = next(i for i, c in enumerate(REFERENCE["cases"]) if c["name"] == name)
    case = REFERENCE["cases"][index]
    expected = REFERENCE["models"]["lithium_dp4.dp"][index]
    return jnp.asarray(case["positions"]), jnp.asarray(case["cell"]), expected


@pytest.fixture(scope="module")
def model():
    return load_deepmd_model(MODEL_DIR / "lithium_dp4.dp")


def _efv(energy_fn):
    return jax.jit(lambda x, h, *extra: energy_forces_virial(lambda a, b: energy_fn(a, b, *extra), x, h),
                   compiler_options=FAST_COMPILE)


@pytest.mark.parametrize("name", ["bcc_3x3x3_disp0.10", "bcc_3x3x3_sheared_disp0.05"])
def test_listed_deepmd_equals_the_dense_adapter(model, name):
    """Energy, forces and virial of the neighbour-list adapter equal the dense adapter's to 1e-10
    (measured ~1e-13 eV, 1e-14 eV/A) and deepmd-kit's reference; after random moves of up to
    0.4 A (< skin/2) without a rebuild they still equal the dense values."""
    positions, cell, expected = _case(name)
    listed = make_deepmd_energy_fn_neighbors(model, skin_A=SKIN)
    fns = allocate_neighbor_list(positions, cell, listed.cutoff_A, listed.skin_A)
    neighbors = jax.jit(fns.build)(positions, cell)
    evaluate_listed, evaluate_dense = _efv(listed.energy_fn), _efv(make_deepmd_energy_fn(model, cell, skin=0.5))
    n = positions.shape[0]
    rng = np.random.default_rng(4)
    step = rng.normal(size=positions.shape)
    moved = positions + 0.4 * step / np.linalg.norm(step, axis=1).max()
    assert not bool(fns.needs_rebuild(neighbors, moved, cell))
    for x in (positions, moved):
        e1, f1, w1 = evaluate_listed(x, cell, neighbors)
        e0, f0, w0 = evaluate_dense(x, cell)
        print(f"{name}: |dE| {abs(float(e1 - e0)):.2g} eV, |dF| {float(jnp.abs(f1 - f0).max()):.2g} eV/A, "
              f"|dW| {float(jnp.abs(w1 - w0).max()):.2g} eV")
        np.testing.assert_allclose(e1, e0, rtol=1e-13, atol=1e-10)
        np.testing.assert_allclose(f1, f0, rtol=0, atol=1e-10)
        np.testing.assert_allclose(w1, w0, rtol=0, atol=1e-10)
    e, f, w = evaluate_listed(positions, cell, neighbors)
    assert abs(float(e) - expected["energy"]) / n < 1e-6
    np.testing.assert_allclose(f, np.asarray(expected["forces"]), rtol=0, atol=1e-5)
    np.testing.assert_allclose(w, np.asarray(expected["virial"]), rtol=0, atol=1e-5)


def test_stale_list_gives_nan_and_unsupported_input_is_refused(model):
    positions, cell, _ = _case("bcc_3x3x3_disp0.10")
    listed = make_deepmd_energy_fn_neighbors(model, skin_A=SKIN)
    fns = allocate_neighbor_list(positions, cell, listed.cutoff_A, listed.skin_A)
    neighbors = jax.jit(fns.build)(positions, cell)
    far = positions.at[0, 0].add(0.6)  # > skin / 2
    assert np.isnan(float(jax.jit(listed.energy_fn, compiler_options=FAST_COMPILE)(far, cell, neighbors)))
    with pytest.raises(ValueError, match="skin"):
        make_deepmd_energy_fn_neighbors(model, skin_A=0.0)
    with pytest.raises(ValueError, match="not in the model's type map"):
        make_deepmd_energy_fn_neighbors(model, type_map_symbols=["H"] * 54)


@pytest.mark.slow  # builds the embedding tables
def test_compressed_listed_deepmd_equals_the_compressed_dense_adapter():
    from thermoflow.potentials.deepmd_compress import make_compressed_deepmd_energy_fn

    positions, cell, _ = _case("bcc_3x3x3_sheared_disp0.05")
    listed = make_deepmd_energy_fn_neighbors(MODEL_DIR / "lithium_dp4.dp", skin_A=SKIN, compress=True)
    fns = allocate_neighbor_list(positions, cell, listed.cutoff_A, listed.skin_A)
    neighbors = jax.jit(fns.build)(positions, cell)
    dense = make_compressed_deepmd_energy_fn(MODEL_DIR / "lithium_dp4.dp", cell)
    e1, f1, w1 = _efv(listed.energy_fn)(positions, cell, neighbors)
    e0, f0, w0 = _efv(dense)(positions, cell)
    np.testing.assert_allclose(e1, e0, rtol=1e-13, atol=1e-10)
    np.testing.assert_allclose(f1, f0, rtol=0, atol=1e-10)
    np.testing.assert_allclose(w1, w0, rtol=0, atol=1e-10)
