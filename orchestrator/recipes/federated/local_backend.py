"""The in-process transport: the same device hosts and server node, called directly (no Ray).

``resources.backend: local`` runs a whole experiment in the driver process with the very classes the
Ray actors wrap (``DeviceHost``, ``Evaluator``, ``ServerNode``), the same host-ordered folding, the same
round threshold and the same strategies, so results match the Ray backend bit for bit on CPU. It exists
for debugging and for studies of many short runs, where actor start-up would dominate
(``benchmarks/study_feddu.py``). What it cannot do: enforce ``federation.round_timeout_s`` (a hung
device hangs the run) or train hosts with more than this process's ``resources.torch_threads`` threads
(the server node's work on D0 takes the same ``server_pass_threads`` as on Ray, so results match); device
failures are still values. This module never imports Ray.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedtwin.actors.federated.device_host import DeviceHost
from fedtwin.actors.federated.evaluator import Evaluator
from fedtwin.actors.federated.server_node import ServerNode
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.federated.backend import Backend
from fedtwin.orchestrator.recipes.federated.backend_common import IdleClock, finish_round, host_settings
from fedtwin.orchestrator.recipes.federated.server_threads import server_pass_threads
from fedtwin.orchestrator.recipes.federated.strategies.context import ServerAccess
from fedtwin.orchestrator.run.checkpoint_sections import SectionWriter, StreamedSection
from fedtwin.pipelines.federated.aggregate import OrderedFold, tasks_by_host
from fedtwin.pipelines.federated.hosts import host_of
from fedtwin.pipelines.federated.messages import AggregatedFit, FitTask
from fedtwin.pipelines.federated.state_chunks import CHUNK_BYTES
from fedtwin.pipelines.model.state import ModelState


@dataclass(frozen=True)
class _LocalRound:
    """A round :meth:`LocalBackend.start_fit` noted and :meth:`LocalBackend.finish_fit` runs."""

    state: ModelState
    tasks: tuple[FitTask, ...]
    on_host_done: Callable[[int, int], None] | None
    payload: Mapping[str, ModelState] | None


class LocalBackend(Backend):
    """A :class:`~fedtwin.orchestrator.recipes.federated.backend.Backend` without processes."""

    def __init__(
        self, spec: ExperimentSpec, partition_dir: str, num_devices: int, num_hosts: int, server_node: bool = False
    ) -> None:
        settings = host_settings(spec)
        self.spec = spec
        self.num_hosts = num_hosts
        self.hosts = [DeviceHost(h, num_hosts, partition_dir, settings) for h in range(num_hosts)]
        threads = spec.resources.torch_threads
        self.has_server_node = server_node
        self._idle = IdleClock()
        self.evaluator: Evaluator = (
            ServerNode(
                partition_dir,
                spec.model,
                seed=spec.seed,
                torch_threads=threads,
                pass_threads=server_pass_threads(spec, num_hosts),  # the hosts wait meanwhile
            )
            if server_node
            else Evaluator(partition_dir, spec.model, split="test", seed=spec.seed, torch_threads=threads)
        )

    def host_of(self, device_id: int) -> int:
        """The host serving ``device_id`` (the sticky rule, as on Ray)."""
        return host_of(device_id, self.num_hosts)

    def start_fit(
        self,
        state: ModelState,
        tasks: Sequence[FitTask],
        timeout_s: float,
        on_host_done: Callable[[int, int], None] | None = None,
        payload: Mapping[str, ModelState] | None = None,
    ) -> _LocalRound:
        """Note the round; the hosts train it when :meth:`finish_fit` collects it (one process, no overlap)."""
        return _LocalRound(state, tuple(tasks), on_host_done, payload)

    def finish_fit(self, handle: _LocalRound) -> AggregatedFit:
        """Run the round's tasks host by host and fold them; ``timeout_s`` is not enforced in-process.

        Raises:
            RoundFailedError: too few devices succeeded (``federation.min_success_fraction``).
        """
        by_host = tasks_by_host(handle.tasks, self.num_hosts)
        fold = OrderedFold(list(by_host))
        for done, (host_id, host_tasks) in enumerate(by_host.items(), start=1):
            answer = self.hosts[host_id].fit(handle.state, host_tasks, handle.payload)
            self._idle.note(answer)
            fold.add(answer)
            if handle.on_host_done is not None:
                handle.on_host_done(done, len(by_host))
        return finish_round(fold, handle.state, handle.tasks, self.spec.federation.min_success_fraction)

    def start_evaluate(self, state: ModelState) -> ModelState:
        """Nothing runs yet: :meth:`finish_evaluate` scores ``state``."""
        return state

    def finish_evaluate(self, handle: ModelState) -> dict[str, Any]:
        """Accuracy and loss on the test split."""
        return self.evaluator.evaluate(handle, split="test")

    def take_faults(self) -> dict[str, int]:
        """Nothing restarts in-process: all zero, every host live (same record keys as on Ray)."""
        return {"device_retries": 0, "host_restarts": 0, "server_restarts": 0, "hosts_live": self.num_hosts}

    def take_timings(self) -> dict[str, float]:
        """Host idle time between rounds (in-process, hosts also wait for each other)."""
        return self._idle.take()

    def server_access(self) -> ServerAccess:
        """The server node itself: its ``evaluate`` defaults to D0 and it has ``server_pass``."""
        if not isinstance(self.evaluator, ServerNode):
            raise RuntimeError("this backend was started without a server node (server_node=False)")
        return self.evaluator

    def write_device_states(self, writer: SectionWriter) -> None:
        """Every device's local state into a checkpoint, one chunk at a time (as on Ray)."""
        for host in self.hosts:
            for devices in host.state_chunks(host.host_id, CHUNK_BYTES):
                writer.write({str(d): v for d, v in host.device_states(devices=devices).items()})

    def device_states_saved(self, checkpoint: Path) -> None:
        """Nothing to do: in-process hosts do not restart, so they need no recovery copy."""

    def load_device_states(self, states: Mapping[int | str, Mapping[str, Any]]) -> None:
        """Give each host the saved local states of its devices (a streamed section chunk by chunk)."""
        for host in self.hosts:
            host.load_device_states({})
        for chunk in states.chunks() if isinstance(states, StreamedSection) else [states]:
            by_host: dict[int, dict[int, Mapping[str, Any]]] = defaultdict(dict)
            for device_id, local in chunk.items():
                by_host[self.host_of(int(device_id))][int(device_id)] = local
            for host_id, part in by_host.items():
                self.hosts[host_id].load_device_states(part, reset=False)

    def shutdown(self) -> None:
        """Nothing to stop."""
