"""The ``incremental:`` section of an experiment spec (recipe ``incremental``: class-incremental video learning).

``method`` names a preset of the loss and the memory (``METHODS``); every other field tunes it. The
study's arms are exactly these presets, at one shared ``memory_budget_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedtwin.pipelines.incremental.exemplar_ranking import RANKINGS
from fedtwin.pipelines.incremental.objective import TRAJECTORY_HOOKS, ObjectiveSettings


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


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class IncrementalConfig:
    """Tasks, loss and exemplar memory of a class-incremental run.

    Attributes:
        tasks: number of tasks.
        classes_per_task: classes per task; ``null`` divides the dataset's classes evenly.
        class_order_seed: seeds the class arrival order; ``null`` uses the experiment ``seed``; ``-1``
            keeps the natural order ``0, 1, ...``.
        epochs_per_task: local-training epochs of tasks 2..N.
        first_task_epochs: epochs of the first task (learned from scratch); ``null`` = ``epochs_per_task``.
        method: preset in ``METHODS`` (finetune, replay, replay_kd, ours, ours_no_temporal).
        alpha: weight of ``L_tf`` (``ours_no_temporal`` forces 0).
        distill_weight: multiplier of the feature distillation term (1 = the unweighted CE + L_sf + alpha L_tf).
        kd_weight: multiplier of the logit distillation term (``replay_kd``).
        pool: mean or max pooling of the decomposed features.
        temporal_mode: ``hw`` (width-pooled and height-pooled maps side by side) or ``global`` (``[T, C]``).
        normalize: L2-normalise pooled features per sample (PODNet's φ).
        preprocess: ``none`` or ``square`` activations before pooling.
        distill_layers: distilled stages of the model (negative indices count from the last).
        trajectory: trajectory-alignment hook by name (``identity``, ``pixel_centroid``).
        kd_temperature: temperature of the logit distillation (``replay_kd``).
        balanced_ce: weigh the CE so every class present in a task's data counts equally (new classes
            otherwise outnumber each old class's few exemplars many times over).
        memory_budget_bytes: stored frame bytes allowed, the same for every method that has memory.
        memory_mode: ``auto`` (the method's), ``keyframes`` or ``full``.
        ranking: exemplar order: confidence, random or herding.
        keyframe_delta: absolute key-frame threshold; ``null`` uses ``keyframe_rho``.
        keyframe_rho: relative threshold, times the median consecutive-frame distance.
        keyframe_view: with a key-frame memory, train on key-frame renditions of the new clips too, from
            the first task on, so that repeated frames do not tell replayed (old) clips from new ones.
        per_class_quota: most clips stored per new class (``null``: as the byte share allows).
        task_timeout_s: longest wait for one task's result.
    """

    tasks: int = 5
    classes_per_task: int | None = None
    class_order_seed: int | None = None
    epochs_per_task: int = 4
    first_task_epochs: int | None = None
    method: MethodName = "ours"
    alpha: float = 1.0
    distill_weight: float = 1.0
    kd_weight: float = 1.0
    pool: Literal["mean", "max"] = "mean"
    temporal_mode: Literal["hw", "global"] = "hw"
    normalize: bool = True
    preprocess: Literal["none", "square"] = "none"
    distill_layers: tuple[int, ...] = (-1,)
    trajectory: str = "identity"
    kd_temperature: float = 2.0
    balanced_ce: bool = True
    memory_budget_bytes: int = 327_680
    memory_mode: Literal["auto", "keyframes", "full"] = "auto"
    ranking: Literal["confidence", "random", "herding"] = "confidence"
    keyframe_delta: float | None = None
    keyframe_rho: float = 1.5
    keyframe_view: bool = True
    per_class_quota: int | None = None
    task_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        _check(self.tasks >= 1, f"tasks: must be >= 1, got {self.tasks}")
        _check(
            self.classes_per_task is None or self.classes_per_task >= 1,
            f"classes_per_task: must be >= 1 or null, got {self.classes_per_task}",
        )
        _check(
            self.class_order_seed is None or self.class_order_seed >= -1,
            f"class_order_seed: must be >= 0, -1 (natural order) or null, got {self.class_order_seed}",
        )
        _check(self.epochs_per_task >= 1, f"epochs_per_task: must be >= 1, got {self.epochs_per_task}")
        _check(
            self.first_task_epochs is None or self.first_task_epochs >= 1,
            f"first_task_epochs: must be >= 1 or null, got {self.first_task_epochs}",
        )
        _check(self.method in METHODS, f"method: must be one of {', '.join(METHODS)}, got {self.method!r}")
        _check(self.alpha >= 0, f"alpha: must be >= 0, got {self.alpha}")
        _check(self.distill_weight >= 0, f"distill_weight: must be >= 0, got {self.distill_weight}")
        _check(self.kd_weight >= 0, f"kd_weight: must be >= 0, got {self.kd_weight}")
        _check(bool(self.distill_layers), "distill_layers: must name at least one stage, e.g. [-1]")
        _check(
            self.trajectory in TRAJECTORY_HOOKS,
            f"trajectory: must be one of {', '.join(TRAJECTORY_HOOKS)}, got {self.trajectory!r}",
        )
        _check(self.kd_temperature > 0, f"kd_temperature: must be > 0, got {self.kd_temperature}")
        _check(self.memory_budget_bytes >= 0, f"memory_budget_bytes: must be >= 0, got {self.memory_budget_bytes}")
        _check(self.ranking in RANKINGS, f"ranking: must be one of {', '.join(RANKINGS)}, got {self.ranking!r}")
        _check(
            self.keyframe_delta is None or self.keyframe_delta >= 0,
            f"keyframe_delta: must be >= 0 or null, got {self.keyframe_delta}",
        )
        _check(self.keyframe_rho > 0, f"keyframe_rho: must be > 0, got {self.keyframe_rho}")
        _check(
            self.per_class_quota is None or self.per_class_quota >= 1,
            f"per_class_quota: must be >= 1 or null, got {self.per_class_quota}",
        )
        _check(self.task_timeout_s > 0, f"task_timeout_s: must be > 0, got {self.task_timeout_s}")

    @property
    def resolved_memory_mode(self) -> str:
        """``none``, ``full`` or ``keyframes``: the method's memory unless ``memory_mode`` overrides it."""
        spec = METHODS[self.method]
        if spec.memory_mode == "none" or self.memory_mode == "auto":
            return spec.memory_mode
        return self.memory_mode

    def objective(self) -> ObjectiveSettings:
        """The per-batch loss settings of this method."""
        spec = METHODS[self.method]
        return ObjectiveSettings(
            distillation=spec.distillation,
            alpha=self.alpha if spec.alpha is None else spec.alpha,
            weight=self.kd_weight if spec.distillation == "logits" else self.distill_weight,
            pool=self.pool,
            temporal_mode=self.temporal_mode,
            normalize=self.normalize,
            preprocess=self.preprocess,
            layers=self.distill_layers,
            trajectory=self.trajectory,
            kd_temperature=self.kd_temperature,
        )
