"""The sections of recipe ``federated``: ``federation:`` (the round loop), ``strategy:`` (the server) and
``system:`` (the modelled clock), and the checks across them when a spec is loaded.

Local training on the devices is the common :class:`fedtwin.orchestrator.config.sections.TrainConfig`, under
``training:``. Which strategy names exist and what their ``params`` mean is the strategies' business
(:mod:`fedtwin.orchestrator.recipes.federated.strategies`); :func:`validate` checks both when a spec is
loaded. Nothing here imports torch or Ray (the strategies are numpy code), so the config package loads a
federated spec from this module without importing the recipe (``BUILTIN_SECTIONS`` and ``BUILTIN_HOOKS`` in
:mod:`fedtwin.orchestrator.config.recipes`); the model itself is checked when it is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.recipes.federated.strategies import strategy_class

if TYPE_CHECKING:
    from fedtwin.orchestrator.config.spec import ExperimentSpec

#: Keys recipe ``federated`` no longer reads -> what to do instead (``Recipe.retired_keys``).
RETIRED_KEYS: dict[str, str] = {
    "federation.chaos": "fault drills are not part of the experiment: write the faults to a drill plan "
    "and run `fedtwin drill PLAN CONFIG` (docs/failures.md)"
}


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
        deadline_s: a round's deadline in modelled time (needs ``system.enabled``): sampled devices whose
            modelled download + training + upload exceeds it are dropped before they train; null = none.
        over_select: sample ``ceil(devices_per_round * (1 + over_select))`` devices and keep the
            ``devices_per_round`` fastest that make the deadline (needs ``system.enabled``); 0 = off.
    """

    num_rounds: int = 20
    devices_per_round: int = 10
    round_timeout_s: float = 600.0
    min_success_fraction: float = 0.5
    eval_every: int = 1
    target_accuracy: float | None = None
    device_retries: int = 2
    deadline_s: float | None = None
    over_select: float = 0.0

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
        _check(
            self.deadline_s is None or self.deadline_s > 0, f"deadline_s: must be > 0 or null, got {self.deadline_s}"
        )
        _check(self.over_select >= 0, f"over_select: must be >= 0, got {self.over_select}")


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


@dataclass(frozen=True)
class ProfileConfig:
    """How a per-device quantity of the modelled deployment spreads over the devices.

    Attributes:
        kind: ``fixed`` (``value`` for every device), ``lognormal`` (median ``value``, spread ``sigma``,
            drawn with ``system.seed``) or ``csv`` (a file of ``device_id,value`` rows, one per device).
        value: the value (``fixed``) or the median (``lognormal``), in the unit its key names.
        sigma: standard deviation of the quantity's logarithm (``lognormal``).
        path: the CSV file (``csv``).
    """

    kind: Literal["fixed", "lognormal", "csv"] = "fixed"
    value: float = 1.0
    sigma: float = 0.5
    path: str | None = None

    def __post_init__(self) -> None:
        _check(self.value > 0, f"value: must be > 0, got {self.value}")
        _check(self.sigma >= 0, f"sigma: must be >= 0, got {self.sigma}")
        _check(self.kind != "csv" or bool(self.path), "path: kind csv needs the path of a device_id,value file")


@dataclass(frozen=True)
class SystemConfig:
    """The modelled clock (``system:``): a deployment's time per round, next to this machine's.

    Attributes:
        enabled: compute ``sim_round_s`` / ``sim_time_s`` every round (off by default).
        seed: seeds the lognormal profiles; null = the experiment's ``seed``.
        device_gflops: device speeds in GFLOP/s (10^9 FLOPs per second of training).
        download_mbps: device download bandwidths in Mbit/s.
        upload_mbps: device upload bandwidths in Mbit/s.
        server_gflops: the server's speed in GFLOP/s.
        flops_per_step: training FLOPs of one step at ``training.batch_size``; null = counted with
            PyTorch's FLOP counter on the model (evaluation FLOPs are then counted too; set, they are
            taken as a third of it).
    """

    enabled: bool = False
    seed: int | None = None
    device_gflops: ProfileConfig = field(default_factory=lambda: ProfileConfig(value=10.0))
    download_mbps: ProfileConfig = field(default_factory=lambda: ProfileConfig(value=50.0))
    upload_mbps: ProfileConfig = field(default_factory=lambda: ProfileConfig(value=20.0))
    server_gflops: float = 100.0
    flops_per_step: float | None = None

    def __post_init__(self) -> None:
        _check(self.server_gflops > 0, f"server_gflops: must be > 0, got {self.server_gflops}")
        _check(
            self.flops_per_step is None or self.flops_per_step > 0,
            f"flops_per_step: must be > 0 or null, got {self.flops_per_step}",
        )


def check_system(spec: ExperimentSpec) -> None:
    """Keys that need the clock are set only with ``system.enabled`` (one-line errors naming them)."""
    fed, system = spec.federation, spec.system
    if system.enabled:
        return
    if fed.deadline_s is not None:
        raise ConfigError("federation.deadline_s: is modelled time; set system.enabled: true (or drop the deadline)")
    if fed.over_select > 0:
        raise ConfigError("federation.over_select: needs the modelled clock; set system.enabled: true")


def validate(spec: ExperimentSpec) -> None:
    """The checks across sections when a spec loads: the strategy resolves and its ``params`` parse (errors
    name ``strategy.params.<key>``); keys that need the modelled clock come with ``system.enabled``."""
    strategy_class(spec.strategy.name).parse_params(spec.strategy.params)
    check_system(spec)
