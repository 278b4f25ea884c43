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
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedtwin.orchestrator.config.loader import from_dict
from fedtwin.orchestrator.recipes.federated.strategies.context import StrategyContext
from fedtwin.pipelines.federated.messages import AggregatedFit, DeviceFailure, FitResult, FitTask
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import ModelState

__all__ = ["AggregatedFit", "DeviceFailure", "FitResult", "FitTask", "Strategy"]


@dataclass(frozen=True)
class NoParams:
    """No parameters."""


class Strategy(ABC):
    """Base class. Subclasses declare ``Params`` (a frozen dataclass) and override the hooks.

    ``needs_server`` strategies get a server node (``context.server``) from the driver.
    """

    name: ClassVar[str]
    needs_server: ClassVar[bool] = False
    #: The dataclass ``strategy.params`` loads into; each strategy assigns its own.
    Params: ClassVar[type[Any]] = NoParams

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

    def configure_fit(self, round_num: int, device_ids: Sequence[int], settings: TrainSettings) -> list[FitTask]:
        """One task per device with the round's local-training ``settings``.

        Strategies that train devices differently return a changed copy (``dataclasses.replace``).
        """
        return [FitTask(device_id=d, round_num=round_num, settings=settings) for d in device_ids]

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
