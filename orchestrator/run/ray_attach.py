"""Attaching to an existing Ray cluster, or one line saying why not, within ``ray.connect_timeout_s``.

``ray.init(address=...)`` on its own retries for minutes (forever, for a port that answers but is not a
Ray GCS) and prints the C++ GCS client's retry lines on the terminal meanwhile; a client whose token the
cluster rejects gets twenty seconds of such lines, then a ``ConnectionError`` that does not mention the
token. Here, first a TCP probe of the GCS (or Ray Client) port says at once when nothing listens there;
then ``ray.init`` runs in a helper thread with file descriptor 2 sent to a temporary file, which is read
as it grows: a token the cluster rejects is reported as soon as the first rejection shows, and no
answer within the time limit is reported when it runs out. What Ray printed during a successful attach
is passed on to stderr (an attached cluster's warnings are the user's business).

When the limit runs out, ``ray.init`` is still running in its thread and cannot be stopped from outside:
:class:`RayUnreachableError` has ``hard_exit`` set, and the command line ends the process at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fedtwin.pipelines.core.errors import FedtwinError

#: Fallback hint appended to every message: the way back to a working run.
_EMBEDDED_HINT = "or drop --address/RAY_ADDRESS to run on an embedded local Ray"
#: Signs, in what Ray's GCS client printed, that the cluster refused this client's token.
_TOKEN_SIGNS = ("InvalidAuthToken", "Unauthenticated", "token is missing or incorrect")
_TOKEN_HINT = (
    "the cluster rejected this client's authentication token; give the cluster's token "
    "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, with RAY_AUTH_MODE=token)"
)


class RayUnreachableError(FedtwinError):
    """No Ray cluster to attach to at the address given (exit 2)."""

    #: Set when ``ray.init`` is still running in its thread: the caller should end the process.
    hard_exit = False


def attach(address: str, timeout_s: float, **init_kwargs: Any) -> None:
    """``ray.init(address=address, **init_kwargs)`` within ``timeout_s`` seconds, or one-line errors.

    Raises:
        RayUnreachableError: nothing listens at the address, the cluster rejected the token, Ray
            refused to connect, or no answer came within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    host, port = _endpoint(address)
    if host is not None and port is not None:
        _probe(address, host, port, deadline, timeout_s)
    _init_bounded(address, deadline, timeout_s, init_kwargs)


def _endpoint(address: str) -> tuple[str | None, int | None]:
    """The ``(host, port)`` a client connects to first; ``auto`` is looked up as Ray would."""
    target = address
    if address.startswith("ray://"):
        target = address[len("ray://") :].split("/", 1)[0]
    elif address in ("auto", "local"):
        if address == "local":
            return None, None
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            target = canonicalize_bootstrap_address_or_die(address)
        except ConnectionError as err:
            raise RayUnreachableError(
                f"ray address 'auto': no running Ray cluster found on this machine ({_first_line(err)}); "
                f"start one with `ray start --head` or `fedtwin cluster up`, give its address, {_EMBEDDED_HINT}"
            ) from None
        except (ImportError, AttributeError):  # Ray's lookup moved: let ray.init find it
            return None, None
    elif "://" in address:
        raise RayUnreachableError(
            f"ray address {address!r}: expected HOST:PORT (the head's GCS port, 6379 by default), "
            f"ray://HOST:PORT or auto, {_EMBEDDED_HINT}"
        )
    host, sep, port_text = target.rpartition(":")
    if not sep:
        host, port_text = target, "6379"
    host = host.strip("[]")  # [::1]:6379
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RayUnreachableError(
            f"ray address {address!r}: {port_text!r} is no port number; expected HOST:PORT, {_EMBEDDED_HINT}"
        )
    return host, int(port_text)


def _probe(address: str, host: str, port: int, deadline: float, timeout_s: float) -> None:
    """A TCP connection to ``host:port``, or a one-line error saying what failed."""
    where = f"ray address {address!r}"
    check = f"check that the cluster is running (`ray status --address {host}:{port}`) and the host and port"
    try:
        with socket.create_connection((host, port), timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
            return
    except socket.gaierror as err:
        raise RayUnreachableError(
            f"{where}: unknown host {host!r} ({err.strerror}); {check}, {_EMBEDDED_HINT}"
        ) from None
    except TimeoutError:
        why = f"no answer from {host}:{port} within {min(5.0, timeout_s):.0f}s (a firewall, or the wrong host?)"
    except OSError as err:
        why = f"cannot reach {host}:{port} ({err.strerror or err})"
    raise RayUnreachableError(f"{where}: {why}; {check}, {_EMBEDDED_HINT}")


def _init_bounded(address: str, deadline: float, timeout_s: float, init_kwargs: dict[str, Any]) -> None:
    import ray

    outcome: dict[str, BaseException | None] = {}

    def target() -> None:
        try:
            ray.init(address=address, **init_kwargs)
            outcome["error"] = None
        except BaseException as err:  # noqa: BLE001 (handed to the waiting thread)
            outcome["error"] = err

    # ray.init sets this handler itself when called from the main thread, and warns in any other thread
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    worker_logger = logging.getLogger("ray._private.worker")
    not_main = _Without("SIGTERM handler is not set")
    worker_logger.addFilter(not_main)
    try:
        with _stderr_captured() as captured:
            thread = threading.Thread(target=target, name="fedtwin-ray-attach", daemon=True)
            thread.start()
            while thread.is_alive() and time.monotonic() < deadline:
                thread.join(0.2)
                if any(sign in captured.text() for sign in _TOKEN_SIGNS):
                    break
            printed = captured.text()
    finally:
        worker_logger.removeFilter(not_main)
    where = f"ray address {address!r}"
    if any(sign in printed for sign in _TOKEN_SIGNS):
        err = RayUnreachableError(f"{where}: {_TOKEN_HINT}")
        err.hard_exit = thread.is_alive()
        raise err
    if thread.is_alive():
        err = RayUnreachableError(
            f"{where}: no Ray cluster answered within {timeout_s:g}s (ray.connect_timeout_s); check that HOST:PORT "
            f"is the head's GCS port (6379 by default; not the dashboard's 8265) and that the cluster is healthy "
            f"(`ray status`), {_EMBEDDED_HINT}"
        )
        err.hard_exit = True
        raise err
    error = outcome.get("error")
    if error is not None:
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise error
        raise RayUnreachableError(f"{where}: cannot connect ({_first_line(error)}); {_EMBEDDED_HINT}") from None
    if printed.strip():  # what Ray said while attaching, e.g. a version mismatch warning
        sys.stderr.write(printed if printed.endswith("\n") else printed + "\n")
        sys.stderr.flush()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    sys.exit(signum)


class _Without(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


class _Captured:
    def __init__(self, path: str) -> None:
        self.path = path

    def text(self) -> str:
        try:
            with open(self.path, errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""


@contextmanager
def _stderr_captured() -> Iterator[_Captured]:
    """Send file descriptor 2 (Python's and the C++ libraries' stderr) to a temporary file, then back."""
    fd, path = tempfile.mkstemp(prefix="fedtwin-ray-attach-", suffix=".log")
    for handler in logging.getLogger().handlers:
        flush = getattr(handler, "flush", None)
        if flush is not None:
            flush()
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(fd, 2)
        yield _Captured(path)
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
        os.unlink(path)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
