"""The Ray transport of a federated round: a pool of device hosts and an evaluator (or server node).

``RayBackend.fit`` puts the global state in the object store once, sends each host the tasks of its
devices, and folds host answers as they arrive under one deadline. A host that errors or misses the
deadline turns into ``DeviceFailure`` values for its devices (and a timed-out host is killed so Ray
restarts it: a hung device cannot block the next round).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from actors.federated.ray_actors import DeviceHostActor, EvaluatorActor, ServerNodeActor
from actors.placement import actor_options
from orchestrator.config.spec import ExperimentSpec
from orchestrator.recipes.federated.backend_common import finish_round, host_settings, plan_hosts
from pipelines.federated.aggregate import OrderedFold, tasks_by_host
from pipelines.federated.hosts import host_of
from pipelines.federated.messages import AggregatedFit, DeviceFailure, FitTask, ServerPassResult
from pipelines.model.settings import TrainSettings
from pipelines.model.state import ModelState

__all__ = ["CONTROL_TIMEOUT_S", "RayBackend", "RayServerAccess", "plan_hosts"]

logger = logging.getLogger(__name__)

#: Seconds allowed for actor construction (loading torch, manifests) and for small control calls.
CONTROL_TIMEOUT_S = 300.0


class RayBackend:
    """Owns the host actors and the evaluator of one experiment.

    With ``server_node=True`` the evaluator is a :class:`~actors.federated.server_node.ServerNode`, which holds the
    shared server data D0 as well as the test split; :meth:`server_access` hands it to a strategy.
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
        self._scheduling = scheduling_strategy
        self._settings = host_settings(spec)
        self.hosts: list[Any] = [self._make_host(h) for h in range(num_hosts)]
        res = spec.resources
        options = actor_options(num_cpus=res.server_cpus, num_gpus=res.server_gpus, max_restarts=res.max_restarts,
                                scheduling_strategy=scheduling_strategy, plugin_paths=spec.plugins.paths)
        self.has_server_node = server_node
        if server_node:
            self.evaluator = ServerNodeActor.options(**options).remote(
                partition_dir, spec.model, seed=spec.seed, torch_threads=res.torch_threads, extra_splits=("test",)
            )
        else:
            self.evaluator = EvaluatorActor.options(**options).remote(
                partition_dir, spec.model, split="test", seed=spec.seed, torch_threads=res.torch_threads
            )
        ray.get([h.ping.remote() for h in self.hosts] + [self.evaluator.__ray_ready__.remote()],
                timeout=CONTROL_TIMEOUT_S)

    def _make_host(self, host_id: int) -> Any:
        res = self.spec.resources
        options = actor_options(
            num_cpus=res.cpus_per_host,
            num_gpus=res.gpus_per_host,
            max_restarts=res.max_restarts,
            max_task_retries=res.max_task_retries,
            scheduling_strategy=self._scheduling,
            plugin_paths=self.spec.plugins.paths,  # a plugin model must import inside the host
        )
        return DeviceHostActor.options(**options).remote(host_id, self.num_hosts, self.partition_dir, self._settings)

    def host_of(self, device_id: int) -> int:
        """The host serving ``device_id`` (the sticky rule)."""
        return host_of(device_id, self.num_hosts)

    def fit(
        self,
        state: ModelState,
        tasks: Sequence[FitTask],
        timeout_s: float,
        on_host_done: Callable[[int, int], None] | None = None,
        payload: Mapping[str, ModelState] | None = None,
    ) -> AggregatedFit:
        """Run one round's tasks and fold the hosts' answers as they arrive, under one deadline.

        ``payload`` (the strategy's round broadcast, e.g. a global momentum buffer) travels like the state.

        Raises:
            RoundFailedError: too few devices succeeded (``federation.min_success_fraction``).
        """
        state_ref = ray.put(state)  # once per round, never per device
        payload_ref = ray.put(dict(payload)) if payload else None
        by_host = tasks_by_host(tasks, self.num_hosts)
        pending = {self.hosts[h].fit.remote(state_ref, ts, payload_ref): h for h, ts in by_host.items()}
        fold = OrderedFold(list(by_host))
        deadline = time.monotonic() + timeout_s
        done_hosts = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            ref = ready[0]
            host_id = pending.pop(ref)
            try:
                fold.add(ray.get(ref, timeout=CONTROL_TIMEOUT_S))
            except (RayActorError, RayError, GetTimeoutError) as err:
                reason = f"host {host_id} failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
                logger.warning(reason)
                fold.skip(host_id, [DeviceFailure(t.device_id, t.round_num, reason) for t in by_host[host_id]])
            done_hosts += 1
            if on_host_done is not None:
                on_host_done(done_hosts, len(by_host))
        for ref, host_id in pending.items():
            reason = f"host {host_id} timed out after {timeout_s:.0f}s (federation.round_timeout_s)"
            logger.warning(reason + "; restarting it")
            fold.skip(host_id, [DeviceFailure(t.device_id, t.round_num, reason) for t in by_host[host_id]])
            self._restart_host(host_id)
        return finish_round(fold, state, tasks, self.spec.federation.min_success_fraction)

    def _restart_host(self, host_id: int) -> None:
        """Kill a stuck host; Ray restarts it (``max_restarts``), else we start a replacement."""
        handle = self.hosts[host_id]
        ray.kill(handle, no_restart=False)
        try:
            ray.get(handle.ping.remote(), timeout=CONTROL_TIMEOUT_S)
        except RayError:
            logger.warning("host %d did not come back; starting a replacement", host_id)
            self.hosts[host_id] = self._make_host(host_id)

    def evaluate(self, state: ModelState) -> dict[str, float]:
        """Accuracy and loss on the test split (in the evaluator actor)."""
        return ray.get(self.evaluator.evaluate.remote(state, split="test"), timeout=CONTROL_TIMEOUT_S)

    def server_access(self) -> RayServerAccess:
        """The server node as a strategy's injected ``ServerAccess`` (needs ``server_node=True``)."""
        if not self.has_server_node:
            raise RuntimeError("this backend was started without a server node (server_node=False)")
        return RayServerAccess(self.evaluator, CONTROL_TIMEOUT_S)

    def device_states(self) -> dict[int, dict[str, Any]]:
        """Every device's local state, gathered from the hosts (for checkpoints)."""
        out: dict[int, dict[str, Any]] = {}
        for part in ray.get([h.device_states.remote() for h in self.hosts], timeout=CONTROL_TIMEOUT_S):
            out.update(part)
        return out

    def load_device_states(self, states: Mapping[int, Mapping[str, Any]]) -> None:
        """Send each host the saved local states of its devices."""
        by_host: dict[int, dict[int, Mapping[str, Any]]] = defaultdict(dict)
        for device_id, local in states.items():
            by_host[self.host_of(int(device_id))][int(device_id)] = local
        ray.get([self.hosts[h].load_device_states.remote(s) for h, s in by_host.items()], timeout=CONTROL_TIMEOUT_S)

    def shutdown(self) -> None:
        """Kill the actors (they hold no state we need after the final checkpoint)."""
        for handle in [*self.hosts, self.evaluator]:
            try:
                ray.kill(handle, no_restart=True)
            except RayError as err:  # already dead: nothing left to clean up
                logger.debug("actor already gone at shutdown: %s", err)


class RayServerAccess:
    """A strategy's ``ServerAccess`` backed by a ``ServerNodeActor`` (bounded waits)."""

    def __init__(self, handle: Any, timeout_s: float) -> None:
        self.handle = handle
        self.timeout_s = timeout_s

    def evaluate(self, state: ModelState) -> dict[str, float]:
        """Accuracy and loss on D0."""
        return ray.get(self.handle.evaluate.remote(state, split="shared"), timeout=self.timeout_s)

    def server_pass(
        self,
        state: ModelState,
        settings: TrainSettings,
        *,
        round_num: int,
        optimizer_state: Mapping[str, np.ndarray] | None = None,
    ) -> ServerPassResult:
        """One server pass on D0 (see ``ServerNode.server_pass``)."""
        ref = self.handle.server_pass.remote(state, settings, round_num=round_num, optimizer_state=optimizer_state)
        return ray.get(ref, timeout=self.timeout_s)
