"""Messages between the driver and the actors: frozen dataclasses of numpy arrays and scalars.

Nothing here holds raw samples. A device reports how many clips it trained on, a label histogram and
metrics; weights travel as a ``ModelState``. ``tests/actors/federated/test_privacy.py`` checks this on real hosts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import ModelState, add_scaled, zeros_like


@dataclass(frozen=True)
class FitTask:
    """One device's work for one round: who, when, and the round's local-training settings.

    ``settings.optimizer_start`` says where the device's optimizer buffers start (FedDUM).
    """

    device_id: int
    round_num: int
    settings: TrainSettings


@dataclass(frozen=True)
class FitResult:
    """What one device reports after local training (never its data)."""

    device_id: int
    num_examples: int
    label_histogram: np.ndarray
    metrics: Mapping[str, float]
    state: ModelState | None = None  # None when the host pre-aggregated it into a partial sum
    # Other model-shaped arrays the strategy asked for (e.g. FedDUM device momentum under "optimizer_state");
    # like ``state`` they are pre-summed by the host into ``HostFitResult.extra_sums`` and stripped.
    extras: Mapping[str, ModelState] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceFailure:
    """A device that failed or timed out in a round; ``reason`` is a string so it always pickles."""

    device_id: int
    round_num: int
    reason: str


@dataclass(frozen=True)
class HostFitResult:
    """One host's answer for one round: per-device results plus its weighted partial sum.

    ``partial_sum`` is ``sum_k n_k * w_k`` over the host's successful devices (float64) and
    ``total_examples`` is ``sum_k n_k``, so the driver folds hosts without holding every device's state.
    ``extra_sums`` holds other weighted sums the strategy asked for (e.g. device momentum buffers).
    ``started`` and ``finished`` are the host's wall clock (``time.time()``) when its call began and
    ended (0.0 when unknown): the driver derives how long hosts sat idle between rounds from them.
    """

    host_id: int
    results: tuple[FitResult, ...]
    failures: tuple[DeviceFailure, ...]
    partial_sum: ModelState | None
    total_examples: int
    extra_sums: Mapping[str, ModelState] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0

    @classmethod
    def from_devices(
        cls, host_id: int, results: Sequence[FitResult], failures: Sequence[DeviceFailure] = ()
    ) -> HostFitResult:
        """Pre-sum devices' states and extras (weights ``num_examples``) and strip them from the results."""
        partial: ModelState | None = None
        extra_sums: dict[str, ModelState] = {}
        total = 0
        for result in results:
            if result.state is None:
                raise ValueError(f"device {result.device_id}: result carries no state to aggregate")
            if partial is None:
                partial = zeros_like(result.state)
            add_scaled(partial, result.state, float(result.num_examples))
            for name, extra in result.extras.items():
                if name not in extra_sums:
                    extra_sums[name] = zeros_like(extra)
                add_scaled(extra_sums[name], extra, float(result.num_examples))
            total += result.num_examples
        stripped = tuple(dataclasses.replace(r, state=None, extras={}) for r in results)
        return cls(host_id, stripped, tuple(failures), partial, total, extra_sums)


@dataclass(frozen=True)
class ServerPassResult:
    """What the server node returns after training a state on its shared data D0 (FedDU's server pass).

    ``steps`` is tau0 = ceil(n0 / B) * E; ``optimizer_state`` holds the optimizer slots after the pass
    (SGD momentum buffers keyed ``"momentum_buffer/<param>"``; empty for plain SGD).
    """

    state: ModelState
    steps: int
    train_loss: float
    optimizer_state: ModelState = field(default_factory=dict)


@dataclass(frozen=True)
class AggregatedFit:
    """The weighted mean of a round's device states, plus the per-device metadata.

    ``mean_state`` is ``sum_k n_k w_k / sum_k n_k`` over successful devices; ``extra_means`` holds other
    example-weighted means the strategy asked devices for (e.g. FedDUM momentum buffers).
    """

    mean_state: ModelState
    num_examples: int
    results: Sequence[FitResult]
    failures: Sequence[DeviceFailure] = ()
    extra_means: Mapping[str, ModelState] = field(default_factory=dict)

    def pooled_label_histogram(self, num_classes: int) -> np.ndarray:
        """Sum of the successful devices' label histograms (class counts)."""
        hist = np.zeros(num_classes, dtype=np.int64)
        for result in self.results:
            hist += np.asarray(result.label_histogram, dtype=np.int64)
        return hist
