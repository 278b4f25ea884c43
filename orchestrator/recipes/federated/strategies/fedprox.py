"""FedProx (Li et al., *Federated Optimization in Heterogeneous Networks*, MLSys 2020).

Each selected device minimises its own loss plus a pull back towards the model it received::

    h_i(w) = F_i(w) + mu/2 * ||w - w_t||^2        gradient: grad F_i(w) + mu * (w - w_t)

so a device with skewed data cannot wander far from the global model ``w_t`` during its local epochs;
``mu = 0`` is FedAvg exactly. The server side is FedAvg's example-weighted mean (with ``server_lr`` as in
:class:`~fedtwin.orchestrator.recipes.federated.strategies.fedavg.FedAvg`). The term reaches the devices as
``TrainSettings.prox_mu`` and is added to every step's gradient inside the one training loop
(:mod:`fedtwin.pipelines.model.step_terms`); the reported ``train_loss`` is the data loss without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from fedtwin.orchestrator.recipes.federated.strategies.base import FitTask
from fedtwin.orchestrator.recipes.federated.strategies.fedavg import FedAvg
from fedtwin.pipelines.model.settings import TrainSettings


@dataclass(frozen=True)
class FedProxParams:
    """``strategy.params`` of ``strategy.name: fedprox``.

    Attributes:
        mu: the proximal coefficient (>= 0; 0 = FedAvg). The paper tries 0.001 to 1; 0.01 is its
            usual choice on non-IID data.
        server_lr: FedAvg's server step (1 = the plain mean).
    """

    mu: float = 0.01
    server_lr: float = 1.0

    def __post_init__(self) -> None:
        if not self.mu >= 0:
            raise ValueError(f"mu: must be >= 0, got {self.mu}")
        if not self.server_lr > 0:
            raise ValueError(f"server_lr: must be > 0, got {self.server_lr}")


class FedProx(FedAvg):
    """FedAvg whose devices train with the proximal term ``mu/2 ||w - w_t||^2``."""

    name = "fedprox"
    Params = FedProxParams

    def configure_fit(self, round_num: int, device_ids: Sequence[int], settings: TrainSettings) -> list[FitTask]:
        """The round's settings with ``prox_mu = mu``."""
        settings = dataclasses.replace(settings, prox_mu=float(self.params.mu))
        return super().configure_fit(round_num, device_ids, settings)
