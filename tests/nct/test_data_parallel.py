"""Data parallelism: the batch split over 2 (emulated CPU) devices gives the 1-device results.

JAX fixes its device count when it starts, so each check runs in a fresh Python process with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from thermoflow.parallel import make_batch_mesh
from thermoflow.workflows.config import ConfigError, load_config
from thermoflow.workflows.nct_run import run_nct

HERE = Path(__file__).parent


def _run_with_two_devices(script: str, tmp_path: Path) -> dict:
    """Run ``script`` in a fresh interpreter with 2 CPU devices; it prints one JSON line last."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    path = tmp_path / "check.py"
    path.write_text(textwrap.dedent(script))
    out = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_loss_metrics_and_gradients_do_not_depend_on_the_device_count(tmp_path):
    """Product and autoregressive occupations, chunks, stress and NPT (strain derivative from all
    samples, or from an uneven subset that stays on one device): every metric and every gradient
    component of one batch equal on 1 and 2 devices to round-off."""
    result = _run_with_two_devices("""
        import json
        import jax
        jax.config.update("jax_enable_x64", True)
        import numpy as np
        from helpers import perturbed_params, planar_modes
        from thermoflow.nct.flow import make_realnvp
        from thermoflow.nct.loss import make_free_energy_model
        from thermoflow.parallel import make_batch_mesh

        def energy_fn(positions, cell):
            x, y = positions[0, 0], positions[0, 1]
            return 0.5 * (x**2 + 1.5 * y**2) + 2.0 * (x**4 + y**4) + 1.5 * x**2 * y**2

        modes = planar_modes(np.sqrt([1.0, 1.5]))
        flow = make_realnvp(2, 2, 6)
        mesh = make_batch_mesh("all")
        cases = {"npt_stress": {"pressure_eV_per_A3": 1e-3, "stress": True, "chunk_size": 3},
                 "npt_subset": {"pressure_eV_per_A3": 1e-3, "strain_samples": 5, "occupations": "autoregressive"}}
        out = {"devices": int(mesh.devices.size)}
        for name, extra in cases.items():
            kw = dict(kT_eV=0.03, n_levels=3, batch_size=22, laplacian="folx", **extra)
            one = make_free_energy_model(energy_fn, modes, flow, **kw)
            two = make_free_energy_model(energy_fn, modes, flow, mesh=mesh, **kw)
            params = one.init(jax.random.PRNGKey(0))
            params["flow"] = perturbed_params(flow, seed=2, scale=0.1)
            key = jax.random.PRNGKey(7)
            (_, m1), g1 = jax.jit(jax.value_and_grad(one.loss, has_aux=True))(params, key)
            (_, m2), g2 = jax.jit(jax.value_and_grad(two.loss, has_aux=True))(params, key)
            dm = max(float(np.max(np.abs(np.asarray(m1[k]) - np.asarray(m2[k])))) for k in m1)
            dg = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)))
            scale = max(float(np.max(np.abs(a))) for a in jax.tree_util.tree_leaves(g1))
            out[name] = [dm, dg, scale, float(m1["free_energy"]), sorted(m1)]
        print(json.dumps(out))
    """, tmp_path)
    assert result.pop("devices") == 2
    for name, (d_metrics, d_grad, grad_scale, free_energy, metrics) in result.items():
        assert d_metrics < 1e-12, name
        assert d_grad < 1e-12 * max(grad_scale, 1.0), name
        assert grad_scale > 0 and free_energy != 0, name
    assert "stress" in result["npt_stress"][4] and "gibbs_free_energy" in result["npt_subset"][4]


TINY = [
    "structure.supercell=[1, 1, 1]", "nct.steps=6", "nct.batch_size=16", "nct.checkpoint_every=2", "nct.n_levels=3",
    "nct.reference.kind='harmonic'", "nct.flow.cubic_samples=32", "nct.eval_batches=2", "nct.chunk_size=4",
]
#: the self-consistent Gaussian and the perturbative quadratic flow's cubic force constants too
WITH_REFERENCES = TINY[:5] + [
    "nct.reference.kind='scha'", "nct.reference.n_samples=64", "nct.reference.iterations=3", "nct.reference.eval_samples=64",
    "nct.flow.kind='quadratic'", "nct.flow.init='perturbative'",
] + TINY[6:]


@pytest.mark.slow  # default-budget trim: ~2 min in a subprocess
def test_run_on_two_devices_and_resume_on_one(tmp_path):
    """A run on 2 devices (self-consistent Gaussian, cubic force constants and training split
    over them) equals a run started on 1 device, interrupted and resumed on 2, step by step."""
    result = _run_with_two_devices(f"""
        import csv, json
        from thermoflow.workflows.config import load_config
        from thermoflow.workflows.nct_run import run_nct

        def trace(d):
            with open(d / "metrics.csv") as fh:
                return [float(r["free_energy_eV_per_atom"]) for r in csv.DictReader(fh)]

        from pathlib import Path
        tiny = {WITH_REFERENCES!r}
        two, base = load_config(None, tiny + ["parallel.devices=2"])
        one, _ = load_config(None, tiny + ["parallel.devices=1"])
        full = run_nct(two, base, Path("two"), progress=False)
        run_nct(one, base, Path("split"), progress=False, stop_after=3)
        resumed = run_nct(two, base, Path("split"), resume=True, progress=False)
        print(json.dumps({{"full": trace(Path("two")), "split": trace(Path("split")), "devices": [full["devices"], resumed["devices"]],
                          "f": [full["free_energy_eV_per_atom"], resumed["free_energy_eV_per_atom"]]}}))
    """, tmp_path)
    assert result["devices"] == [2, 2]
    assert len(result["full"]) == 6
    for a, b in zip(result["full"], result["split"], strict=True):
        assert abs(a - b) <= 1e-10 * abs(a)
    assert abs(result["f"][0] - result["f"][1]) <= 1e-10 * abs(result["f"][0])


def test_device_count_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="devices requested but JAX sees"):
        make_batch_mesh(64)
    with pytest.raises(ValueError, match="'all' or a positive integer"):
        make_batch_mesh(0)
    with pytest.raises(ConfigError, match="parallel.devices"):
        load_config(None, ["parallel.devices='some'"])
    cfg, base = load_config(None, TINY + ["parallel.devices=4"])
    with pytest.raises(ConfigError, match="devices requested"):
        run_nct(cfg, base, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # default-budget trim: two processes, ~2 min
def test_two_processes_give_the_one_process_run(tmp_path):
    """`thermoflow run` in two processes (jax.distributed, one CPU device each, gloo collectives;
    self-consistent Gaussian, cubic force constants and training split over them): the training
    trace and F equal a one-process run's, and only process 0 writes files."""
    reference_cfg, base = load_config(None, WITH_REFERENCES)
    reference = run_nct(reference_cfg, base, tmp_path / "one", progress=False)
    port = _free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    sets = [arg for override in WITH_REFERENCES for arg in ("--set", override)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "from thermoflow.cli.main import app; app()", "run", "--out", str(tmp_path / f"p{i}"),
             "--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i), "--no-progress", *sets],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, (out + err)[-3000:]
    results = json.loads((tmp_path / "p0" / "results.json").read_text())
    assert results["devices"] == 2
    assert abs(results["free_energy_eV_per_atom"] - reference["free_energy_eV_per_atom"]) <= 1e-10 * abs(reference["free_energy_eV_per_atom"])
    lines = [(tmp_path / d / "metrics.csv").read_text().splitlines() for d in ("one", "p0")]
    assert len(lines[0]) == len(lines[1]) == 7
    column = lines[0][0].split(",").index("free_energy_eV_per_atom")
    for a, b in zip(lines[0][1:], lines[1][1:]):
        fa, fb = float(a.split(",")[column]), float(b.split(",")[column])
        assert abs(fa - fb) <= 1e-10 * abs(fa)
    assert [f for f in (tmp_path / "p1").rglob("*") if f.is_file()] == []  # process 1 wrote nothing
