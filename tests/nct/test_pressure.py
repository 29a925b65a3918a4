"""The NCT pressure estimator is the exact strain derivative of the free-energy estimator."""

import dataclasses

import jax
import numpy as np
import pytest

import crystals
from helpers import perturbed_params
from thermoflow.nct.flow import make_realnvp
from thermoflow.nct.loss import make_free_energy_model
from thermoflow.nct.train import evaluate
from thermoflow.units import KB_EV_PER_K


def strained(modes, eps):
    """The crystal under isotropic strain eps with the state fixed in scaled coordinates:
    R0, cell and the displacement matrix B = M^-1/2 E sqrt(hbar / omega) all scale by 1 + eps."""
    return dataclasses.replace(
        modes, reference_positions=modes.reference_positions * (1 + eps), cell=modes.cell * (1 + eps),
        omega=modes.omega / (1 + eps) ** 2,
    )


@pytest.mark.parametrize("freeze_flow", [True, False])
def test_pressure_is_minus_the_volume_derivative_of_the_free_energy_estimator(freeze_flow):
    energy_fn, modes = crystals.anharmonic_neon()
    kT = KB_EV_PER_K * 20.0
    flow = make_realnvp(modes.n_modes, 2, 8)
    kwargs = dict(kT_eV=kT, n_levels=3, batch_size=64, freeze_flow=freeze_flow)
    model = make_free_energy_model(energy_fn, modes, flow, pressure=True, **kwargs)
    params = {"flow": perturbed_params(flow, scale=0.05), "logits": model.init(jax.random.PRNGKey(0))["logits"]}
    at = {e: evaluate(make_free_energy_model(energy_fn, strained(modes, e), flow, **kwargs), params, seed=1, n_batches=3)["free_energy"]
          for e in (-1e-5, 1e-5)}
    pressure = evaluate(model, params, seed=1, n_batches=3)["pressure"]
    volume = abs(np.linalg.det(modes.cell))
    numerical = -(at[1e-5] - at[-1e-5]) / 2e-5 / (3 * volume)
    print("pressure (eV/A^3)", pressure, "numerical", numerical, "rel", (pressure - numerical) / numerical)
    assert np.allclose(pressure, numerical, rtol=1e-5, atol=1e-12)  # 1e-8 typically; a pair crossing the cutoff costs more
