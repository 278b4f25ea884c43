"""The sweep file: a base experiment, fixed overrides and a search space over dotted keys.

```yaml
base: feddu_short.yaml            # experiment YAML, relative to this file
name: feddu-sweep                 # folder name under output_dir (Tune's experiment name)
overrides: {federation.num_rounds: 12}
search_space:
  strategy.params.decay: {uniform: [0.95, 0.999]}
  strategy.params.C: {loguniform: [0.25, 4.0]}
  strategy.params.momentum: {choice: [0.0, 0.5, 0.9]}
objective: {name: accuracy}       # or rounds_to_target
search: {algorithm: random, num_samples: 8, seed: 0}
scheduler: {name: asha, grace_period: 2, reduction_factor: 3}
resources: {driver_cpus: 1.0}
```

Same strictness as the experiment spec: unknown keys, wrong types and bad ranges raise ``ConfigError``
naming the dotted path. :func:`load_sweep` also checks every search-space value against the base
experiment (each value must make a valid spec), so a typo in a dotted key fails before any trial starts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from fedtwin.orchestrator.config.files import read_mapping, relative_to
from fedtwin.orchestrator.config.loader import ConfigError, from_dict, to_dict
from fedtwin.orchestrator.config.names import check_folder_name
from fedtwin.orchestrator.config.recipes import recipe_class
from fedtwin.orchestrator.config.spec import ExperimentSpec

DISTRIBUTIONS = ("grid", "choice", "uniform", "loguniform")


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``grid``/``choice`` over ``values``, or ``uniform``/``loguniform`` on ``[low, high]``."""

    key: str
    kind: Literal["grid", "choice", "uniform", "loguniform"]
    values: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0

    @property
    def is_range(self) -> bool:
        """True for continuous dimensions."""
        return self.kind in ("uniform", "loguniform")

    def probe_values(self) -> tuple[Any, ...]:
        """The values that must each make a valid experiment (all choices, or both ends of a range)."""
        return (self.low, self.high) if self.is_range else self.values

    def to_yaml(self) -> dict[str, Any]:
        """The form it was written in."""
        return {self.kind: [self.low, self.high] if self.is_range else list(self.values)}


def parse_dimension(key: str, raw: Any) -> Dimension:
    """``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{choice: [...]}`` or ``{grid: [...]}``."""
    path = f"search_space.{key}"
    if not isinstance(raw, Mapping) or len(raw) != 1:
        raise ConfigError(
            f"{path}: expected one of {{grid: [...]}}, {{choice: [...]}}, {{uniform: [low, high]}}, "
            f"{{loguniform: [low, high]}}, got {raw!r} (fixed values go under 'overrides')"
        )
    ((kind, arg),) = raw.items()
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{path}: unknown distribution {kind!r}; choose one of {', '.join(DISTRIBUTIONS)}")
    if not isinstance(arg, (list, tuple)) or not arg:
        raise ConfigError(f"{path}.{kind}: expected a non-empty list, got {arg!r}")
    if kind in ("grid", "choice"):
        if len({yaml.safe_dump(v) for v in arg}) != len(arg):
            raise ConfigError(f"{path}.{kind}: values repeat in {list(arg)}")
        return Dimension(key, kind, values=tuple(arg))
    if len(arg) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in arg):
        raise ConfigError(f"{path}.{kind}: expected [low, high] numbers, got {arg!r}")
    low, high = float(arg[0]), float(arg[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"{path}.{kind}: needs low < high, got [{arg[0]}, {arg[1]}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{path}.loguniform: low must be > 0, got {arg[0]}")
    return Dimension(key, kind, low=low, high=high)


@dataclass(frozen=True)
class ObjectiveConfig:
    """What the scheduler optimises.

    ``accuracy``: the last reported ``accuracy_key`` (maximised). ``rounds_to_target``: the first round
    whose ``accuracy_key`` reaches ``target`` (default ``federation.target_accuracy``), minimised, with
    accuracy breaking ties; rounds that never reach it count as ``num_rounds + 1``.
    """

    name: Literal["accuracy", "rounds_to_target"] = "accuracy"
    accuracy_key: str = "test_accuracy"
    target: float | None = None

    def __post_init__(self) -> None:
        if self.target is not None and not 0 < self.target <= 1:
            raise ValueError(f"target: must be in (0, 1] or null, got {self.target}")


@dataclass(frozen=True)
class SearchConfig:
    """How trial configs are drawn. ``random`` also crosses every ``grid`` dimension (Tune's rule)."""

    algorithm: Literal["random", "grid", "optuna"] = "random"
    num_samples: int | None = None  # null: 8 draws (random, optuna) or one pass over the grid (grid)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError(f"num_samples: must be >= 1 or null, got {self.num_samples}")

    @property
    def samples(self) -> int:
        """Tune's ``num_samples``: draws, or repeats of the whole grid."""
        if self.num_samples is not None:
            return self.num_samples
        return 1 if self.algorithm == "grid" else 8


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping (ASHA, the default) or population-based training (PBT), both on rounds."""

    name: Literal["asha", "pbt", "fifo"] = "asha"
    max_t: int | None = None  # null: the base experiment's federation.num_rounds
    grace_period: int = 1
    reduction_factor: float = 3.0
    perturbation_interval: int = 2
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25

    def __post_init__(self) -> None:
        checks = [
            (self.max_t is None or self.max_t >= 1, "max_t", "must be >= 1 or null"),
            (self.grace_period >= 1, "grace_period", "must be >= 1"),
            (self.reduction_factor > 1, "reduction_factor", "must be > 1"),
            (self.perturbation_interval >= 1, "perturbation_interval", "must be >= 1"),
            (0 < self.quantile_fraction <= 0.5, "quantile_fraction", "must be in (0, 0.5]"),
            (0 <= self.resample_probability <= 1, "resample_probability", "must be in [0, 1]"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"{name}: {rule}, got {getattr(self, name)}")


@dataclass(frozen=True)
class SweepResourcesConfig:
    """Per-trial driver share and concurrency; the device hosts' share comes from the experiment.

    ``check_fit`` fails the sweep at once when one trial cannot fit the cluster; turn it off on an
    autoscaling cluster whose worker nodes are not up yet.
    """

    driver_cpus: float = 1.0
    driver_gpus: float = 0.0
    max_concurrent_trials: int | None = None  # null: as many trials as the cluster holds at once
    placement_strategy: Literal["PACK", "SPREAD"] = "PACK"
    check_fit: bool = True

    def __post_init__(self) -> None:
        if not self.driver_cpus > 0:
            raise ValueError(f"driver_cpus: must be > 0, got {self.driver_cpus}")
        if self.driver_gpus < 0:
            raise ValueError(f"driver_gpus: must be >= 0, got {self.driver_gpus}")
        if self.max_concurrent_trials is not None and self.max_concurrent_trials < 1:
            raise ValueError(f"max_concurrent_trials: must be >= 1 or null, got {self.max_concurrent_trials}")


@dataclass(frozen=True)
class SweepFailureConfig:
    """``max_failures``: retries of a failed trial from its last checkpoint; then it is marked ERROR and
    the sweep goes on (``fail_fast: true`` stops the whole sweep at the first error instead)."""

    max_failures: int = 1
    fail_fast: bool = False

    def __post_init__(self) -> None:
        if self.max_failures < -1:
            raise ValueError(f"max_failures: must be >= -1 (-1 = retry forever), got {self.max_failures}")


@dataclass(frozen=True)
class SweepSpec:
    """One sweep file (see the module docstring)."""

    base: str
    name: str = "sweep"
    output_dir: str = "sweeps"
    overrides: dict[str, Any] = field(default_factory=dict)
    search_space: dict[str, Any] = field(default_factory=dict)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: SweepResourcesConfig = field(default_factory=SweepResourcesConfig)
    failure: SweepFailureConfig = field(default_factory=SweepFailureConfig)
    time_budget_s: float | None = None  # stop the whole sweep after this many seconds

    def __post_init__(self) -> None:
        check_folder_name(self.name)  # the sweep's folder: checked before anything is written
        if not self.search_space:
            raise ValueError(
                "search_space: must name at least one dotted key, e.g. strategy.params.C: {loguniform: [0.25, 4]}"
            )
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time_budget_s: must be > 0 or null, got {self.time_budget_s}")
        dims = tuple(parse_dimension(str(k), v) for k, v in self.search_space.items())
        clash = sorted(set(self.overrides) & set(self.search_space))
        if clash:
            raise ValueError(f"search_space.{clash[0]}: also fixed under overrides; keep it in one place")
        search, sched = self.search, self.scheduler
        if search.algorithm == "grid" and any(d.is_range for d in dims):
            bad = next(d for d in dims if d.is_range)
            raise ValueError(f"search_space.{bad.key}: algorithm 'grid' needs grid/choice values, got {bad.kind}")
        if search.algorithm == "optuna" and any(d.kind == "grid" for d in dims):
            bad = next(d for d in dims if d.kind == "grid")
            raise ValueError(f"search_space.{bad.key}: optuna cannot take 'grid'; use 'choice'")
        if sched.name == "pbt" and search.algorithm == "optuna":
            raise ValueError("scheduler.name: pbt draws its own configs; use search.algorithm random or grid with it")
        object.__setattr__(self, "dimensions", dims)

    dimensions: tuple[Dimension, ...] = field(default=(), init=False, compare=False, repr=False)

    @property
    def keys(self) -> list[str]:
        """The searched dotted keys, in file order."""
        return [d.key for d in self.dimensions]

    def to_dict(self) -> dict[str, Any]:
        """YAML-safe form (what the sweep folder keeps for ``--resume``)."""
        out = to_dict(self)
        out.pop("dimensions", None)
        return out


@dataclass(frozen=True)
class LoadedSweep:
    """A validated sweep file and its base experiment with the fixed overrides applied."""

    sweep: SweepSpec
    base: ExperimentSpec
    path: Path | None = None


def sweep_from_dict(data: Mapping[str, Any]) -> SweepSpec:
    """Validate a parsed sweep file."""
    if not isinstance(data, Mapping):
        raise ConfigError("<root>: a sweep file must be a mapping with at least 'base' and 'search_space'")
    if "base" not in data:
        raise ConfigError("base: missing; name the experiment YAML the trials start from")
    return from_dict(SweepSpec, data)


def resolve_base(sweep: SweepSpec, base: ExperimentSpec) -> ExperimentSpec:
    """The base experiment with the sweep's fixed overrides, checked against every searched value."""
    try:
        spec = base.with_overrides(sweep.overrides)
    except ConfigError as err:
        raise ConfigError(f"overrides: {err}") from None
    cls = recipe_class(spec.recipe)
    cls.check_model(spec)  # the model checks that loading a spec leaves to preflight, before any trial
    for dim in sweep.dimensions:
        for value in dim.probe_values():
            try:
                cls.check_model(spec.with_overrides({dim.key: value}))
            except ConfigError as err:
                raise ConfigError(
                    f"search_space.{dim.key}: value {value!r} gives an invalid experiment: {err}"
                ) from None
    cls.footprint(spec, {})  # each trial reserves a fixed footprint (e.g. resources.hosts)
    if sweep.objective.name == "rounds_to_target" and target_of(sweep, spec) is None:
        raise ConfigError(
            "objective.target: rounds_to_target needs a target accuracy; set objective.target (or the "
            "recipe's own target, e.g. federation.target_accuracy, under overrides)"
        )
    return spec


def target_of(sweep: SweepSpec, spec: ExperimentSpec) -> float | None:
    """The accuracy target of ``rounds_to_target`` (objective.target, else the recipe's own target)."""
    return sweep.objective.target if sweep.objective.target is not None else recipe_class(spec.recipe).target(spec)


def load_sweep(path: str | Path) -> LoadedSweep:
    """Read and validate a sweep file and its base experiment; errors name the file and the dotted key."""
    path = Path(path)
    data = read_mapping(path, what="sweep file")
    try:
        sweep = sweep_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    base_path = relative_to(sweep.base, path)
    if not base_path.is_file():
        raise ConfigError(f"{path}: base: experiment file {base_path} not found (paths are relative to the sweep file)")
    base = ExperimentSpec.from_yaml(base_path)
    try:
        spec = resolve_base(sweep, base)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    return LoadedSweep(sweep, spec, path)
