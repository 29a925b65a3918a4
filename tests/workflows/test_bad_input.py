"""Bad input as a user would give it: one clear ``error:`` line, a non-zero exit, no traceback."""

import errno

import numpy as np
import pytest
from typer.testing import CliRunner

from thermoflow.cli.main import app
from thermoflow.io import checkpoint

TINY = ["--set", "structure.supercell=[1,1,1]", "--set", "nct.steps=8", "--set", "nct.batch_size=8",
        "--set", "nct.flow.hidden=4", "--set", "nct.flow.n_layers=2", "--set", "nct.n_levels=2",
        "--set", "nct.reference.kind='harmonic'", "--set", "nct.eval_batches=2"]

# (overrides, exit code, text the message must contain)
CASES = [
    (["structure.symbol='Xx'"], 2, "structure.symbol: unknown chemical symbol 'Xx'"),
    (["nct.learning_rate=inf"], 2, "nct.learning_rate: Input should be a finite number"),
    (["state.temperature_K=nan"], 2, "state.temperature_K"),
    (["structure.mass_amu=-1"], 2, "structure.mass_amu"),
    (["nct.reference.n_samples=7"], 2, "nct.reference.n_samples must be even"),
    (["nct.warmup_steps=10"], 2, "nct.warmup_steps"),
    (["nct.eval_batches=1"], 2, "nct.eval_batches must be 0"),
    (["potential={kind='python', target='anharmonic_models:make_anharmonic_atom', options={quartic_eV_per_A4=nan}}"], 2, "options.quartic_eV_per_A4 is nan"),
    (["potential={kind='python', target='nomod:f'}"], 1, "cannot import module 'nomod'"),
    (["structure.a_A=0.5"], 1, "closer than structure.min_distance_A"),
    (["potential={kind='python', target='anharmonic_models:make_undefined_potential'}"], 1, "not finite at the reference structure"),
    (["structure={file='missing.vasp'}"], 1, "structure file not found"),
    (["potential={kind='python', target='anharmonic_models:make_nan_potential'}", "nct.max_rollbacks=1"], 1, "after 1 rollbacks"),
]


@pytest.mark.parametrize("overrides, code, text", CASES, ids=[c[0][0].split("=")[0] + f"[{i}]" for i, c in enumerate(CASES)])
def test_bad_input_gives_one_clear_error(tmp_path, overrides, code, text):
    args = ["run", "--out", str(tmp_path / "run"), "--no-progress"] + TINY
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit)  # no exception escaped
    assert "Traceback" not in result.output
    assert "error:" in result.output
    assert text in " ".join(result.output.split()), result.output


def test_missing_config_file_and_debug_traceback(tmp_path):
    result = CliRunner().invoke(app, ["run", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "config file not found" in result.output
    debug = CliRunner().invoke(app, ["--debug", "run", "--out", str(tmp_path / "r"), "--set", "potential={kind='python', target='nomod:f'}"])
    assert isinstance(debug.exception, ImportError)  # --debug lets the exception through


def test_full_disk_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "state.npz"
    checkpoint.save_checkpoint(path, {"a": np.ones(3)}, {"step": 1})

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.np, "savez", no_space)
    with pytest.raises(checkpoint.CheckpointError, match="No space left on device.*previous checkpoint is intact"):
        checkpoint.save_checkpoint(path, {"a": np.zeros(3)}, {"step": 2})
    monkeypatch.undo()
    tree, meta, _ = checkpoint.load_checkpoint(path, {"a": np.zeros(3)})
    assert meta["step"] == 1 and np.all(np.asarray(tree["a"]) == 1)
    assert not list(tmp_path.glob("*.tmp"))


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "state.npz"
    checkpoint.save_checkpoint(path, {"a": np.ones(3)}, {"step": 1})
    checkpoint.save_checkpoint(path, {"a": np.ones(3)}, {"step": 2})
    for p in (path, checkpoint.previous_path(path)):
        p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointError, match="no usable checkpoint"):
        checkpoint.load_latest_checkpoint(path, {"a": np.zeros(3)})
