"""Tests for pipelines/incremental/distillation.py: pooled features on a hand-made map, the KD losses."""

from __future__ import annotations

import math

import pytest
import torch

from fedtwin.pipelines.incremental.distillation import (
    RollAlign,
    logit_distillation_loss,
    phi,
    spatial_features,
    spatiotemporal_distillation_loss,
    temporal_features,
)


def hand_map() -> torch.Tensor:
    """B=1, T=2, C=1, H=2, W=3: frame 0 holds 1..6, frame 1 holds 7..12 (row-major)."""
    return torch.arange(1.0, 13.0).reshape(1, 2, 1, 2, 3)


def test_temporal_features_mean_concatenates_width_then_height_pooling():
    # Prepare
    f = hand_map()
    # Execute
    out = temporal_features(f, pool="mean", mode="hw")
    # Assert: rows [1,2,3],[4,5,6] -> W-means 2, 5; column means 2.5, 3.5, 4.5 (frame 1: +6)
    assert out.shape == (1, 2, 1, 5)
    expected = torch.tensor([[2.0, 5.0, 2.5, 3.5, 4.5], [8.0, 11.0, 8.5, 9.5, 10.5]]).reshape(1, 2, 1, 5)
    torch.testing.assert_close(out, expected)


def test_temporal_features_max_and_global_modes():
    # Prepare
    f = hand_map()
    # Execute
    hw_max = temporal_features(f, pool="max", mode="hw")
    global_mean = temporal_features(f, pool="mean", mode="global")
    global_max = temporal_features(f, pool="max", mode="global")
    # Assert
    expected_max = torch.tensor([[3.0, 6.0, 4.0, 5.0, 6.0], [9.0, 12.0, 10.0, 11.0, 12.0]])
    torch.testing.assert_close(hw_max[0, :, 0], expected_max)
    assert global_mean.shape == (1, 2, 1)
    torch.testing.assert_close(global_mean[0, :, 0], torch.tensor([3.5, 9.5]))
    torch.testing.assert_close(global_max[0, :, 0], torch.tensor([6.0, 12.0]))


def test_spatial_features_pool_over_time():
    # Prepare
    f = hand_map()
    # Execute
    mean = spatial_features(f, pool="mean")
    peak = spatial_features(f, pool="max")
    # Assert
    assert mean.shape == (1, 1, 2, 3)
    torch.testing.assert_close(mean[0, 0], torch.tensor([[4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]))
    torch.testing.assert_close(peak[0, 0], torch.tensor([[7.0, 8.0, 9.0], [10.0, 11.0, 12.0]]))


def test_roll_align_moves_each_frame_centre_onto_the_first():
    # Prepare: a single hot pixel walking right along row 1 (x = 0, 1, 2), plus one walking down a column
    f = torch.zeros(2, 3, 1, 3, 4)
    centres = torch.zeros(2, 3, 2)
    for t in range(3):
        f[0, t, 0, 1, t] = 1.0
        centres[0, t] = torch.tensor([t, 1.0])
        f[1, t, 0, t, 3] = 2.0
        centres[1, t] = torch.tensor([3.0, t])
    # Execute
    unaligned = spatial_features(f)
    aligned = spatial_features(f, align=RollAlign(centres))
    # Assert: without alignment the mass is smeared over 3 cells, with it all lands on the start cell
    assert unaligned[0, 0, 1, 0].item() == pytest.approx(1 / 3)
    expected = torch.zeros(2, 1, 3, 4)
    expected[0, 0, 1, 0] = 1.0
    expected[1, 0, 0, 3] = 2.0
    torch.testing.assert_close(aligned, expected)


def test_phi_flattens_and_normalises_per_sample():
    # Prepare
    x = torch.tensor([[[3.0, 4.0]], [[0.0, 2.0]]])
    # Execute
    normed = phi(x)
    raw = phi(x, normalize=False)
    # Assert
    torch.testing.assert_close(normed, torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    torch.testing.assert_close(raw, torch.tensor([[3.0, 4.0], [0.0, 2.0]]))


def test_distillation_loss_is_zero_for_identical_features_and_positive_otherwise():
    # Prepare
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(4, 3, 2, 5, 5, generator=gen)
    student = teacher.clone().requires_grad_(True)
    other = (teacher + 0.3 * torch.randn(teacher.shape, generator=gen)).requires_grad_(True)
    # Execute
    same, same_parts = spatiotemporal_distillation_loss(teacher, student, alpha=1.0)
    differ, parts = spatiotemporal_distillation_loss(teacher, other, alpha=1.0)
    differ.backward()
    # Assert
    assert same.item() == 0.0 and same_parts["l_sf"].item() == 0.0 and same_parts["l_tf"].item() == 0.0
    assert differ.item() > 0.0 and parts["l_sf"].item() > 0.0 and parts["l_tf"].item() > 0.0
    assert other.grad is not None and torch.isfinite(other.grad).all() and other.grad.abs().sum() > 0


def test_raw_distillation_loss_matches_hand_value_for_a_constant_shift():
    # Prepare: student = teacher + 1 everywhere; with mean pooling every pooled entry shifts by 1, so the
    # temporal distance is sqrt(T*C*(H+W)) = sqrt(10) and the spatial one sqrt(C*H*W) = sqrt(6).
    teacher = hand_map()
    student = teacher + 1.0
    # Execute
    loss, parts = spatiotemporal_distillation_loss(teacher, student, alpha=0.5, normalize=False)
    # Assert
    assert parts["l_tf"].item() == pytest.approx(math.sqrt(10))
    assert parts["l_sf"].item() == pytest.approx(math.sqrt(6))
    assert loss.item() == pytest.approx(math.sqrt(6) + 0.5 * math.sqrt(10))


def test_normalised_loss_ignores_scale_and_layers_are_averaged():
    # Prepare
    teacher = hand_map()
    # Execute
    scaled, _ = spatiotemporal_distillation_loss(teacher, 3.0 * teacher)
    single, _ = spatiotemporal_distillation_loss(teacher, teacher + 1.0, normalize=False)
    two_layers, _ = spatiotemporal_distillation_loss([teacher, teacher], [teacher, teacher + 1.0], normalize=False)
    # Assert
    assert scaled.item() == pytest.approx(0.0, abs=1e-6)
    assert two_layers.item() == pytest.approx(single.item() / 2)


def test_square_preprocess_squares_before_pooling():
    # Prepare: a +-1 checkerboard that flips sign between frames pools to 0 along every axis raw, but its
    # squares are 1 everywhere
    teacher = torch.zeros(1, 2, 1, 2, 2)
    student = torch.tensor([1.0, -1.0, -1.0, 1.0, -1.0, 1.0, 1.0, -1.0]).reshape(1, 2, 1, 2, 2)
    # Execute
    raw, _ = spatiotemporal_distillation_loss(teacher, student, normalize=False, preprocess="none")
    squared, parts = spatiotemporal_distillation_loss(teacher, student, normalize=False, preprocess="square")
    # Assert: squared maps pool to all ones: C*H*W = 4 spatial entries, T*C*(H+W) = 8 temporal ones
    assert raw.item() == pytest.approx(0.0)
    assert parts["l_sf"].item() == pytest.approx(2.0)
    assert parts["l_tf"].item() == pytest.approx(math.sqrt(8))
    assert squared.item() == pytest.approx(2.0 + math.sqrt(8))


def test_logit_distillation_hand_value_and_zero_when_equal():
    # Prepare: teacher logits (0, 0) -> p = (1/2, 1/2); student (2 ln 3, 0) at T=2 -> q = (3/4, 1/4)
    teacher = torch.zeros(1, 2)
    student = torch.tensor([[2 * math.log(3.0), 0.0]])
    # Execute
    loss = logit_distillation_loss(student, teacher, temperature=2.0)
    same = logit_distillation_loss(teacher.clone(), teacher, temperature=2.0)
    # Assert: T^2 * KL(p || q) = 4 * 0.5 * ln(4/3)
    assert loss.item() == pytest.approx(2 * math.log(4 / 3), rel=1e-5)
    assert same.item() == pytest.approx(0.0, abs=1e-7)


def test_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        temporal_features(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="pool='median'"):
        spatial_features(hand_map(), pool="median")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="teacher shape"):
        spatiotemporal_distillation_loss(hand_map(), torch.zeros(1, 2, 1, 3, 3))
