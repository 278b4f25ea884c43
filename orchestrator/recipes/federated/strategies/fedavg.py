"""FedAvg (McMahan et al., 2017): example-weighted mean of device weights, optional server lr."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedtwin.orchestrator.recipes.federated.strategies.base import AggregatedFit, Strategy
from fedtwin.pipelines.model.state import ModelState, is_float


@dataclass(frozen=True)
class FedAvgParams:
    """``server_lr`` = 1 is plain FedAvg; other values give the FedOpt form w + lr * (mean - w)."""

    server_lr: float = 1.0

    def __post_init__(self) -> None:
        if not self.server_lr > 0:
            raise ValueError(f"server_lr: must be > 0, got {self.server_lr}")


def server_step(current: ModelState, target: ModelState, lr: float) -> ModelState:
    """``current + lr * (target - current)`` on float entries; integer buffers come from ``target``."""
    out: ModelState = {}
    for key, value in target.items():
        if is_float(value):
            out[key] = (current[key] + lr * (value.astype(np.float64) - current[key])).astype(value.dtype)
        else:
            out[key] = np.array(value, copy=True)
    return out


def fedavg_update(current: ModelState, fit: AggregatedFit, lr: float = 1.0) -> ModelState:
    """The FedAvg state: a copy of the weighted mean (``lr`` = 1) or ``current + lr * (mean - current)``."""
    if lr == 1.0:
        return {k: np.array(v, copy=True) for k, v in fit.mean_state.items()}
    return server_step(current, fit.mean_state, lr)


class FedAvg(Strategy):
    """Weights are averaged with ``num_examples`` weights (the folding happens in the driver)."""

    name = "fedavg"
    # Declared as wide as Strategy's: FedAvg's subclasses bring their own (unrelated) params dataclasses.
    Params: ClassVar[type[Any]] = FedAvgParams

    def aggregate_fit(
        self, round_num: int, current: ModelState, fit: AggregatedFit
    ) -> tuple[ModelState, dict[str, float]]:
        """Apply the (optionally scaled) FedAvg step."""
        return fedavg_update(current, fit, self.params.server_lr), {}
