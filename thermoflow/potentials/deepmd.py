"""Deep Potential (DeePMD) models as pure JAX energy functions.

A deepmd-kit 3.x native model file (``.dp``) is loaded through deepmd-kit's JAX backend and
wrapped into the thermoflow potential contract (see :mod:`thermoflow.potentials.base`)::

    energy_fn(positions (n_atoms, 3) Angstrom, cell (3, 3) Angstrom, rows = lattice vectors)
        -> energy, scalar, eV

The function jits, vmaps over configurations (and cells) and is differentiable to any order,
so forces, Hessians and virials follow by automatic differentiation.

How it is made traceable. deepmd-kit's own ``model.call`` builds ghost atoms whose number
depends on the data, which cannot be jitted. Here the periodic images are a FIXED set chosen
once from a reference cell: atoms are wrapped into the cell, and with interplanar spacings
``d_a`` (a = 1, 2, 3) the images with integer shifts ``|s_a| <= n_a``,
``n_a = ceil((rcut + skin) / d_a)``, contain every neighbour within the cutoff ``rcut`` of every
atom. Wrapping makes the image set independent of how far atoms move; ``skin`` is a margin
for cell changes (NPT, strain): a cell stays valid while ``rcut / d_a(cell) <= n_a`` in every
direction. The atomic energies come from deepmd-kit's ``atomic_model.forward_common_atomic`` on
the extended set, with a neighbour list of fixed size built either by deepmd-kit
(``deepmd.dpmodel.utils.nlist.build_neighbor_list``, distance-sorted) or, by default for the
se_e2_a / se_e2_r / se_e3 family, by a sort-free counting sort over cutoff shells that selects
the same neighbours (XLA's sort is slow on CPU: about 0.5 ms instead of 5 ms for 16 atoms).
Mixed-type (attention) descriptors always take deepmd-kit's list: one distance-sorted list over
all types. The call also passes ``mapping`` (extended atom -> the local atom it images), which
DPA-2 and DPA-3 use to gather ghost-atom features from their local atoms.

Validated models and how:

* one type (lithium; hybrid se_e2_a + se_e3, plain and compressed): energies, forces and virials
  of seven configurations against deepmd-kit's TensorFlow inference
  (``tests/potentials/test_deepmd.py``);
* two types (La, H), small randomly initialised models built with deepmd-kit: se_e2_a with
  ``type_one_side=False`` (deepmd-kit's default; compact list), se_atten (DPA-1),
  se_atten_v2, DPA-2 and DPA-3 (sorted list), in a triclinic cell thinner than the cutoff:
  energies against deepmd-kit's own numpy inference (``deepmd.infer.DeepPot``) to < 1e-14
  eV/atom, forces and virials against finite differences of its energies to ~1e-9 eV/A, eV
  (``tests/potentials/test_deepmd_species.py``).

The se_e2_a descriptor with ``type_one_side=False`` and several types counts atoms per type in
Python; since the types are constants here (``type_map_symbols``), that model is evaluated under
``jax.ensure_compile_time_eval()`` so the counts are taken at trace time. deepmd-kit's dense
se_atten and DPA-2 are discontinuous at ``rcut`` when their environment mean is non-zero
(``set_davg_zero=False``); the energies here reproduce deepmd-kit's, jumps included.

Performance note (CPU, XLA in jaxlib 0.10): XLA's YNNPACK fusions make the backward pass of
these models about 2-3x slower; compiling the caller's jitted function with
``compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""}`` (or the same flag in
``XLA_FLAGS``) avoids that. It is a per-compilation choice of the caller, not set here.
Do not compile DPA-2 models with ``xla_backend_optimization_level=0``: the CPU backend then
recomputes the repformer's attention logits inconsistently and the softmax's max-gradient gives
NaN forces (energies are unaffected; the default level is fine).

Side effects of importing deepmd-kit's JAX backend (done lazily, on the first call of
:func:`make_deepmd_energy_fn`): ``deepmd.jax.env`` switches on ``jax_enable_x64`` (kept: the
models are float64), sets ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (kept) and sets the
process-wide ``jax_default_matmul_precision`` to ``"tensorfloat32"``. The latter would silently
lower the precision of every float32 matrix product in the process on GPUs, so it is undone
right after the import (whenever the value found is ``"tensorfloat32"``): a different value the
user had set before is restored, otherwise it is set to ``"highest"``. The energy function itself also traces under
``jax.default_matmul_precision("highest")``.

References:
    L. Zhang, J. Han, H. Wang, R. Car, W. E, "Deep Potential Molecular Dynamics: a scalable
    model with the accuracy of quantum mechanics", Phys. Rev. Lett. 120, 143001 (2018),
    doi:10.1103/PhysRevLett.120.143001.
    J. Zeng et al., "DeePMD-kit v2: A software package for deep potential models",
    J. Chem. Phys. 159, 054801 (2023), doi:10.1063/5.0155600; deepmd-kit v3:
    arXiv:2502.19161.
    DPA-1 (se_atten): D. Zhang et al., arXiv:2208.08236. DPA-2: D. Zhang et al., npj Comput.
    Mater. 10, 293 (2024), doi:10.1038/s41524-024-01493-2. DPA-3: D. Zhang et al.,
    arXiv:2506.01686.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from thermoflow.potentials.deepmd_neighbors import (  # the adapter's image and neighbour-list helpers
    compact_neighbor_list,
    descriptor_parts,
    fixed_atom_types,
    image_shifts,
    images_per_direction,
    interplanar_spacings,
    neighbor_levels,
)

_INSTALL_HINT = 'install the optional dependency with: pip install "thermoflow[deepmd]"'


def _import_deepmd() -> dict[str, Any]:
    """Import deepmd-kit's JAX backend and undo its process-wide matmul-precision change.

    Returns:
        A dict with ``load_dp_model``, ``BaseModel`` and ``build_neighbor_list``.

    Raises:
        ImportError: if deepmd-kit (with its JAX extra) is not installed.
    """
    import jax

    previous_precision = jax.config.jax_default_matmul_precision
    try:
        import deepmd.jax.env  # noqa: F401  (sets x64 and tf32 precision globally)
        from deepmd.dpmodel.utils.nlist import build_neighbor_list
        from deepmd.dpmodel.utils.serialization import load_dp_model
        from deepmd.jax.model.model import BaseModel
    except ImportError as err:
        raise ImportError(
            f"DeePMD potentials need deepmd-kit with its JAX backend ({err}); {_INSTALL_HINT}"
        ) from err
    finally:
        # Undo deepmd.jax.env's tf32 default (also if deepmd was imported elsewhere first);
        # keep any other precision the user chose explicitly.
        if jax.config.jax_default_matmul_precision == "tensorfloat32":
            restored = previous_precision
            if restored in (None, "tensorfloat32"):
                restored = "highest"
            jax.config.update("jax_default_matmul_precision", restored)
    return {
        "load_dp_model": load_dp_model,
        "BaseModel": BaseModel,
        "build_neighbor_list": build_neighbor_list,
    }


def _make_traceable(descriptor: dict, ntypes: int) -> None:
    """Rewrite a serialized descriptor in place so that it traces under JAX more cheaply.

    deepmd-kit 3.2's se_e2_a with ``type_one_side=False`` counts atoms per type with a Python
    ``int``, which is not traceable. With one atom type, ``type_one_side=True`` with a 1-D
    embedding collection is the same model (``ntypes**2 == ntypes == 1`` embedding networks),
    so it is rewritten. With several types the descriptor is kept; its atom types are then
    evaluated at trace time (see :func:`_needs_concrete_types`).
    """
    if descriptor.get("type") == "hybrid":
        for sub in descriptor["list"]:
            _make_traceable(sub, ntypes)
        return
    if (
        descriptor.get("type") in ("se_e2_a", "se_a")
        and not descriptor.get("type_one_side", True)
        and ntypes == 1
    ):
        descriptor["type_one_side"] = True
        descriptor["embeddings"]["ndim"] = 1


def _needs_concrete_types(model: Any) -> bool:
    """True if some descriptor branches in Python on the atom types.

    deepmd-kit 3.2's se_e2_a with ``type_one_side=False`` and several types groups the local
    atoms by type with ``int(sum(atype == t))``. The types are constants of the energy function
    (fixed by ``type_map_symbols``), so evaluating the model under
    ``jax.ensure_compile_time_eval()`` computes those counts at trace time; everything that
    depends on the positions is still traced.
    """
    return len(model.get_type_map()) > 1 and any(
        "DescrptSeA" in {cls.__name__ for cls in type(part).__mro__}
        and not getattr(part, "type_one_side", True)
        for part in descriptor_parts(model)
    )


def load_deepmd_model(model_path: str | Path) -> Any:
    """Load a deepmd-kit 3.x native model file as a deepmd-kit JAX model object.

    Args:
        model_path: path of a ``.dp`` (or ``.yaml``) model in deepmd-kit's native format.

    Returns:
        The deserialized ``deepmd.jax`` model (rewritten to trace under JAX, see
        :func:`_make_traceable`).

    Raises:
        ImportError: if deepmd-kit is missing.
        FileNotFoundError: if ``model_path`` does not exist.
        ValueError: for an unsupported file format or a model that is not an energy model.
    """
    mods = _import_deepmd()
    path = Path(model_path)
    if not path.is_file():
        raise FileNotFoundError(f"DeePMD model file not found: {path}")
    if path.suffix not in (".dp", ".yaml", ".yml"):
        raise ValueError(
            f"unsupported DeePMD model format {path.suffix!r} ({path}); convert it to the native "
            "format with: dp convert-backend model.pb model.dp"
        )
    data = mods["load_dp_model"](str(path))
    serialized = copy.deepcopy(data["model"])
    if "model_dict" in serialized:
        raise ValueError(f"{path} is a multi-task model; freeze a single head first")
    type_map = serialized.get("type_map", [])
    if "descriptor" in serialized:
        _make_traceable(serialized["descriptor"], len(type_map))
    model = mods["BaseModel"].deserialize(serialized)
    if "energy" not in model.model_output_type():
        raise ValueError(f"{path} is not an energy model (outputs {model.model_output_type()})")
    if model.get_dim_fparam() > 0 or model.get_dim_aparam() > 0:
        raise ValueError(f"{path} needs frame/atomic parameters, which are not supported")
    return model


def make_deepmd_energy_fn(
    model_path: str | Path | Any,
    reference_cell: Any,
    *,
    type_map_symbols: Sequence[str] | None = None,
    skin: float = 0.5,
    neighbor_list: str = "auto",
):
    """Build a pure JAX energy function from a deepmd-kit 3.x model file.

    Args:
        model_path: deepmd-kit native model file (``.dp``), float64 energy model; or a model
            already returned by :func:`load_deepmd_model`, to share one loaded model between
            energy functions built for different reference cells.
        reference_cell: (3, 3) lattice vectors as rows, Angstrom. Fixes the periodic image
            set; the function is valid for any cell with ``rcut / d_a(cell) <= n_a`` in each
            direction, where ``n_a = ceil((rcut + skin) / d_a(reference_cell))``.
        type_map_symbols: chemical symbol of every atom, length n_atoms, in any order (e.g.
            ``["La", "H", "H", ...]``); each must be in the model's type map. Required for
            models with several types; ``None`` is allowed for single-type models: all atoms
            get that type and any number of atoms is accepted.
        skin: margin in Angstrom added to the cutoff when choosing the image set, so that the
            cell may shrink (NPT, strain) without rebuilding.
        neighbor_list: ``"sorted"`` uses deepmd-kit's builder (distance sort; with more than
            ``sel`` neighbours it keeps the nearest ``sel``, as deepmd-kit does). ``"compact"``
            is a sort-free equivalent for descriptors that sum over neighbours (se_e2_a,
            se_e2_r, se_e3 and hybrids of them, without pair_exclude_types), about ten times
            cheaper on CPU because XLA's sort is slow; when an atom has more neighbours than
            ``sel`` it returns NaN instead of truncating. ``"auto"`` (default) picks ``"compact"``
            when it applies and ``"sorted"`` otherwise, e.g. for mixed-type (attention)
            descriptors: se_atten (DPA-1), se_atten_v2, DPA-2, DPA-3.

    Returns:
        ``energy_fn(positions, cell) -> energy``: positions (n_atoms, 3) Angstrom (anywhere,
        they are wrapped), cell (3, 3) Angstrom rows = lattice vectors, energy scalar eV
        (float64). Pure JAX: jit, vmap and grad (to any order) work. It carries attributes
        ``check_cell(cell)`` (raises ValueError if the cell is too small for the image set),
        ``rcut`` (Angstrom), ``n_images`` (n_1, n_2, n_3), ``type_map``, ``neighbor_list``
        and ``model``. If the cell is concrete at call time it is checked eagerly
        (ValueError); for a traced cell that is too small the energy is NaN, never a silently
        wrong number.

    Raises:
        ImportError: if deepmd-kit is not installed (``pip install "thermoflow[deepmd]"``).
        FileNotFoundError: if ``model_path`` does not exist.
        TypeError: if ``model_path`` is neither a path nor a loaded model.
        ValueError: for a bad reference cell or skin, unknown symbols, a model with several
            types and no ``type_map_symbols``, an unknown or inapplicable ``neighbor_list``;
            at call time for a wrong number of atoms or a too-small concrete cell.

    References:
        Zhang et al., Phys. Rev. Lett. 120, 143001 (2018), doi:10.1103/PhysRevLett.120.143001;
        Zeng et al., J. Chem. Phys. 159, 054801 (2023), doi:10.1063/5.0155600;
        deepmd-kit v3, arXiv:2502.19161.
    """
    import jax
    import jax.numpy as jnp

    if isinstance(model_path, (str, Path)):
        model = load_deepmd_model(model_path)
    elif hasattr(model_path, "atomic_model") and hasattr(model_path, "get_rcut"):
        model = model_path
    else:
        raise TypeError(
            "model_path must be a path to a .dp file or a model from load_deepmd_model, "
            f"got {type(model_path).__name__}"
        )
    build_neighbor_list = _import_deepmd()["build_neighbor_list"]
    atomic_model = model.atomic_model

    reference_cell = np.asarray(reference_cell, dtype=np.float64)
    if reference_cell.shape != (3, 3) or abs(np.linalg.det(reference_cell)) < 1e-8:
        raise ValueError(
            f"reference_cell must be a non-singular (3, 3) array, got shape {reference_cell.shape}"
        )
    if not skin >= 0:
        raise ValueError(f"skin must be >= 0 Angstrom, got {skin}")
    rcut = float(model.get_rcut())
    sel = list(model.get_sel())
    type_map = list(model.get_type_map())
    n_images = images_per_direction(reference_cell, rcut + skin)
    shifts = image_shifts(n_images)
    n_shifts = shifts.shape[0]
    limit = np.asarray(n_images, dtype=np.float64)

    levels = neighbor_levels(model)
    concrete_types = _needs_concrete_types(model)
    compact_applies = (
        levels is not None and not model.mixed_types() and atomic_model.pair_excl is None
    )
    if neighbor_list == "auto":
        neighbor_list = "compact" if compact_applies else "sorted"
    if neighbor_list not in ("compact", "sorted"):
        raise ValueError(
            f"neighbor_list must be 'auto', 'compact' or 'sorted', got {neighbor_list!r}"
        )
    if neighbor_list == "compact" and not compact_applies:
        raise ValueError(
            "neighbor_list='compact' needs descriptors that sum over neighbours (se_e2_a, "
            "se_e2_r, se_e3 or a hybrid of them) and no pair_exclude_types; use "
            "neighbor_list='sorted'"
        )

    fixed_types = fixed_atom_types(type_map, type_map_symbols)

    def check_cell(cell: Any) -> None:
        """Raise ValueError if ``cell`` (3, 3), Angstrom, is too small for the image set."""
        cell = np.asarray(cell, dtype=np.float64)
        if cell.shape != (3, 3):
            raise ValueError(f"cell must have shape (3, 3), got {cell.shape}")
        needed = images_per_direction(cell, rcut)
        if any(n > m for n, m in zip(needed, n_images)):
            raise ValueError(
                f"cell too small for this DeePMD energy function: interplanar spacings "
                f"{np.round(interplanar_spacings(cell), 4).tolist()} A need {needed} periodic "
                f"images per direction for rcut = {rcut} A, but the function was built for "
                f"{n_images} (from reference_cell with skin = {skin} A). Rebuild the energy "
                "function with make_deepmd_energy_fn(..., reference_cell=<this cell>) or a "
                "larger skin."
            )

    def atom_types(n_atoms: int) -> np.ndarray:
        if fixed_types is None:
            return np.zeros(n_atoms, dtype=np.int64)
        if n_atoms != fixed_types.shape[0]:
            raise ValueError(
                f"positions have {n_atoms} atoms but type_map_symbols has {fixed_types.shape[0]}"
            )
        return fixed_types

    def build_nlist(geometry, types, n_atoms):
        """(1, n_atoms, sum(sel)) neighbour list and an overflow flag, from stopped-gradient
        extended coordinates (n_extended, 3)."""
        if neighbor_list == "compact":
            diff = geometry[None, :, :] - geometry[:n_atoms, None, :]
            distances = jnp.sqrt(jnp.sum(diff * diff, axis=-1))
            distances = distances.at[jnp.arange(n_atoms), jnp.arange(n_atoms)].set(jnp.inf)
            nlist, overflow = compact_neighbor_list(
                distances, jnp.asarray(types), levels[0], levels[1], sel, len(type_map)
            )
            return nlist[None], overflow
        extended_types = jnp.asarray(types)[None]
        nlist = build_neighbor_list(
            geometry[None],
            extended_types,
            n_atoms,
            rcut,
            sel,
            distinguish_types=not model.mixed_types(),
            pair_excl=atomic_model.pair_excl,
        )
        nlist = model.format_nlist(
            geometry[None],
            extended_types,
            nlist,
            extra_nlist_sort=model.need_sorted_nlist_for_lower(),
        )
        return nlist, jnp.zeros((), dtype=bool)

    def energy_fn(positions: jax.Array, cell: jax.Array) -> jax.Array:
        if not isinstance(cell, jax.core.Tracer):
            check_cell(cell)
        with jax.default_matmul_precision("highest"):
            positions = jnp.asarray(positions, dtype=jnp.float64)
            cell = jnp.asarray(cell, dtype=jnp.float64)
            n_atoms = positions.shape[0]
            types = np.tile(atom_types(n_atoms), n_shifts)
            # Wrap into the cell: r - floor(f) h (the integer shift carries no gradient).
            frac = positions @ jnp.linalg.inv(cell)
            wrapped = positions - jax.lax.stop_gradient(jnp.floor(frac)) @ cell
            offsets = jnp.asarray(shifts, dtype=cell.dtype) @ cell  # (n_shifts, 3)
            extended = (offsets[:, None, :] + wrapped[None, :, :]).reshape(-1, 3)
            nlist, overflow = build_nlist(jax.lax.stop_gradient(extended), types, n_atoms)
            # Extended atom k is an image of local atom k mod n_atoms (message-passing
            # descriptors, DPA-2/DPA-3, gather ghost features from local atoms through it).
            mapping = np.tile(np.arange(n_atoms, dtype=np.int64), n_shifts)
            with jax.ensure_compile_time_eval() if concrete_types else contextlib.nullcontext():
                atomic = atomic_model.forward_common_atomic(
                    extended[None],
                    jnp.asarray(types)[None],
                    nlist,
                    mapping=jnp.asarray(mapping)[None],
                    fparam=None,
                    aparam=None,
                )
            energy = jnp.sum(atomic["energy"])
            # Traced cells cannot raise: a too-small cell gives NaN, never a wrong number.
            volume = jnp.abs(jnp.linalg.det(cell))
            cross = jnp.cross(jnp.roll(cell, -1, axis=0), jnp.roll(cell, -2, axis=0))
            spacing = volume / jnp.linalg.norm(cross, axis=1)
            valid = jnp.all(rcut / spacing <= limit) & ~overflow
            return jnp.where(valid, energy, jnp.nan)

    energy_fn.check_cell = check_cell
    energy_fn.rcut = rcut
    energy_fn.n_images = n_images
    energy_fn.type_map = type_map
    energy_fn.neighbor_list = neighbor_list
    energy_fn.model = model
    return energy_fn
