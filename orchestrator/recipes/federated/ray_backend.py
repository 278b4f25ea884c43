"""The Ray transport of a federated round: a pool of device hosts and an evaluator (or server node).

``RayBackend.fit`` puts the global state in the object store once, sends each host the tasks of its
devices, and folds host answers in host order as they arrive, under one deadline
(``federation.round_timeout_s``).

Failures inside a round:

- a device whose own training raises is a ``DeviceFailure`` (not retried: it would raise again);
- a host that dies or whose call is lost is waited for (Ray restarts it, or the pool starts a
  replacement with the same host id), its devices' local state is restored
  (:mod:`~fedtwin.orchestrator.recipes.federated.host_pool`), and its devices are dispatched to it again, at
  most ``federation.device_retries`` times and while the deadline allows. The same host id folds in
  the same place with the same partial sum, so a round that needed retries gives the same weights as
  one that did not;
- a host that is not back within ``host_pool.PLACEMENT_WAIT_S`` (its node is gone, no room elsewhere)
  has its devices moved to a live host for as long as that lasts, folding in the same place;
- a host that misses the deadline turns into ``DeviceFailure`` values and is restarted (a hung device
  cannot block the next round).

Every other call (evaluation, FedDU's server pass, streaming device state into a checkpoint, loading it
on resume) goes through :mod:`fedtwin.orchestrator.run.actor_calls`: recovered and retried the same way, or
one line and exit 1. Per round, :meth:`RayBackend.take_faults` reports retries and restarts.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray

from fedtwin.actors.federated.fault_hook import FaultPoint
from fedtwin.actors.federated.ray_actors import DeviceHostActor, EvaluatorActor, ServerNodeActor
from fedtwin.actors.placement import actor_options
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.federated.backend import Backend
from fedtwin.orchestrator.recipes.federated.backend_common import (
    DEVICES_SECTION,
    IdleClock,
    fault_hook,
    host_settings,
    plan_hosts,
)
from fedtwin.orchestrator.recipes.federated.device_base import CheckpointBase, MemoryBase
from fedtwin.orchestrator.recipes.federated.host_pool import HostPool
from fedtwin.orchestrator.recipes.federated.ray_round import RoundRun
from fedtwin.orchestrator.recipes.federated.server_threads import server_pass_threads
from fedtwin.orchestrator.run.actor_calls import ActorCallError, ActorSlot, call, get
from fedtwin.orchestrator.run.checkpoint import checkpoint_section
from fedtwin.orchestrator.run.checkpoint_sections import SectionWriter, StreamedSection
from fedtwin.pipelines.federated.hosts import host_of
from fedtwin.pipelines.federated.messages import AggregatedFit, FitTask, ServerPassResult
from fedtwin.pipelines.federated.state_chunks import CHUNK_BYTES
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import ModelState

__all__ = ["CONTROL_TIMEOUT_S", "RayBackend", "RayServerAccess", "plan_hosts"]

logger = logging.getLogger(__name__)

#: Seconds allowed for actor construction (loading torch, manifests) and for small control calls.
CONTROL_TIMEOUT_S = 300.0


class RayBackend(Backend):
    """Owns the host actors and the evaluator of one experiment.

    With ``server_node=True`` the evaluator is a :class:`~fedtwin.actors.federated.server_node.ServerNode`, which
    holds the shared server data D0 as well as the test split; :meth:`server_access` hands it to a strategy.
    """

    def __init__(
        self,
        spec: ExperimentSpec,
        partition_dir: str,
        num_devices: int,
        num_hosts: int,
        scheduling_strategy: Any = None,
        server_node: bool = False,
    ) -> None:
        self.spec = spec
        self.partition_dir = partition_dir
        self.num_devices = num_devices
        self.num_hosts = num_hosts
        self.retries = spec.federation.device_retries
        self._scheduling = scheduling_strategy
        self._settings = host_settings(spec)
        self._fault = fault_hook()
        self._round = 0
        self._faults: Counter[str] = Counter()
        self._seen = (0, 0)  # comebacks of hosts and server already reported
        self._idle = IdleClock()
        self.has_server_node = server_node
        self.pool = HostPool(self._make_host, num_hosts, num_devices, CONTROL_TIMEOUT_S, self.retries)
        self.server = ActorSlot(
            "server node" if server_node else "evaluator", self._make_server(), start=self._make_server
        )
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        get(
            self.server.handle.__ray_ready__.remote(),
            what=f"starting the {self.server.name}",
            timeout_s=CONTROL_TIMEOUT_S,
        )
        self.pool.start(deadline)

    @property
    def hosts(self) -> list[Any]:
        """The actor handles serving each host id now."""
        return [self.pool.handle(h) for h in range(self.num_hosts)]

    @property
    def evaluator(self) -> Any:
        """The current evaluator (or server node) actor handle."""
        return self.server.handle

    def _make_host(self, host_id: int) -> Any:
        res = self.spec.resources
        options = actor_options(
            num_cpus=res.cpus_per_host,
            num_gpus=res.gpus_per_host,
            max_restarts=res.max_restarts,
            max_task_retries=res.max_task_retries,
            scheduling_strategy=self._scheduling,
            plugin_paths=self.spec.plugins.paths,  # a plugin model must import inside the host
            resources=res.host_resources,  # e.g. {edge: 1}: hosts only on nodes that advertise it
        )
        return DeviceHostActor.options(**options).remote(host_id, self.num_hosts, self.partition_dir, self._settings)

    def _make_server(self) -> Any:
        spec, res = self.spec, self.spec.resources
        options = actor_options(
            num_cpus=res.server_cpus,
            num_gpus=res.server_gpus,
            max_restarts=res.max_restarts,
            scheduling_strategy=self._scheduling,
            plugin_paths=spec.plugins.paths,
        )
        if self.has_server_node:
            return ServerNodeActor.options(**options).remote(
                self.partition_dir,
                spec.model,
                seed=spec.seed,
                torch_threads=res.torch_threads,
                extra_splits=("test",),
                pass_threads=server_pass_threads(spec, self.num_hosts),  # the hosts wait meanwhile
            )
        return EvaluatorActor.options(**options).remote(
            self.partition_dir, spec.model, split="test", seed=spec.seed, torch_threads=res.torch_threads
        )

    def host_of(self, device_id: int) -> int:
        """The host serving ``device_id`` (the sticky rule)."""
        return host_of(device_id, self.num_hosts)

    # ------------------------------------------------------------------ the round
    def start_fit(
        self,
        state: ModelState,
        tasks: Sequence[FitTask],
        timeout_s: float,
        on_host_done: Callable[[int, int], None] | None = None,
        payload: Mapping[str, ModelState] | None = None,
    ) -> RoundRun:
        """Dispatch a round to the hosts and return at once (:meth:`finish_fit` waits and folds).

        The driver can then do other work (score the last round) while the hosts train. Host ids whose
        own actor answers again after a lost node are given back to it first (``HostPool.reclaim``).
        """
        self._round = tasks[0].round_num if tasks else self._round
        self.pool.reclaim(time.monotonic() + CONTROL_TIMEOUT_S)
        return RoundRun(
            self.pool,
            state,
            tasks,
            timeout_s,
            on_host_done,
            payload,
            retries=self.retries,
            min_success_fraction=self.spec.federation.min_success_fraction,
            faults=self._faults,
            idle=self._idle,
            restart=self._restart_host,
            control_timeout_s=CONTROL_TIMEOUT_S,
        )

    def finish_fit(self, run: RoundRun) -> AggregatedFit:
        """Wait for a round :meth:`start_fit` dispatched, recover lost hosts, fold; see :meth:`fit`."""
        return run.collect()

    def _restart_host(self, host_id: int) -> None:
        """Kill a stuck host; Ray restarts it (``max_restarts``), else the pool starts a replacement."""
        slot = self.pool.slot_of(host_id)
        slot.kill(restart=True)
        self.pool.mark_stale(host_id)
        try:
            self.pool.recover(host_id, time.monotonic() + CONTROL_TIMEOUT_S)
        except ActorCallError as err:  # the next round's dispatch tries again
            logger.warning("host %d did not come back after its restart: %s", host_id, err.reason)

    def take_faults(self) -> dict[str, int]:
        """Retries and restarts since the last call: one round's worth, and its checkpoint's restarts
        land in the next round's record; ``hosts_live``: actors serving hosts now (fewer than
        ``num_hosts`` while hosts of a lost node could not be placed again)."""
        hosts, server = self.pool.comebacks, self.server.comebacks
        out = {
            "device_retries": self._faults.pop("device_retries", 0),
            "host_restarts": hosts - self._seen[0],
            "server_restarts": server - self._seen[1],
            "hosts_live": self.pool.live,
        }
        self._seen = (hosts, server)
        return out

    def take_timings(self) -> dict[str, float]:
        """Host idle time between rounds, from the hosts' own clocks (see ``IdleClock``)."""
        return self._idle.take()

    # ------------------------------------------------------------------ other calls
    def start_evaluate(self, state: ModelState) -> tuple[Any, ModelState]:
        """Send the evaluation off and return at once; :meth:`finish_evaluate` waits for the scores."""
        self._fault(FaultPoint("evaluate", self._round), self)
        return self.server.handle.evaluate.remote(ray.put(state), split="test"), state

    def finish_evaluate(self, pending: tuple[Any, ModelState]) -> dict[str, Any]:
        """The scores :meth:`start_evaluate` asked for; a failed call goes through the guarded path
        (:meth:`evaluate`: wait for a restart, retry, or one line and exit 1)."""
        ref, state = pending
        try:
            return ray.get(ref, timeout=CONTROL_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - the guarded call classifies and reports it
            return call(
                self.server, "evaluate", ray.put(state), split="test", timeout_s=CONTROL_TIMEOUT_S, retries=self.retries
            )

    def server_access(self) -> RayServerAccess:
        """The server node as a strategy's injected ``ServerAccess`` (needs ``server_node=True``)."""
        if not self.has_server_node:
            raise RuntimeError("this backend was started without a server node (server_node=False)")
        return RayServerAccess(
            self.server,
            CONTROL_TIMEOUT_S,
            self.retries,
            before_pass=lambda n: self._fault(FaultPoint("server_pass", n), self),
        )

    def write_device_states(self, writer: SectionWriter) -> None:
        """Stream every device's local state from the hosts into a checkpoint, one chunk at a time.

        A host lost meanwhile is restored and asked again. Once the checkpoint is complete,
        :meth:`device_states_saved` makes it the base a restarted host is rebuilt from (see
        :mod:`~fedtwin.orchestrator.recipes.federated.host_pool`).
        """
        self._fault(FaultPoint("checkpoint", self._round), self)
        self.pool.write_states(
            lambda states: writer.write({str(d): v for d, v in states.items()}),
            CHUNK_BYTES,
            time.monotonic() + CONTROL_TIMEOUT_S,
        )

    def device_states_saved(self, checkpoint: Path) -> None:
        """The checkpoint :meth:`write_device_states` wrote is complete: restarted hosts are rebuilt from it."""
        section = checkpoint_section(checkpoint, DEVICES_SECTION)
        if section is not None:
            self.pool.set_base(CheckpointBase(section, self.num_hosts))

    def load_device_states(self, states: Mapping[int | str, Mapping[str, Any]]) -> None:
        """Send each host the saved local states of its devices (they also become the restore base).

        A checkpoint's streamed ``devices`` section is read and sent one chunk at a time; a plain mapping
        (a checkpoint written before device state was streamed) is kept in the object store.
        """
        if isinstance(states, StreamedSection):
            self.pool.set_base(CheckpointBase(states, self.num_hosts))
        else:
            by_host: dict[int, dict[int, Mapping[str, Any]]] = defaultdict(dict)
            for device_id, local in states.items():
                by_host[self.host_of(int(device_id))][int(device_id)] = local
            self.pool.set_base(MemoryBase(by_host))
        deadline = time.monotonic() + CONTROL_TIMEOUT_S
        for host_id in range(self.num_hosts):
            self.pool.mark_stale(host_id)
        for host_id in range(self.num_hosts):
            self.pool.ensure_synced(host_id, deadline)

    def shutdown(self) -> None:
        """Kill the actors (they hold no state we need after the final checkpoint)."""
        self.pool.shutdown()
        self.server.kill(restart=False)


class RayServerAccess:
    """A strategy's ``ServerAccess`` backed by a ``ServerNodeActor`` (guarded calls, see ``actor_calls``)."""

    def __init__(
        self,
        slot: ActorSlot,
        timeout_s: float,
        retries: int = 2,
        before_pass: Callable[[int], None] | None = None,
    ) -> None:
        self.slot = slot
        self.timeout_s = timeout_s
        self.retries = retries
        self._before_pass = before_pass

    @property
    def handle(self) -> Any:
        """The current server-node actor handle."""
        return self.slot.handle

    def evaluate(self, state: ModelState) -> dict[str, float]:
        """Accuracy and loss on D0."""
        return call(
            self.slot, "evaluate", ray.put(state), split="shared", timeout_s=self.timeout_s, retries=self.retries
        )

    def server_pass(
        self,
        state: ModelState,
        settings: TrainSettings,
        *,
        round_num: int,
        optimizer_state: Mapping[str, np.ndarray] | None = None,
    ) -> ServerPassResult:
        """One server pass on D0 (see ``ServerNode.server_pass``)."""
        if self._before_pass is not None:
            self._before_pass(round_num)
        return call(
            self.slot,
            "server_pass",
            ray.put(state),
            settings,
            round_num=round_num,
            optimizer_state=optimizer_state,
            timeout_s=self.timeout_s,
            retries=self.retries,
        )
