"""Fault drills: devices that raise or hang and processes SIGKILLed at given points of a federated run.

A drill is a plan kept outside the experiment's spec (a YAML file for ``fedtwin drill PLAN CONFIG``, or
a :class:`DrillPlan` for :func:`installed` in tests). Installing it sets the one fault hook production
code calls (:mod:`fedtwin.actors.federated.fault_hook`); without a drill that hook does nothing.

Plan keys (all optional)::

    fail_devices: [3]          # these devices' training raises
    hang_devices: [2]          # these devices' training sleeps hang_s seconds (past the round timeout)
    hang_s: 3600
    rounds: [1]                # the rounds device faults happen in; empty = every round
    kills:                     # SIGKILLs, each fired once (the retry after it runs normally)
      - {round: 3, host: 1, phase: fit, after_devices: 2}   # host 1 dies after training 2 of its devices
      - {round: 4, host: 0, phase: checkpoint}              # host 0 dies as round 4's checkpoint is gathered
      - {round: 2, target: server, phase: evaluate}         # the evaluator dies before the test evaluation
      - {round: 2, target: server, phase: server_pass}      # the FedDU server node dies before its pass

"Once" is kept in a ledger folder (one file per kill, created exclusively), so a host restarted after
its kill does not die again; the ledger lives on the driver's machine, so host kills are meant for
hosts on that machine (what the tests and ``benchmarks/drill_kills.py`` do).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fedtwin.actors.federated.fault_hook import FaultPoint
from fedtwin.orchestrator.config.loader import ConfigError, from_dict

logger = logging.getLogger(__name__)

HOST_PHASES = ("fit", "checkpoint")
SERVER_PHASES = ("evaluate", "server_pass")


@dataclass(frozen=True)
class Kill:
    """One SIGKILL of a drill: no clean-up, no warning.

    Attributes:
        round: the round it happens in.
        target: ``host`` (a device host) or ``server`` (the evaluator / FedDU server node).
        host: which device host (``target: host``).
        phase: ``fit`` (mid-fit, after training ``after_devices`` of its devices; a host with no device
            in that round is not killed) or ``checkpoint`` (as the driver gathers device state for the
            round's checkpoint) for a host; ``evaluate`` or ``server_pass`` for the server.
        after_devices: ``phase: fit``: devices the host trains before it dies (0 = before the first;
            at least its number of devices = after all of them, before it answers).
    """

    round: int
    target: Literal["host", "server"] = "host"
    host: int = 0
    phase: Literal["fit", "checkpoint", "evaluate", "server_pass"] = "fit"
    after_devices: int = 1

    def __post_init__(self) -> None:
        if self.round < 1:
            raise ValueError(f"round: must be >= 1, got {self.round}")
        if self.host < 0:
            raise ValueError(f"host: must be >= 0, got {self.host}")
        if self.after_devices < 0:
            raise ValueError(f"after_devices: must be >= 0, got {self.after_devices}")
        phases = HOST_PHASES if self.target == "host" else SERVER_PHASES
        if self.phase not in phases:
            raise ValueError(f"phase: {self.phase!r} is not a {self.target} phase (one of {', '.join(phases)})")


@dataclass(frozen=True)
class DrillPlan:
    """What a drill injects (see the module docstring for the keys)."""

    fail_devices: tuple[int, ...] = ()
    hang_devices: tuple[int, ...] = ()
    hang_s: float = 3600.0
    rounds: tuple[int, ...] = ()
    kills: tuple[Kill, ...] = ()

    @classmethod
    def from_mapping(cls, data: Any, where: str = "drill") -> DrillPlan:
        """Check and build a plan from a parsed YAML mapping (errors name ``where`` and the key)."""
        try:
            return from_dict(cls, data if data is not None else {}, "")
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> DrillPlan:
        """Read a plan file."""
        from fedtwin.orchestrator.config.files import read_mapping

        return cls.from_mapping(read_mapping(str(path), what="drill plan"), str(path))


def check_plan(plan: DrillPlan, spec: Any) -> None:
    """Raise a one-line ``ConfigError`` for a plan that cannot happen in ``spec``'s run."""
    rounds = spec.federation.num_rounds
    late = [k.round for k in plan.kills if k.round > rounds]
    if late:
        raise ConfigError(f"drill kills: round {late[0]} is after the last round ({rounds})")
    if not plan.kills:
        return
    if spec.resources.backend != "ray":
        raise ConfigError("drill kills: kills processes, so the run needs resources.backend: ray")
    hosts = spec.resources.hosts
    if hosts is not None:
        devices = spec.data.partition.devices if spec.data.path is None else None
        hosts = min(hosts, devices) if devices is not None else hosts
        bad = [k.host for k in plan.kills if k.target == "host" and k.host >= hosts]
        if bad:
            raise ConfigError(f"drill kills: host {bad[0]} does not exist (hosts are 0..{hosts - 1})")
    every = spec.run.checkpoint_every
    off = [k.round for k in plan.kills if k.phase == "checkpoint" and k.round % every and k.round != rounds]
    if off:
        raise ConfigError(
            f"drill kills: round {off[0]} is no checkpoint round (run.checkpoint_every: {every}); "
            "a kill at phase checkpoint needs one"
        )


class DrillHook:
    """The fault hook of one drill: picklable, called in the driver and in every device host."""

    def __init__(self, plan: DrillPlan, ledger: str) -> None:
        self.plan = plan
        self.ledger = ledger

    def __call__(self, point: FaultPoint, subject: Any) -> None:
        plan = self.plan
        if point.phase == "device":
            if not plan.rounds or point.round_num in plan.rounds:
                if point.device in plan.fail_devices:
                    raise RuntimeError(f"injected failure (drill fail_devices) in round {point.round_num}")
                if point.device in plan.hang_devices:
                    import time

                    time.sleep(plan.hang_s)
        for i, kill in enumerate(plan.kills):
            if kill.round != point.round_num or not self._due(kill, point) or not self._claim(i):
                continue
            if point.phase in ("device", "answer"):  # in the host's own process
                logger.warning("drill: host %s SIGKILLs itself after %d devices", point.host, point.trained)
                os.kill(os.getpid(), signal.SIGKILL)
            elif kill.target == "host":
                _kill_host(subject, kill.host)
            else:
                _kill_server(subject)

    @staticmethod
    def _due(kill: Kill, point: FaultPoint) -> bool:
        if point.phase == "device":
            return kill.phase == "fit" and kill.host == point.host and kill.after_devices == point.trained
        if point.phase == "answer":
            return kill.phase == "fit" and kill.host == point.host and kill.after_devices >= point.trained
        return kill.phase == point.phase

    def _claim(self, index: int) -> bool:
        """True exactly once per kill across all processes of the machine."""
        try:
            os.close(os.open(os.path.join(self.ledger, f"kill-{index}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True


@contextmanager
def installed(plan: DrillPlan, spec: Any = None) -> Iterator[DrillHook]:
    """Run the block with ``plan``'s faults injected into the federated runs this process starts.

    ``spec`` (optional) is checked against the plan first (:func:`check_plan`).
    """
    from fedtwin.orchestrator.recipes.federated.backend_common import set_fault_hook

    if spec is not None:
        check_plan(plan, spec)
    ledger = tempfile.mkdtemp(prefix="fedtwin-drill-")
    hook = DrillHook(plan, ledger)
    previous = set_fault_hook(hook)
    try:
        yield hook
    finally:
        set_fault_hook(previous)
        shutil.rmtree(ledger, ignore_errors=True)


def _kill_host(backend: Any, host_id: int) -> None:
    pid, hostname = backend.pool.place(host_id)
    _kill(backend.pool.slot_of(host_id), pid, hostname)


def _kill_server(backend: Any) -> None:
    from fedtwin.orchestrator.run.actor_calls import ActorCallError, get

    try:
        pid = get(backend.server.handle.ping.remote(), what="drill: ping the server", timeout_s=60.0)
    except ActorCallError:
        return  # already gone: the call after the hook finds out
    _kill(backend.server, int(pid), socket.gethostname())


def _kill(slot: Any, pid: int, hostname: str) -> None:
    """SIGKILL an actor's process when it runs on this machine (checked by its ``ray::`` title), else
    ``ray.kill`` with restart; both look the same to the driver."""
    if pid and hostname == socket.gethostname() and _is_ray_worker(pid):
        logger.warning("drill: SIGKILL %s (pid %d)", slot.name, pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return
    logger.warning("drill: ray.kill %s", slot.name)
    slot.kill(restart=True)


def _is_ray_worker(pid: int) -> bool:
    try:
        from fedtwin.orchestrator.run.reaper import load_psutil

        cmdline = load_psutil().Process(pid).cmdline()
    except Exception:  # noqa: BLE001 - gone, or not ours to inspect
        return False
    return bool(cmdline) and cmdline[0].startswith("ray::")
