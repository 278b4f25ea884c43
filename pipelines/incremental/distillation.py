"""Spatio-temporal feature distillation for class-incremental video learning (docs/incremental.md).

The previous model (teacher) is frozen; the new model (student) is pulled towards the teacher's
*decomposed* features of an intermediate map ``F`` shaped ``(B, T, C, H, W)``:

- temporal features: space compressed, time kept, ``concat(pool_W(F), pool_H(F))`` of shape
  ``(B, T, C, H + W)``; option ``mode="global"`` pools both spatial axes to ``(B, T, C)``;
- spatial features: time compressed, ``pool_T(align(F))`` of shape ``(B, C, H, W)``, where
  ``align`` is an optional trajectory alignment (identity by default).

Each pooled feature is flattened and, by default, L2-normalised per sample (``phi``, as in PODNet) before
the per-sample L2 distance between teacher and student is averaged over the batch (``L_tf`` and ``L_sf``).
The module also holds the logit distillation used by the iCaRL/LwF-style baseline arm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import torch
import torch.nn.functional as nnf

Pool = Literal["mean", "max"]
TemporalMode = Literal["hw", "global"]
Preprocess = Literal["none", "square"]

_POOLS = ("mean", "max")
_TEMPORAL_MODES = ("hw", "global")
_PREPROCESS = ("none", "square")


class TrajectoryAlign(Protocol):
    """Aligns each frame's feature map along an object trajectory before pooling over time.

    Implementations take and return a ``(B, T, C, H, W)`` tensor of the same shape; they must be
    differentiable (or at least pass gradients through) because they run on the student's features too.
    """

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Return the aligned feature map, same shape as ``features``."""
        ...


class IdentityAlign:
    """The default alignment: no tracker is in scope, so frames are pooled where they are."""

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Return ``features`` unchanged."""
        return features


class RollAlign:
    """Integer-roll trajectory alignment: shift every frame so that its object centre lands on frame 0's.

    Args:
        centres: ``(B, T, 2)`` per-frame object centres ``(x, y)`` in feature-map coordinates (x indexes
            W, y indexes H), e.g. from a tracker rescaled to the feature map. Built per batch, because
            centres are data.

    The shift of frame ``t`` is ``round(c_0 - c_t)``; rolling is circular, which is exact for objects that
    stay inside the map and cheap enough to apply to teacher and student on every step.
    """

    def __init__(self, centres: torch.Tensor) -> None:
        if centres.ndim != 3 or centres.shape[-1] != 2:
            raise ValueError(f"centres must be (B, T, 2) (x, y) per frame, got shape {tuple(centres.shape)}")
        self.centres = centres

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Roll each frame of ``features`` (B, T, C, H, W) so its centre matches the first frame's."""
        _check_map(features, "features")
        b, t, c, h, w = features.shape
        if tuple(self.centres.shape[:2]) != (b, t):
            raise ValueError(f"centres cover {tuple(self.centres.shape[:2])} (B, T) but features have {(b, t)}")
        shift = torch.round(self.centres[:, :1, :] - self.centres).to(torch.long).to(features.device)
        dx, dy = shift[..., 0], shift[..., 1]  # (B, T) each
        # torch.roll semantics: out[i] = in[(i - s) mod n]; build those source indices per (b, t).
        rows = (torch.arange(h, device=features.device).view(1, 1, h) - dy.unsqueeze(-1)) % h  # (B, T, H)
        cols = (torch.arange(w, device=features.device).view(1, 1, w) - dx.unsqueeze(-1)) % w  # (B, T, W)
        out = features.gather(3, rows.view(b, t, 1, h, 1).expand(b, t, c, h, w))
        return out.gather(4, cols.view(b, t, 1, 1, w).expand(b, t, c, h, w))


def _check_map(features: torch.Tensor, name: str) -> None:
    if features.ndim != 5:
        raise ValueError(f"{name} must be a (B, T, C, H, W) feature map, got shape {tuple(features.shape)}")


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {list(allowed)}")


def _pool(x: torch.Tensor, dim: int | tuple[int, ...], pool: Pool) -> torch.Tensor:
    if pool == "mean":
        return x.mean(dim=dim)
    dims = (dim,) if isinstance(dim, int) else dim
    return torch.amax(x, dim=dims)


def temporal_features(features: torch.Tensor, pool: Pool = "mean", mode: TemporalMode = "hw") -> torch.Tensor:
    """Temporal features: compress space, keep time.

    Args:
        features: ``(B, T, C, H, W)`` feature map.
        pool: ``"mean"`` (default) or ``"max"``.
        mode: ``"hw"`` gives ``concat(pool over W, pool over H)`` along the last axis, shape
            ``(B, T, C, H + W)``: the first ``H`` entries are the width-pooled profile (one value per row),
            the last ``W`` the height-pooled profile (one per column). ``"global"`` pools both spatial
            axes, shape ``(B, T, C)``.

    Returns:
        The pooled tensor.
    """
    _check_map(features, "features")
    _check_choice("pool", pool, _POOLS)
    _check_choice("mode", mode, _TEMPORAL_MODES)
    if mode == "global":
        return _pool(features, (3, 4), pool)
    width_pooled = _pool(features, 4, pool)  # (B, T, C, H)
    height_pooled = _pool(features, 3, pool)  # (B, T, C, W)
    return torch.cat([width_pooled, height_pooled], dim=-1)


def spatial_features(features: torch.Tensor, pool: Pool = "mean", align: TrajectoryAlign | None = None) -> torch.Tensor:
    """Spatial features (aligned first when ``align`` is given): compress time, keep space.

    Args:
        features: ``(B, T, C, H, W)`` feature map.
        pool: ``"mean"`` (default) or ``"max"`` over T.
        align: optional trajectory alignment applied before pooling; ``None`` means identity.

    Returns:
        ``(B, C, H, W)`` tensor.
    """
    _check_map(features, "features")
    _check_choice("pool", pool, _POOLS)
    aligned = features if align is None else align(features)
    if aligned.shape != features.shape:
        raise ValueError(f"align changed the feature shape from {tuple(features.shape)} to {tuple(aligned.shape)}")
    return _pool(aligned, 1, pool)


def phi(x: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Flatten each sample to a vector and, if ``normalize``, scale it to unit L2 norm (PODNet's φ).

    Args:
        x: ``(B, ...)`` tensor.
        normalize: default on for scale robustness; off gives the raw L2 distance of the pooled features.

    Returns:
        ``(B, D)`` tensor. An all-zero sample stays zero (``F.normalize`` clamps the norm).
    """
    flat = x.reshape(x.shape[0], -1)
    return nnf.normalize(flat, p=2.0, dim=1) if normalize else flat


def _mean_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(a - b, ord=2, dim=1).mean()


def _preprocess(features: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    # PODNet squares activations *before* pooling (pooled energy); after pooling it would be a different
    # quantity, which is why this happens here and not inside phi.
    return features.pow(2) if preprocess == "square" else features


def spatiotemporal_distillation_loss(
    teacher_features: torch.Tensor | Sequence[torch.Tensor],
    student_features: torch.Tensor | Sequence[torch.Tensor],
    alpha: float = 1.0,
    *,
    pool: Pool = "mean",
    temporal_mode: TemporalMode = "hw",
    normalize: bool = True,
    preprocess: Preprocess = "none",
    align: TrajectoryAlign | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Distillation loss ``L_sf + alpha * L_tf`` (the distillation part, without CE).

    For each layer, ``L_tf = mean_b || phi(F_tf(teacher)) - phi(F_tf(student)) ||_2`` and likewise ``L_sf``
    with the spatial features; with several layers the per-layer losses are averaged.

    Args:
        teacher_features: one ``(B, T, C, H, W)`` map or a sequence of them (one per distilled layer). The
            teacher is frozen, so these are detached here.
        student_features: the student's maps, same shapes and order.
        alpha: weight of the temporal term (``0`` gives the "without L_tf" ablation).
        pool: ``"mean"`` or ``"max"`` for every pooling.
        temporal_mode: ``"hw"`` (pool-W ⊕ pool-H) or ``"global"`` (``[T, C]`` option).
        normalize: per-sample L2 normalisation inside ``phi``.
        preprocess: ``"none"`` (raw activations) or ``"square"`` (PODNet), applied to the maps before pooling.
        align: trajectory alignment for the spatial features, applied to teacher and student alike.

    Returns:
        ``(loss, {"l_sf": ..., "l_tf": ...})``; the dict holds detached scalar tensors for logging.
    """
    _check_choice("preprocess", preprocess, _PREPROCESS)
    teachers = [teacher_features] if isinstance(teacher_features, torch.Tensor) else list(teacher_features)
    students = [student_features] if isinstance(student_features, torch.Tensor) else list(student_features)
    if not teachers or len(teachers) != len(students):
        raise ValueError(
            f"need the same non-zero number of teacher and student layers, got {len(teachers)} and {len(students)}"
        )
    l_sf_layers, l_tf_layers = [], []
    for layer, (f_t, f_s) in enumerate(zip(teachers, students)):
        if f_t.shape != f_s.shape:
            raise ValueError(f"layer {layer}: teacher shape {tuple(f_t.shape)} != student shape {tuple(f_s.shape)}")
        f_t = _preprocess(f_t.detach(), preprocess)
        f_s = _preprocess(f_s, preprocess)
        l_tf_layers.append(
            _mean_l2(
                phi(temporal_features(f_t, pool, temporal_mode), normalize),
                phi(temporal_features(f_s, pool, temporal_mode), normalize),
            )
        )
        l_sf_layers.append(
            _mean_l2(
                phi(spatial_features(f_t, pool, align), normalize),
                phi(spatial_features(f_s, pool, align), normalize),
            )
        )
    l_sf = torch.stack(l_sf_layers).mean()
    l_tf = torch.stack(l_tf_layers).mean()
    return l_sf + alpha * l_tf, {"l_sf": l_sf.detach(), "l_tf": l_tf.detach()}


def logit_distillation_loss(
    student_logits_old: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0
) -> torch.Tensor:
    """Knowledge distillation on the old classes' logits (LwF / iCaRL-style baseline).

    ``temperature**2 * mean_b KL( softmax(teacher / T) || softmax(student_old / T) )``; the ``T**2`` factor
    keeps gradient magnitudes comparable across temperatures (Hinton et al.).

    Args:
        student_logits_old: ``(B, K_old)``: the student's logits restricted to the classes the teacher knows.
        teacher_logits: ``(B, K_old)`` teacher logits (detached here).
        temperature: softening temperature ``T`` (default 2, as in LwF).

    Returns:
        Scalar loss, zero when the two logit sets are equal.
    """
    if student_logits_old.shape != teacher_logits.shape or student_logits_old.ndim != 2:
        raise ValueError(
            f"student old-class logits {tuple(student_logits_old.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} must both be (B, K_old); slice the student's head to the old classes"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_p_student = nnf.log_softmax(student_logits_old / temperature, dim=1)
    log_p_teacher = nnf.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = nnf.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2
