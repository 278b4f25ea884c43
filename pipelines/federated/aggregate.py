"""Folding device results into one weighted mean with O(model) memory.

Hosts send ``sum_k n_k w_k`` over their devices (tree aggregation). The driver adds those partial
sums in host-id order: results that arrive early wait in a buffer bounded by the number of hosts. A
fixed summation order makes the mean bit-for-bit reproducible, which exact ``--resume`` relies on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedtwin.pipelines.federated.hosts import host_of
from fedtwin.pipelines.federated.messages import AggregatedFit, DeviceFailure, FitResult, FitTask, HostFitResult
from fedtwin.pipelines.model.state import ModelState, add_scaled, zeros_like


def tasks_by_host(tasks: Sequence[FitTask], num_hosts: int) -> dict[int, list[FitTask]]:
    """Group a round's tasks by their host (the sticky :func:`host_of` rule), hosts in id order."""
    by_host: dict[int, list[FitTask]] = {}
    for task in tasks:
        by_host.setdefault(host_of(task.device_id, num_hosts), []).append(task)
    return dict(sorted(by_host.items()))


class OrderedFold:
    """Accumulates host partial sums in host order, whatever order they arrive in."""

    def __init__(self, host_ids: Sequence[int]) -> None:
        self._order = sorted(host_ids)
        self._next = 0
        self._pending: dict[int, HostFitResult] = {}
        self._sum: ModelState | None = None
        self._extra: dict[str, ModelState] = {}
        self.num_examples = 0
        self.results: list[FitResult] = []
        self.failures: list[DeviceFailure] = []

    def add(self, host_result: HostFitResult) -> None:
        """Record one host's answer; fold every buffered answer whose turn has come."""
        self._pending[host_result.host_id] = host_result
        self._drain()

    def skip(self, host_id: int, failures: Sequence[DeviceFailure]) -> None:
        """A host that failed or timed out contributes only failures."""
        self.add(HostFitResult(host_id, (), tuple(failures), None, 0))

    def finish(self, template: ModelState) -> AggregatedFit:
        """The weighted mean, cast to ``template``'s dtypes; raises if no device succeeded."""
        if self._pending:
            raise RuntimeError(f"hosts {sorted(self._pending)} answered but hosts before them never did")
        self.results.sort(key=lambda r: r.device_id)
        self.failures.sort(key=lambda f: f.device_id)
        if self._sum is None or self.num_examples <= 0:
            raise ValueError("no device returned a usable result this round")
        mean = _divide(self._sum, self.num_examples, template)
        extra = {k: _divide(v, self.num_examples, template) for k, v in self._extra.items()}
        return AggregatedFit(mean, self.num_examples, tuple(self.results), tuple(self.failures), extra)

    def _drain(self) -> None:
        while self._next < len(self._order) and self._order[self._next] in self._pending:
            self._fold(self._pending.pop(self._order[self._next]))
            self._next += 1

    def _fold(self, host: HostFitResult) -> None:
        self.results.extend(host.results)
        self.failures.extend(host.failures)
        if host.partial_sum is None or host.total_examples == 0:
            return
        if self._sum is None:
            self._sum = zeros_like(host.partial_sum)
        add_scaled(self._sum, host.partial_sum, 1.0)
        for name, partial in host.extra_sums.items():
            if name not in self._extra:
                self._extra[name] = zeros_like(partial)
            add_scaled(self._extra[name], partial, 1.0)
        self.num_examples += host.total_examples


def _divide(total: ModelState, count: int, template: ModelState) -> ModelState:
    """Float entries become means in the template's dtype; integer buffers pass through."""
    out: ModelState = {}
    for key, value in total.items():
        dtype = template[key].dtype if key in template else np.dtype(np.float32)
        out[key] = (value / count).astype(dtype) if np.issubdtype(dtype, np.floating) else value.astype(dtype)
    return out


def aggregate_results(
    results: Sequence[FitResult], template: ModelState, failures: Sequence[DeviceFailure] = ()
) -> AggregatedFit:
    """Weighted mean of per-device states (the path without host pre-aggregation, and for tests)."""
    fold = OrderedFold([0])
    fold.add(HostFitResult.from_devices(0, results, failures))
    return fold.finish(template)
