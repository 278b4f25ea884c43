"""What the Ray and the in-process backends share: host planning, host settings and the round threshold.

Both backends fold host answers into an :class:`~fedtwin.pipelines.federated.aggregate.OrderedFold` and end a
round with :func:`finish_round`, so ``backend.fit`` returns an ``AggregatedFit`` or raises
:class:`RoundFailedError` whichever transport ran it. Nothing here imports Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fedtwin.actors.federated.device_host import HostSettings
from fedtwin.actors.federated.fault_hook import FaultHook, no_faults
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.pipelines.core.errors import FedtwinError
from fedtwin.pipelines.federated.aggregate import OrderedFold
from fedtwin.pipelines.federated.messages import AggregatedFit, FitTask, HostFitResult
from fedtwin.pipelines.model.state import ModelState

#: The checkpoint section holding every device's local state (streamed chunk by chunk).
DEVICES_SECTION = "devices"


class RoundFailedError(FedtwinError, RuntimeError):
    """Too few devices succeeded in a round (below ``federation.min_success_fraction``)."""

    exit_code = 1

    def __init__(self, round_num: int, succeeded: int, attempted: int, reasons: Sequence[str]) -> None:
        self.round_num, self.succeeded, self.attempted = round_num, succeeded, attempted
        example = f"; first failure: {reasons[0]}" if reasons else ""
        super().__init__(
            f"round {round_num}: only {succeeded}/{attempted} devices succeeded, below "
            f"federation.min_success_fraction{example}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (RoundFailedError, (self.round_num, self.succeeded, self.attempted, []))


def min_successes(num_tasks: int, fraction: float) -> int:
    """Smallest number of successful devices a round needs."""
    return max(1, math.ceil(num_tasks * fraction))


def finish_round(
    fold: OrderedFold, template: ModelState, tasks: Sequence[FitTask], min_success_fraction: float
) -> AggregatedFit:
    """The round's weighted mean, or :class:`RoundFailedError` when too few devices succeeded.

    Args:
        fold: every host's answer (or failures) folded in host order.
        template: the round's starting state (its dtypes shape the mean).
        tasks: the round's tasks (their count is what the fraction is of).
        min_success_fraction: ``federation.min_success_fraction``.
    """
    round_num = tasks[0].round_num if tasks else 0
    try:
        outcome = fold.finish(template)
    except ValueError:  # no device returned a usable result
        raise RoundFailedError(round_num, 0, len(tasks), [f.reason for f in fold.failures]) from None
    if len(outcome.results) < min_successes(len(tasks), min_success_fraction):
        raise RoundFailedError(round_num, len(outcome.results), len(tasks), [f.reason for f in outcome.failures])
    return outcome


def plan_hosts(spec: ExperimentSpec, num_devices: int, resources: Mapping[str, float]) -> int:
    """Number of device hosts: ``resources.hosts`` or as many as the cluster's CPU/GPU slots allow."""
    res = spec.resources
    if res.hosts is not None:
        return min(res.hosts, num_devices)
    slots = []
    if res.cpus_per_host > 0:
        slots.append(int(resources.get("CPU", 1) // res.cpus_per_host))
    if res.gpus_per_host > 0:
        slots.append(int(resources.get("GPU", 0) // res.gpus_per_host))
    hosts = min(slots) if slots else 1
    if hosts < 1:
        raise FedtwinError(
            f"resources: the cluster ({dict(resources)}) has no room for one device host with "
            f"cpus_per_host={res.cpus_per_host}, gpus_per_host={res.gpus_per_host}; lower them or add nodes"
        )
    return max(1, min(hosts, num_devices))


class IdleClock:
    """How long hosts sat idle between rounds, from the hosts' own clocks.

    A host stamps each ``fit`` call (``HostFitResult.started`` / ``finished``, its wall clock); the gap
    of a host in round n is its start in round n minus its finish in the last round it served. The host
    that finished last waited only for the driver (folding, strategy update, evaluation, checkpoint,
    dispatch): that is ``host_idle_min_s``; the others also waited for it (``host_idle_s`` is the mean,
    ``host_idle_max_s`` the longest wait). ``host_busy_s`` is the hosts' time inside ``fit`` in the
    round, summed over hosts (finish minus start on each host's clock): with the round's wall time it
    splits a round into work and waiting.
    """

    def __init__(self) -> None:
        self._finished: dict[int, float] = {}
        self._gaps: list[float] = []
        self._busy = 0.0

    def note(self, answer: HostFitResult) -> None:
        """Record one host answer."""
        last = self._finished.get(answer.host_id)
        if answer.started and last is not None:
            self._gaps.append(max(0.0, answer.started - last))
        if answer.finished:
            self._finished[answer.host_id] = answer.finished
            if answer.started:
                self._busy += max(0.0, answer.finished - answer.started)

    def take(self) -> dict[str, float]:
        """``host_idle_s`` (mean over hosts), ``host_idle_min_s``, ``host_idle_max_s`` and ``host_busy_s``
        since the last call; ``{}`` before any gap (the first round)."""
        gaps, busy, self._gaps, self._busy = self._gaps, self._busy, [], 0.0
        if not gaps:
            return {}
        return {
            "host_idle_s": sum(gaps) / len(gaps),
            "host_idle_min_s": min(gaps),
            "host_idle_max_s": max(gaps),
            "host_busy_s": busy,
        }


#: The hook of a fault drill running in this process (see :func:`set_fault_hook`); None otherwise.
_fault_hook: FaultHook | None = None


def set_fault_hook(hook: FaultHook | None) -> FaultHook | None:
    """Install a drill's fault hook for the backends this process builds from now on; returns the one
    it replaces. The only way faults enter a run (``fedtwin drill`` and
    :func:`fedtwin.orchestrator.recipes.federated.drill.installed` use it); None removes it."""
    global _fault_hook
    previous, _fault_hook = _fault_hook, hook
    return previous


def fault_hook() -> FaultHook:
    """The installed fault hook, or the one that does nothing."""
    return _fault_hook or no_faults


def host_settings(spec: ExperimentSpec) -> HostSettings:
    """What every device host of ``spec`` needs (the same for the Ray and the in-process backend)."""
    return HostSettings(
        seed=spec.seed,
        model=spec.model,
        torch_threads=spec.resources.torch_threads,
        shard_cache_size=spec.resources.shard_cache_size,
        fault_hook=_fault_hook,
    )
