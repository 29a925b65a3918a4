"""The run-directory writer every workflow shares: the resolved config, where its relative file
names point, and the per-step metrics table (units in the column names), all written atomically;
and the training loop of a run directory (checkpoints, metrics, progress lines) over the shared
optimisation driver.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tomllib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import tomli_w

from thermoflow.io.atomic import atomic_write_text
from thermoflow.optimize import OptimisationResult, optimise
from thermoflow.workflows.config import ConfigError

log = logging.getLogger(__name__)

#: the run directory's record of where the config's relative file names point
RUN_INFO = "run_info.json"

#: a metrics.csv column: (history key, column header with its unit, conversion of the stored value)
Column = tuple[str, str, Callable[[Any], Any]]


def config_toml(config) -> str:
    """The validated config as TOML, defaults filled in (what ``config.resolved.toml`` holds)."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


def config_differences(stored: dict, new: dict, ignore: Sequence[str] = (), prefix: str = "") -> list[str]:
    """The fields in which two config dicts (as written to ``config.resolved.toml``) differ, one line
    each: ``"nct.flow.trainable: the run has true, this config false"``; a field one side lacks
    reads "unset". Top-level sections named in ``ignore`` are not compared."""
    lines = []
    for key in sorted(set(stored) | set(new)):
        if not prefix and key in ignore:
            continue
        a, b = stored.get(key), new.get(key)
        if isinstance(a, dict) or isinstance(b, dict):  # a section (possibly absent on one side): its fields
            lines += config_differences(a if isinstance(a, dict) else {}, b if isinstance(b, dict) else {}, prefix=f"{prefix}{key}.")
        elif a != b:
            lines.append(f"{prefix}{key}: the run has {_toml_value(a)}, this config {_toml_value(b)}")
    return lines


def _toml_value(value: Any) -> str:
    """``value`` as a TOML literal (what ``--set`` takes), or "unset"."""
    if value is None:
        return "unset"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").strip()


def start_run_dir(out_dir: Path, config, base: Path, resume: bool, markers: tuple[str, ...],
                  stored_config: Callable[[Path], Any] | None = None, ignore: Sequence[str] = ()) -> None:
    """Create ``out_dir`` with ``config.resolved.toml`` and ``run_info.json``.

    Resuming requires the run's stored config to be ``config``, compared field by field (top-level
    sections in ``ignore`` excepted). ``stored_config(resolved_path)`` reads the stored config as
    ``config``'s model (so a field added to thermoflow since, with its default, does not block a
    resume); by default the stored TOML is compared as written.

    Raises:
        ConfigError: resuming where config.resolved.toml is missing, unreadable or differs from
            ``config`` (the message lists the differing fields), or (not resuming) a directory that
            holds any of ``markers`` (relative paths) already.
    """
    resolved = out_dir / "config.resolved.toml"
    text = config_toml(config)
    if resume:
        if not resolved.is_file():
            raise ConfigError(f"cannot resume in {out_dir}: it has no config.resolved.toml (no run was started there)")
        try:
            if stored_config is None:
                stored = tomllib.loads(resolved.read_text())
            else:
                stored = stored_config(resolved).model_dump(mode="json", exclude_none=True)
        except (ConfigError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot resume in {out_dir}: its config.resolved.toml is not a valid config of this "
                              f"thermoflow: {exc}") from exc
        differences = config_differences(stored, tomllib.loads(text), ignore)
        if differences:
            raise ConfigError(
                f"cannot resume in {out_dir}: this config differs from the run's config.resolved.toml in\n  "
                + "\n  ".join(differences)
                + "\nresume with the run's values (--set FIELD=VALUE) or start a new run with another --out")
    elif any((out_dir / name).exists() for name in markers):
        raise ConfigError(f"{out_dir} already holds a run; use --resume or another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(resolved, text)
    atomic_write_text(out_dir / RUN_INFO, json.dumps({"config_base_dir": str(Path(base).resolve())}, indent=2) + "\n")


def config_base(run_dir: Path, base: Path | None = None) -> Path:
    """The directory a run config's relative file names refer to: ``base`` if given, else the
    one recorded in the run's run_info.json, else the run directory itself."""
    if base is not None:
        return Path(base)
    info = Path(run_dir) / RUN_INFO
    if info.is_file():
        return Path(json.loads(info.read_text())["config_base_dir"])
    return Path(run_dir)


def write_metrics_csv(path: Path, history: dict, columns: Sequence[Column]) -> None:
    """``metrics.csv``: one row per step of ``history`` (equal-length sequences); a column is written
    when its key is in the history."""
    present = [c for c in columns if c[0] in history]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([header for _, header, _ in present])
    for i in range(len(history.get("step", []))):
        writer.writerow([convert(history[key][i]) for key, _, convert in present])
    atomic_write_text(path, buffer.getvalue())


def write_csv(path: Path, header: Sequence[str], columns: Sequence[np.ndarray]) -> None:
    """A CSV table of equal-length columns (units in the header names), written atomically."""
    buffer = io.StringIO()
    np.savetxt(buffer, np.column_stack(columns), delimiter=",", header=",".join(header), comments="", fmt="%.8g")
    atomic_write_text(path, buffer.getvalue())


def write_rdf_csv(path: Path, rdf) -> None:
    """``rdf.csv`` of a :class:`thermoflow.analysis.structure.RadialDistribution`: r_A, then per ordered species
    pair a_b the columns g_a_b, g_a_b_stderr and n_a_b (coordination number)."""
    names = [f"{a}_{b}" for a, b in rdf.pairs]
    write_csv(path, ["r_A"] + [c for n in names for c in (f"g_{n}", f"g_{n}_stderr", f"n_{n}")],
              [rdf.r_A] + [c for k in range(len(names)) for c in (rdf.g[k], rdf.g_stderr[k], rdf.coordination[k])])


def optimise_in_run_dir(step: Callable, state, out_dir: Path, columns: Sequence[Column], *, steps: int, checkpoint_every: int,
                        resume: bool, max_rollbacks: int, advice: str, progress: Callable[[dict], str],
                        log_every: int | None = 0, stop_after: int | None = None) -> tuple[OptimisationResult, bool]:
    """``(result, completed)``: :func:`thermoflow.optimize.optimise` of a run directory's training: checkpoints in
    ``out_dir/checkpoints/state.npz`` (resumed from there with ``resume``), ``metrics.csv`` rewritten at every
    checkpoint and at the end (also of an interrupted run), and a progress line ``step i/n: <progress(row)>`` every
    ``log_every`` steps (0: about 20 per run; None: none) and at the last step. ``completed``: all ``steps`` are done.

    Raises:
        thermoflow.optimize.NonFiniteError: non-finite steps beyond ``max_rollbacks`` (``advice`` says what to change).
    """
    metrics_csv = out_dir / "metrics.csv"
    every = max(1, steps // 20) if log_every == 0 else log_every

    def on_step(row):
        done = row["step"] + 1
        if every is not None and (done % every == 0 or done == steps):
            log.info("step %d/%d: %s", done, steps, progress(row))

    result = optimise(step, state, steps=steps, checkpoint_path=out_dir / "checkpoints" / "state.npz", checkpoint_every=checkpoint_every,
                      resume=resume, max_rollbacks=max_rollbacks, on_step=on_step,
                      on_checkpoint=lambda history: write_metrics_csv(metrics_csv, history, columns), stop_after=stop_after, advice=advice)
    write_metrics_csv(metrics_csv, result.history, columns)
    return result, len(result.history.get("step", ())) >= steps
