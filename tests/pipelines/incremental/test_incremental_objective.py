"""The per-task loss: stage taps, CE + feature/logit distillation, class weights, trajectory hooks."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedtwin.pipelines.incremental.objective import (
    IncrementalObjective,
    ObjectiveSettings,
    balanced_class_weights,
    pixel_centroid_hook,
    stage_maps,
)
from fedtwin.pipelines.model.networks import ModelConfig, build_model, expand_head


def _clips(batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 8, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def _first_conv(stage: torch.nn.Module) -> torch.nn.Conv3d:
    return next(m for m in stage.modules() if isinstance(m, torch.nn.Conv3d))


def test_stage_maps_have_per_stage_shapes_and_the_models_logits():
    # Prepare: tiny3d widths (8, 16, 32) on 32x32 input pooled to 16x16, halved before stages 1 and 2
    model = build_model(ModelConfig(num_classes=4), seed=0)
    x = _clips()

    # Execute
    maps, logits = stage_maps(model, x, (0, 1, -1))

    # Assert
    assert [tuple(m.shape) for m in maps] == [(4, 8, 8, 16, 16), (4, 8, 16, 8, 8), (4, 8, 32, 4, 4)]
    torch.testing.assert_close(maps[2], model.forward_features(x)[0])
    torch.testing.assert_close(logits, model(x))
    assert not model.stages[0]._forward_hooks  # hooks are removed again


def test_feature_distillation_is_zero_for_an_identical_teacher_and_positive_otherwise():
    # Prepare
    student = build_model(ModelConfig(num_classes=2), seed=0)
    teacher = copy.deepcopy(student)
    expand_head(student, 4)  # new classes do not change the features
    x, y = _clips(), torch.tensor([0, 1, 2, 3])
    objective = IncrementalObjective(ObjectiveSettings(distillation="features", alpha=0.5), teacher)
    ce_only = IncrementalObjective(ObjectiveSettings(distillation="none"), teacher)

    # Execute
    same_loss, same = objective(student, x, y)
    with torch.no_grad():
        conv = _first_conv(student.stages[2])
        conv.weight.add_(0.3 * torch.randn(conv.weight.shape, generator=torch.Generator().manual_seed(1)))
    moved_loss, moved = objective(student, x, y)
    ce_loss, _ = ce_only(student, x, y)

    # Assert: L = CE + L_sf + alpha * L_tf
    assert same["l_sf"] == 0.0 and same["l_tf"] == 0.0
    assert same_loss.item() == pytest.approx(same["ce"])
    assert moved["l_sf"] > 0 and moved["l_tf"] > 0
    assert moved_loss.item() == pytest.approx(ce_loss.item() + moved["l_sf"] + 0.5 * moved["l_tf"], rel=1e-5)


def test_gradients_reach_the_student_only():
    # Prepare
    student = build_model(ModelConfig(num_classes=3), seed=0)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        _first_conv(student.stages[1]).weight.mul_(1.5)
    objective = IncrementalObjective(ObjectiveSettings(layers=(0, 1, 2)), teacher)

    # Execute
    loss, _ = objective(student, _clips(), torch.tensor([0, 1, 2, 0]))
    loss.backward()

    # Assert
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert not teacher.training


def test_logit_distillation_and_first_task_without_teacher():
    # Prepare
    student = build_model(ModelConfig(num_classes=2), seed=1)
    teacher = copy.deepcopy(student)
    expand_head(student, 4)
    x, y = _clips(), torch.tensor([0, 1, 2, 3])

    # Execute
    kd_loss, kd = IncrementalObjective(ObjectiveSettings(distillation="logits", weight=2.0), teacher)(student, x, y)
    first_loss, first = IncrementalObjective(ObjectiveSettings(distillation="features"), None)(student, x, y)

    # Assert: identical old-class logits -> KD 0; no teacher -> CE only, no distillation metrics
    assert kd["kd"] == pytest.approx(0.0, abs=1e-6)
    assert kd_loss.item() == pytest.approx(kd["ce"], rel=1e-6)
    assert set(first) == {"ce", "accuracy"} and first_loss.item() == pytest.approx(first["ce"])


def test_balanced_class_weights_hand_values_and_weighted_ce():
    # Execute: 3 clips of class 0, 1 of class 1, none of class 2 -> n=4, k=2 present classes
    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 3)

    # Assert: n / (k n_c) = 4/6, 4/2, 0
    torch.testing.assert_close(weights, torch.tensor([2 / 3, 2.0, 0.0]))
    model = build_model(ModelConfig(num_classes=3), seed=0)
    x, y = _clips(), torch.tensor([0, 0, 0, 1])
    _, m = IncrementalObjective(ObjectiveSettings(distillation="none"), None, weights)(model, x, y)
    logits = model(x)
    per_sample = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    w = weights[y]
    assert m["ce"] == pytest.approx(((w * per_sample).sum() / w.sum()).item(), rel=1e-5)


def test_pixel_centroid_hook_maps_object_centres_to_the_feature_grid_and_aligns_frames():
    # Prepare: 8x8 frames with a 2x2 blob centred at x=2.5 (frame 0) and x=6.5 (frame 1), y=2.5
    clip = torch.zeros(1, 2, 1, 8, 8)
    clip[0, 0, 0, 2:4, 2:4] = 1.0
    clip[0, 1, 0, 2:4, 6:8] = 1.0
    fmap = torch.zeros(1, 2, 1, 4, 4)
    fmap[0, 0, 0, 1, 1] = 1.0
    fmap[0, 1, 0, 1, 3] = 1.0

    # Execute
    align = pixel_centroid_hook(clip, (4, 4))
    aligned = align(fmap)

    # Assert: pixel centre c -> (c + 0.5) * 4/8 - 0.5, i.e. 2.5 -> 1 and 6.5 -> 3; frame 1 rolls onto frame 0
    torch.testing.assert_close(align.centres, torch.tensor([[[1.0, 1.0], [3.0, 1.0]]]))
    torch.testing.assert_close(aligned[0, 1], fmap[0, 0])


def test_settings_errors_name_the_field():
    with pytest.raises(ValueError, match="^distillation:"):
        ObjectiveSettings(distillation="podnet")
    with pytest.raises(ValueError, match="^trajectory:"):
        ObjectiveSettings(trajectory="kalman")
    with pytest.raises(ValueError, match="^layers:"):
        ObjectiveSettings(layers=())
