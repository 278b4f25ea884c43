"""An address that leads to no Ray cluster, or to one that rejects our token: one line, exit 2, in time.

Read from the CLI's real output (``fedtwin run`` as a subprocess); the wrong-token case against a real
private ``ray start --head`` with token authentication, with the right token as the control.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fedtwin.orchestrator.cluster.local_cluster import free_port, start_local_cluster, stop_local_cluster

ROOT = Path(__file__).resolve().parents[3]
LIMIT_S = 20.0  # the promise: one line and exit 2 well within 20 s (ray.connect_timeout_s is 15 by default)


def fedtwin_run(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    full_env = dict(os.environ, RAY_TMPDIR=tempfile.mkdtemp(prefix="fedtwin-ray-"), **(env or {}))
    if "RAY_ADDRESS" not in (env or {}):
        full_env.pop("RAY_ADDRESS", None)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "fedtwin.orchestrator.cli", "run", "configs/quickstart.yaml", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
    )
    return proc, time.monotonic() - t0


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("fedtwin: error: ray address ")
    return lines[0]


def test_nothing_listening_is_one_line_and_exit_2_at_once(tmp_path):
    port = free_port()
    proc, took = fedtwin_run("--address", f"127.0.0.1:{port}", "--output", str(tmp_path / "runs"))
    line = one_error_line(proc)
    assert proc.returncode == 2
    assert f"127.0.0.1:{port}" in line and "Connection refused" in line and "embedded" in line
    assert took < LIMIT_S
    assert not (tmp_path / "runs").exists()


def test_ray_address_from_the_environment_is_checked_the_same_way(tmp_path):
    port = free_port()
    proc, took = fedtwin_run("--output", str(tmp_path / "runs"), env={"RAY_ADDRESS": f"127.0.0.1:{port}"})
    assert proc.returncode == 2 and f"127.0.0.1:{port}" in one_error_line(proc)
    assert took < LIMIT_S


def test_a_port_that_is_no_ray_gcs_times_out_after_connect_timeout_s(tmp_path):
    # Something listens (accepts, never answers): only the time limit can tell.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("0.0.0.0", 0))
        server.listen(16)
        port = server.getsockname()[1]
        proc, took = fedtwin_run(
            "--address", f"127.0.0.1:{port}", "--set", "ray.connect_timeout_s=3", "--output", str(tmp_path / "runs")
        )
    line = one_error_line(proc)
    assert proc.returncode == 2
    assert "no Ray cluster answered within 3s" in line and "ray.connect_timeout_s" in line
    assert 3 <= took < 3 + LIMIT_S / 2  # the limit holds, plus the start of Python and the imports


@pytest.fixture(scope="module")
def token_cluster():
    info, proc = start_local_cluster(num_cpus=1, object_store_mb=100, timeout_s=120)
    try:
        yield info
    finally:
        stop_local_cluster(info, proc=proc, remove=True)


def test_a_wrong_token_is_one_line_naming_the_token(token_cluster, tmp_path):
    bad = tmp_path / "wrong_token"
    bad.write_text("0" * 64)
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(bad)}
    proc, took = fedtwin_run("--address", token_cluster.gcs_address, "--output", str(tmp_path / "runs"), env=env)
    line = one_error_line(proc)
    assert proc.returncode == 2
    assert token_cluster.gcs_address in line and "token" in line and "RAY_AUTH_TOKEN" in line
    assert took < LIMIT_S
    assert not (tmp_path / "runs").exists()


def test_the_right_token_attaches(token_cluster):
    # The control: the same check lets a client with the cluster's token in.
    code = (
        "import logging, ray\n"
        "from fedtwin.orchestrator.run.ray_attach import attach\n"
        f"attach({token_cluster.gcs_address!r}, 15, logging_level=logging.WARNING)\n"
        "print('CPU', ray.cluster_resources().get('CPU'))\n"
    )
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token_cluster.token_path)
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CPU 1.0" in proc.stdout
