"""The sections of recipe ``federated``: ``federation:`` (the round loop) and ``strategy:`` (the server).

Local training on the devices is the common :class:`fedtwin.orchestrator.config.sections.TrainConfig`, under
``training:``. Which strategy names exist and what their ``params`` mean is the strategies' business
(:mod:`fedtwin.orchestrator.recipes.federated.strategies`); :meth:`FederatedRecipe.validate` checks both when
a spec is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class FederationConfig:
    """The round loop: how many rounds, how many devices per round, and failure tolerance.

    Attributes:
        num_rounds: rounds to run.
        devices_per_round: devices sampled each round.
        round_timeout_s: longest wait for one round's device hosts.
        min_success_fraction: the share of sampled devices that must report for the round to count.
        eval_every: evaluate the global model every this many rounds (and after the last).
        target_accuracy: report the first round reaching it ("rounds to target"); null = none.
        device_retries: how often a device whose host died (or whose host call was lost) is
            dispatched again within the same round, after the host is back; a device whose own
            training raised is not retried (the same inputs raise the same error).
    """

    num_rounds: int = 20
    devices_per_round: int = 10
    round_timeout_s: float = 600.0
    min_success_fraction: float = 0.5
    eval_every: int = 1
    target_accuracy: float | None = None
    device_retries: int = 2

    def __post_init__(self) -> None:
        _check(self.num_rounds >= 1, f"num_rounds: must be >= 1, got {self.num_rounds}")
        _check(self.devices_per_round >= 1, f"devices_per_round: must be >= 1, got {self.devices_per_round}")
        _check(self.round_timeout_s > 0, f"round_timeout_s: must be > 0, got {self.round_timeout_s}")
        _check(
            0 < self.min_success_fraction <= 1,
            f"min_success_fraction: must be in (0, 1], got {self.min_success_fraction}",
        )
        _check(self.eval_every >= 1, f"eval_every: must be >= 1, got {self.eval_every}")
        _check(
            self.target_accuracy is None or 0 < self.target_accuracy <= 1,
            f"target_accuracy: must be in (0, 1] or null, got {self.target_accuracy}",
        )
        _check(self.device_retries >= 0, f"device_retries: must be >= 0, got {self.device_retries}")


@dataclass(frozen=True)
class StrategyConfig:
    """The server-side algorithm.

    Attributes:
        name: a built-in strategy (fedavg, fedavgm, feddu), an entry point of ``fedtwin.strategies`` or
            an import path ``pkg.module:MyStrategy``.
        params: the strategy's parameters, checked by the strategy's own dataclass.
    """

    name: str = "fedavg"
    params: dict[str, Any] = field(default_factory=dict)
