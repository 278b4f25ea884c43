"""The device hosts of a Ray run, kept alive: restarts, replacements and the driver's copy of device state.

A host keeps its devices' local state (FedDUM's device momentum buffers, round counters) in its process.
When that process dies, Ray restarts it (``resources.max_restarts``) by running the constructor again,
or the pool starts a replacement with the same host id once the restarts are used up. Either way the
devices come back empty, so the pool keeps what it needs to rebuild them:

``base``
    every device's state at the last checkpoint (at the start of the run: empty; after ``--resume``:
    the checkpoint's), one object per host in the object store, owned by the driver so that it
    outlives the hosts;
``rounds``
    for each round since, the references to that round's global state and payload and the tasks of the
    devices that succeeded in it, by host.

A host that came back is *synced* before it gets more work: ``load_device_states(base)``, then
``replay`` of each logged round, which trains again only the devices that keep local state, with the
same weights, seed stream and starting buffers, hence the same buffers bit for bit. Gathering device
state for a checkpoint (:meth:`HostPool.gather_states`) makes the gathered states the new base and
clears the log, so a replay never covers more than ``run.checkpoint_every`` rounds.

Hosts answer ``StaleHostError`` when the token the driver synced with is not theirs (they restarted
between two calls); that counts as a loss like any other.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import ray

from fedtwin.actors.federated.device_host import StaleHostError
from fedtwin.orchestrator.run.actor_calls import LOST, ActorCallError, ActorSlot, call, classify, first_line, get
from fedtwin.pipelines.federated.messages import FitTask

logger = logging.getLogger(__name__)

#: What a host answers when it restarted since the driver synced it.
HOST_LOST = (StaleHostError,)


@dataclass(frozen=True)
class LoggedRound:
    """What a restarted host needs to replay one round: its inputs and the devices that succeeded."""

    state_ref: Any
    payload_ref: Any
    tasks_by_host: Mapping[int, Sequence[FitTask]]


class HostPool:
    """The host actors (one :class:`ActorSlot` each), their sync tokens and the device-state log.

    Args:
        make_host: starts the actor of host ``h`` (also used for replacements).
        num_hosts: how many hosts.
        timeout_s: how long control calls (sync, gather) may take.
        retries: attempts after the first for a host call whose host was lost (``federation.device_retries``).
    """

    def __init__(self, make_host: Callable[[int], Any], num_hosts: int, timeout_s: float, retries: int) -> None:
        self.slots = [ActorSlot(f"host {h}", make_host(h), start=partial(make_host, h)) for h in range(num_hosts)]
        self.timeout_s = timeout_s
        self.retries = retries
        self.incarnation: dict[int, str] = {}
        self._where: dict[int, tuple[int, str]] = {}  # host -> (pid, hostname), for drill kills
        self._base: dict[int, Any] = {}  # host -> object ref of {device: state}; missing = all empty
        self._rounds: list[LoggedRound] = []
        self._stale: set[int] = set()

    def start(self, deadline: float) -> None:
        """Wait for every host's constructor and note its token."""
        infos = get(
            [s.handle.info.remote() for s in self.slots],
            what="starting the device hosts",
            timeout_s=max(0.001, deadline - time.monotonic()),
        )
        for h, info in enumerate(infos):
            self._note(h, info)

    def handle(self, host_id: int) -> Any:
        """The current actor handle of host ``host_id``."""
        return self.slots[host_id].handle

    @property
    def comebacks(self) -> int:
        """How often hosts came back after a loss (Ray restarts and replacements), over the run."""
        return sum(s.comebacks for s in self.slots)

    # ------------------------------------------------------------------ device-state log
    def log_round(self, state_ref: Any, payload_ref: Any, succeeded: Mapping[int, Sequence[FitTask]]) -> None:
        """Remember a finished round's inputs and the devices that succeeded, by host."""
        self._rounds.append(LoggedRound(state_ref, payload_ref, {h: list(t) for h, t in succeeded.items() if t}))

    def set_base(self, states_by_host: Mapping[int, Mapping[int, Any]]) -> None:
        """Make ``states_by_host`` the base (a checkpoint, a resume) and clear the round log."""
        self._base = {h: ray.put(dict(states)) for h, states in states_by_host.items()}
        self._rounds = []

    # ------------------------------------------------------------------ recovery
    def mark_stale(self, host_id: int) -> None:
        """Host ``host_id`` may hold device state the driver does not know (or none): sync before its next call."""
        self._stale.add(host_id)

    def recover(self, host_id: int, deadline: float) -> None:
        """Wait until host ``host_id`` is back (restart or replacement), then sync it.

        Raises:
            ActorCallError: it did not come back, or kept getting lost while being synced.
        """
        slot = self.slots[host_id]
        for _ in range(self.retries + 1):
            slot.wait_back(deadline)
            try:
                self.sync(host_id, deadline)
                return
            except Exception as err:  # noqa: BLE001 - a loss while syncing: wait for it again
                if classify(err, HOST_LOST) != LOST:
                    raise ActorCallError(slot.name, f"restoring its devices failed ({first_line(err)})") from None
                logger.warning("%s was lost again while its devices were restored", slot.name)
        raise ActorCallError(slot.name, "kept getting lost while its devices were restored")

    def ensure_synced(self, host_id: int, deadline: float) -> None:
        """Sync host ``host_id`` if it is marked stale (recovering it if it is lost meanwhile)."""
        if host_id not in self._stale:
            return
        try:
            self.sync(host_id, deadline)
        except Exception as err:  # noqa: BLE001 - lost: wait for it to come back
            if classify(err, HOST_LOST) != LOST:
                raise ActorCallError(f"host {host_id}", f"restoring its devices failed ({first_line(err)})") from None
            self.recover(host_id, deadline)

    def sync(self, host_id: int, deadline: float) -> None:
        """Rebuild host ``host_id``'s devices: the base, then the logged rounds; note its new token.

        Raises:
            RayError: the host was lost meanwhile (the caller decides whether to wait and try again).
        """
        self._stale.add(host_id)  # until the whole sync has landed
        handle = self.handle(host_id)
        refs = [handle.load_device_states.remote(self._base.get(host_id, {}))]
        for logged in self._rounds:
            tasks = logged.tasks_by_host.get(host_id)
            if tasks:
                refs.append(handle.replay.remote(logged.state_ref, tasks, logged.payload_ref))
        refs.append(handle.info.remote())
        results = ray.get(refs, timeout=max(0.001, deadline - time.monotonic()))
        replayed = sum(results[1:-1])
        self._note(host_id, results[-1])
        self._stale.discard(host_id)
        logger.info(
            "host %d synced: base + %d rounds (%d device trainings replayed)", host_id, len(results) - 2, replayed
        )

    def _note(self, host_id: int, info: Mapping[str, Any]) -> None:
        self.incarnation[host_id] = str(info["incarnation"])
        self._where[host_id] = (int(info["pid"]), str(info["hostname"]))

    # ------------------------------------------------------------------ calls
    def call(self, host_id: int, method: str, *args: Any, deadline: float, **kwargs: Any) -> Any:
        """One guarded call of a host method that takes the sync token (``incarnation``)."""
        self.ensure_synced(host_id, deadline)
        return call(
            self.slots[host_id],
            method,
            *args,
            timeout_s=self.timeout_s,
            retries=self.retries,
            lost=HOST_LOST,
            deadline=deadline,
            on_back=lambda _slot: self.sync(host_id, deadline),
            dynamic=lambda: {"incarnation": self._token(host_id)},
            **kwargs,
        )

    def _token(self, host_id: int) -> str:
        """The sync token to send: a host still marked stale (a sync that did not finish) always refuses."""
        return "unsynced" if host_id in self._stale else self.incarnation[host_id]

    def gather_states(self, deadline: float) -> dict[int, dict[int, Any]]:
        """Every host's device states (in parallel; a lost host is recovered and asked again); rebases."""
        refs = {}
        for h in range(len(self.slots)):
            if h in self._stale:
                continue
            refs[h] = self.handle(h).device_states.remote(incarnation=self.incarnation[h])
        parts: dict[int, dict[int, Any]] = {}
        for h in range(len(self.slots)):
            if h in refs:
                try:
                    parts[h] = ray.get(refs[h], timeout=max(0.001, deadline - time.monotonic()))
                    continue
                except Exception as err:  # noqa: BLE001 - classified; a loss is recovered below
                    if classify(err, HOST_LOST) != LOST:
                        raise ActorCallError(f"host {h}: device_states", first_line(err)) from None
                    logger.warning("host %d was lost while gathering device state (%s)", h, first_line(err))
                    self.recover(h, deadline)
            parts[h] = self.call(h, "device_states", deadline=deadline)
        self.set_base(parts)
        return parts

    # ------------------------------------------------------------------ drills and shutdown
    def kill_process(self, host_id: int) -> None:
        """A drill's kill: SIGKILL host ``host_id``'s process (``ray.kill`` when it runs on another machine)."""
        pid, hostname = self._where.get(host_id, (0, ""))
        kill_actor_process(self.slots[host_id], pid, hostname)

    def shutdown(self) -> None:
        """Kill every host for good."""
        for slot in self.slots:
            slot.kill(restart=False)


def kill_actor_process(slot: ActorSlot, pid: int, hostname: str) -> None:
    """SIGKILL an actor's process when it runs on this machine (checked by its ``ray::`` title), else ``ray.kill``.

    Both look the same to the driver: the process is gone without a word and Ray restarts it.
    """
    if pid and hostname == socket.gethostname() and _is_ray_worker(pid):
        logger.warning("chaos: SIGKILL %s (pid %d)", slot.name, pid)
        try:
            os.kill(pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            return
    logger.warning("chaos: ray.kill %s", slot.name)
    slot.kill(restart=True)


def _is_ray_worker(pid: int) -> bool:
    try:
        from fedtwin.orchestrator.run.reaper import load_psutil

        cmdline = load_psutil().Process(pid).cmdline()
    except Exception:  # noqa: BLE001 - gone, or not ours to inspect
        return False
    return bool(cmdline) and cmdline[0].startswith("ray::")
