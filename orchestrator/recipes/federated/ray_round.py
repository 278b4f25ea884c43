"""One federated round in flight on Ray device hosts: dispatch, retries after lost hosts, ordered fold.

:class:`RoundRun` is what :meth:`~fedtwin.orchestrator.recipes.federated.ray_backend.RayBackend.start_fit`
returns and ``finish_fit`` collects. The state (and the strategy's payload) go into the object store once
per round; each host id gets the tasks of its devices; answers fold in host order as they arrive, under
one deadline (``federation.round_timeout_s``). A host whose call is lost is recovered by the
:class:`~fedtwin.orchestrator.recipes.federated.host_pool.HostPool` (restart, replacement, or its devices
moved to a live host) and its devices dispatched again; a host that misses the deadline is restarted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray

from fedtwin.actors.federated.device_host import StaleHostError
from fedtwin.orchestrator.recipes.federated.backend_common import IdleClock, finish_round
from fedtwin.orchestrator.recipes.federated.host_pool import HOST_LOST, PLACEMENT_WAIT_S, HostPool
from fedtwin.orchestrator.run.actor_calls import LOST, ActorCallError, cause_of, classify, describe
from fedtwin.pipelines.federated.aggregate import OrderedFold, tasks_by_host
from fedtwin.pipelines.federated.messages import AggregatedFit, DeviceFailure, FitTask
from fedtwin.pipelines.model.state import ModelState

logger = logging.getLogger(__name__)

#: After a failed host call, how long to wait for other hosts' answers before recovering (seconds).
_GATHER_S = 1.0


class RoundRun:
    """One round in flight: its hosts' calls, retries and the ordered fold.

    Args:
        pool: the host actors.
        state, tasks, timeout_s, on_host_done, payload: as ``Backend.start_fit`` takes them.
        retries: ``federation.device_retries``.
        min_success_fraction: ``federation.min_success_fraction``.
        faults: the backend's counter (``device_retries`` is added to it).
        idle: the backend's idle clock.
        restart: kills and recovers a stuck host (by host id).
        control_timeout_s: how long fetching one answer may take.
    """

    def __init__(
        self,
        pool: HostPool,
        state: ModelState,
        tasks: Sequence[FitTask],
        timeout_s: float,
        on_host_done: Callable[[int, int], None] | None,
        payload: Mapping[str, ModelState] | None,
        *,
        retries: int,
        min_success_fraction: float,
        faults: Counter[str],
        idle: IdleClock,
        restart: Callable[[int], None],
        control_timeout_s: float,
    ) -> None:
        self.pool, self.state, self.tasks, self.timeout_s = pool, state, tasks, timeout_s
        self.on_host_done = on_host_done
        self.retries, self.min_success_fraction = retries, min_success_fraction
        self.faults, self.idle, self.restart, self.control_timeout_s = faults, idle, restart, control_timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.state_ref = ray.put(state)  # once per round, never per device
        self.payload_ref = ray.put(dict(payload)) if payload else None
        self.by_host = tasks_by_host(tasks, len(pool.slots))
        self.fold = OrderedFold(list(self.by_host))
        self.attempts = dict.fromkeys(self.by_host, 0)
        self.pending: dict[Any, int] = {}
        self.sent: dict[int, tuple[int, str | None]] = {}
        self.succeeded: dict[int, list[FitTask]] = {}
        self.done = 0
        for host_id in self.by_host:
            self.dispatch(host_id)

    def finished(self, host_id: int) -> None:
        self.done += 1
        if self.on_host_done is not None:
            self.on_host_done(self.done, len(self.by_host))

    def skip(self, host_id: int, reason: str) -> None:
        logger.warning(reason)
        self.fold.skip(host_id, [DeviceFailure(t.device_id, t.round_num, reason) for t in self.by_host[host_id]])
        self.pool.mark_stale(host_id)  # it may have trained some devices the driver will not count
        self.finished(host_id)

    def dispatch(self, host_id: int) -> None:
        pool = self.pool
        try:
            pool.ensure_synced(host_id, self.deadline)
        except ActorCallError as err:
            self.skip(host_id, f"host {host_id} failed: {err.reason}")
            return
        self.sent[host_id] = pool.sent_to(host_id)
        ref = pool.handle(host_id).fit.remote(
            self.state_ref, self.by_host[host_id], self.payload_ref, incarnation=pool.token(host_id)
        )
        self.pending[ref] = host_id

    def collect(self) -> AggregatedFit:
        """Wait for the answers, recover lost hosts and dispatch their devices again, fold in host order.

        Raises:
            RoundFailedError: too few devices succeeded (``federation.min_success_fraction``).
        """
        while self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=max(0.0, self.deadline - time.monotonic()))
            if not ready:
                break
            lost = self._take(ready[0])
            if not lost:
                continue
            # Hosts of one lost node fail together: gather the answers already there, so that they
            # share one placement wait (see HostPool.recover) instead of waiting one after another.
            pending = list(self.pending)
            more, _ = ray.wait(pending, num_returns=len(pending), timeout=_GATHER_S) if pending else ([], [])
            for ref in more:
                lost.update(self._take(ref))
            placement = time.monotonic() + PLACEMENT_WAIT_S
            for host_id, err in lost.items():
                self._lost(host_id, err, placement)
        restarted: set[int] = set()
        for host_id in self.pending.values():
            self.skip(
                host_id,
                f"host {host_id} timed out after {self.timeout_s:.0f}s (federation.round_timeout_s); restarting it",
            )
            slot = self.pool.route[host_id]
            if slot not in restarted:  # two host ids on one stuck actor: one restart
                restarted.add(slot)
                self.restart(host_id)
        outcome = finish_round(self.fold, self.state, self.tasks, self.min_success_fraction)
        self.pool.log_round(self.state_ref, self.payload_ref, self.succeeded)
        return outcome

    def _take(self, ref: Any) -> dict[int, Exception]:
        """Fold a ready answer; a failed call is returned (``{host: error}``) for :meth:`_lost`."""
        host_id = self.pending.pop(ref)
        try:
            answer = ray.get(ref, timeout=self.control_timeout_s)
        except Exception as err:  # noqa: BLE001 - classified in _lost; non-Ray errors are re-raised there
            return {host_id: err}
        ok = {r.device_id for r in answer.results}
        self.succeeded[host_id] = [t for t in self.by_host[host_id] if t.device_id in ok]
        self.idle.note(answer)
        self.fold.add(answer)
        self.finished(host_id)
        return {}

    def _lost(self, host_id: int, err: Exception, placement: float) -> None:
        """A host call that failed: recover the host and dispatch its devices again, or count them failed."""
        kind = classify(err, HOST_LOST)
        if kind is None:
            raise err
        tasks = self.by_host[host_id]
        reason = f"host {host_id} failed: {describe(kind, err)}"
        # A host that answers "I restarted" never started the work: that costs no retry (each such
        # answer needs a new process, so the deadline bounds them); a lost call does.
        refused = isinstance(cause_of(err), StaleHostError)
        retry = refused or self.attempts[host_id] < self.retries
        if kind != LOST or not retry or time.monotonic() >= self.deadline:
            self.skip(host_id, reason)
            return
        self.attempts[host_id] += 0 if refused else 1
        self.faults["device_retries"] += len(tasks)
        used = "no retry used" if refused else f"retry {self.attempts[host_id]} of {self.retries}"
        logger.warning("%s; dispatching its %d devices again when it is back (%s)", reason, len(tasks), used)
        if not self.pool.recovered_since(host_id, self.sent[host_id]):
            try:
                self.pool.mark_stale(host_id)
                self.pool.recover(host_id, self.deadline, placement)
            except ActorCallError as lost:
                self.skip(host_id, f"{reason}; then: {lost.reason}")
                return
        self.dispatch(host_id)
