"""Moving digits with label_scheme="digit_motion": (digit group, direction) labels where frame order matters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig, class_names, digit_sprites, generate, plan_clips
from fedtwin.pipelines.model.networks import ModelConfig, build_model
from fedtwin.pipelines.model.training import TrainSettings, evaluate, local_train

MOTION = MovingDigitsConfig(
    label_scheme="digit_motion", digit_groups=5, motion_classes=2, train_per_class=12, test_per_class=4
)


def test_labels_fold_digit_group_and_an_independent_direction_code():
    # Execute
    plan = plan_clips(MOTION, "train", seed=0)
    _, digit_labels = digit_sprites(MOTION.digit_size)
    digits = digit_labels[plan.source]

    # Assert: label = group * 2 + code, group = digit // 2, every class has exactly 12 clips
    assert MOTION.num_classes == 10
    np.testing.assert_array_equal(plan.labels, (digits // 2) * 2 + plan.motion_codes)
    assert np.bincount(plan.labels, minlength=10).tolist() == [12] * 10
    # both digits of a group appear with both directions (codes are not tied to the digit)
    for d in range(10):
        assert set(plan.motion_codes[digits == d].tolist()) == {0, 1}


def test_direction_follows_the_code_and_the_path_never_bounces():
    # Execute
    plan = plan_clips(MOTION, "test", seed=1)

    # Assert: code 0 heads right (angle 0), code 1 left (angle pi), within the 10 degree jitter,
    # at the middle speed 2 px/frame; x moves monotonically the whole clip (start chosen to fit)
    angle = np.arctan2(plan.velocity[:, 0], plan.velocity[:, 1])
    expected = np.pi * plan.motion_codes
    assert np.abs(np.angle(np.exp(1j * (angle - expected)))).max() <= np.deg2rad(10.0) + 1e-9
    np.testing.assert_allclose(np.hypot(plan.velocity[:, 0], plan.velocity[:, 1]), 2.0)
    steps = np.diff(plan.path[:, :, 1], axis=1)
    sign = np.where(plan.motion_codes == 0, 1, -1)[:, None]
    assert (steps * sign >= 1).all()  # 2 px/frame * cos(10 deg) rounds to at least 1 px every frame
    assert plan.path.min() >= 0 and plan.path.max() <= MOTION.size - MOTION.digit_size


def test_class_names_and_digit_scheme_unchanged():
    # Assert
    assert class_names(MOTION)[:4] == ["01@0deg", "01@180deg", "23@0deg", "23@180deg"]
    assert class_names(MovingDigitsConfig(label_scheme="digit_motion", digit_groups=2, motion_classes=4))[:4] == [
        "01234@0deg",
        "01234@90deg",
        "01234@180deg",
        "01234@270deg",
    ]
    digit = plan_clips(MovingDigitsConfig(train_per_class=3, test_per_class=1), "train", seed=0)
    assert digit.motion_codes is None and MovingDigitsConfig().num_classes == 10


def test_motion_config_validation_names_the_field():
    with pytest.raises(ValueError, match="^class_motion: must be false"):
        MovingDigitsConfig(label_scheme="digit_motion", class_motion=True)
    with pytest.raises(ValueError, match="^motion_classes: must be >= 2"):
        MovingDigitsConfig(motion_classes=1)
    with pytest.raises(ValueError, match="^digit_groups: must be in"):
        MovingDigitsConfig(digit_groups=11)
    with pytest.raises(ValueError, match="^label_scheme:"):
        MovingDigitsConfig(label_scheme="motion")  # type: ignore[arg-type]


def _reorder(data: ClipArrays, order: np.ndarray) -> ClipArrays:
    """Clips with their frames taken in ``order`` (N, T) per clip."""
    clips = np.take_along_axis(data.clips, order[:, :, None, None, None], axis=1)
    return ClipArrays(clips, data.labels, data.video_ids)


def test_shuffling_frames_drops_a_trained_models_accuracy_to_chance():
    # Prepare: one digit group, two directions -> the label is the direction of travel only; a right-
    # moving clip visits the same positions as a left-moving one, in the opposite order
    cfg = MovingDigitsConfig(
        label_scheme="digit_motion", digit_groups=1, motion_classes=2, train_per_class=100, test_per_class=100
    )
    train, test = generate(cfg, "train", seed=0), generate(cfg, "test", seed=0)
    model = build_model(ModelConfig(num_classes=2), seed=0)
    torch.set_num_threads(1)
    local_train(
        model,
        train,
        TrainSettings(epochs=4, batch_size=16, lr=3e-3, optimizer="adam"),
        generator=torch.Generator().manual_seed(0),
    )
    rng = np.random.default_rng(0)
    shuffled = _reorder(test, np.stack([rng.permutation(cfg.frames) for _ in range(len(test))]))
    reversed_ = _reorder(test, np.tile(np.arange(cfg.frames)[::-1], (len(test), 1)))

    # Execute
    ordered_acc = evaluate(model, test).accuracy
    shuffled_acc = evaluate(model, shuffled).accuracy
    reversed_acc = evaluate(model, reversed_).accuracy

    # Assert: learned in order, chance (0.5) without order, and reversing the frames flips the answer
    assert ordered_acc >= 0.9
    assert shuffled_acc <= 0.65
    assert ordered_acc - shuffled_acc >= 0.3
    assert reversed_acc <= 0.1
