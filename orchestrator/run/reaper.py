"""Clean-up of an embedded Ray after its driver is gone, whatever way it went (also SIGKILL).

An embedded Ray (``ray.init()`` without an address) runs as children of the driver: ``gcs_server``,
``raylet``, monitors, the dashboard and runtime-env agents, and the workers. ``ray.shutdown()`` stops
them on a normal exit. When the driver is SIGKILLed, Ray's own fate-sharing stops the GCS, the raylet
and the workers, but the ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent`` processes stay behind,
orphaned (they try to report the raylet's death to the dead GCS and never exit).

So :func:`start_reaper` starts this module as a small watcher process in its own session (Ctrl-C in
the terminal does not reach it). It holds the read end of a pipe whose write end only the driver has;
while the driver lives it records the driver's Ray descendants (pid and start time, by their ``ray``
command lines) every half second. When the pipe reaches end-of-file (the driver exited, crashed, was
killed, or closed the pipe after ``ray.shutdown()``), it waits ``grace`` seconds, then SIGKILLs every
recorded process that is still the same process, and exits. It never touches a process that was not
a Ray descendant of its driver.

What it cannot cover: the watcher itself being SIGKILLed together with the driver (e.g. a kill of
every process of the user, the OOM killer choosing it, a reboot). For that case ``docs/failures.md``
gives the clean-up command.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

POLL_S = 0.5


def load_psutil() -> Any:
    """``psutil``: installed, or the copy Ray ships in ``ray/thirdparty_files`` (without importing Ray)."""
    try:
        import psutil
    except ImportError:
        import importlib.util

        spec = importlib.util.find_spec("ray")
        if spec is None or not spec.submodule_search_locations:
            raise
        sys.path.append(os.path.join(next(iter(spec.submodule_search_locations)), "thirdparty_files"))
        import psutil
    return psutil


def start_reaper(grace_s: float = 1.0) -> Any:
    """Start the watcher for this process's embedded Ray; returns the ``Popen`` (close its stdin to reap now)."""
    return subprocess.Popen(
        [sys.executable, "-m", "fedtwin.orchestrator.run.reaper", str(os.getpid()), str(grace_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # out of the terminal's process group: Ctrl-C must not stop the clean-up
        close_fds=True,
        cwd=os.getcwd(),
    )


def stop_reaper(proc: Any, timeout_s: float = 10.0) -> None:
    """Tell the watcher the driver is done (after ``ray.shutdown()``) and wait for its clean-up."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=timeout_s)
    except Exception:  # noqa: BLE001 - a watcher that does not answer is stopped; the run is over anyway
        proc.kill()


def _is_ray(cmdline: list[str]) -> bool:
    if not cmdline:
        return False
    if cmdline[0].startswith("ray::"):
        return True
    joined = " ".join(cmdline[:3])
    return f"{os.sep}ray{os.sep}" in joined  # gcs_server, raylet, dashboard, monitors (inside the ray package)


def _ray_descendants(driver: Any, me: int) -> dict[int, float]:
    psutil = load_psutil()

    found: dict[int, float] = {}
    try:
        children = driver.children(recursive=True)
    except psutil.Error:
        return found
    for child in children:
        try:
            if child.pid != me and _is_ray(child.cmdline()):
                found[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return found


def _kill(recorded: dict[int, float]) -> int:
    psutil = load_psutil()

    killed = 0
    for pid, started in recorded.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) > 0.01:
                continue  # the pid was reused by someone else's process
            proc.kill()
            killed += 1
        except psutil.Error:
            continue
    return killed


def main(argv: list[str]) -> int:
    """``python -m fedtwin.orchestrator.run.reaper DRIVER_PID GRACE_S``; stdin is the driver's pipe."""
    psutil = load_psutil()

    driver_pid, grace = int(argv[0]), float(argv[1])
    try:
        driver = psutil.Process(driver_pid)
    except psutil.Error:
        return 0
    me = os.getpid()
    recorded: dict[int, float] = {}
    done = threading.Event()

    def wait_for_eof() -> None:
        try:
            while sys.stdin.buffer.read(1024):
                pass
        finally:
            done.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    while not done.wait(POLL_S):
        recorded.update(_ray_descendants(driver, me))
    recorded.update(_ray_descendants(driver, me))  # the driver may still be alive after closing the pipe
    time.sleep(grace)  # Ray's own shutdown and fate-sharing first
    _kill(recorded)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
