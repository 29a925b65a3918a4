import jax.numpy as jnp
import pytest

from thermoflow.potentials import load_target, make_plugin_energy_fn


def test_plugin_loads_factory_and_passes_options():
    fn = make_plugin_energy_fn("anharmonic_models:make_anharmonic_atom", {"spring_eV_per_A2": 2.0, "quartic_eV_per_A4": 0.0, "coupling_eV_per_A4": 0.0})
    e = fn(jnp.array([[0.5, 0.0, 0.0]]), jnp.eye(3))
    assert float(e) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "target, error, match",
    [
        ("no_colon_here", ValueError, "package.module:function"),
        ("surely_missing_module_xyz:f", ImportError, "cannot import module"),
        ("anharmonic_models:missing_factory", AttributeError, "no attribute"),
    ],
)
def test_plugin_errors_are_clear(target, error, match):
    with pytest.raises(error, match=match):
        load_target(target)
