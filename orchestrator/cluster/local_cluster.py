"""A private local Ray cluster (``ray start --head``) that can be stopped without hurting anyone else.

``ray stop`` kills every Ray process of the user, including other people's test sessions and
notebooks on a shared machine. This module starts ``ray start --head --block`` in a new session (its
own process group) with its own temp dir, its own free ports and its own token file, and stops it by
signalling that process group only, after checking that the group still belongs to it. The dashboard
and job server bind 127.0.0.1; Ray's GCS and raylet listen on all interfaces as usual, behind the token.

State lives in ``<root>/cluster.json`` so ``fedtwin cluster down`` finds a cluster that
``fedtwin cluster up`` started from another shell.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from fedtwin.pipelines.core.atomic_write import write_text_atomic
from fedtwin.pipelines.core.errors import FedtwinError

STATE_FILE = "cluster.json"
#: Ray puts unix sockets under the temp dir; their paths must stay below ~107 characters.
MAX_ROOT_LEN = 40
_PORT_FLAGS = (
    "port",
    "dashboard-port",
    "ray-client-server-port",
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)
#: The ports a worker node (``ray start --address``) opens itself; the GCS and dashboard are the head's.
_WORKER_PORT_FLAGS = (
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)


class LocalClusterError(FedtwinError):
    """The private cluster did not start, or cannot be stopped safely."""


@dataclass(frozen=True)
class LocalClusterInfo:
    """How to reach (and later stop) one private cluster."""

    root: str
    pgid: int
    gcs_address: str
    dashboard_url: str
    token_path: str
    num_cpus: int

    def env(self) -> dict[str, str]:
        """Environment for clients: drivers use RAY_ADDRESS, jobs RAY_API_SERVER_ADDRESS; token auth on."""
        return {
            "RAY_ADDRESS": self.gcs_address,
            "RAY_API_SERVER_ADDRESS": self.dashboard_url,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": self.token_path,
            "FEDTWIN_CLUSTER_DIR": self.root,
        }

    def exports(self) -> str:
        """Shell lines to ``eval``."""
        return "".join(f"export {k}={v}\n" for k, v in self.env().items())


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ray_start_command(
    root: Path,
    ports: dict[str, int],
    num_cpus: int,
    num_gpus: int | None,
    object_store_mb: int,
    resources: Mapping[str, float] | None = None,
    head_address: str | None = None,
) -> list[str]:
    """The ``ray start --block`` command line of a private head node, or with ``head_address`` of a worker node."""
    ray_bin = Path(sys.executable).with_name("ray")
    cmd = [str(ray_bin)] if ray_bin.is_file() else [sys.executable, "-m", "ray.scripts.scripts"]
    if head_address is None:
        cmd += [
            "start",
            "--head",
            "--block",
            "--temp-dir",
            str(root),
            "--dashboard-host",
            "127.0.0.1",
            "--include-dashboard",
            "true",
        ]
    else:
        cmd += ["start", "--address", head_address, "--block", "--temp-dir", str(root)]
    cmd += [
        "--disable-usage-stats",
        "--num-cpus",
        str(num_cpus),
        "--object-store-memory",
        str(object_store_mb * 1024 * 1024),
    ]
    if num_gpus is not None:
        cmd += ["--num-gpus", str(num_gpus)]
    if resources:
        cmd += ["--resources", json.dumps({str(k): float(v) for k, v in resources.items()})]
    for flag in _PORT_FLAGS if head_address is None else _WORKER_PORT_FLAGS:
        cmd += [f"--{flag}", str(ports[flag])]
    return cmd


def start_local_cluster(
    root: str | Path | None = None,
    *,
    num_cpus: int = 2,
    num_gpus: int | None = None,
    object_store_mb: int = 300,
    timeout_s: float = 120.0,
    resources: Mapping[str, float] | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[LocalClusterInfo, subprocess.Popen]:
    """Start a private head node and wait (at most ``timeout_s``) until its job server answers.

    ``resources`` are custom Ray resources of the node; ``env`` is added to the environment of its Ray
    processes (and so of every worker process on it).
    """
    root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="fedtwin-ray-", dir="/tmp"))
    if len(str(root)) > MAX_ROOT_LEN:
        raise LocalClusterError(f"--dir {root}: keep it under {MAX_ROOT_LEN} characters (Ray's socket paths)")
    if (root / STATE_FILE).is_file():
        raise LocalClusterError(f"{root}: a cluster was already started there; `fedtwin cluster down {root}` first")
    root.mkdir(parents=True, exist_ok=True)
    token = root / "auth_token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    ports = {flag: free_port() for flag in _PORT_FLAGS}
    log = open(root / "ray-start.log", "w")  # noqa: SIM115 (handed to the child, closed below)
    try:
        proc = subprocess.Popen(
            ray_start_command(root, ports, num_cpus, num_gpus, object_store_mb, resources),
            env=_node_env(token, env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()
    info = LocalClusterInfo(
        str(root),
        proc.pid,
        f"127.0.0.1:{ports['port']}",
        f"http://127.0.0.1:{ports['dashboard-port']}",
        str(token),
        num_cpus,
    )
    write_text_atomic(root / STATE_FILE, json.dumps(asdict(info), indent=2))
    try:
        _wait_ready(info, proc, timeout_s)
    except BaseException:
        stop_local_cluster(info, proc=proc)
        raise
    return info, proc


def start_local_worker(
    head: LocalClusterInfo,
    root: str | Path | None = None,
    *,
    num_cpus: int = 1,
    num_gpus: int | None = None,
    object_store_mb: int = 200,
    resources: Mapping[str, float] | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 120.0,
) -> tuple[LocalClusterInfo, subprocess.Popen]:
    """Join a second node to a private cluster, on this machine (its own temp dir, ports and process group).

    For tests and development of multi-node behaviour: ``resources`` (e.g. ``{"edge": 2}``) let actors
    choose this node, ``env`` gives its processes their own settings (e.g. a per-node cache folder).
    Stop it with :func:`stop_local_cluster` on the info returned (before the head).
    """
    root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="fedtwin-rayw-", dir="/tmp"))
    if len(str(root)) > MAX_ROOT_LEN:
        raise LocalClusterError(f"{root}: keep the worker's folder under {MAX_ROOT_LEN} characters")
    root.mkdir(parents=True, exist_ok=True)
    ports = {flag: free_port() for flag in _WORKER_PORT_FLAGS}
    cmd = ray_start_command(root, ports, num_cpus, num_gpus, object_store_mb, resources, head_address=head.gcs_address)
    log = open(root / "ray-start.log", "w")  # noqa: SIM115 (handed to the child, closed below)
    try:
        proc = subprocess.Popen(
            cmd, env=_node_env(Path(head.token_path), env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()
    info = LocalClusterInfo(str(root), proc.pid, head.gcs_address, head.dashboard_url, head.token_path, num_cpus)
    write_text_atomic(root / STATE_FILE, json.dumps(asdict(info), indent=2))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (root / "ray-start.log").read_text()[-2000:]
            raise LocalClusterError(f"`ray start --address` exited with {proc.returncode}; its log ends with:\n{tail}")
        if _node_alive(head, ports["node-manager-port"]):
            return info, proc
        time.sleep(1.0)
    stop_local_cluster(info, proc=proc)
    raise LocalClusterError(f"the worker node in {root} did not join {head.gcs_address} within {timeout_s:.0f}s")


def _node_env(token: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The environment of a node's ``ray start``: ours without client settings, token auth on, ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_API_SERVER_ADDRESS")}
    # Job entrypoints inherit this environment: put this interpreter's scripts (fedtwin, ray) first.
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    env.update(extra or {})
    return env


def _node_alive(head: LocalClusterInfo, node_manager_port: int) -> bool:
    """Whether the head's dashboard lists the node of that raylet port as alive, with its resources known."""
    token = Path(head.token_path).read_text().strip()
    request = urllib.request.Request(
        f"{head.dashboard_url}/nodes?view=summary", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            data = json.loads(resp.read()).get("data", {})
    except (urllib.error.URLError, OSError, ValueError):
        return False
    for node in data.get("summary", []):
        raylet = node.get("raylet", {})
        if raylet.get("nodeManagerPort") == node_manager_port and str(raylet.get("state", "")).upper() == "ALIVE":
            return raylet.get("nodeId") in data.get("nodeLogicalResources", {})
    return False


def read_info(root: str | Path) -> LocalClusterInfo:
    """The state a started cluster left in ``root``."""
    path = Path(root) / STATE_FILE
    if not path.is_file():
        path = path.with_suffix(".stopped.json")  # left by `fedtwin cluster down`
    if not path.is_file():
        raise LocalClusterError(f"{root}: no {STATE_FILE}; not a folder made by `fedtwin cluster up`")
    return LocalClusterInfo(**json.loads(path.read_text()))


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    out = subprocess.run(["ps", "-eo", "pid=,pgid=,stat="], capture_output=True, text=True, timeout=30).stdout
    members = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3 and int(parts[1]) == pgid and not parts[2].startswith("Z"):
            members.append(int(parts[0]))
    return members


def is_running(info: LocalClusterInfo) -> bool:
    """True while any process of the cluster's group is alive and still ours."""
    return bool(group_members(info.pgid)) and _owns_group(info)


def stop_local_cluster(
    info: LocalClusterInfo,
    *,
    proc: subprocess.Popen | None = None,
    grace_s: float = 5.0,
    timeout_s: float = 30.0,
    remove: bool = False,
) -> int:
    """Stop the cluster's process group (SIGTERM, then SIGKILL); returns how many processes were signalled.

    Raises:
        LocalClusterError: the group no longer belongs to this cluster, or survives ``timeout_s``.
    """
    members = group_members(info.pgid)
    if members and not _owns_group(info):
        raise LocalClusterError(
            f"process group {info.pgid} does not look like the cluster in {info.root} any more; not touching it"
        )
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, timeout_s)):
        if not group_members(info.pgid):
            break
        try:
            os.killpg(info.pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and group_members(info.pgid):
            if proc is not None:
                proc.poll()  # reap our own child so it does not linger as a zombie
            time.sleep(0.2)
    if proc is not None:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
    left = group_members(info.pgid)
    if left:
        raise LocalClusterError(f"processes {left} of the cluster in {info.root} survived SIGKILL")
    state = Path(info.root) / STATE_FILE
    if remove:
        shutil.rmtree(info.root, ignore_errors=True)
    elif state.is_file():
        state.rename(state.with_suffix(".stopped.json"))
    return len(members)


def _owns_group(info: LocalClusterInfo) -> bool:
    """Some member's command line names our temp dir (guards against a recycled process-group id)."""
    for pid in group_members(info.pgid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            out = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, timeout=30)
            cmdline = out.stdout
        if info.root in cmdline:
            return True
    return False


def _wait_ready(info: LocalClusterInfo, proc: subprocess.Popen, timeout_s: float) -> None:
    token = Path(info.token_path).read_text().strip()
    request = urllib.request.Request(f"{info.dashboard_url}/api/jobs/", headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (Path(info.root) / "ray-start.log").read_text()[-2000:]
            raise LocalClusterError(f"`ray start` exited with {proc.returncode}; its log ends with:\n{tail}")
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    raise LocalClusterError(
        f"the cluster in {info.root} did not answer on {info.dashboard_url} within {timeout_s:.0f}s"
    )
