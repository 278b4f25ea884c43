"""The common sections of every experiment spec, and the local-training section recipes share.

Each is a frozen dataclass that checks its own ranges in ``__post_init__`` and raises
``ValueError("field: rule, got value")``; :mod:`fedtwin.orchestrator.config.loader` prefixes the section's
dotted path. A recipe's own sections (``federation:``, ``twin:``, ...) live in its package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fedtwin.pipelines.core.checks import check as check  # the range-check helper of every section
from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig
from fedtwin.pipelines.data.partition_config import PartitionConfig
from fedtwin.pipelines.model.train_config import TrainConfig as TrainConfig  # shared by recipes


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from: an existing folder (``path``), a dataset plugin, or generated digits.

    With ``path`` unset, the data is made under ``root`` on first use and reused by later runs with the
    same settings: moving digits from ``generator`` when ``dataset`` is null, else the clips of the
    dataset plugin ``dataset`` called with ``dataset_params``; either way partitioned with ``partition``.

    Attributes:
        path: an existing partition or dataset folder (a path, or a URI: ``s3://``, ``gs://``, ``file://``);
            null = make one under ``root``.
        root: parent folder of generated data (a path or a URI).
        seed: data generation seed (the partition has its own ``partition.seed``).
        dataset: a dataset plugin: a short name (entry point of ``fedtwin.datasets`` or a built-in) or an
            import path ``pkg.module:make``; null = moving digits from ``generator``.
        dataset_params: keyword arguments of the dataset plugin.
        generator: the moving-digits generator (used when ``dataset`` is null).
        partition: how the train split is spread over devices.
    """

    path: str | None = None
    root: str = "data"
    seed: int = 0
    dataset: str | None = None
    dataset_params: dict[str, Any] = field(default_factory=dict)
    generator: MovingDigitsConfig = field(default_factory=MovingDigitsConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)

    def __post_init__(self) -> None:
        check(_known_scheme(self.path), f"path: {_scheme_problem(self.path)}")
        check(_known_scheme(self.root), f"root: {_scheme_problem(self.root)}")
        check(
            self.dataset is None or bool(self.dataset.strip()),
            f"dataset: must be a plugin name, an import path 'pkg.module:make' or null, got {self.dataset!r}",
        )


@dataclass(frozen=True)
class ResourcesConfig:
    """Declared resources. ``hosts: null`` sizes the device-host pool from the cluster's CPUs/GPUs.

    ``backend: local`` runs the same hosts and server node in the driver process without Ray (debugging,
    studies of many short runs); it cannot enforce round timeouts. Recipes that have no such path ignore it.

    ``host_resources`` are custom Ray resources every device host also asks for, e.g. ``{edge: 1}`` to
    place hosts only on nodes started with ``ray start --resources '{"edge": 4}'``.

    ``server_threads`` pins the torch threads of the server node's work on its shared data (FedDU's
    server pass and its evaluations on D0), which runs while the device hosts wait; null derives them
    from the CPUs the run's hosts and server hold (``docs/system_model.md``).
    """

    hosts: int | None = None
    cpus_per_host: float = 1.0
    gpus_per_host: float = 0.0
    server_cpus: float = 0.0
    server_gpus: float = 0.0
    torch_threads: int = 1
    server_threads: int | None = None
    shard_cache_size: int = 64
    max_restarts: int = 2
    max_task_retries: int = 0
    backend: Literal["ray", "local"] = "ray"
    host_resources: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, value in self.host_resources.items():
            check(
                key not in ("CPU", "GPU", "memory", "object_store_memory"),
                f"host_resources: {key} is set by cpus_per_host/gpus_per_host or by Ray; name a custom resource",
            )
            check(
                not isinstance(value, bool) and isinstance(value, (int, float)) and value > 0,
                f"host_resources.{key}: must be a number > 0, got {value!r}",
            )
        check(self.hosts is None or self.hosts >= 1, f"hosts: must be >= 1 or null, got {self.hosts}")
        check(self.cpus_per_host >= 0, f"cpus_per_host: must be >= 0, got {self.cpus_per_host}")
        check(self.gpus_per_host >= 0, f"gpus_per_host: must be >= 0, got {self.gpus_per_host}")
        check(self.server_cpus >= 0, f"server_cpus: must be >= 0, got {self.server_cpus}")
        check(self.server_gpus >= 0, f"server_gpus: must be >= 0, got {self.server_gpus}")
        check(self.torch_threads >= 1, f"torch_threads: must be >= 1, got {self.torch_threads}")
        check(
            self.server_threads is None or self.server_threads >= 1,
            f"server_threads: must be >= 1 or null, got {self.server_threads}",
        )
        check(self.shard_cache_size >= 1, f"shard_cache_size: must be >= 1, got {self.shard_cache_size}")
        check(self.max_restarts >= -1, f"max_restarts: must be >= -1, got {self.max_restarts}")


@dataclass(frozen=True)
class RayConfig:
    """How to reach Ray. ``address: null`` starts an embedded local instance (the default)."""

    address: str | None = None
    num_cpus: int | None = None
    object_store_mb: int | None = None
    dashboard: bool = False
    connect_timeout_s: float = 15.0  # an attached cluster must answer within this (else one line, exit 2)

    def __post_init__(self) -> None:
        check(self.num_cpus is None or self.num_cpus >= 1, f"num_cpus: must be >= 1, got {self.num_cpus}")
        check(
            0 < self.connect_timeout_s <= 3600,
            f"connect_timeout_s: must be in (0, 3600] seconds, got {self.connect_timeout_s}",
        )
        check(
            self.object_store_mb is None or self.object_store_mb >= 75,
            f"object_store_mb: must be >= 75 (Ray's minimum), got {self.object_store_mb}",
        )


@dataclass(frozen=True)
class RunConfig:
    """Run folder and checkpointing: ``checkpoint_every`` steps, keeping the newest ``keep_checkpoints``.

    ``output_dir`` is a local folder or a URI (``s3://bucket/runs``, ``gs://``, ``file://``).
    """

    output_dir: str = "runs"
    checkpoint_every: int = 5
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        check(_known_scheme(self.output_dir), f"output_dir: {_scheme_problem(self.output_dir)}")
        check(self.checkpoint_every >= 1, f"checkpoint_every: must be >= 1, got {self.checkpoint_every}")
        check(self.keep_checkpoints >= 1, f"keep_checkpoints: must be >= 1, got {self.keep_checkpoints}")


@dataclass(frozen=True)
class PluginsConfig:
    """Where user plugins (models, strategies, recipes, datasets, partitioners) are imported from.

    Attributes:
        paths: folders put on ``sys.path`` before any plugin resolves, so that ``recipe: my_mod:MyRecipe``
            or ``model.arch: my_nets:Net`` import from them. In a YAML file, relative folders are relative
            to that file; the loaded spec (and the run folder's ``spec.yaml``) holds them absolute.
    """

    paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for i, path in enumerate(self.paths):
            check(bool(path.strip()), f"paths[{i}]: must be a folder, got {path!r}")


def _known_scheme(location: str | None) -> bool:
    """A plain path, or a URI whose scheme fedtwin reads and writes."""
    from fedtwin.pipelines.core.storage import SCHEMES, scheme_of

    return location is None or scheme_of(location) in ("", *SCHEMES)


def _scheme_problem(location: str | None) -> str:
    from fedtwin.pipelines.core.storage import scheme_of

    scheme = scheme_of(location or "")
    return f"unknown scheme '{scheme}://' in {location!r}; use a local path, s3://, gs:// or file://"
