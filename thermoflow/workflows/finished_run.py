"""A finished NCT run read back from its directory, for post-processing commands.

``thermoflow spectrum`` and ``thermoflow structure`` start from here: the resolved config, the
stored basis (the self-consistent Gaussian, the cubic force constants) rebuilt exactly as the run
built them (:func:`thermoflow.workflows.nct_setup.prepare_nct` with ``resume=True``), the model,
and the trained parameters of the newest readable checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from thermoflow.io.checkpoint import CheckpointError, load_latest_checkpoint
from thermoflow.nct.loss import FreeEnergyModel
from thermoflow.nct.train import TrainState
from thermoflow.workflows.config import ConfigError, RunConfig, read_run_config
from thermoflow.workflows.run_dir import config_base
from thermoflow.workflows.nct_setup import NCTSetup, configured_flow, prepare_nct

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FinishedRun:
    """A trained NCT state and everything it was built from.

    Attributes:
        run_dir: the run directory.
        config: its validated config (config.resolved.toml).
        setup: structure, potential, modes and basis, flow (see :class:`NCTSetup`).
        model: the free-energy model of the run (sampling, local energies, configurations).
        params: the trained parameters (flow, occupation logits, NPT strain).
        checkpoint: the checkpoint file they were read from.
    """

    run_dir: Path
    config: RunConfig
    setup: NCTSetup
    model: FreeEnergyModel
    params: dict
    checkpoint: Path


def load_finished_run(run_dir: Path, base: Path | None = None) -> FinishedRun:
    """Rebuild the trained state of a finished NCT run.

    Args:
        run_dir: a run directory written by ``thermoflow run`` that completed.
        base: the directory the run config's file names are relative to (default: recorded in
            the run directory).

    Returns:
        The :class:`FinishedRun`.

    Raises:
        ConfigError: no finished run in ``run_dir`` (config.resolved.toml and a completed
            results.json), or its stored Gaussian basis is missing.
        CheckpointError: no readable checkpoint.
    """
    run_dir = Path(run_dir)
    resolved = run_dir / "config.resolved.toml"
    results_path = run_dir / "results.json"
    if not resolved.is_file() or not results_path.is_file() or not json.loads(results_path.read_text()).get("completed"):
        raise ConfigError(f"{run_dir} holds no finished NCT run (config.resolved.toml and a completed results.json)")
    config = read_run_config(resolved)
    if config.nct.reference.kind == "scha" and not (run_dir / "gaussian_reference.npz").is_file():
        raise ConfigError(f"{run_dir}/gaussian_reference.npz is missing: the trained state's basis cannot be rebuilt")
    setup = prepare_nct(config, config_base(run_dir, base), run_dir, resume=True)
    model = setup.build_model()
    checkpoint = run_dir / "checkpoints" / "state.npz"
    try:
        params, read = _trained_parameters(checkpoint, model, setup)
    except CheckpointError:
        if not config.nct.freeze_flow:
            raise
        # harmonic wavefunctions, written before 2026-12-05: the checkpoint also holds the configured flow's unused
        # identity parameters and their optimiser moments; read them with that flow's template and drop them
        legacy = dataclasses.replace(setup, flow=configured_flow(config, setup.basis.n_modes)).build_model()
        params, read = _trained_parameters(checkpoint, legacy, setup)
        params = {**params, "flow": {}}
    log.info("trained parameters read from %s", read)
    return FinishedRun(run_dir=run_dir, config=config, setup=setup, model=model, params=params, checkpoint=read)


def _trained_parameters(checkpoint: Path, model: FreeEnergyModel, setup: NCTSetup) -> tuple[dict, Path]:
    """The parameters of the newest readable checkpoint of a run of ``model`` and the file read."""
    start = TrainState.create(model, setup.optimizer, setup.config.seed, setup.held_parameters)
    tree, _, _, read = load_latest_checkpoint(checkpoint, {"params": start.params, "opt_state": start.opt_state})
    return tree["params"], read
