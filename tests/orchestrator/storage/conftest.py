"""A local S3 API for the storage tests: moto in server mode on 127.0.0.1, one per test module.

The fixture yields the environment a client needs (endpoint, fake keys, region); tests apply it to
this process with ``monkeypatch`` or hand it to subprocesses. The server is stopped by its pid.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BUCKET = "fedtwin"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """``{AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...}`` of a fresh moto server with the bucket ``fedtwin``."""
    pytest.importorskip("moto", reason="moto[s3] + flask (the test extra) serve the local S3 API")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "s3_server.py"), str(port)], stdout=fh, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        import pyarrow.fs as pafs

        fs = pafs.S3FileSystem(
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            scheme="http",
            endpoint_override=f"127.0.0.1:{port}",
            allow_bucket_creation=True,
        )
        fs.create_dir(BUCKET)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def s3(s3_env, monkeypatch):
    """``s3_env`` applied to this process (restored after the test)."""
    for key, value in s3_env.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    return s3_env


def client_env(s3_env: dict[str, str], **extra: str) -> dict[str, str]:
    """This process's environment plus the S3 settings (for subprocesses)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(s3_env)
    env.update(extra)
    return env
