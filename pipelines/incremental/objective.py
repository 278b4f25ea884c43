"""The per-batch loss of one class-incremental task, as a ``local_train`` ``loss_fn``.

``L = CE(student_logits, y) + weight * D`` over every batch of new data plus replayed memory, where ``D`` is

- ``"features"`` (spatio-temporal distillation): ``L_sf + alpha * L_tf`` between the frozen teacher's and the
  student's stage feature maps
  (:func:`fedtwin.pipelines.incremental.distillation.spatiotemporal_distillation_loss`), averaged over the
  distilled stages; ``alpha = 0`` is the "without the temporal term" ablation;
- ``"logits"`` (iCaRL/LwF-style baseline): KL between the teacher's and the student's old-class logits;
- ``"none"``: plain cross-entropy (fine-tuning and replay).

``weight = 1`` gives the unweighted ``CE + L_sf + alpha * L_tf``. The teacher is the model after the
previous task; on the first task there is none and the loss is CE alone. Stage maps are read with forward hooks,
so the model code stays unaware of distillation; stage ``i``'s map is its output before any temporal pooling,
``(B, T, C, H, W)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from fedtwin.pipelines.incremental.distillation import (
    IdentityAlign,
    RollAlign,
    TrajectoryAlign,
    logit_distillation_loss,
    spatiotemporal_distillation_loss,
)
from fedtwin.pipelines.incremental.settings import ObjectiveSettings

#: ``(clips (B, T, C, H, W) in [0, 1], feature map (H', W')) -> TrajectoryAlign``, by config name.
TrajectoryHook = Callable[[torch.Tensor, tuple[int, int]], TrajectoryAlign]


def identity_hook(clips: torch.Tensor, feature_hw: tuple[int, int]) -> TrajectoryAlign:
    """No tracker: frames are pooled where they are (the default)."""
    return IdentityAlign()


def pixel_centroid_hook(clips: torch.Tensor, feature_hw: tuple[int, int]) -> TrajectoryAlign:
    """A stand-in tracker for one bright object on a dark canvas: the ink-weighted centre of every frame.

    Ink is the part of a pixel above its frame's mean (which removes the background and most noise).
    Centres are mapped from pixel to feature-map coordinates (cell centres line up) and fed to
    :class:`RollAlign`, so teacher and student are aligned along the same, data-given trajectory.
    """
    frames = clips.detach().float().sum(dim=2)  # (B, T, H, W)
    ink = (frames - frames.mean(dim=(2, 3), keepdim=True)).clamp(min=0)
    mass = ink.sum(dim=(2, 3)).clamp(min=1e-6)
    h, w = frames.shape[-2:]
    ys = torch.arange(h, dtype=frames.dtype, device=frames.device)
    xs = torch.arange(w, dtype=frames.dtype, device=frames.device)
    cy = (ink.sum(dim=3) * ys).sum(dim=2) / mass
    cx = (ink.sum(dim=2) * xs).sum(dim=2) / mass
    fh, fw = feature_hw
    centres = torch.stack([(cx + 0.5) * fw / w - 0.5, (cy + 0.5) * fh / h - 0.5], dim=-1)
    return RollAlign(centres)


TRAJECTORY_HOOKS: dict[str, TrajectoryHook] = {"identity": identity_hook, "pixel_centroid": pixel_centroid_hook}


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """``(K,)`` weights ``n / (k * n_c)`` for the ``k`` classes present (0 for absent ones).

    With them every class contributes equally to the cross-entropy, however few exemplars it has left:
    a few memory clips per old class against hundreds of new clips otherwise bias the head to new classes.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def stage_maps(model: nn.Module, x: torch.Tensor, layers: Sequence[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Run ``model`` once and return the outputs of ``model.stages[i]`` for ``i`` in ``layers``, and the logits.

    Returns:
        ``([(B, T, C, H, W) per layer], logits (B, K))``.
    """
    # An nn.ModuleList for the built-ins (any indexable of modules for a plugin); torch types it Tensor | Module.
    stages = cast(Sequence[nn.Module], model.stages)
    picked = [stages[i] for i in layers]  # IndexError names a bad layer early
    captured: dict[int, torch.Tensor] = {}
    handles = [
        stage.register_forward_hook(lambda _m, _i, out, key=k: captured.__setitem__(key, out))
        for k, stage in enumerate(picked)
    ]
    try:
        _, embedding = model.forward_features(x)  # type: ignore[operator]  # Module attrs: Tensor | Module
    finally:
        for handle in handles:
            handle.remove()
    logits = model.classify(embedding)  # type: ignore[operator]  # Module attrs: Tensor | Module
    # Conv3d layout (B, C, T, H, W) -> the distillation layout (B, T, C, H, W).
    return [captured[k].transpose(1, 2) for k in range(len(picked))], logits


class IncrementalObjective:
    """``loss_fn(model, x, y) -> (loss, metrics)`` for one task; holds the frozen teacher (or ``None``).

    Args:
        settings: the loss recipe.
        teacher: the previous task's model, frozen here (eval mode, no gradients); ``None`` on task 0.
        class_weights: optional ``(K,)`` per-class weights of the cross-entropy (see
            :func:`balanced_class_weights`); ``None`` weighs every sample equally.
    """

    def __init__(
        self, settings: ObjectiveSettings, teacher: nn.Module | None = None, class_weights: torch.Tensor | None = None
    ) -> None:
        self.settings = settings
        self.class_weights = class_weights
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """CE plus the configured distillation on one batch (new data and replayed memory alike)."""
        s = self.settings
        distil = self.teacher is not None and s.distillation != "none" and s.weight > 0
        layers = s.layers if distil and s.distillation == "features" else (-1,)
        student_maps, logits = stage_maps(model, x, layers)
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)
        ce = nnf.cross_entropy(logits, y, weight=weights)
        metrics = {"ce": ce.item(), "accuracy": (logits.detach().argmax(dim=1) == y).float().mean().item()}
        if not distil:
            return ce, metrics
        assert self.teacher is not None
        with torch.no_grad():
            teacher_maps, teacher_logits = stage_maps(self.teacher, x, layers)
        if s.distillation == "logits":
            kd = logit_distillation_loss(logits[:, : teacher_logits.shape[1]], teacher_logits, s.kd_temperature)
            metrics["kd"] = kd.item()
            return ce + s.weight * kd, metrics
        hook = TRAJECTORY_HOOKS[s.trajectory]
        # One call per stage because each stage has its own map size (and so its own alignment); the mean
        # of per-stage ``L_sf + alpha * L_tf`` equals ``mean L_sf + alpha * mean L_tf``.
        losses, l_sf, l_tf = [], [], []
        for f_t, f_s in zip(teacher_maps, student_maps):
            loss, parts = spatiotemporal_distillation_loss(
                f_t,
                f_s,
                s.alpha,
                pool=s.pool,
                temporal_mode=s.temporal_mode,
                normalize=s.normalize,
                preprocess=s.preprocess,
                align=hook(x, (int(f_s.shape[-2]), int(f_s.shape[-1]))),
            )
            losses.append(loss)
            l_sf.append(parts["l_sf"].item())
            l_tf.append(parts["l_tf"].item())
        metrics.update(l_sf=sum(l_sf) / len(l_sf), l_tf=sum(l_tf) / len(l_tf))
        return ce + s.weight * torch.stack(losses).mean(), metrics
