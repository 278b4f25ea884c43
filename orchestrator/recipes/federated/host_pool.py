"""The device hosts of a Ray run, kept alive: restarts, replacements and the driver's copy of device state.

A host keeps its devices' local state (FedDUM's device momentum buffers, round counters) in its process.
When that process dies, Ray restarts it (``resources.max_restarts``) by running the constructor again,
or the pool starts a replacement with the same host id once the restarts are used up. Either way the
devices come back empty, so the pool keeps what it needs to rebuild them:

``base``
    every device's state at the last checkpoint (at the start of the run: empty; after ``--resume``:
    the checkpoint's), read from that checkpoint's files on the driver's disk one chunk at a time
    (:mod:`~fedtwin.orchestrator.recipes.federated.device_base`), so the driver never holds it whole;
``rounds``
    for each round since, the references to that round's global state and payload and the tasks of the
    devices that succeeded in it, by host.

A host that came back is *synced* before it gets more work: ``load_device_states(base)``, then
``replay`` of each logged round, which trains again only the devices that keep local state, with the
same weights, seed stream and starting buffers, hence the same buffers bit for bit. A checkpoint
streams device state from the hosts to disk chunk by chunk (:meth:`HostPool.write_states`); once it is
complete it becomes the new base and the log is cleared (:meth:`HostPool.set_base`), so a replay never
covers more than ``run.checkpoint_every`` rounds.

Hosts answer ``StaleHostError`` when the token the driver synced with is not theirs (they restarted
between two calls); that counts as a loss like any other.

Hosts that cannot be placed again. A host id is two things: a fold slot with a fixed set of devices
(``devices_of``), and the actor process that serves them. Normally each actor serves its own host id.
When a lost actor is not back within :data:`PLACEMENT_WAIT_S` (its node is gone and no other node has
room for it), the pool *routes* its host ids to the live actor serving the fewest, which takes their
devices (``DeviceHost.serve``), rebuilt from the same base and log as after a restart, and trains them
in separate calls, one per host id: each host id still returns its own partial sum and folds in its own
place, so the weights are those of a run without the loss. The lost actor stays asked for (Ray's
restart, or a replacement); once it answers (a node with room joined), :meth:`HostPool.reclaim` gives
its host ids back to it at the start of a round. ``hosts_live`` (actors serving) goes in every round's
record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import ray

from fedtwin.actors.federated.device_host import StaleHostError
from fedtwin.orchestrator.recipes.federated.device_base import DeviceBase, EmptyBase
from fedtwin.orchestrator.run.actor_calls import LOST, ActorCallError, ActorSlot, call, classify, first_line, get
from fedtwin.pipelines.federated.messages import FitTask

logger = logging.getLogger(__name__)

#: What a host answers when it restarted since the driver synced it.
HOST_LOST = (StaleHostError,)

#: How long a lost host may take to come back (Ray's restart or a replacement) before its devices move
#: to the live hosts: seconds, counted from when the driver starts waiting for it.
PLACEMENT_WAIT_S = 30.0


@dataclass(frozen=True)
class LoggedRound:
    """What a restarted host needs to replay one round: its inputs and the devices that succeeded."""

    state_ref: Any
    payload_ref: Any
    tasks_by_host: Mapping[int, Sequence[FitTask]]


class HostPool:
    """The host actors (one :class:`ActorSlot` each), their sync tokens, the routing of host ids to
    actors, and the device-state log.

    Host ids (``host``) name fold slots and their devices; slot indexes (``slot``) name actors. Slot
    ``h`` starts as host ``h``'s actor; :attr:`route` maps each host id to the slot serving it now.

    Args:
        make_host: starts the actor of host ``h`` (also used for replacements).
        num_hosts: how many hosts.
        num_devices: devices of the partition.
        timeout_s: how long control calls (sync, gather) may take.
        retries: attempts after the first for a host call whose host was lost (``federation.device_retries``).
    """

    def __init__(
        self, make_host: Callable[[int], Any], num_hosts: int, num_devices: int, timeout_s: float, retries: int
    ) -> None:
        self.slots = [ActorSlot(f"host {h}", make_host(h), start=partial(make_host, h)) for h in range(num_hosts)]
        self.num_devices = num_devices
        self.timeout_s = timeout_s
        self.retries = retries
        self.route = list(range(num_hosts))
        self.incarnation: dict[int, str] = {}  # slot -> token of the process the driver synced with
        self._where: dict[int, tuple[int, str]] = {}  # slot -> (pid, hostname)
        self._base: DeviceBase = EmptyBase()  # the devices' state at the last checkpoint
        self._rounds: list[LoggedRound] = []
        self._stale: set[int] = set()  # slots to sync before their next call
        self._probes: dict[int, Any] = {}  # displaced slot -> pending readiness probe
        self._lost_since: dict[int, float] = {}  # slot -> when it was first found lost (not back since)

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
        """The actor handle serving host ``host_id`` now."""
        return self.slots[self.route[host_id]].handle

    def slot_of(self, host_id: int) -> ActorSlot:
        """The slot of the actor serving host ``host_id`` now."""
        return self.slots[self.route[host_id]]

    def place(self, host_id: int) -> tuple[int, str]:
        """``(pid, hostname)`` of the process serving host ``host_id``, as it last reported."""
        return self._where.get(self.route[host_id], (0, ""))

    def served(self, slot: int) -> list[int]:
        """The host ids slot ``slot``'s actor serves."""
        return [h for h, s in enumerate(self.route) if s == slot]

    @property
    def live(self) -> int:
        """How many actors serve hosts now (``hosts_live`` in round records)."""
        return len(set(self.route))

    @property
    def comebacks(self) -> int:
        """How often hosts came back after a loss (Ray restarts and replacements), over the run."""
        return sum(s.comebacks for s in self.slots)

    # ------------------------------------------------------------------ device-state log
    def log_round(self, state_ref: Any, payload_ref: Any, succeeded: Mapping[int, Sequence[FitTask]]) -> None:
        """Remember a finished round's inputs and the devices that succeeded, by host."""
        self._rounds.append(LoggedRound(state_ref, payload_ref, {h: list(t) for h, t in succeeded.items() if t}))

    def set_base(self, base: DeviceBase) -> None:
        """Make ``base`` (a checkpoint just written, or resumed from) the base and clear the round log."""
        self._base = base
        self._rounds = []

    def _restore(self, handle: Any, hosts: Sequence[int], only: Sequence[int] | None, deadline: float) -> list[Any]:
        """Reset the devices of ``only`` (None: all the actor serves), send it the base's chunks of
        ``hosts`` one call at a time (one chunk in flight), and queue the replay of the logged rounds;
        returns the replays' references followed by one of ``info``."""
        timeout = max(0.001, deadline - time.monotonic())
        ray.get(handle.load_device_states.remote({}, only), timeout=timeout)
        for chunk in self._base.chunks(hosts):
            ray.get(
                handle.load_device_states.remote(chunk, only, reset=False),
                timeout=max(0.001, deadline - time.monotonic()),
            )
        refs = []
        for logged in self._rounds:
            tasks = [t for h in hosts for t in logged.tasks_by_host.get(h, ())]
            if tasks:
                refs.append(handle.replay.remote(logged.state_ref, tasks, logged.payload_ref))
        return [*refs, handle.info.remote()]

    # ------------------------------------------------------------------ recovery
    def mark_stale(self, host_id: int) -> None:
        """The actor serving ``host_id`` may hold device state the driver does not know: sync before its next call."""
        self._stale.add(self.route[host_id])

    def token(self, host_id: int) -> str:
        """The sync token to send with a call for ``host_id``: a slot still marked stale always refuses."""
        slot = self.route[host_id]
        return "unsynced" if slot in self._stale else self.incarnation[slot]

    def recover(self, host_id: int, deadline: float, placement: float | None = None) -> None:
        """Wait until host ``host_id``'s actor is back (restart or replacement), then sync it; when it is
        not back by ``placement`` (default: :data:`PLACEMENT_WAIT_S` from now), move its host ids to a
        live actor. Hosts found lost together share one ``placement`` deadline: the driver waits for
        them one after another, but each has been gone as long as the first.

        Raises:
            ActorCallError: nothing serves ``host_id`` before ``deadline``.
        """
        slot_id = self.route[host_id]
        slot = self.slots[slot_id]
        self._stale.add(slot_id)
        # Counted from the first time this actor was found lost, across rounds: a round deadline shorter
        # than the wait must not keep a host that is gone for good from ever being moved.
        since = self._lost_since.setdefault(slot_id, time.monotonic())
        placement = min(placement if placement is not None else float("inf"), since + PLACEMENT_WAIT_S)
        for _ in range(self.retries + 1):
            try:
                slot.wait_back(min(deadline, placement))
            except ActorCallError:
                if time.monotonic() >= deadline:
                    raise
                self._displace(slot_id, deadline)
                return
            try:
                self.sync(slot_id, deadline)
                return
            except Exception as err:  # noqa: BLE001 - a loss while syncing: wait for it again
                if classify(err, HOST_LOST) != LOST:
                    raise ActorCallError(slot.name, f"restoring its devices failed ({first_line(err)})") from None
                logger.warning("%s was lost again while its devices were restored", slot.name)
        raise ActorCallError(slot.name, "kept getting lost while its devices were restored")

    def _displace(self, lost: int, deadline: float) -> None:
        """Route the host ids of slot ``lost`` (not back in time) to the live actor serving the fewest."""
        moving = self.served(lost)
        candidates = sorted((s for s in set(self.route) if s != lost), key=lambda s: (len(self.served(s)), s))
        for target in candidates:
            for h in moving:
                self.route[h] = target
            try:
                self._take_over(target, moving, deadline)
            except Exception as err:  # noqa: BLE001 - that one is lost too: try the next
                for h in moving:
                    self.route[h] = lost
                if classify(err, HOST_LOST) != LOST:
                    raise ActorCallError(
                        self.slots[lost].name, f"moving its devices failed ({first_line(err)})"
                    ) from None
                continue
            self._stale.add(lost)
            self._probes.pop(lost, None)
            self._lost_since.pop(lost, None)
            logger.warning(
                "%s was not back within %.0fs (its node is gone or full); its devices moved to host %d: "
                "%d of %d hosts live",
                self.slots[lost].name,
                PLACEMENT_WAIT_S,
                target,
                self.live,
                len(self.slots),
            )
            return
        raise ActorCallError(self.slots[lost].name, "was not back in time and no live host can take its devices")

    def _take_over(self, target: int, moving: Sequence[int], deadline: float) -> None:
        """Give slot ``target`` the devices of host ids ``moving``, rebuilt from the base and the log.

        Only the moved devices are restored: the target may still be training its own devices of this
        round (its calls run in order), and their state must survive.
        """
        handle = self.slots[target].handle
        handle.serve.remote(self.served(target))  # runs before the restore below (same caller, in order)
        refs = self._restore(handle, moving, list(moving), deadline)
        info = ray.get(refs, timeout=max(0.001, deadline - time.monotonic()))[-1]
        if str(info["incarnation"]) != self.incarnation.get(target):  # it restarted meanwhile: rebuild it all
            self._stale.add(target)

    def reclaim(self, deadline: float) -> None:
        """Give host ids back to their own actors that answer again (a node with room joined); never waits."""
        for slot_id in sorted(set(range(len(self.slots))) - set(self.route)):
            slot = self.slots[slot_id]
            probe = self._probes.get(slot_id)
            if probe is None:
                self._probes[slot_id] = slot.handle.__ray_ready__.remote()
                continue
            ready, _ = ray.wait([probe], timeout=0)
            if not ready:
                continue
            del self._probes[slot_id]
            try:
                ray.get(probe, timeout=0)
            except ray.exceptions.RayActorError as err:  # dead for good: ask for a replacement
                if slot.start is not None and isinstance(err, ray.exceptions.ActorDiedError):
                    logger.warning("%s is dead (%s); asking for a replacement", slot.name, first_line(err))
                    slot.replace()
                continue
            except Exception as err:  # noqa: BLE001 - not answering yet: probe again next round
                logger.debug("%s not back yet: %s", slot.name, first_line(err))
                continue
            adopter = self.route[slot_id]
            self.route[slot_id] = slot_id
            try:
                self.sync(slot_id, deadline)
            except Exception as err:  # noqa: BLE001 - lost again at once: keep it displaced
                self.route[slot_id] = adopter
                logger.warning("%s answered but was lost again (%s)", slot.name, first_line(err))
                continue
            slot.comebacks += 1
            try:  # the adopter drops the devices it gave back (before any later call: same caller, in order)
                ray.get(self.slots[adopter].handle.serve.remote(self.served(adopter)), timeout=self.timeout_s)
            except Exception as err:  # noqa: BLE001 - lost meanwhile: a full sync rebuilds it
                logger.warning("host %d did not drop the devices it gave back (%s)", adopter, first_line(err))
                self._stale.add(adopter)
            logger.warning("%s is placed again: %d of %d hosts live", slot.name, self.live, len(self.slots))

    def recovered_since(self, host_id: int, sent: tuple[int, str | None]) -> bool:
        """Whether host ``host_id`` is served by a synced actor other than ``sent`` (``(slot, token)`` of a
        call that failed): another host id on the same lost actor already brought it back or moved it."""
        slot = self.route[host_id]
        return slot not in self._stale and (slot, self.incarnation.get(slot)) != sent

    def sent_to(self, host_id: int) -> tuple[int, str | None]:
        """``(slot, token)`` a call for ``host_id`` goes to now (see :meth:`recovered_since`)."""
        slot = self.route[host_id]
        return slot, self.incarnation.get(slot)

    def ensure_synced(self, host_id: int, deadline: float) -> None:
        """Sync the actor of host ``host_id`` if it is marked stale (recovering it if it is lost meanwhile)."""
        slot_id = self.route[host_id]
        if slot_id not in self._stale:
            return
        try:
            self.sync(slot_id, deadline)
        except Exception as err:  # noqa: BLE001 - lost: wait for it to come back
            if classify(err, HOST_LOST) != LOST:
                raise ActorCallError(f"host {host_id}", f"restoring its devices failed ({first_line(err)})") from None
            self.recover(host_id, deadline)

    def sync(self, slot_id: int, deadline: float) -> None:
        """Rebuild the devices of every host id slot ``slot_id`` serves: the base, then the logged rounds.

        Raises:
            RayError: the actor was lost meanwhile (the caller decides whether to wait and try again).
        """
        self._stale.add(slot_id)  # until the whole sync has landed
        handle = self.slots[slot_id].handle
        hosts = self.served(slot_id)
        handle.serve.remote(hosts)  # runs before the restore below (same caller, in order)
        results = ray.get(self._restore(handle, hosts, None, deadline), timeout=max(0.001, deadline - time.monotonic()))
        replayed = sum(results[:-1])
        self._note(slot_id, results[-1])
        self._stale.discard(slot_id)
        self._lost_since.pop(slot_id, None)  # back and rebuilt: a later loss waits its full time again
        logger.info(
            "host %d synced (serving %s): base + %d rounds (%d device trainings replayed)",
            slot_id,
            hosts,
            len(results) - 1,
            replayed,
        )

    def _note(self, slot_id: int, info: Mapping[str, Any]) -> None:
        self.incarnation[slot_id] = str(info["incarnation"])
        self._where[slot_id] = (int(info["pid"]), str(info["hostname"]))

    # ------------------------------------------------------------------ calls
    def call(self, host_id: int, method: str, *args: Any, deadline: float, **kwargs: Any) -> Any:
        """One guarded call of a host method that takes the sync token (``incarnation``)."""
        self.ensure_synced(host_id, deadline)
        return call(
            self.slot_of(host_id),
            method,
            *args,
            timeout_s=self.timeout_s,
            retries=self.retries,
            lost=HOST_LOST,
            deadline=deadline,
            on_back=lambda _slot: self.sync(self.route[host_id], deadline),
            dynamic=lambda: {"incarnation": self.token(host_id)},
            **kwargs,
        )

    def write_states(self, write: Callable[[Mapping[int, Any]], None], max_bytes: int, deadline: float) -> None:
        """Stream every device's state to ``write``, host by host and chunk by chunk (each about
        ``max_bytes``), so no more than one chunk is in the driver at a time. A host lost meanwhile is
        restored (base and log: the same state) and asked again; the base stays as it was until the
        caller makes the written checkpoint the new one (:meth:`set_base`)."""
        for h in range(len(self.slots)):
            for devices in self.call(h, "state_chunks", h, max_bytes, deadline=deadline):
                write(self.call(h, "device_states", devices=devices, deadline=deadline))

    # ------------------------------------------------------------------ shutdown
    def shutdown(self) -> None:
        """Kill every host for good."""
        for slot in self.slots:
            slot.kill(restart=False)
