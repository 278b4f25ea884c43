"""Ray Jobs end to end on a private `ray start --head` cluster (own process group, temp dir, ports, token).

The cluster never touches the session's embedded Ray: clients reach it only through the environment
given to their subprocesses (RAY_ADDRESS etc. are never set in this process), and it is torn down by
signalling its own process group, never with `ray stop`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedtwin.orchestrator.cluster.jobs import DEFAULT_ADDRESS, JobError, exit_code_of, job_address, runtime_env
from fedtwin.orchestrator.cluster.local_cluster import group_members, start_local_cluster, stop_local_cluster

REPO = Path(__file__).resolve().parents[3]


def test_exit_status_mapping_and_address_resolution(monkeypatch):
    assert exit_code_of("SUCCEEDED", None) == 0
    assert exit_code_of("FAILED", 2) == 2  # the entrypoint's own code
    assert exit_code_of("FAILED", None) == 1
    assert exit_code_of("STOPPED", None) == 1
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a driver address is not a job server
    assert job_address(None) == DEFAULT_ADDRESS
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://head:8265/")
    assert job_address(None) == "http://head:8265"
    assert job_address("https://x:1") == "https://x:1"
    with pytest.raises(JobError, match="--address '10.0.0.1:6379': give the dashboard's job server URL"):
        job_address("10.0.0.1:6379")


def test_runtime_env_uploads_the_project_without_outputs():
    env = runtime_env(REPO)
    assert env["working_dir"] == str(REPO)
    assert {"/runs/", "/data/", "/sweeps/", "/.venv/", "/.git/"} <= set(env["excludes"])


def _tiny_config(path: Path, data_root: Path, out: Path) -> Path:
    cfg = {
        "name": "job-tiny",
        "seed": 3,
        "data": {
            "root": str(data_root),
            "generator": {"train_per_class": 40, "test_per_class": 10},
            "partition": {"devices": 10, "scheme": "iid", "seed": 0},
        },
        "training": {"epochs": 1, "batch_size": 16, "optimizer": "adam", "lr": 0.003},
        "federation": {"num_rounds": 2, "devices_per_round": 10, "round_timeout_s": 120},
        "resources": {"hosts": 1, "cpus_per_host": 0.5},
        "run": {"output_dir": str(out), "checkpoint_every": 1},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _cluster_processes(root: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, timeout=30).stdout
    return [line for line in out.splitlines() if root in line and " Z" not in line[:12]]


def test_fedtwin_submit_and_ray_job_submit_on_a_private_cluster(tiny_data_root, tmp_path):
    # Prepare: a private 2-CPU head node; two tiny runs (one per submission path) fit side by side
    info, proc = start_local_cluster(num_cpus=2, object_store_mb=200, timeout_s=120)
    try:
        env = {**os.environ, **info.env()}
        env.pop("RAY_ADDRESS")  # clients of the job server need only RAY_API_SERVER_ADDRESS + the token
        cfg_a = _tiny_config(tmp_path / "a.yaml", tiny_data_root, tmp_path / "runs-a")
        cfg_b = _tiny_config(tmp_path / "b.yaml", tiny_data_root, tmp_path / "runs-b")
        ours = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedtwin.orchestrator.cli.main",
                "submit",
                "--timeout",
                "300",
                "--",
                "run",
                str(cfg_a),
                "--quiet",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # a failing job, submitted beside the other two (it takes no CPU of the cluster)
        failing = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fedtwin.orchestrator.cli.main",
                "submit",
                "--timeout",
                "120",
                "--",
                "run",
                "missing.yaml",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ray_cli = subprocess.run(
            [
                str(Path(sys.executable).with_name("ray")),
                "job",
                "submit",
                "--address",
                info.dashboard_url,
                "--working-dir",
                ".",
                "--",
                "fedtwin",
                "run",
                str(cfg_b),
                "--quiet",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        ours_out, ours_err = ours.communicate(timeout=300)
        failing_out, failing_err = failing.communicate(timeout=180)
        # Assert: both succeeded, logs streamed back, artifacts on disk
        assert ours.returncode == 0, ours_err[-2000:]
        assert "done: " in ours_out and "final test accuracy" in ours_out  # the job's own output, followed
        assert ": SUCCEEDED" in ours_err
        assert ray_cli.returncode == 0, ray_cli.stderr[-2000:]
        assert "succeeded" in (ray_cli.stdout + ray_cli.stderr).lower()
        for out in (tmp_path / "runs-a", tmp_path / "runs-b"):
            (run,) = list(out.iterdir())
            summary = json.loads((run / "summary.json").read_text())
            assert summary["rounds"] == 2 and summary["num_hosts"] == 1
            assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
            assert (run / "checkpoints" / "step-00002" / "model.safetensors").is_file()
            assert (run / "plots" / "accuracy.png").is_file()
        # a failing job: its exit status (2, a config error) comes back as ours
        assert failing.returncode == 2, failing_err[-2000:]
        assert "missing.yaml: config file not found" in failing_out
        assert "FAILED (exit 2)" in failing_err
    finally:
        stop_local_cluster(info, proc=proc, remove=True)
    # Assert: nothing of the cluster is left, and nothing else was touched
    assert group_members(info.pgid) == []
    assert _cluster_processes(info.root) == []
