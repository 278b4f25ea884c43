"""The ``incremental:`` section of recipe ``incremental`` (class-incremental video learning), by concern.

::

    incremental:
      tasks: 5                 # the task schedule: how many, which classes, how many epochs
      epochs_per_task: 4
      first_task_epochs: 6
      method: ours             # a preset of the loss and the memory (METHODS)
      loss:   {alpha: 1.0, distill_weight: 0.3, kd_weight: 0.3, balanced_ce: true, ...}
      memory: {budget_bytes: 327680, mode: auto, keyframe_rho: 1.5, keyframe_view: true, ...}

``method`` names a preset (``METHODS``); every other field tunes it. The trainer actor receives this
object as is; :meth:`IncrementalConfig.objective` and :meth:`IncrementalConfig.memory_mode` derive
what the preset implies. No torch here. Keys of the flat section of fedtwin 0.2 still load, with a
warning naming the new key (``LEGACY_KEYS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from fedtwin.pipelines.core.checks import check
from fedtwin.pipelines.incremental.exemplar_ranking import RANKINGS

#: Distillation terms the objective knows.
DISTILLATIONS = ("none", "logits", "features")
#: Trajectory-alignment hooks by name (``fedtwin.pipelines.incremental.objective`` holds exactly these).
TRAJECTORY_NAMES = ("identity", "pixel_centroid")
MEMORY_MODES = ("none", "full", "keyframes")


@dataclass(frozen=True)
class MethodSpec:
    """What a method name means: the distillation, the default memory, and a forced alpha (or None)."""

    distillation: str
    memory_mode: str
    alpha: float | None = None
    description: str = ""


METHODS: dict[str, MethodSpec] = {
    "finetune": MethodSpec("none", "none", description="CE on the new task only (lower bound)"),
    "replay": MethodSpec("none", "full", description="CE on new data + full-clip memory"),
    "replay_kd": MethodSpec("logits", "full", description="replay + old-class logit distillation (iCaRL-style)"),
    "ours": MethodSpec("features", "keyframes", description="L_sf + alpha L_tf + CE, key-frame memory"),
    "ours_no_temporal": MethodSpec("features", "keyframes", alpha=0.0, description="ours without L_tf"),
}

MethodName = Literal["finetune", "replay", "replay_kd", "ours", "ours_no_temporal"]


@dataclass(frozen=True)
class ObjectiveSettings:
    """How a task's loss is built (see ``fedtwin.pipelines.incremental.objective``); derived from the
    section by :meth:`IncrementalConfig.objective`.

    Attributes:
        distillation: ``"none"``, ``"logits"`` or ``"features"``.
        alpha: weight of the temporal term ``L_tf`` (features only).
        weight: multiplier of the whole distillation term (1 = the unweighted ``CE + L_sf + alpha * L_tf``).
        pool: ``"mean"`` or ``"max"`` pooling of the decomposed features.
        temporal_mode: ``"hw"`` (pool-W ⊕ pool-H) or ``"global"`` (``[T, C]``).
        normalize: per-sample L2 normalisation (PODNet's φ) before the distance.
        preprocess: ``"none"`` or ``"square"`` activations before pooling.
        layers: distilled stages (indices into ``model.stages``; negative counts from the end).
        trajectory: name in ``TRAJECTORY_NAMES`` for the spatial features' alignment.
        kd_temperature: temperature of the logit distillation.
    """

    distillation: str = "features"
    alpha: float = 1.0
    weight: float = 1.0
    pool: Literal["mean", "max"] = "mean"
    temporal_mode: Literal["hw", "global"] = "hw"
    normalize: bool = True
    preprocess: Literal["none", "square"] = "none"
    layers: tuple[int, ...] = (-1,)
    trajectory: str = "identity"
    kd_temperature: float = 2.0

    def __post_init__(self) -> None:
        if self.distillation not in DISTILLATIONS:
            raise ValueError(f"distillation: must be one of {', '.join(DISTILLATIONS)}, got {self.distillation!r}")
        if self.trajectory not in TRAJECTORY_NAMES:
            raise ValueError(f"trajectory: must be one of {', '.join(TRAJECTORY_NAMES)}, got {self.trajectory!r}")
        if self.alpha < 0 or self.weight < 0 or self.kd_temperature <= 0:
            raise ValueError(
                f"alpha and weight must be >= 0 and kd_temperature > 0, got {self.alpha}, {self.weight}, "
                f"{self.kd_temperature}"
            )
        if not self.layers:
            raise ValueError("layers: name at least one stage to distil, e.g. [-1]")


@dataclass(frozen=True)
class IncrementalLossSettings:
    """The loss of every task (``incremental.loss``); the method decides which terms are on.

    Attributes:
        alpha: weight of ``L_tf`` (``ours_no_temporal`` forces 0).
        distill_weight: multiplier of the feature distillation term (1 = the unweighted CE + L_sf + alpha L_tf).
        kd_weight: multiplier of the logit distillation term (``replay_kd``).
        kd_temperature: temperature of the logit distillation (``replay_kd``).
        pool: mean or max pooling of the decomposed features.
        temporal_mode: ``hw`` (width-pooled and height-pooled maps side by side) or ``global`` (``[T, C]``).
        normalize: L2-normalise pooled features per sample (PODNet's φ).
        preprocess: ``none`` or ``square`` activations before pooling.
        distill_layers: distilled stages of the model (negative indices count from the last).
        trajectory: trajectory-alignment hook by name (``identity``, ``pixel_centroid``).
        balanced_ce: weigh the CE so every class present in a task's data counts equally (new classes
            otherwise outnumber each old class's few exemplars many times over; the study ran with it on).
    """

    alpha: float = 1.0
    distill_weight: float = 1.0
    kd_weight: float = 1.0
    kd_temperature: float = 2.0
    pool: Literal["mean", "max"] = "mean"
    temporal_mode: Literal["hw", "global"] = "hw"
    normalize: bool = True
    preprocess: Literal["none", "square"] = "none"
    distill_layers: tuple[int, ...] = (-1,)
    trajectory: str = "identity"
    balanced_ce: bool = True

    def __post_init__(self) -> None:
        check(self.alpha >= 0, f"alpha: must be >= 0, got {self.alpha}")
        check(self.distill_weight >= 0, f"distill_weight: must be >= 0, got {self.distill_weight}")
        check(self.kd_weight >= 0, f"kd_weight: must be >= 0, got {self.kd_weight}")
        check(self.kd_temperature > 0, f"kd_temperature: must be > 0, got {self.kd_temperature}")
        check(bool(self.distill_layers), "distill_layers: must name at least one stage, e.g. [-1]")
        check(
            self.trajectory in TRAJECTORY_NAMES,
            f"trajectory: must be one of {', '.join(TRAJECTORY_NAMES)}, got {self.trajectory!r}",
        )


@dataclass(frozen=True)
class MemorySettings:
    """The exemplar memory (``incremental.memory``), the same byte budget for every method that has one.

    Attributes:
        budget_bytes: stored frame bytes allowed.
        mode: ``auto`` (the method's memory), ``keyframes`` or ``full``.
        ranking: exemplar order: confidence, random or herding.
        per_class_quota: most clips stored per new class (``null``: as the byte share allows).
        keyframe_delta: absolute key-frame threshold; ``null`` uses ``keyframe_rho``.
        keyframe_rho: relative threshold, times the median consecutive-frame distance (1.5: with 2 a
            moving digit keeps about 1.6 frames per clip and loses its direction of travel).
        keyframe_view: with a key-frame memory, train on key-frame renditions of the new clips too, from
            the first task on, so that repeated frames do not tell replayed (old) clips from new ones.
    """

    budget_bytes: int = 327_680
    mode: Literal["auto", "keyframes", "full"] = "auto"
    ranking: Literal["confidence", "random", "herding"] = "confidence"
    per_class_quota: int | None = None
    keyframe_delta: float | None = None
    keyframe_rho: float = 1.5
    keyframe_view: bool = True

    def __post_init__(self) -> None:
        check(self.budget_bytes >= 0, f"budget_bytes: must be >= 0, got {self.budget_bytes}")
        check(self.ranking in RANKINGS, f"ranking: must be one of {', '.join(RANKINGS)}, got {self.ranking!r}")
        check(
            self.per_class_quota is None or self.per_class_quota >= 1,
            f"per_class_quota: must be >= 1 or null, got {self.per_class_quota}",
        )
        check(
            self.keyframe_delta is None or self.keyframe_delta >= 0,
            f"keyframe_delta: must be >= 0 or null, got {self.keyframe_delta}",
        )
        check(self.keyframe_rho > 0, f"keyframe_rho: must be > 0, got {self.keyframe_rho}")


@dataclass(frozen=True)
class IncrementalConfig:
    """Tasks, loss and exemplar memory of a class-incremental run (the ``incremental:`` section).

    Attributes:
        tasks: number of tasks.
        classes_per_task: classes per task; ``null`` divides the dataset's classes evenly.
        class_order_seed: seeds the class arrival order; ``null`` uses the experiment ``seed``; ``-1``
            keeps the natural order ``0, 1, ...``.
        epochs_per_task: local-training epochs of tasks 2..N.
        first_task_epochs: epochs of the first task (learned from scratch); ``null`` = ``epochs_per_task``.
        method: preset in ``METHODS`` (finetune, replay, replay_kd, ours, ours_no_temporal).
        loss: the loss terms and their weights.
        memory: the exemplar memory.
        task_timeout_s: longest wait for one task's result.
    """

    tasks: int = 5
    classes_per_task: int | None = None
    class_order_seed: int | None = None
    epochs_per_task: int = 4
    first_task_epochs: int | None = None
    method: MethodName = "ours"
    loss: IncrementalLossSettings = field(default_factory=IncrementalLossSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    task_timeout_s: float = 1800.0

    #: Flat keys of fedtwin 0.2 -> their grouped keys; they load with a warning.
    LEGACY_KEYS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        **{
            key: (f"loss.{key}",)
            for key in (
                "alpha",
                "distill_weight",
                "kd_weight",
                "kd_temperature",
                "pool",
                "temporal_mode",
                "normalize",
                "preprocess",
                "distill_layers",
                "trajectory",
                "balanced_ce",
            )
        },
        "memory_budget_bytes": ("memory.budget_bytes",),
        "memory_mode": ("memory.mode",),
        **{
            key: (f"memory.{key}",)
            for key in ("ranking", "per_class_quota", "keyframe_delta", "keyframe_rho", "keyframe_view")
        },
    }

    def __post_init__(self) -> None:
        check(self.tasks >= 1, f"tasks: must be >= 1, got {self.tasks}")
        check(
            self.classes_per_task is None or self.classes_per_task >= 1,
            f"classes_per_task: must be >= 1 or null, got {self.classes_per_task}",
        )
        check(
            self.class_order_seed is None or self.class_order_seed >= -1,
            f"class_order_seed: must be >= 0, -1 (natural order) or null, got {self.class_order_seed}",
        )
        check(self.epochs_per_task >= 1, f"epochs_per_task: must be >= 1, got {self.epochs_per_task}")
        check(
            self.first_task_epochs is None or self.first_task_epochs >= 1,
            f"first_task_epochs: must be >= 1 or null, got {self.first_task_epochs}",
        )
        check(self.method in METHODS, f"method: must be one of {', '.join(METHODS)}, got {self.method!r}")
        check(self.task_timeout_s > 0, f"task_timeout_s: must be > 0, got {self.task_timeout_s}")

    @property
    def resolved_memory_mode(self) -> str:
        """``none``, ``full`` or ``keyframes``: the method's memory unless ``memory.mode`` overrides it."""
        spec = METHODS[self.method]
        if spec.memory_mode == "none" or self.memory.mode == "auto":
            return spec.memory_mode
        return self.memory.mode

    def epochs_of(self, task: int) -> int:
        """Training epochs of task ``task`` (0-based)."""
        return (self.first_task_epochs or self.epochs_per_task) if task == 0 else self.epochs_per_task

    def objective(self) -> ObjectiveSettings:
        """The per-batch loss settings of this method."""
        spec, loss = METHODS[self.method], self.loss
        return ObjectiveSettings(
            distillation=spec.distillation,
            alpha=loss.alpha if spec.alpha is None else spec.alpha,
            weight=loss.kd_weight if spec.distillation == "logits" else loss.distill_weight,
            pool=loss.pool,
            temporal_mode=loss.temporal_mode,
            normalize=loss.normalize,
            preprocess=loss.preprocess,
            layers=loss.distill_layers,
            trajectory=loss.trajectory,
            kd_temperature=loss.kd_temperature,
        )
