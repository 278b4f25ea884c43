"""The strategy contract: pure server-side logic, no Ray and no I/O.

A round is ``configure_fit`` (which devices, with which per-round settings) followed by
``aggregate_fit`` (turn the folded device results into the next global state). The driver folds host
partial sums into an :class:`AggregatedFit` before calling the strategy, so strategies never see
O(devices) states; tests build ``AggregatedFit`` directly from hand-made results.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from actors.messages import DeviceFailure, FitResult, FitTask
from orchestrator.config_loader import from_dict
from orchestrator.strategies.context import StrategyContext
from pipelines.state import ModelState


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


class Strategy(ABC):
    """Base class. Subclasses declare ``Params`` (a frozen dataclass) and override the hooks.

    ``needs_server`` strategies get a server node (``context.server``) from the driver.
    """

    name: ClassVar[str]
    needs_server: ClassVar[bool] = False

    @dataclass(frozen=True)
    class Params:
        """No parameters."""

    def __init__(
        self, params: Any, *, num_devices: int, devices_per_round: int, context: StrategyContext | None = None
    ) -> None:
        self.params = params
        self.num_devices = num_devices
        self.devices_per_round = min(devices_per_round, num_devices)
        self.context = context

    @classmethod
    def parse_params(cls, raw: Mapping[str, Any]) -> Any:
        """Validate ``strategy.params`` against ``cls.Params`` (errors name ``strategy.params.<key>``)."""
        return from_dict(cls.Params, dict(raw), "strategy.params")

    def sample_devices(self, round_num: int, rng: np.random.Generator) -> list[int]:
        """Uniform sampling without replacement; sorted so host dispatch order is reproducible."""
        chosen = rng.choice(self.num_devices, size=self.devices_per_round, replace=False)
        return sorted(int(d) for d in chosen)

    def configure_fit(
        self, round_num: int, device_ids: Sequence[int], train_config: Mapping[str, Any]
    ) -> list[FitTask]:
        """One task per device; ``train_config`` is the round's local-training settings."""
        return [FitTask(device_id=d, round_num=round_num, config=dict(train_config)) for d in device_ids]

    def round_payload(self, round_num: int) -> dict[str, ModelState]:
        """Model-sized arrays broadcast to every device of the round (put in the object store once)."""
        return {}

    @abstractmethod
    def aggregate_fit(
        self, round_num: int, current: ModelState, fit: AggregatedFit
    ) -> tuple[ModelState, dict[str, float]]:
        """Return the next global state and scalar metrics for ``metrics.jsonl``."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays to checkpoint (e.g. server momentum); empty for stateless strategies."""
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise ValueError(f"{self.name} is stateless but the checkpoint holds {sorted(state)}")

    def describe(self) -> dict[str, Any]:
        """Name and parameters, for logs and summaries."""
        return {"name": self.name, **dataclasses.asdict(self.params)}
