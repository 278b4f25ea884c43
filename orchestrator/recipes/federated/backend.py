"""How the federated recipe reaches its device hosts: the :class:`Backend` contract and its factory.

Two transports satisfy it: :class:`~fedtwin.orchestrator.recipes.federated.ray_backend.RayBackend` (host
actors, an evaluator or server-node actor) and
:class:`~fedtwin.orchestrator.recipes.federated.local_backend.LocalBackend` (the same classes called in this
process, no Ray). Both apply the same round threshold
(:func:`~fedtwin.orchestrator.recipes.federated.backend_common.finish_round`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from fedtwin.orchestrator.recipes.federated.backend_common import RoundFailedError, plan_hosts
from fedtwin.orchestrator.recipes.federated.strategies.context import ServerAccess
from fedtwin.orchestrator.run.checkpoint_sections import SectionWriter
from fedtwin.pipelines.federated.messages import AggregatedFit, FitTask
from fedtwin.pipelines.model.state import ModelState

__all__ = ["Backend", "RoundFailedError", "plan_hosts"]


@runtime_checkable
class Backend(Protocol):
    """The device hosts and the evaluator (or server node) of one federated run."""

    num_hosts: int

    def start_fit(
        self,
        state: ModelState,
        tasks: Sequence[FitTask],
        timeout_s: float,
        on_host_done: Callable[[int, int], None] | None = None,
        payload: Mapping[str, ModelState] | None = None,
    ) -> Any:
        """Dispatch one round's tasks and return a handle at once (:meth:`finish_fit` collects it).

        Args:
            state: the global state devices start from.
            tasks: one per selected device (all of one round).
            timeout_s: the round's deadline (``federation.round_timeout_s``; the in-process backend
                cannot enforce it).
            on_host_done: called ``(hosts_done, hosts_total)`` as hosts answer.
            payload: round-wide arrays the strategy broadcasts (e.g. FedDUM's global device momentum).
        """
        ...

    def finish_fit(self, handle: Any) -> AggregatedFit:
        """Wait for a round :meth:`start_fit` dispatched and fold its host answers in host order.

        Raises:
            RoundFailedError: fewer devices succeeded than ``federation.min_success_fraction`` asks.
        """
        ...

    def fit(
        self,
        state: ModelState,
        tasks: Sequence[FitTask],
        timeout_s: float,
        on_host_done: Callable[[int, int], None] | None = None,
        payload: Mapping[str, ModelState] | None = None,
    ) -> AggregatedFit:
        """Run one round's tasks: :meth:`start_fit` then :meth:`finish_fit` (shared by both backends).

        ``payload`` (the strategy's round broadcast, e.g. a global momentum buffer) travels like the state.

        Raises:
            RoundFailedError: too few devices succeeded (``federation.min_success_fraction``).
        """
        return self.finish_fit(self.start_fit(state, tasks, timeout_s, on_host_done, payload))

    def start_evaluate(self, state: ModelState) -> Any:
        """Send the test evaluation of ``state`` off; :meth:`finish_evaluate` waits for the scores."""
        ...

    def finish_evaluate(self, handle: Any) -> dict[str, Any]:
        """Accuracy and loss of the state :meth:`start_evaluate` was given, on the test split."""
        ...

    def evaluate(self, state: ModelState) -> dict[str, Any]:
        """:meth:`start_evaluate` then :meth:`finish_evaluate` (shared by both backends)."""
        return self.finish_evaluate(self.start_evaluate(state))

    def take_faults(self) -> dict[str, int]:
        """Recovery since the last call: ``device_retries`` (devices dispatched again after their host
        was lost), ``host_restarts`` and ``server_restarts`` (processes that came back: Ray restarts and
        replacements), and ``hosts_live`` (host processes serving devices now: fewer than ``num_hosts``
        while the hosts of a lost node could not be placed again). The round loop records them in every
        round's metrics."""
        ...

    def take_timings(self) -> dict[str, float]:
        """How long hosts sat idle before this round's work (``host_idle_s`` mean over hosts,
        ``host_idle_min_s``, ``host_idle_max_s``; see
        :class:`~fedtwin.orchestrator.recipes.federated.backend_common.IdleClock`); empty in the first round."""
        ...

    def server_access(self) -> ServerAccess:
        """The server node as a strategy's ``ServerAccess`` (backends started with ``server_node=True``)."""
        ...

    def write_device_states(self, writer: SectionWriter) -> None:
        """Write every device's local state into a checkpoint's ``devices`` section, chunk by chunk."""
        ...

    def device_states_saved(self, checkpoint: Path) -> None:
        """The checkpoint is complete (the Ray backend restores restarted hosts from it from now on)."""
        ...

    def load_device_states(self, states: Mapping[int | str, Mapping[str, Any]]) -> None:
        """Give each host the saved local states of its devices (on resume): a checkpoint's streamed
        section (read chunk by chunk) or a plain mapping (a checkpoint from before sections)."""
        ...

    def shutdown(self) -> None:
        """Stop whatever the backend started."""
        ...
