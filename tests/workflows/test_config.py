import pytest

from thermoflow.workflows.config import ConfigError, load_config, parse_override


def test_default_config_is_valid():
    cfg, _ = load_config(None)
    assert cfg.potential.kind == "lennard_jones" and cfg.structure.supercell == (2, 2, 2)
    assert cfg.nct.flow.kind == "quadratic" and cfg.nct.flow.flow_learning_rate_scale == 0.01
    realnvp, _ = load_config(None, ["nct.flow.kind=realnvp"])
    assert realnvp.nct.flow.flow_learning_rate_scale == 1.0
    # the perturbative quadratic flow is held unless asked; every other flow trains
    assert not cfg.nct.flow.trainable and realnvp.nct.flow.trainable
    assert load_config(None, ["nct.flow.init=identity"])[0].nct.flow.trainable
    assert load_config(None, ["nct.flow.trainable=true"])[0].nct.flow.trainable
    assert not load_config(None, ["nct.flow.kind=realnvp", "nct.flow.trainable=false"])[0].nct.flow.trainable


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["state.temperature_K=-5"], "state.temperature_K"),
        (["nct.batch_size=1"], "nct.batch_size"),
        (["nct.laplacian='magic'"], "nct.laplacian"),
        (["potential.sigma_A=0"], "potential.sigma_A"),
        (["nct.flow.n_layers=0"], "nct.flow.n_layers"),
        (["nct.flow.kind='spline'"], "nct.flow.kind"),
        (["nct.flow.pairs=0"], "nct.flow.pairs"),
        (["nct.flow.cubic_samples=100"], "nct.flow"),
        (["nct.flow.learning_rate_scale=0"], "nct.flow.learning_rate_scale"),
        (["nct.flow.trainable=false", "nct.flow.learning_rate_scale=0.1"], "nct.flow"),
        (["nct.flow.learning_rate_scale=0.1"], "nct.flow"),  # the perturbative quadratic flow is held by default
        (["nct.typo_field=1"], "nct.typo_field"),
        (["nct.steps=4"], "nct"),  # averages a single step: no error bar
        (["potential.kind='unknown'"], "potential"),
        (["structure.file='x.vasp'"], "structure"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert f"  {field}" in str(info.value)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[nct\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_overrides_parse_toml_literals():
    assert parse_override("nct.steps=20") == ("nct.steps", 20)
    assert parse_override("structure.supercell=[1, 2, 3]") == ("structure.supercell", [1, 2, 3])
    assert parse_override("potential.model=path/to/m.dp") == ("potential.model", "path/to/m.dp")
    with pytest.raises(ConfigError):
        parse_override("novalue")


def test_temperature_in_the_old_place_gets_a_pointer_to_the_state_section():
    with pytest.raises(ConfigError, match=r"moved to the \[state\] section"):
        load_config(None, ["nct.temperature_K=20"])


def test_run_directory_written_before_the_held_default_reads_as_trained(tmp_path):
    """A config.resolved.toml without nct.flow.trainable (written before 2026-12-05, when every flow
    trained) is read back as trained; the same file as a user config gets today's default (held)."""
    from thermoflow.workflows.config import read_run_config
    from thermoflow.workflows.run_dir import config_toml

    cfg, _ = load_config(None)
    text = config_toml(cfg)
    assert "trainable = false" in text  # the resolved default is written out
    old = tmp_path / "config.resolved.toml"
    old.write_text("\n".join(line for line in text.splitlines() if not line.startswith("trainable")) + "\n")
    assert read_run_config(old).nct.flow.trainable
    assert not load_config(old)[0].nct.flow.trainable
    new = tmp_path / "new.toml"
    new.write_text(text)
    assert not read_run_config(new).nct.flow.trainable


def test_resume_with_another_config_names_the_differing_fields(tmp_path):
    """A run directory written before the held default, resumed with today's config: the error
    names nct.flow.trainable with both values (the fix is --set nct.flow.trainable=true), and the
    run's files are untouched; with that override the resume is accepted."""
    from thermoflow.workflows.config import read_run_config
    from thermoflow.workflows.run_dir import config_toml, start_run_dir

    cfg, base = load_config(None)
    run = tmp_path / "run"
    run.mkdir()
    old = "\n".join(line for line in config_toml(cfg).splitlines() if not line.startswith("trainable")) + "\n"
    (run / "config.resolved.toml").write_text(old)
    with pytest.raises(ConfigError) as err:
        start_run_dir(run, cfg, base, resume=True, markers=(), stored_config=read_run_config)
    assert "nct.flow.trainable: the run has true, this config false" in str(err.value)
    assert str(err.value).count("\n  ") == 1  # the only difference
    assert (run / "config.resolved.toml").read_text() == old
    trained, _ = load_config(None, ["nct.flow.trainable=true"])
    start_run_dir(run, trained, base, resume=True, markers=(), stored_config=read_run_config)
    other, _ = load_config(None, ["nct.flow.trainable=true", "state.temperature_K=40", "parallel.devices=1"])
    with pytest.raises(ConfigError, match=r"state.temperature_K: the run has \S+, this config 40") as err:
        start_run_dir(run, other, base, resume=True, markers=(), stored_config=read_run_config, ignore=("parallel",))
    assert "parallel" not in str(err.value)


def test_config_differences_list_the_fields_of_a_section_one_side_lacks(tmp_path):
    from thermoflow.workflows.run_dir import config_differences, start_run_dir

    lines = config_differences({"state": {"temperature_K": 20.0}, "nct": {"steps": 5}}, {"nct": {"steps": 6}})
    assert lines == ["nct.steps: the run has 5, this config 6", "state.temperature_K: the run has 20.0, this config unset"]
    cfg, base = load_config(None)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.resolved.toml").write_text("[nct\n")  # damaged
    with pytest.raises(ConfigError, match="not a valid config"):
        start_run_dir(run, cfg, base, resume=True, markers=())
