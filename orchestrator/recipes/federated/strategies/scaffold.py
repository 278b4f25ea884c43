"""SCAFFOLD (Karimireddy et al., *SCAFFOLD: Stochastic Controlled Averaging for Federated Learning*,
ICML 2020), with the paper's option II for the device control variates.

Devices with different data pull their local steps towards different optima ("client drift"), so FedAvg
with several local steps settles away from the optimum of the whole fleet. SCAFFOLD removes the drift
with control variates: ``c_i`` estimates device i's gradient, ``c`` the fleet's, and every local step
uses ``g - c_i + c``, roughly the fleet's gradient at the device's point. Per round:

    devices:   y <- y - lr * (g_i(y) - c_i + c)                     K steps from y = x (the global model)
               c_i+ = c_i - c + (x - y) / (K * lr)                   (option II)
    hosts:     sum_i n_i * (c_i+ - c_i)                              pre-summed like the weights
    server:    x <- x + server_lr * (mean_i y_i - x)                 (FedAvg's example-weighted mean)
               c <- c + sum_{i in S} (n_i / n) * (c_i+ - c_i)        n = all devices' examples

For plain SGD the local steps sum to ``x - y = lr * sum_k (g_k - c_i + c)``, so option II's ``c_i+`` is
exactly the mean of the K raw mini-batch gradients; fedtwin computes it in that form, which stays a
gradient estimate when ``training.optimizer`` is Adam or has momentum (the displacement form would then
measure the optimizer's steps, not gradients). The paper averages ``c`` with weights ``1/N``; fedtwin
uses the example weights ``n_i/n`` that FedAvg puts on the models, so ``c = sum_i (n_i/n) c_i`` at all
times (with equal-sized devices it is the paper's ``c = mean_i c_i``, updated by ``(|S|/N) *
mean_{i in S}(c_i+ - c_i)``). A device that never trained has ``c_i = 0``; in round 1 ``c = 0`` too, so
the first round is FedAvg's.

Where the state lives: ``c`` (one model of float64) is strategy state in the driver, broadcast once per
round in the round payload (``"control_variate"``, float32) and checkpointed under ``control/<key>``.
Each ``c_i`` (float32, one model's trainable parameters) lives on the device's host as device state
(``local_state["control_variate"]``), exactly like FedDUM's kept device momentum: in the driver's
recovery copy, replayed after a host restart, and in every checkpoint's ``devices`` table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedtwin.orchestrator.recipes.federated.strategies.base import AggregatedFit, FitTask
from fedtwin.orchestrator.recipes.federated.strategies.fedavg import FedAvg, fedavg_update
from fedtwin.orchestrator.recipes.federated.strategies.state_ops import load_prefixed, prefixed, state_norm
from fedtwin.pipelines.federated.control_variates import CONTROL_KEY, DELTA_KEY
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import ModelState


@dataclass(frozen=True)
class ScaffoldParams:
    """``strategy.params`` of ``strategy.name: scaffold``.

    Attributes:
        server_lr: the global step size eta_g (> 0; the paper's default 1 = the plain mean of the devices).
    """

    server_lr: float = 1.0

    def __post_init__(self) -> None:
        if not self.server_lr > 0:
            raise ValueError(f"server_lr: must be > 0, got {self.server_lr}")


class Scaffold(FedAvg):
    """SCAFFOLD: corrected local steps, device control variates kept on the hosts (see the module docstring)."""

    name = "scaffold"
    Params = ScaffoldParams

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.control: ModelState = {}  # c (float64); empty = 0 (before the first round)

    def total_examples(self) -> int:
        """n: the examples of all devices (the weights of ``c``), from the partition's label histogram."""
        hist = None if self.context is None else self.context.global_label_histogram
        if hist is None or int(np.sum(hist)) <= 0:
            raise ValueError("scaffold needs the devices' label histogram (StrategyContext.global_label_histogram)")
        return int(np.sum(hist))

    def configure_fit(self, round_num: int, device_ids: Sequence[int], settings: TrainSettings) -> list[FitTask]:
        """The round's settings with ``control_variates`` on."""
        return super().configure_fit(round_num, device_ids, dataclasses.replace(settings, control_variates=True))

    def round_payload(self, round_num: int) -> dict[str, ModelState]:
        """``c`` as float32 (nothing in the first round: the hosts read a missing ``c`` as 0)."""
        if not self.control:
            return {}
        return {CONTROL_KEY: {k: v.astype(np.float32) for k, v in self.control.items()}}

    def aggregate_fit(
        self, round_num: int, current: ModelState, fit: AggregatedFit
    ) -> tuple[ModelState, dict[str, float]]:
        """FedAvg's step with ``server_lr``; ``c += (n_S / n) * mean_S(c_i+ - c_i)``."""
        delta = fit.extra_means.get(DELTA_KEY, {})  # absent only when no device took a step
        share = fit.num_examples / self.total_examples()
        for key, value in delta.items():
            self.control[key] = self.control.get(key, 0.0) + share * np.asarray(value, dtype=np.float64)
        new = fedavg_update(current, fit, self.params.server_lr)
        return new, {"control_norm": state_norm(self.control), "control_delta_norm": state_norm(delta)}

    def state_dict(self) -> dict[str, np.ndarray]:
        """``c`` (float64), keyed ``control/<parameter>``."""
        return prefixed("control", self.control)

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore ``c``."""
        self.control = {k: np.asarray(v, dtype=np.float64) for k, v in load_prefixed("control", state).items()}
