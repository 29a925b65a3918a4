"""User plug-in potentials: ``target = "package.module:function"``.

The target is a factory returning an energy function that follows the contract of
:mod:`thermoflow.potentials.base`. It is called with the user's ``options`` as keyword
arguments, plus ``atoms`` (the reference ASE ``Atoms``) if its signature accepts it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable

from thermoflow.potentials.base import EnergyFn


def load_target(target: str) -> Callable[..., Any]:
    """Import ``"package.module:attribute"`` and return the attribute.

    Raises:
        ValueError: if the string is not of the form ``module:attribute``.
        ImportError: if the module cannot be imported.
        AttributeError: if the module has no such attribute.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"target must look like 'package.module:function', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"cannot import module {module_name!r} of target {target!r}: {exc}. "
            "Is it installed or on PYTHONPATH?"
        ) from exc
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"module {module_name!r} has no attribute {attr!r} (target {target!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"target {target!r} is not callable")
    return obj


def make_plugin_energy_fn(target: str, options: dict[str, Any], atoms=None) -> EnergyFn:
    """Build a user energy function from a factory target (see module docstring).

    Raises:
        ValueError, ImportError, AttributeError: see :func:`load_target`; ValueError also when
            the factory does not return a callable.
    """
    factory = load_target(target)
    kwargs = dict(options)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if "atoms" in params and atoms is not None:
        kwargs["atoms"] = atoms
    energy_fn = factory(**kwargs)
    if not callable(energy_fn):
        raise ValueError(f"factory {target!r} must return energy_fn(positions, cell), got {type(energy_fn)}")
    return energy_fn
