"""DeePMD adapter with several atom types and attention / message-passing descriptors.

Small two-type (La, H) energy models are built here with deepmd-kit itself, from a model config
and random parameters (no training), and saved as ``.dp`` files. The references come only from
deepmd-kit's own inference on the numpy backend (``deepmd.infer.DeepPot``: its own ghost atoms,
neighbour list and mapping): energies directly; forces and virials, which that backend does not
return (NaN), by fourth-order central finite differences of its energies.

Descriptor kinds: se_e2_a with ``type_one_side=False`` (deepmd-kit's default, one embedding
network per type pair), se_atten (DPA-1), se_atten_v2, DPA-2 (repinit + repformer) and DPA-3
(repflow). The cell is triclinic with a spacing below the cutoff in one direction, so atoms see
their own periodic images and the adapter needs two image shells there.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

pytest.importorskip("deepmd", reason='deepmd-kit not installed: pip install "thermoflow[deepmd]"')

import jax  # noqa: E402
from deepmd.dpmodel.model.model import get_model  # noqa: E402
from deepmd.dpmodel.utils.serialization import save_dp_model  # noqa: E402
from deepmd.infer import DeepPot  # noqa: E402

from thermoflow.potentials.base import energy_forces_virial  # noqa: E402
from thermoflow.potentials.deepmd import (  # noqa: E402
    _import_deepmd,
    load_deepmd_model,
    make_deepmd_energy_fn,
)

jax.config.update("jax_enable_x64", True)

# deepmd-kit 3.2 reads flax variables through a deprecated accessor on every call.
pytestmark = pytest.mark.filterwarnings("ignore:'.value' access is now deprecated")

TYPE_MAP = ["La", "H"]
RCUT_A = 4.5
FITTING = {"neuron": [8, 8], "seed": 2}
FITTING_OUTPUT_SCALE = 20.0
DESCRIPTORS = {
    "se_e2_a": {
        "type": "se_e2_a", "sel": [8, 32], "rcut": RCUT_A, "rcut_smth": 0.5, "neuron": [4, 8],
        "axis_neuron": 4, "type_one_side": False, "seed": 1,
    },
    "se_atten": {
        "type": "se_atten", "sel": 40, "rcut": RCUT_A, "rcut_smth": 0.5, "neuron": [4, 8],
        "axis_neuron": 4, "attn": 8, "attn_layer": 2, "tebd_dim": 4, "set_davg_zero": True,
        "seed": 1,
    },
    "se_atten_v2": {
        "type": "se_atten_v2", "sel": 40, "rcut": RCUT_A, "rcut_smth": 0.5, "neuron": [4, 8],
        "axis_neuron": 4, "attn": 8, "attn_layer": 1, "tebd_dim": 4, "seed": 1,
    },
    "dpa2": {
        "type": "dpa2", "seed": 1, "add_tebd_to_repinit_out": False,
        "repinit": {
            "rcut": RCUT_A, "rcut_smth": 0.5, "nsel": 40, "neuron": [4, 8], "axis_neuron": 4,
            "tebd_dim": 4, "use_three_body": True, "three_body_sel": 12,
            "three_body_rcut": 3.0, "three_body_rcut_smth": 2.5,
        },
        "repformer": {
            "rcut": 3.5, "rcut_smth": 0.5, "nsel": 24, "nlayers": 2, "g1_dim": 8, "g2_dim": 4,
            "attn1_hidden": 4, "attn1_nhead": 1, "attn2_hidden": 4, "attn2_nhead": 1,
            "axis_neuron": 4, "update_h2": False, "update_g1_has_attn": True,
            "update_g2_has_attn": True, "attn2_has_gate": True,
        },
    },
    "dpa3": {
        "type": "dpa3", "seed": 1,
        "repflow": {
            "n_dim": 8, "e_dim": 4, "a_dim": 4, "nlayers": 2, "e_rcut": RCUT_A,
            "e_rcut_smth": 0.5, "e_sel": 40, "a_rcut": 3.5, "a_rcut_smth": 3.0, "a_sel": 16,
            "axis_neuron": 4, "update_angle": True,
        },
    },
}
# deepmd-kit's training defaults (set_davg_zero): mean zero for se_atten, DPA-2 and DPA-3, whose
# dense forms are discontinuous at rcut otherwise (a neighbour crossing rcut turns into a padding
# slot with a different type embedding; deepmd-kit's and thermoflow's energies jump alike).
DAVG_ZERO = {"se_atten", "dpa2", "dpa3"}
KINDS = [
    "se_e2_a",
    pytest.param("se_atten", marks=pytest.mark.slow),  # DPA-1; DPA-3 covers the mixed-type sorted list by default
    pytest.param("se_atten_v2", marks=pytest.mark.slow),  # se_atten, stripped type embedding
    pytest.param("dpa2", marks=pytest.mark.slow),  # ~25 s; DPA-3 covers the mapping by default
    "dpa3",
]

# Ten atoms (La2H8) in a triclinic cell; the third interplanar spacing, 4.30 A, is below the
# cutoff, so n_images = (1, 1, 2) and every atom sees its own image at 4.37 A.
CELL = np.array([[6.4, 0.0, 0.0], [0.9, 6.1, 0.0], [0.4, -0.7, 4.3]])
FRACTIONAL = np.array([
    [0.0, 0.0, 0.0], [0.25, 0.25, 0.0], [0.5, 0.5, 0.5], [0.75, 0.25, 0.0], [0.25, 0.75, 0.0],
    [0.75, 0.75, 0.0], [0.0, 0.5, 0.25], [0.5, 0.0, 0.25], [0.0, 0.5, 0.75], [0.5, 0.0, 0.75],
])
SYMBOLS = ["La", "H", "La", "H", "H", "H", "H", "H", "H", "H"]  # types not sorted by index
POSITIONS = FRACTIONAL @ CELL + np.random.default_rng(7).normal(0.0, 0.15, FRACTIONAL.shape)
SWAPPED = ["H", "La"] + SYMBOLS[2:]  # atoms 0 and 1 exchange species


def _randomize(node, rng, davg_zero):
    """Give the zero-initialised statistics non-trivial values, in place.

    Output and fitting biases per type ~ N(0, 1) eV; environment-matrix statistics as a trained
    model has them: radial mean > 0 (zero if ``davg_zero``), angular mean 0, standard deviations
    in [0.1, 0.2], equal for every neighbour slot (deepmd-kit's statistics are slot-independent).
    """
    for value in node.values() if isinstance(node, dict) else node:
        if isinstance(value, (dict, list)):
            _randomize(value, rng, davg_zero)
    variables = node.get("@variables") if isinstance(node, dict) else None
    if not isinstance(variables, dict):
        return
    for name in ("out_bias", "bias_atom_e"):
        if name in variables:
            variables[name] = rng.normal(0.0, 1.0, variables[name].shape)
    if "davg" in variables and variables["davg"].ndim == 3:
        n_types, n_slots, _ = variables["davg"].shape
        davg = np.zeros((n_types, n_slots, 4))
        if not davg_zero:
            davg[..., 0] = rng.uniform(0.05, 0.3, (n_types, 1))
        dstd = np.empty((n_types, n_slots, 4))
        dstd[..., 0] = rng.uniform(0.1, 0.2, (n_types, 1))
        dstd[..., 1:] = rng.uniform(0.1, 0.2, (n_types, 1, 1))
        variables["davg"], variables["dstd"] = davg, dstd


def _build_model_file(kind, path):
    """Randomly initialised two-type energy model of this descriptor kind, saved as ``.dp``."""
    config = {"type_map": TYPE_MAP, "descriptor": DESCRIPTORS[kind], "fitting_net": FITTING}
    data = get_model(copy.deepcopy(config)).serialize()
    _randomize(data, np.random.default_rng(sum(map(ord, kind))), kind in DAVG_ZERO)
    for network in data["fitting"]["nets"]["networks"]:  # steeper: forces of order 1 eV/A
        network["layers"][-1]["@variables"]["w"] *= FITTING_OUTPUT_SCALE
    save_dp_model(str(path), {"model": data, "model_def_script": config, "backend": "DPModel"})


def _finite_difference_reference(deep_pot, positions, cell, symbols, step_A=1e-3, strain_step=2e-4):
    """deepmd-kit's energy (eV), forces (n, 3) eV/A and virial (3, 3) eV, the last two by
    fourth-order central differences of its energies; all frames in one ``DeepPot.eval``.

    Virial W = -(dE/d strain)^T with positions and cell strained together (r -> r (1 + e)),
    deepmd-kit's convention W_ab = sum_i F_i,a r_i,b.
    """
    types = np.array([TYPE_MAP.index(s) for s in symbols])
    n_atoms = positions.shape[0]
    weights = {-2: 1.0 / 12, -1: -8.0 / 12, 1: 8.0 / 12, 2: -1.0 / 12}
    frames = [(positions, cell)]
    for direction in range(3 * n_atoms):
        for k in weights:
            moved = positions.copy().reshape(-1)
            moved[direction] += k * step_A
            frames.append((moved.reshape(n_atoms, 3), cell))
    for component in range(9):
        for k in weights:
            deform = np.eye(3) + k * strain_step * np.eye(9)[component].reshape(3, 3)
            frames.append((positions @ deform, cell @ deform))
    coords = np.stack([f[0].reshape(-1) for f in frames])
    cells = np.stack([f[1].reshape(-1) for f in frames])
    energies = deep_pot.eval(coords, cells, types)[0].reshape(-1)
    stencil = np.array(list(weights.values()))
    derivative = energies[1:].reshape(-1, 4) @ stencil
    forces = -derivative[: 3 * n_atoms].reshape(n_atoms, 3) / step_A
    virial = -(derivative[3 * n_atoms :].reshape(3, 3) / strain_step).T
    return energies[0], forces, virial


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("deepmd_species")


@pytest.fixture(scope="module", params=KINDS)
def case(request, model_dir):
    """Per descriptor kind: the model file, its loaded model and deepmd-kit's DeepPot."""
    _import_deepmd()  # deepmd-kit's JAX backend with thermoflow's precision settings
    kind = request.param
    path = model_dir / f"{kind}.dp"
    _build_model_file(kind, path)
    return kind, path, load_deepmd_model(path), DeepPot(str(path), auto_batch_size=False)


def _energy_forces_virial(energy_fn):
    """Jitted (energy eV, forces (n, 3) eV/A, virial (3, 3) eV) from one backward pass (thermoflow.potentials.base)."""
    # Default XLA options: at xla_backend_optimization_level=0 the CPU backend recomputes the
    # attention logits of DPA-2's repformer inconsistently, so no element equals their max and
    # the softmax's max-gradient divides by zero (NaN forces; deepmd-kit's own code, jaxlib 0.10).
    return jax.jit(lambda positions, cell: energy_forces_virial(energy_fn, positions, cell))


def test_energy_forces_virial_match_deepmd_kit(case):
    kind, _, model, deep_pot = case
    energy_fn = make_deepmd_energy_fn(model, CELL, type_map_symbols=SYMBOLS)
    assert energy_fn.n_images == (1, 1, 2)
    expected = {"se_e2_a": "compact"}.get(kind, "sorted")  # attention needs distance order
    assert energy_fn.neighbor_list == expected
    energy, forces, virial = _energy_forces_virial(energy_fn)(POSITIONS, CELL)
    e_ref, f_ref, w_ref = _finite_difference_reference(deep_pot, POSITIONS, CELL, SYMBOLS)
    assert np.abs(f_ref).max() > 1e-2  # four orders of magnitude above the tolerance
    assert abs(float(energy) - e_ref) / len(SYMBOLS) <= 1e-8
    np.testing.assert_allclose(forces, f_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(virial, w_ref, rtol=0, atol=1e-6)


def test_species_matter_and_jit_energy_matches(case):
    """Exchanging the species of two atoms changes the energy, by what deepmd-kit says."""
    _, _, model, deep_pot = case
    swapped_fn = jax.jit(make_deepmd_energy_fn(model, CELL, type_map_symbols=SWAPPED))
    types = [np.array([TYPE_MAP.index(s) for s in symbols]) for symbols in (SYMBOLS, SWAPPED)]
    e_original, e_swapped = (
        float(deep_pot.eval(POSITIONS[None], CELL[None], t)[0].squeeze()) for t in types
    )
    assert abs(e_swapped - e_original) > 1e-4  # same composition: the biases cancel
    assert abs(float(swapped_fn(POSITIONS, CELL)) - e_swapped) / len(SYMBOLS) <= 1e-8


def test_vmap_over_configurations_and_cells(model_dir):
    """The se_e2_a path that evaluates the atom types at trace time also vmaps."""
    path = model_dir / "se_e2_a_vmap.dp"
    _build_model_file("se_e2_a", path)
    energy_fn = make_deepmd_energy_fn(path, CELL, type_map_symbols=SYMBOLS)
    rng = np.random.default_rng(3)
    batch_positions = np.stack([POSITIONS, POSITIONS + 0.05 * rng.normal(size=POSITIONS.shape)])
    batch_cells = np.stack([CELL, CELL @ (np.eye(3) + 0.01 * np.diag([1.0, -0.5, 0.3]))])
    batched = jax.jit(jax.vmap(energy_fn))(batch_positions, batch_cells)
    types = np.array([TYPE_MAP.index(s) for s in SYMBOLS])
    expected = DeepPot(str(path), auto_batch_size=False).eval(
        batch_positions.reshape(2, -1), batch_cells.reshape(2, -1), types
    )[0].reshape(-1)
    np.testing.assert_allclose(batched, expected, rtol=0, atol=1e-8 * len(SYMBOLS))
    assert abs(expected[0] - expected[1]) > 1e-3


@pytest.mark.slow  # op-by-op evaluation takes ~10 s
def test_eager_matches_jit(model_dir):
    """Eagerly, se_e2_a counts atoms per type on concrete arrays; under jit those counts are
    evaluated at trace time. Both give the same energy."""
    path = model_dir / "se_e2_a_eager.dp"
    _build_model_file("se_e2_a", path)
    energy_fn = make_deepmd_energy_fn(path, CELL, type_map_symbols=SYMBOLS)
    jitted = jax.jit(energy_fn)(POSITIONS, CELL)
    np.testing.assert_allclose(energy_fn(POSITIONS, CELL), jitted, rtol=1e-13, atol=0)
