"""Model compression of Deep Potentials for the JAX adapter: tabulated embedding networks.

The embedding networks of the se_e2_a and se_e3 descriptors map one scalar per neighbour (the
normalised s(r) = sw(r)/r, resp. the angular product of two neighbours' normalised vectors) to a
feature vector; they dominate a DP energy (measured on lithium_dp4: replacing both by a no-op
takes a 16-atom energy batch from 0.71 to 0.16 s). Here each network is replaced by a table of
piecewise quintic polynomials on a uniform grid, matching the network's value, first and second
derivative at every node (quintic Hermite interpolation: C^2, so forces and Hessians stay
continuous), the construction of deepmd-kit's model compression: D. Lu et al., "DP Compress: a
model compression scheme for generating efficient deep potential models", J. Chem. Theory
Comput. 18, 5559 (2022), doi:10.1021/acs.jctc.2c00102.

Why not deepmd-kit's own: its array-API compression (``enable_compression`` of the dpmodel
se_e2_a) runs under JAX but, measured on lithium_dp4 with deepmd-kit 3.2.0, was 3x slower than
the uncompressed network and 0.3-0.9 meV/atom off; its se_e3 has no compressed forward path.

The grid steps are chosen adaptively, block by block (the networks are steep near s = 0, where
the many neighbours close to the cutoff sit, and smooth elsewhere): halved until the largest
error at the interval midpoints, relative to the largest |feature|, is below ``tolerance``.
The tables give values; derivatives of a compressed model are taken through the network (see
the adapter), since reverse-mode autodiff through the gathered coefficients measured 2-3x slower
than through the network on this CPU (energies: 2x faster). The table covers the inputs of every pair of atoms at least ``min_distance_A``
apart; a closer pair gives NaN (never a silently extrapolated number).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EmbeddingTable:
    """Piecewise quintic table of a scalar-input network ``R -> R^ng`` on [lo, lo + M w].

    The range is cut into M blocks of width w; block b has its own uniform step (the embedding
    networks are steep near s = 0, the neighbours at the cutoff, and smooth elsewhere).

    Attributes:
        lo: left end of the table.
        block_width: w.
        offsets: (M,) index of each block's first interval.
        counts: (M,) intervals per block.
        coefficients: (n_intervals, 6, ng) polynomial coefficients in t = x - x_i.
        max_relative_error: measured at every interval's midpoint (relative to max |G|).
    """

    lo: float
    block_width: float
    offsets: np.ndarray
    counts: np.ndarray
    coefficients: np.ndarray
    max_relative_error: float

    @property
    def hi(self) -> float:
        return self.lo + self.block_width * len(self.counts)

    @property
    def n_intervals(self) -> int:
        return int(self.coefficients.shape[0])

    def __call__(self, x: jax.Array) -> jax.Array:
        """G(x) for x of shape (..., 1) -> (..., ng); NaN outside the table's range.

        Meant for values: the adapter takes derivatives of a compressed model from the network
        (see :func:`thermoflow.potentials.deepmd.make_deepmd_energy_fn`), because reverse-mode
        autodiff through the gathered coefficients measured 2-3x slower than through the network.
        """
        x = x[..., 0]
        coefficients, offsets, counts = (jnp.asarray(a) for a in (self.coefficients, self.offsets, self.counts))
        xs = jax.lax.stop_gradient(x)
        block = jnp.clip(jnp.floor((xs - self.lo) / self.block_width).astype(jnp.int32), 0, counts.shape[0] - 1)
        step = self.block_width / counts[block]
        start = self.lo + block * self.block_width
        i = jnp.clip(jnp.floor((xs - start) / step).astype(jnp.int32), 0, counts[block] - 1)
        c = coefficients[offsets[block] + i]  # (..., 6, ng)
        t = (x - (start + i * step))[..., None]
        value = c[..., 5, :]
        for k in (4, 3, 2, 1, 0):  # Horner
            value = value * t + c[..., k, :]
        outside = (x < self.lo - 1e-12) | (x > self.hi + 1e-12)
        return jnp.where(outside[..., None], jnp.nan, value)


def quintic_hermite_coefficients(y0, d0, s0, y1, d1, s1, h):
    """Coefficients a0..a5 of the quintic on [0, h] with the given values y, first derivatives
    d and second derivatives s at both ends (arrays broadcast; result stacked on axis -2)."""
    delta = y1 - y0 - d0 * h - 0.5 * s0 * h**2
    delta1 = d1 - d0 - s0 * h
    delta2 = s1 - s0
    a3 = (10 * delta - 4 * delta1 * h + 0.5 * delta2 * h**2) / h**3
    a4 = (-15 * delta + 7 * delta1 * h - delta2 * h**2) / h**4
    a5 = (6 * delta - 3 * delta1 * h + 0.5 * delta2 * h**2) / h**5
    return np.stack([y0, d0, 0.5 * s0, a3, a4, a5], axis=-2)


def tabulate(network: Callable[[jax.Array], jax.Array], lo: float, hi: float, *, n_blocks: int = 64,
             tolerance: float = 1e-9, max_halvings: int = 16) -> EmbeddingTable:
    """Tabulate ``network`` ((m, 1) -> (m, ng)) on [lo, hi] (see module docstring): in each of
    ``n_blocks`` blocks the step is halved from the block width until the error at every
    interval midpoint, relative to max |G| over the range, is below ``tolerance``.

    Raises:
        ValueError: if a block does not reach ``tolerance`` after ``max_halvings``.
    """
    with jax.default_matmul_precision("highest"):
        def g(x):
            return network(jnp.reshape(x, (1, 1)))[0]

        d1 = jax.jacfwd(g)
        d2 = jax.jacfwd(d1)
        nodes_jit = jax.jit(jax.vmap(lambda x: (g(x), d1(x), d2(x))))
        values_jit = jax.jit(jax.vmap(g))

        def padded(fn, xs, size=1024):
            """fn on xs in fixed-size chunks (one compilation for every block and step)."""
            xs = np.asarray(xs, dtype=np.float64)
            chunks = []
            for i in range(0, len(xs), size):
                part = xs[i:i + size]
                out = fn(jnp.asarray(np.pad(part, (0, size - len(part)), mode="edge")))
                chunks.append(jax.tree_util.tree_map(lambda a, n=len(part): np.asarray(a)[:n], out))
            return jax.tree_util.tree_map(lambda *a: np.concatenate(a), *chunks)

        def nodes_fn(xs):
            return padded(nodes_jit, xs)

        def values_fn(xs):
            return padded(values_jit, xs)
        width = (hi - lo) / n_blocks
        scale = max(float(np.max(np.abs(values_fn(np.linspace(lo, hi, 4097))))), 1e-300)
        blocks, counts, worst = [], [], 0.0
        for b in range(n_blocks):
            start = lo + b * width
            for halving in range(max_halvings + 1):
                n = 2**halving
                h = width / n
                nodes = start + h * np.arange(n + 1)
                y, d, s = nodes_fn(nodes)
                coefficients = quintic_hermite_coefficients(y[:-1], d[:-1], s[:-1], y[1:], d[1:], s[1:], h)
                t = 0.5 * h
                mid = sum(coefficients[:, k] * t**k for k in range(6))
                error = float(np.max(np.abs(mid - values_fn(nodes[:-1] + t)))) / scale
                if error < tolerance:
                    break
            else:
                raise ValueError(f"embedding table: block {b} still has relative error {error:.2e} > {tolerance:g}")
            blocks.append(coefficients)
            counts.append(n)
            worst = max(worst, error)
        counts = np.asarray(counts, dtype=np.int32)
        offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
        return EmbeddingTable(float(lo), float(width), offsets, counts, np.concatenate(blocks), worst)


@dataclasses.dataclass(frozen=True)
class _TabulatedNetwork:
    """Stands in for one embedding network: ``call(x)``."""

    call: EmbeddingTable


class _TabulatedCollection:
    """Stands in for a descriptor's ``embeddings`` network collection: ``[idx].call(x)``."""

    def __init__(self, ndim: int, tables: dict[tuple, EmbeddingTable]):
        self.ndim = ndim
        self._tables = tables

    def __getitem__(self, index):
        return _TabulatedNetwork(self._tables[tuple(index) if isinstance(index, (tuple, list)) else (index,)])


def compress_descriptors(model: Any, *, min_distance_A: float = 1.2, tolerance: float = 1e-9) -> dict[str, Any]:
    """Replace the embedding networks of ``model``'s se_e2_a and se_e3 descriptors by tables, in place.

    Args:
        model: a deepmd-kit JAX model from :func:`thermoflow.potentials.deepmd.load_deepmd_model`.
        min_distance_A: the tables cover all pairs at least this far apart; closer pairs give NaN.
        tolerance: relative accuracy of every table at its interval midpoints.

    Returns:
        A summary per tabulated network: descriptor, input range, step, intervals, measured error.

    Raises:
        NotImplementedError: for descriptors other than se_e2_a, se_e3 and hybrids of them.
    """
    descriptor = model.atomic_model.descriptor
    parts = list(getattr(descriptor, "descrpt_list", [descriptor]))
    summary: dict[str, Any] = {}
    for k, part in enumerate(parts):
        name = type(part).__name__
        davg = np.asarray(part.davg).reshape(-1, 4)
        dstd = np.asarray(part.dstd).reshape(-1, 4)
        s_max = 1.0 / min_distance_A  # s(r) = sw(r) / r with 0 <= sw <= 1
        collection = part.embeddings
        indices = [tuple(i) if isinstance(i, tuple) else (i,) for i in _indices(collection)]
        if name == "DescrptSeA":
            # input: (s - davg_0) / dstd_0, s in [0, s_max]; masked entries are exactly 0
            lo = min(0.0, float(np.min((0.0 - davg[:, 0]) / dstd[:, 0])))
            hi = max(0.0, float(np.max((s_max - davg[:, 0]) / dstd[:, 0])))
        elif name == "DescrptSeT":
            # input: r_i . r_j of the normalised vectors (s r_hat - davg_1:) / dstd_1:
            bound = float(np.max(np.sqrt(np.sum(((s_max + np.abs(davg[:, 1:])) / dstd[:, 1:]) ** 2, axis=1))))
            lo, hi = -bound**2, bound**2
        else:
            raise NotImplementedError(f"compression of {name} descriptors is not implemented (se_e2_a and se_e3 are)")
        tables = {}
        for index in indices:
            net = collection[index]
            tables[index] = table = tabulate(net.call, lo, hi, tolerance=tolerance)
            summary[f"{k}:{name}{list(index)}"] = {
                "range": [lo, hi], "intervals": table.n_intervals, "max_relative_error": table.max_relative_error,
                "table_MB": table.coefficients.nbytes / 1e6,
            }
        # deepmd-kit's JAX descriptors convert assigned attributes; bypass that for the stand-in
        object.__setattr__(part, "embeddings", _TabulatedCollection(collection.ndim, tables))
        log.info("tabulated %s embedding networks: %s", name, {key: v for key, v in summary.items() if name in key})
    return summary


def _indices(collection) -> list:
    """The embedding indices a network collection holds (type_one_side: 1-D, else 2-D)."""
    import itertools

    ntypes = collection.ntypes
    return [idx for idx in itertools.product(range(ntypes), repeat=collection.ndim) if _has(collection, idx)]


def _has(collection, idx) -> bool:
    try:
        return collection[idx] is not None
    except (KeyError, IndexError):
        return False


def make_compressed_deepmd_energy_fn(model_path: str | Any, reference_cell: Any, *, min_distance_A: float = 1.2,
                                     tolerance: float = 1e-9, **kwargs):
    """A DeePMD energy function whose energies come from tabulated embedding networks and whose
    derivatives (forces, virials, Hessians, any order, forward or reverse) come from the network.

    Args:
        model_path: a ``.dp`` file (or two loaded models are built from it: one is tabulated).
        reference_cell: as for :func:`thermoflow.potentials.deepmd.make_deepmd_energy_fn`.
        min_distance_A: closest pair the tables cover; closer pairs give a NaN energy.
        tolerance: relative accuracy of every table.
        **kwargs: passed to :func:`~thermoflow.potentials.deepmd.make_deepmd_energy_fn`.

    Returns:
        ``energy_fn(positions, cell) -> eV`` with the attributes of the uncompressed one and
        ``compression`` (the tables' summary, :func:`compress_descriptors`). Energies agree with
        the network to ~1e-12 eV/atom on the lithium models (tests/potentials/test_deepmd.py).

    Raises:
        as :func:`~thermoflow.potentials.deepmd.make_deepmd_energy_fn`; NotImplementedError for
        descriptors other than se_e2_a / se_e3 (hybrids of them included).
    """
    from thermoflow.potentials.deepmd import load_deepmd_model, make_deepmd_energy_fn

    full_model = load_deepmd_model(model_path)
    tabulated_model = load_deepmd_model(model_path)
    summary = compress_descriptors(tabulated_model, min_distance_A=min_distance_A, tolerance=tolerance)
    full = make_deepmd_energy_fn(full_model, reference_cell, **kwargs)
    tabulated = make_deepmd_energy_fn(tabulated_model, reference_cell, **kwargs)

    @jax.custom_jvp
    def energy_fn(positions, cell):
        return tabulated(positions, cell)

    @energy_fn.defjvp
    def _network_derivative(primals, tangents):
        return tabulated(*primals), jax.jvp(full, primals, tangents)[1]

    def call(positions, cell):
        if not isinstance(cell, jax.core.Tracer):
            full.check_cell(cell)
        return energy_fn(positions, cell)

    for name in ("check_cell", "rcut", "n_images", "type_map", "neighbor_list", "model"):
        setattr(call, name, getattr(full, name))
    call.compression = summary
    return call
