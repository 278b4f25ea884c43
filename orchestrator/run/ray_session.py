"""Connecting to Ray: an embedded local instance by default, or an existing cluster.

``address`` (or ``RAY_ADDRESS``) attaches to a running cluster (``auto``, ``ray://...`` or
``host:port``). Without one, a private local Ray starts inside this process with the dashboard off
(or on 127.0.0.1 when asked). When Ray is already initialised (tests, Tune trials, Ray jobs) it is reused.

An embedded Ray is shut down by :meth:`RaySession.close` on every exit the driver sees (success, an
error, Ctrl-C), and a watcher process (:mod:`fedtwin.orchestrator.run.reaper`) removes whatever of it is left
when the driver dies without closing it (SIGKILL): no Ray process of the run outlives it.

With ``route_logs``, an embedded Ray's own messages stay off the terminal and go to the run's
``ray.log`` (:mod:`fedtwin.orchestrator.run.ray_logs`); with logging at INFO (``fedtwin -v``) they are
shown as well. Attaching is bounded by ``ray.connect_timeout_s`` and fails with one line
(:mod:`fedtwin.orchestrator.run.ray_attach`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import ray

from fedtwin.orchestrator.config.spec import RayConfig
from fedtwin.orchestrator.run import phases
from fedtwin.orchestrator.run.ray_logs import RayLogSink

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RaySession:
    """What we connected to, and whether we own (and must shut down) it."""

    owned: bool
    address: str | None
    cluster_resources: dict[str, float]
    reaper: Any = field(default=None, compare=False, repr=False)
    logs: RayLogSink | None = field(default=None, compare=False, repr=False)  # embedded Ray's messages

    def close(self) -> None:
        """Shut Ray down only if this session started it, then let the watcher remove any leftover."""
        if not self.owned:
            return
        try:
            if ray.is_initialized():
                ray.shutdown()
        finally:
            if self.logs is not None:
                self.logs.close()
            if self.reaper is not None:
                from fedtwin.orchestrator.run.reaper import stop_reaper

                stop_reaper(self.reaper)


def connect(cfg: RayConfig, address: str | None = None, *, route_logs: bool = False) -> RaySession:
    """Initialise or reuse Ray according to ``cfg`` (``address`` beats ``cfg.address`` beats ``RAY_ADDRESS``).

    ``route_logs``: an embedded Ray's messages go to ``session.logs`` (attach it to the run folder)
    instead of the terminal, unless logging is at INFO or below.

    Raises:
        RayUnreachableError: the address does not lead to a Ray cluster that accepts this client, within
            ``cfg.connect_timeout_s`` (one line; exit 2).
    """
    if ray.is_initialized():
        return RaySession(False, None, dict(ray.cluster_resources()))
    address = address or cfg.address or os.environ.get("RAY_ADDRESS") or None
    if address:
        from fedtwin.orchestrator.run.ray_attach import attach

        with phases.phase(f"connecting to Ray at {address}"):
            attach(address, cfg.connect_timeout_s, logging_level=logging.WARNING, log_to_driver=True)
        return RaySession(False, address, dict(ray.cluster_resources()))
    logs = RayLogSink(show=logging.getLogger().isEnabledFor(logging.INFO)) if route_logs else None
    kwargs: dict[str, Any] = {
        "num_cpus": cfg.num_cpus or os.cpu_count() or 1,
        "include_dashboard": cfg.dashboard,
        "logging_level": logging.INFO if logs is not None else logging.WARNING,
        "configure_logging": True,
    }
    if cfg.dashboard:
        kwargs["dashboard_host"] = "127.0.0.1"
    if cfg.object_store_mb:
        kwargs["object_store_memory"] = cfg.object_store_mb * 1024 * 1024
    reaper = None
    try:  # before ray.init: a driver killed while Ray starts is covered too
        from fedtwin.orchestrator.run.reaper import start_reaper

        reaper = start_reaper()
    except OSError as err:  # clean-up after a driver crash is a convenience, not a reason to fail
        logger.warning("could not start the embedded Ray's clean-up watcher: %s", err)
    session = RaySession(True, None, {}, reaper, logs)
    try:
        with phases.phase("starting Ray"):
            if logs is not None:
                logs.install()
            ray.init(**kwargs)
            if logs is not None:
                logs.take_worker_output()
        return RaySession(True, None, dict(ray.cluster_resources()), reaper, logs)
    except BaseException:  # Ctrl-C or a failure while Ray starts: leave nothing running
        session.close()
        raise
