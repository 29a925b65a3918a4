"""ASE calculators and thermoflow energy functions, in both directions.

:func:`make_ase_energy_fn` wraps an ASE calculator into the potential contract of
:mod:`thermoflow.potentials.base`, ``energy_fn(positions (n_atoms, 3) A, cell (3, 3) A) -> eV``.
The energy is computed on the host by ``jax.pure_callback``; a ``jax.custom_jvp`` rule supplies
the first derivatives from the calculator itself (forces, and the stress for derivatives with
respect to the cell), so ``jax.grad`` returns the calculator's forces, not finite differences.
``jit`` and ``vmap`` work (vmap evaluates the configurations one after the other).

Limits: the callback is not differentiable twice, so ``jax.hessian`` (and therefore
``thermoflow.potentials.base.hessian``) fails with a JAX error for these functions. Use
:func:`finite_difference_hessian`, central differences of forces, instead. Each call crosses
to Python and runs the calculator, so these functions are much slower than native JAX
potentials and cannot run on an accelerator.

The other direction: :class:`EnergyFnCalculator` is a thermoflow ``energy_fn`` as an ASE
calculator (energy, forces and stress from one jit-compiled function), so ASE's optimisers and
dynamics run on any thermoflow potential.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from thermoflow.potentials.base import EnergyFn, energy_forces_virial
from thermoflow.potentials.plugin import load_target


def _make_atoms(symbols: Any, pbc: Any):
    """Validate ``symbols`` (symbols or atomic numbers) and return a template ASE Atoms."""
    from ase import Atoms

    if isinstance(symbols, str):
        template = Atoms(symbols, pbc=pbc)  # chemical formula, e.g. "Ar4"
    else:
        symbols = list(symbols)
        if symbols and all(isinstance(s, (int, np.integer)) for s in symbols):
            template = Atoms(numbers=symbols, pbc=pbc)
        else:
            template = Atoms(symbols=symbols, pbc=pbc)
    if len(template) == 0:
        raise ValueError("symbols is empty: give one chemical symbol or atomic number per atom")
    return template


def _calculate(calculator, template, positions, cell, properties: Sequence[str]):
    """Run the calculator on one configuration (host side, NumPy float64).

    Returns:
        Tuple of the requested properties among energy (eV), forces (n_atoms, 3) eV/A and
        stress (3, 3) eV/A^3 (ASE sign convention, stress = (1/V) dE/d strain).
    """
    atoms = template.copy()
    atoms.set_cell(np.asarray(cell, dtype=np.float64))
    atoms.set_positions(np.asarray(positions, dtype=np.float64))
    atoms.calc = calculator
    out = []
    for name in properties:
        if name == "energy":
            out.append(np.float64(atoms.get_potential_energy()))
        elif name == "forces":
            out.append(np.asarray(atoms.get_forces(), dtype=np.float64))
        elif name == "stress":
            out.append(np.asarray(atoms.get_stress(voigt=False), dtype=np.float64))
    return tuple(out)


def make_ase_energy_fn(
    calculator: Any,
    symbols: str | Sequence[str] | Sequence[int],
    pbc: bool | Sequence[bool] = True,
) -> EnergyFn:
    """Wrap an ASE calculator as ``energy_fn(positions, cell) -> eV``.

    Args:
        calculator: any ASE calculator (``ase.calculators.calculator.BaseCalculator``).
            It must give forces; derivatives with respect to the cell also need the stress.
        symbols: chemical symbols or atomic numbers of the atoms, length n_atoms (a formula
            string such as ``"Ar4"`` also works). Fixes the number and order of atoms.
        pbc: periodic boundary conditions, one bool or three.

    Returns:
        ``energy_fn(positions, cell)``: positions (n_atoms, 3) Angstrom, cell (3, 3) Angstrom
        (rows are lattice vectors) -> scalar energy in eV with the dtype of ``positions``.
        ``jax.grad`` gives ``-forces`` from the calculator (and dE/dcell from its stress,
        dE/dh = h^-T (V sigma + R^T F)); jit and vmap (sequential) work; higher derivatives
        do not (use :func:`finite_difference_hessian`).

    Raises:
        ValueError: if ``symbols`` is empty, or at call time if positions do not have shape
            (n_atoms, 3) or cell is not (3, 3).
        NotImplementedError: at trace time, when differentiating with respect to the cell
            with a calculator that does not implement ``"stress"``.
    """
    template = _make_atoms(symbols, pbc)
    n_atoms = len(template)
    has_stress = "stress" in getattr(calculator, "implemented_properties", ("stress",))

    def check_shapes(positions, cell):
        if positions.shape != (n_atoms, 3):
            raise ValueError(f"positions must have shape ({n_atoms}, 3), got {positions.shape}")
        if cell.shape != (3, 3):
            raise ValueError(f"cell must have shape (3, 3), got {cell.shape}")

    def callback(properties, positions, cell):
        dtype = positions.dtype
        shapes = {"energy": (), "forces": (n_atoms, 3), "stress": (3, 3)}
        result_shapes = tuple(jax.ShapeDtypeStruct(shapes[p], dtype) for p in properties)

        def host(r, h):
            values = _calculate(calculator, template, r, h, properties)
            return tuple(np.asarray(v, dtype=dtype) for v in values)

        return jax.pure_callback(host, result_shapes, positions, cell, vmap_method="sequential")

    @jax.custom_jvp
    def energy_fn(positions, cell):
        positions, cell = jnp.asarray(positions), jnp.asarray(cell)
        check_shapes(positions, cell)
        (energy,) = callback(("energy",), positions, cell.astype(positions.dtype))
        return energy

    def energy_jvp(primals, tangents):
        positions, cell = (jnp.asarray(x) for x in primals)
        check_shapes(positions, cell)
        cell = cell.astype(positions.dtype)
        dpositions, dcell = tangents
        zero_dcell = isinstance(dcell, jax.custom_derivatives.SymbolicZero)
        zero_dpositions = isinstance(dpositions, jax.custom_derivatives.SymbolicZero)
        if zero_dcell:
            energy, forces = callback(("energy", "forces"), positions, cell)
            tangent = jnp.zeros_like(energy)
        else:
            if not has_stress:
                raise NotImplementedError(
                    f"{type(calculator).__name__} does not implement 'stress', so derivatives "
                    "of the energy with respect to the cell (virial, pressure) are unavailable"
                )
            energy, forces, stress = callback(("energy", "forces", "stress"), positions, cell)
            volume = jnp.abs(jnp.linalg.det(cell))
            dstrain = volume * stress  # dE/d(strain), symmetric
            grad_cell = jnp.linalg.solve(cell.T, dstrain + positions.T @ forces)
            tangent = jnp.sum(grad_cell * dcell)
        if not zero_dpositions:
            tangent = tangent - jnp.sum(forces * dpositions)
        return energy, tangent

    energy_fn.defjvp(energy_jvp, symbolic_zeros=True)
    return energy_fn


def _is_ase_calculator(obj: Any) -> bool:
    return hasattr(obj, "get_property") and hasattr(obj, "implemented_properties")


def finite_difference_hessian(
    calculator_or_energy_fn: Any,
    positions: Any,
    cell: Any,
    *,
    symbols: str | Sequence[str] | Sequence[int] | None = None,
    pbc: bool | Sequence[bool] = True,
    displacement: float = 0.01,
) -> np.ndarray:
    """Cartesian Hessian by central differences of forces.

    ``H[:, 3 i + a] = -(F(R + delta e_ia) - F(R - delta e_ia)) / (2 delta)``, then symmetrised,
    ``(H + H^T) / 2``. Needs 6 n_atoms force evaluations; the error is O(delta^2).

    Args:
        calculator_or_energy_fn: an ASE calculator (then ``symbols`` is required) or any
            energy function ``energy_fn(positions, cell)`` whose ``jax.grad`` works, e.g. one
            from :func:`make_ase_energy_fn`.
        positions: (n_atoms, 3) reference positions, Angstrom.
        cell: (3, 3) lattice vectors as rows, Angstrom.
        symbols: chemical symbols or atomic numbers, needed for a calculator.
        pbc: periodic boundary conditions for a calculator.
        displacement: finite-difference step delta, Angstrom.

    Returns:
        (3 n_atoms, 3 n_atoms) symmetric Hessian, eV/Angstrom^2, NumPy float64, index
        ``3 * atom + cartesian_direction``.

    Raises:
        ValueError: for a non-positive displacement, bad shapes, or a calculator without
            ``symbols``.
        TypeError: if the first argument is neither a calculator nor callable.

    References:
        K. Parlinski, Z. Q. Li, Y. Kawazoe, Phys. Rev. Lett. 78, 4063 (1997),
        doi:10.1103/PhysRevLett.78.4063 (the finite-displacement method).
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    if not displacement > 0:
        raise ValueError(f"displacement must be positive (Angstrom), got {displacement}")
    if positions.ndim != 2 or positions.shape[1] != 3 or cell.shape != (3, 3):
        raise ValueError(
            f"positions must be (n_atoms, 3) and cell (3, 3), got {positions.shape}, {cell.shape}"
        )
    n_dof = positions.size
    steps = np.eye(n_dof).reshape(n_dof, *positions.shape) * displacement
    displaced = np.concatenate([positions + steps, positions - steps])  # (2 n_dof, n, 3)

    if _is_ase_calculator(calculator_or_energy_fn):
        if symbols is None:
            raise ValueError("symbols is required when a calculator is given")
        template = _make_atoms(symbols, pbc)
        forces_fn: Callable[[np.ndarray], np.ndarray] = lambda r: _calculate(  # noqa: E731
            calculator_or_energy_fn, template, r, cell, ("forces",)
        )[0]
        forces = np.stack([forces_fn(r) for r in displaced])
    elif callable(calculator_or_energy_fn):
        grad_fn = jax.jit(jax.vmap(jax.grad(calculator_or_energy_fn), in_axes=(0, None)))
        forces = -np.asarray(grad_fn(jnp.asarray(displaced), jnp.asarray(cell)), dtype=np.float64)
    else:
        raise TypeError(
            "expected an ASE calculator or energy_fn(positions, cell), got "
            f"{type(calculator_or_energy_fn).__name__}"
        )
    forces = forces.reshape(2, n_dof, n_dof)
    hessian = -(forces[0] - forces[1]).T / (2.0 * displacement)
    return 0.5 * (hessian + hessian.T)


def load_calculator_factory(target: str) -> Callable[..., Any]:
    """Import a calculator factory given as ``"package.module:factory"``.

    The factory is anything callable that returns an ASE calculator (a calculator class or a
    function), e.g. ``"ase.calculators.lj:LennardJones"``. Dotted attributes
    (``"module:Class.method"``) are followed.

    Args:
        target: ``"package.module:attribute"``.

    Returns:
        The callable factory (not called).

    Raises:
        ValueError: if ``target`` is not of the form ``module:attribute`` or is not callable.
        ImportError: if the module cannot be imported.
        AttributeError: if the module has no such attribute.
    """
    if not isinstance(target, str):
        raise ValueError(f"target must be a string 'package.module:factory', got {target!r}")
    return load_target(target)


class EnergyFnCalculator(Calculator):
    """A thermoflow ``energy_fn`` as an ASE calculator (energy, forces, stress).

    Energy and forces (-dE/dR) come from one jit-compiled backward pass; when the stress is asked
    for, a second one adds the virial W in the same pass
    (``thermoflow.potentials.base.energy_forces_virial``) and the stress is -W / V (ASE's sign convention,
    Voigt order xx yy zz yz xz xy). Each compiles once per number of atoms. Attach it to an
    ``Atoms`` (``atoms.calc = EnergyFnCalculator(energy_fn)``) to use any ASE optimiser or
    dynamics on a thermoflow potential. Only periodic cells are meaningful (the contract of
    ``energy_fn``).

    Args:
        energy_fn: ``(positions (n_atoms, 3) A, cell (3, 3) A) -> eV``, jit- and grad-safe.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, energy_fn: EnergyFn):
        super().__init__()
        self._energy_forces = jax.jit(lambda r, h: energy_forces_virial(energy_fn, r, h, with_virial=False)[:2])
        self._energy_forces_virial = jax.jit(lambda r, h: energy_forces_virial(energy_fn, r, h))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        cell = np.asarray(self.atoms.cell.array, dtype=np.float64)
        args = (jnp.asarray(self.atoms.get_positions(), dtype=jnp.float64), jnp.asarray(cell))
        if "stress" in properties:
            energy, f, w = self._energy_forces_virial(*args)
            stress = -np.asarray(w) / abs(np.linalg.det(cell))
            self.results["stress"] = stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        else:
            energy, f = self._energy_forces(*args)
        self.results.update({"energy": float(energy), "free_energy": float(energy), "forces": np.asarray(f, dtype=np.float64)})
