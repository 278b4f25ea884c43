"""``fedtwin submit``: run any fedtwin command as a Ray job on a cluster and follow it to the end.

The project folder travels as the job's ``runtime_env.working_dir`` (without run outputs, data,
virtualenvs or VCS folders), so the cluster runs exactly the code on your laptop; Ray puts that folder
first on the job's ``PYTHONPATH``. The job's exit status becomes ours: 0 when it SUCCEEDED, the
entrypoint's own exit code when it FAILED (1 if unknown), 1 when it was STOPPED.

Every call to the job server is bounded by a timeout (Ray's client has none of its own).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

from fedtwin.pipelines.core.errors import FedtwinError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: gitignore-style patterns left out of the uploaded working dir (leading "/" = only at the top).
DEFAULT_EXCLUDES = (
    "/runs/",
    "/data/",
    "/sweeps/",
    "/.venv/",
    "/venv/",
    "/.git/",
    "/.ci/.venv/",
    "__pycache__/",
    "*.pyc",
    "*.egg-info/",
    ".pytest_cache/",
    ".mypy_cache/",
    ".ruff_cache/",
)
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
#: Seconds for one control call to the job server (status, info, connect).
CALL_TIMEOUT_S = 30.0


class JobError(FedtwinError):
    """The job server cannot be reached or refused the request."""


class JobFollowTimeout(FedtwinError):
    """We stopped following a job that is still running (it keeps running on the cluster)."""

    exit_code = 124


@dataclass(frozen=True)
class JobOutcome:
    """A finished (or, with ``wait=False``, a submitted) job."""

    job_id: str
    status: str
    exit_code: int
    message: str = ""


def job_address(address: str | None = None) -> str:
    """``address``, else ``RAY_API_SERVER_ADDRESS``, else an http(s) ``RAY_ADDRESS``, else the local default."""
    if address:
        if not address.startswith(("http://", "https://")):
            raise JobError(f"--address {address!r}: give the dashboard's job server URL, e.g. {DEFAULT_ADDRESS}")
        return address.rstrip("/")
    # RAY_ADDRESS may hold a GCS address (host:port) meant for drivers; only an http(s) URL is a job server.
    for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(name, "")
        if value.startswith(("http://", "https://")):
            return value.rstrip("/")
    return DEFAULT_ADDRESS


def runtime_env(working_dir: str | Path, excludes: Sequence[str] = DEFAULT_EXCLUDES) -> dict[str, Any]:
    """The job's runtime environment: the project folder, minus outputs and environments."""
    path = Path(working_dir).resolve()
    if not path.is_dir():
        raise JobError(f"--working-dir {working_dir}: not a folder")
    return {"working_dir": str(path), "excludes": list(excludes)}


def exit_code_of(status: str, driver_exit_code: int | None) -> int:
    """Our exit status for a terminal job status."""
    if status == "SUCCEEDED":
        return 0
    if status == "FAILED" and driver_exit_code:
        return int(driver_exit_code)
    return 1


def submit(
    command: Sequence[str],
    *,
    address: str | None = None,
    working_dir: str | Path = ".",
    wait: bool = True,
    timeout_s: float = 24 * 3600.0,
    upload_timeout_s: float = 600.0,
    out: TextIO | None = None,
    submission_id: str | None = None,
) -> JobOutcome:
    """Submit ``fedtwin <command...>`` and (with ``wait``) stream its logs to ``out`` until it ends.

    Raises:
        JobError: the server is unreachable, refuses the token, or rejects the job.
        JobFollowTimeout: ``timeout_s`` passed while the job was still running.
    """
    if not command:
        raise JobError("submit: give the fedtwin command after --, e.g. fedtwin submit -- run my.yaml")
    url = job_address(address)
    client = _client(url)
    entrypoint = "fedtwin " + shlex.join(command)
    job_id = _bounded(
        lambda: client.submit_job(
            entrypoint=entrypoint, runtime_env=runtime_env(working_dir), submission_id=submission_id
        ),
        upload_timeout_s,
        f"submitting to {url} (uploading the working dir)",
    )
    logger.info("submitted %s as %s", entrypoint, job_id)
    if not wait:
        return JobOutcome(job_id, "PENDING", 0)
    deadline = time.monotonic() + timeout_s
    if out is not None:
        asyncio.run(_follow_logs(client, job_id, out, deadline))
    status = _wait_terminal(client, job_id, deadline)
    info = _bounded(lambda: client.get_job_info(job_id), CALL_TIMEOUT_S, f"job info of {job_id}")
    code = exit_code_of(status, getattr(info, "driver_exit_code", None))
    return JobOutcome(job_id, status, code, str(getattr(info, "message", "") or ""))


def _client(url: str) -> Any:
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return _bounded(lambda: JobSubmissionClient(url), CALL_TIMEOUT_S, f"connecting to {url}")
    except AuthenticationError as err:
        raise JobError(
            f"{url}: the cluster wants a token ({str(err).splitlines()[0]}); export RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN_PATH=<the cluster's token file> (default ~/.ray/auth_token)"
        ) from None
    except (ConnectionError, RuntimeError) as err:
        raise JobError(
            f"cannot reach the Ray job server at {url} ({str(err).splitlines()[0]}); is the cluster up and "
            "its dashboard port forwarded (`ray dashboard cluster.yaml`)?"
        ) from None


def _wait_terminal(client: Any, job_id: str, deadline: float) -> str:
    from ray.job_submission import JobStatus

    while True:
        status = _bounded(lambda: client.get_job_status(job_id), CALL_TIMEOUT_S, f"status of {job_id}")
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status.value if hasattr(status, "value") else status)
        if time.monotonic() > deadline:
            raise JobFollowTimeout(
                f"job {job_id} is still {status} after the follow timeout; it keeps running: "
                f"`ray job logs --follow {job_id}` to watch, `ray job stop {job_id}` to stop it"
            )
        time.sleep(1.0)


async def _follow_logs(client: Any, job_id: str, out: TextIO, deadline: float, poll_s: float = 10.0) -> None:
    """Copy the job's log stream to ``out`` until it closes, the job ends, or the deadline passes."""
    from ray.job_submission import JobStatus

    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for chunk in client.tail_job_logs(job_id):
                await queue.put(chunk)
        except Exception as err:  # a dropped stream is not fatal: the final status still decides
            logger.warning("log stream of %s ended early: %s", job_id, err)
        finally:
            await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                chunk = await asyncio.wait_for(queue.get(), timeout=min(poll_s, remaining))
            except TimeoutError:
                status = await asyncio.to_thread(
                    _bounded, lambda: client.get_job_status(job_id), CALL_TIMEOUT_S, f"status of {job_id}"
                )
                if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) and queue.empty():
                    return
                continue
            if chunk is None:
                return
            out.write(chunk)
            out.flush()
    finally:
        task.cancel()


def _bounded(fn: Callable[[], T], timeout_s: float, what: str) -> T:
    """Run a blocking client call in a daemon thread; give up after ``timeout_s``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller below
            box["error"] = err

    thread = threading.Thread(target=target, name="fedtwin-job-call", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise JobError(f"{what}: no answer within {timeout_s:.0f}s; check the address and the cluster")
    if "error" in box:
        raise box["error"]
    return box["value"]
