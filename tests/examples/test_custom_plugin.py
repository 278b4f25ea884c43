"""``examples/custom_plugin``: a user's model and strategy, named by import path, run end to end.

The CLI runs as a subprocess from a scratch folder (so nothing depends on the repository being the
working directory) with an embedded Ray of its own. The example model appends ``<pid> <process title>``
to ``$MY_PLUGIN_TRACE`` whenever it is built; Ray titles actor processes ``ray::DeviceHost.__init__``,
which shows the device hosts built the model themselves from the import path string.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "custom_plugin"
CONFIG = EXAMPLE / "experiment.yaml"


def fedtwin(args: list[str], cwd: Path, **env: str) -> subprocess.Popen[str]:
    """Start ``python -m fedtwin.orchestrator.cli ARGS`` in ``cwd`` with a clean Ray environment."""
    environ = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # always an embedded Ray
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO), environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    environ.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "fedtwin.orchestrator.cli", *args],
        cwd=cwd,
        env=environ,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_example_runs_and_device_hosts_build_the_user_model(tmp_path: Path) -> None:
    # Prepare
    work, out, trace = tmp_path / "work", tmp_path / "runs", tmp_path / "trace.txt"
    work.mkdir()
    # Execute: the example as shipped, cut to 2 rounds of 1 epoch (the plugin paths are the same in every round)
    proc = fedtwin(
        ["run", str(CONFIG), "--output", str(out), "--quiet", "--set", "federation.num_rounds=2", "training.epochs=1"],
        work,
        MY_PLUGIN_TRACE=str(trace),
    )
    stdout, stderr = proc.communicate(timeout=240)
    # Assert: a normal, complete run folder
    assert proc.returncode == 0, stderr[-3000:]
    (run_dir,) = out.iterdir()
    assert stdout.startswith(f"done: {run_dir}")
    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert spec["model"]["arch"] == "my_plugin:FrameCNN" and spec["strategy"]["name"] == "my_plugin:FedAdam"
    assert spec["plugins"]["paths"] == [str(EXAMPLE)]  # relative to the YAML file, stored absolute
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = spec["federation"]["num_rounds"]
    assert [r["round"] for r in records] == list(range(1, rounds + 1))
    assert all(r["devices_failed"] == 0 and r["pseudo_gradient_norm"] > 0 for r in records)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["strategy"]["name"] == "fedadam" and summary["strategy"]["server_lr"] == 0.1
    assert (run_dir / "checkpoints" / f"step-{rounds:05d}").is_dir()
    assert (work / "data" / "datasets").is_dir()  # data.root is relative to the working directory
    # Assert: every device host built FrameCNN in its own process (not the driver, not by unpickling)
    built = [line.split(" ", 1) for line in trace.read_text().splitlines()]
    host_pids = {int(pid) for pid, title in built if title.startswith("ray::DeviceHost")}
    assert len(host_pids) == spec["resources"]["hosts"] and proc.pid not in host_pids
    assert any(int(pid) == proc.pid for pid, _ in built)  # the driver built the initial global model


def test_bad_model_import_path_exits_2_with_one_line(tmp_path: Path) -> None:
    proc = fedtwin(["run", str(CONFIG), "--set", "model.arch=my_plugin:FrameCnn"], tmp_path)
    stdout, stderr = proc.communicate(timeout=60)

    assert proc.returncode == 2 and stdout == ""
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith(f"fedtwin: error: {CONFIG}: model.arch: module 'my_plugin' has no attribute 'FrameCnn'")
    assert "did you mean 'FrameCNN'?" in stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()
