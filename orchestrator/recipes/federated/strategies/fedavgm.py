"""FedAvgM (Hsu et al., 2019): FedAvg with server momentum on the pseudo-gradient."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedtwin.orchestrator.recipes.federated.strategies.base import AggregatedFit
from fedtwin.orchestrator.recipes.federated.strategies.fedavg import FedAvg
from fedtwin.pipelines.model.state import ModelState, is_float


@dataclass(frozen=True)
class FedAvgMParams:
    """``v <- server_momentum * v + (w - mean)``; ``w <- w - server_lr * v``."""

    server_lr: float = 1.0
    server_momentum: float = 0.9

    def __post_init__(self) -> None:
        if not self.server_lr > 0:
            raise ValueError(f"server_lr: must be > 0, got {self.server_lr}")
        if not 0 <= self.server_momentum < 1:
            raise ValueError(f"server_momentum: must be in [0, 1), got {self.server_momentum}")


class FedAvgM(FedAvg):
    """Server momentum; the velocity is strategy state and is checkpointed."""

    name = "fedavgm"
    Params = FedAvgMParams

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.velocity: ModelState = {}

    def aggregate_fit(
        self, round_num: int, current: ModelState, fit: AggregatedFit
    ) -> tuple[ModelState, dict[str, float]]:
        """One heavy-ball step on the pseudo-gradient ``current - mean``."""
        beta, lr = self.params.server_momentum, self.params.server_lr
        new: ModelState = {}
        for key, mean in fit.mean_state.items():
            if not is_float(mean):
                new[key] = np.array(mean, copy=True)
                continue
            pseudo_grad = current[key].astype(np.float64) - mean
            velocity = beta * self.velocity[key] + pseudo_grad if key in self.velocity else pseudo_grad
            self.velocity[key] = velocity
            new[key] = (current[key] - lr * velocity).astype(mean.dtype)
        norm = float(np.sqrt(sum(float(np.sum(v * v)) for v in self.velocity.values())))
        return new, {"server_velocity_norm": norm}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The velocity, keyed by parameter name."""
        return {f"velocity/{k}": v for k, v in self.velocity.items()}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore the velocity."""
        self.velocity = {k.split("/", 1)[1]: np.array(v, dtype=np.float64) for k, v in state.items()}
