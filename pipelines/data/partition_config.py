"""``data.partition:``, how a dataset is split over devices, without the Parquet code that writes the split.

A spec's ``data:`` section holds a :class:`PartitionConfig`, so loading and printing a spec reads this
module; :mod:`fedtwin.pipelines.data.partition` (pyarrow) does the splitting. ``scheme`` is resolved
here (:mod:`fedtwin.pipelines.data.partitioners`, numpy only), so a typo or a plugin partitioner's
unknown parameter fails when the config loads.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

from fedtwin.pipelines.data.partitioners import needs_groups, resolve_partitioner


@dataclass(frozen=True)
class PartitionConfig:
    """How to split a dataset over devices.

    ``alpha`` and ``min_size`` (videos per device) apply to ``dirichlet``, ``labels_per_device`` to
    ``shards``; ``params`` holds the other constructor parameters of a plugin partitioner. ``devices``
    may be None only for a scheme that reads groups (``by-group``): one device per group. Range errors are
    ``ValueError("field: ...")`` (the config loader and the CLI prefix the field). ``scheme`` is
    resolved here too, so a typo fails when the config loads.
    """

    devices: int | None = 50  # None: one device per group (by-group only)
    # iid | dirichlet | shards | by-group, a fedtwin.partitioners entry point or "pkg.module:MyPartitioner"
    scheme: str = "dirichlet"
    alpha: float = 0.5
    labels_per_device: int = 2
    min_size: int = 1
    shared_fraction: float = 0.0  # share of the train videos held by the server as `shared`
    shared_classes: int | None = None  # restrict `shared` to this many classes (chosen by seed)
    seed: int = 0
    devices_per_file: int = 256  # devices packed per Parquet file (one row group each)
    params: dict[str, Any] = field(default_factory=dict)  # a plugin partitioner's own parameters

    def __post_init__(self) -> None:
        # The loader prefixes the section, so the field is "scheme" here and "data.partition.scheme" in the message.
        cls = resolve_partitioner(self.scheme, field="scheme")
        if self.devices is None and not needs_groups(cls):
            raise ValueError(f"devices: must be set for scheme {self.scheme} (only by-group derives it: one per group)")
        checks = [
            (self.devices is None or self.devices >= 1, "devices", "must be >= 1"),
            (self.alpha > 0, "alpha", "must be > 0"),
            (self.labels_per_device >= 1, "labels_per_device", "must be >= 1"),
            (self.min_size >= 1, "min_size", "must be >= 1"),
            (0 <= self.shared_fraction < 1, "shared_fraction", "must be in [0, 1)"),
            (self.shared_classes is None or self.shared_classes >= 1, "shared_classes", "must be >= 1"),
            (self.seed >= 0, "seed", "must be >= 0"),
            (self.devices_per_file >= 1, "devices_per_file", "must be >= 1"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"{name}: {rule}, got {getattr(self, name)!r}")
        partitioner_kwargs(cls, self)  # unknown or missing params fail at config load


#: PartitionConfig fields a partitioner constructor may ask for by name (not ``scheme`` or ``params``).
_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(PartitionConfig)) - {"scheme", "params"}


def partitioner_kwargs(cls: type, cfg: PartitionConfig) -> dict[str, Any]:
    """Constructor arguments of partitioner ``cls``: config fields by name, the rest from ``cfg.params``.

    Raises:
        ValueError: ``"params: ..."`` for a key the constructor does not take, a key that shadows a
            config field, or a required parameter left out.
    """
    signature = inspect.signature(cls)
    named = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    }
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    shadowing = sorted(set(cfg.params) & _CONFIG_FIELDS)
    if shadowing:
        raise ValueError(f"params: {shadowing[0]!r} is a partition setting; set it as data.partition.{shadowing[0]}")
    unknown = sorted(set(cfg.params) - set(named))
    if unknown and not takes_any:
        takes = ", ".join(n for n in named if n not in _CONFIG_FIELDS) or "none"
        raise ValueError(f"params: {cls.__name__} takes no parameter {unknown[0]!r} (its own parameters: {takes})")
    # Built-ins name their parameters exactly like the PartitionConfig fields they use.
    kwargs = {name: getattr(cfg, name) for name in named if name in _CONFIG_FIELDS}
    kwargs.update(cfg.params)
    try:
        signature.bind(**kwargs)
    except TypeError as err:
        raise ValueError(f"params: {cls.__name__} cannot be built from {sorted(kwargs)} ({err})") from None
    return kwargs
