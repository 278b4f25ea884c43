"""The experiment spec: one YAML file maps 1:1 onto these frozen, typed sections.

Sections validate their own ranges in ``__post_init__``; :mod:`orchestrator.config.loader` adds strict
key and type checking with dotted paths. ``ExperimentSpec.with_overrides({"a.b": v})`` is the only way
to change a spec (CLI ``--set`` and Tune trials both use it) and always re-validates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from orchestrator.config.loader import ConfigError, apply_overrides, from_dict, to_dict
from orchestrator.recipes.incremental.config import IncrementalConfig
from orchestrator.recipes.mutual.config import TwinConfig
from orchestrator.recipes.transfer.config import TransferConfig
from pipelines.model.networks import ModelConfig
from pipelines.data.moving_digits import MovingDigitsConfig
from pipelines.data.partition import PartitionConfig


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from. Either an existing partition (``path``) or a generated one.

    With ``path`` unset, moving digits are generated from ``generator`` and partitioned with
    ``partition`` under ``root`` on first use; later runs with the same settings reuse them.
    """

    path: str | None = None
    root: str = "data"
    seed: int = 0  # data generation seed (the partition has its own ``partition.seed``)
    generator: MovingDigitsConfig = field(default_factory=MovingDigitsConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)


@dataclass(frozen=True)
class TrainConfig:
    """Local training on each device (one call of ``pipelines.model.training.local_train``)."""

    epochs: int = 1
    batch_size: int = 32
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    lr_decay: float = 1.0  # lr of round r = lr * lr_decay**(r-1)
    momentum: float = 0.0
    weight_decay: float = 0.0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"epochs: must be >= 1, got {self.epochs}")
        _check(self.batch_size >= 1, f"batch_size: must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        _check(0 < self.lr_decay <= 1, f"lr_decay: must be in (0, 1], got {self.lr_decay}")
        _check(0 <= self.momentum < 1, f"momentum: must be in [0, 1), got {self.momentum}")
        _check(self.weight_decay >= 0, f"weight_decay: must be >= 0, got {self.weight_decay}")
        _check(self.max_steps is None or self.max_steps >= 1, f"max_steps: must be >= 1, got {self.max_steps}")


@dataclass(frozen=True)
class ChaosConfig:
    """Fault injection for resilience tests and drills: devices that raise or hang in given rounds."""

    fail_devices: tuple[int, ...] = ()
    hang_devices: tuple[int, ...] = ()
    hang_s: float = 3600.0
    rounds: tuple[int, ...] = ()  # empty = every round


@dataclass(frozen=True)
class FederationConfig:
    """The round loop: how many rounds, how many devices per round, and failure tolerance."""

    num_rounds: int = 20
    devices_per_round: int = 10
    round_timeout_s: float = 600.0
    min_success_fraction: float = 0.5
    eval_every: int = 1
    target_accuracy: float | None = None  # report the first round reaching it ("rounds to target")
    chaos: ChaosConfig = field(default_factory=ChaosConfig)

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


@dataclass(frozen=True)
class StrategyConfig:
    """Server-side algorithm by registry name; ``params`` are checked by the strategy's own dataclass."""

    name: str = "fedavg"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResourcesConfig:
    """Declared resources. ``hosts: null`` sizes the device-host pool from the cluster's CPUs/GPUs."""

    hosts: int | None = None
    cpus_per_host: float = 1.0
    gpus_per_host: float = 0.0
    server_cpus: float = 0.0
    server_gpus: float = 0.0
    torch_threads: int = 1
    shard_cache_size: int = 64
    max_restarts: int = 2
    max_task_retries: int = 0
    # "local" runs the same hosts and server node in the driver process without Ray (debugging, studies
    # of many short runs); it cannot enforce round timeouts. See orchestrator/recipes/federated/local_backend.py.
    backend: Literal["ray", "local"] = "ray"

    def __post_init__(self) -> None:
        _check(self.hosts is None or self.hosts >= 1, f"hosts: must be >= 1 or null, got {self.hosts}")
        _check(self.cpus_per_host >= 0, f"cpus_per_host: must be >= 0, got {self.cpus_per_host}")
        _check(self.gpus_per_host >= 0, f"gpus_per_host: must be >= 0, got {self.gpus_per_host}")
        _check(self.server_cpus >= 0, f"server_cpus: must be >= 0, got {self.server_cpus}")
        _check(self.server_gpus >= 0, f"server_gpus: must be >= 0, got {self.server_gpus}")
        _check(self.torch_threads >= 1, f"torch_threads: must be >= 1, got {self.torch_threads}")
        _check(self.shard_cache_size >= 1, f"shard_cache_size: must be >= 1, got {self.shard_cache_size}")
        _check(self.max_restarts >= -1, f"max_restarts: must be >= -1, got {self.max_restarts}")


@dataclass(frozen=True)
class RayConfig:
    """How to reach Ray. ``address: null`` starts an embedded local instance (the default)."""

    address: str | None = None
    num_cpus: int | None = None
    object_store_mb: int | None = None
    dashboard: bool = False

    def __post_init__(self) -> None:
        _check(self.num_cpus is None or self.num_cpus >= 1, f"num_cpus: must be >= 1, got {self.num_cpus}")
        _check(
            self.object_store_mb is None or self.object_store_mb >= 75,
            f"object_store_mb: must be >= 75 (Ray's minimum), got {self.object_store_mb}",
        )


@dataclass(frozen=True)
class RunConfig:
    """Run folder and checkpointing."""

    output_dir: str = "runs"
    checkpoint_every: int = 5
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        _check(self.checkpoint_every >= 1, f"checkpoint_every: must be >= 1, got {self.checkpoint_every}")
        _check(self.keep_checkpoints >= 1, f"keep_checkpoints: must be >= 1, got {self.keep_checkpoints}")


@dataclass(frozen=True)
class ExperimentSpec:
    """One experiment. ``recipe`` picks the loop (see ``orchestrator.recipes.RECIPES``)."""

    name: str = "experiment"
    recipe: str = "federated"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainConfig = field(default_factory=TrainConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    run: RunConfig = field(default_factory=RunConfig)
    incremental: IncrementalConfig = field(default_factory=IncrementalConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    twin: TwinConfig = field(default_factory=TwinConfig)

    def __post_init__(self) -> None:
        _check(bool(self.name) and "/" not in self.name, f"name: must be a non-empty name without '/', got {self.name!r}")
        _check(self.seed >= 0, f"seed: must be >= 0, got {self.seed}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentSpec:
        """Validate a plain mapping (e.g. parsed YAML)."""
        spec = from_dict(cls, data)
        _validate_cross_section(spec)
        return spec

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> ExperimentSpec:
        """Load a YAML file, apply dotted ``overrides`` and validate."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        try:
            return cls.from_dict(apply_overrides(data, overrides or {}))
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, YAML-safe; ``from_dict(to_dict())`` round-trips."""
        return to_dict(self)

    def with_overrides(self, overrides: Mapping[str, Any]) -> ExperimentSpec:
        """A new validated spec with dotted keys replaced."""
        return ExperimentSpec.from_dict(apply_overrides(self.to_dict(), overrides))

    def replace(self, **changes: Any) -> ExperimentSpec:
        """``dataclasses.replace`` for top-level fields, re-validated."""
        return ExperimentSpec.from_dict(dataclasses.replace(self, **changes).to_dict())


def _validate_cross_section(spec: ExperimentSpec) -> None:
    from orchestrator.recipes import RECIPES
    from orchestrator.recipes.federated.strategies import STRATEGIES

    if spec.recipe not in RECIPES:
        raise ConfigError(f"recipe: unknown recipe {spec.recipe!r}; choose one of {', '.join(sorted(RECIPES))}")
    if spec.strategy.name not in STRATEGIES:
        raise ConfigError(
            f"strategy.name: unknown strategy {spec.strategy.name!r}; choose one of {', '.join(sorted(STRATEGIES))}"
        )
    STRATEGIES[spec.strategy.name].parse_params(spec.strategy.params)
