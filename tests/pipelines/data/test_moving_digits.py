"""Moving-digits generator: determinism, shapes, disjoint source digits, motion and the shifted domain."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.dataset_io import load_split
from fedtwin.pipelines.data.moving_digits import (
    MovingDigitsConfig,
    ShiftConfig,
    digit_sprites,
    generate,
    make_moving_digits_dataset,
    plan_clips,
    source_split,
)

SMALL = MovingDigitsConfig(train_per_class=4, test_per_class=2)
CLEAN = MovingDigitsConfig(train_per_class=4, test_per_class=2, noise_std=0.0)


def test_same_seed_gives_identical_clips_and_other_seed_differs():
    # Execute
    a = generate(SMALL, "train", seed=3)
    b = generate(SMALL, "train", seed=3)
    c = generate(SMALL, "train", seed=4)

    # Assert
    np.testing.assert_array_equal(a.clips, b.clips)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.video_ids, b.video_ids)
    assert not np.array_equal(a.clips, c.clips)


def test_shapes_dtypes_and_class_counts():
    # Prepare
    cfg = MovingDigitsConfig(frames=5, size=24, channels=3, digit_size=12, train_per_class=3, test_per_class=2)

    # Execute
    train = generate(cfg, "train", seed=0)
    test = generate(cfg, "test", seed=0)

    # Assert
    assert train.clips.shape == (30, 5, 3, 24, 24) and train.clips.dtype == np.uint8
    assert test.clips.shape == (20, 5, 3, 24, 24)
    assert train.labels.dtype == np.int64
    assert np.bincount(train.labels, minlength=10).tolist() == [3] * 10
    assert np.bincount(test.labels, minlength=10).tolist() == [2] * 10
    assert len(set(train.video_ids) | set(test.video_ids)) == 50
    np.testing.assert_array_equal(train.clips[:, :, 0], train.clips[:, :, 2])  # grey repeated over channels
    f = train.to_float()
    assert f.dtype == np.float32 and 0.0 <= f.min() and f.max() <= 1.0


def test_train_and_test_use_disjoint_stratified_source_digits():
    # Prepare
    _, digit_labels = digit_sprites(16)

    # Execute
    pools = source_split(seed=0, test_fraction=0.3, labels=digit_labels)
    train_plan = plan_clips(MovingDigitsConfig(train_per_class=200, test_per_class=60), "train", seed=0)
    test_plan = plan_clips(MovingDigitsConfig(train_per_class=200, test_per_class=60), "test", seed=0)

    # Assert
    assert len(np.intersect1d(pools["train"], pools["test"])) == 0
    assert len(pools["train"]) + len(pools["test"]) == 1797
    for c in range(10):  # every class is split ~70/30
        n_c = np.sum(digit_labels == c)
        assert np.sum(digit_labels[pools["test"]] == c) == round(0.3 * n_c)
    assert np.isin(train_plan.source, pools["train"]).all()
    assert np.isin(test_plan.source, pools["test"]).all()
    np.testing.assert_array_equal(digit_labels[train_plan.source], train_plan.labels)


def test_rendered_frame_shows_the_planned_digit_at_the_planned_position():
    # Prepare
    sprites, _ = digit_sprites(CLEAN.digit_size)
    plan = plan_clips(CLEAN, "test", seed=1)

    # Execute
    clips = generate(CLEAN, "test", seed=1)

    # Assert: without noise, the crop at the planned position is the quantised sprite, the rest is 0
    for i in range(len(clips)):
        for t in (0, CLEAN.frames - 1):
            top, left = plan.path[i, t]
            frame = clips.clips[i, t, 0].astype(int)
            crop = frame[top : top + 16, left : left + 16].copy()
            np.testing.assert_array_equal(crop, np.rint(sprites[plan.source[i]] * 255).astype(int))
            frame[top : top + 16, left : left + 16] = 0
            assert frame.sum() == 0


def test_digits_move_within_the_canvas():
    # Execute
    plan = plan_clips(CLEAN, "train", seed=0)
    clips = generate(CLEAN, "train", seed=0)

    # Assert: positions stay inside [0, size - digit_size] and every clip's digit leaves its first spot
    assert plan.path.min() >= 0 and plan.path.max() <= CLEAN.size - CLEAN.digit_size
    frames = clips.clips[:, :, 0].astype(float)
    ys, xs = np.arange(32)[:, None], np.arange(32)[None, :]
    mass = frames.sum(axis=(2, 3))
    cy = (frames * ys).sum(axis=(2, 3)) / mass
    cx = (frames * xs).sum(axis=(2, 3)) / mass
    travel = np.hypot(cy - cy[:, :1], cx - cx[:, :1]).max(axis=1)
    assert travel.min() >= 1.0
    assert all(not np.array_equal(c[0], c[-1]) or not np.array_equal(c[0], c[1]) for c in clips.clips)


def test_class_motion_sets_direction_by_class():
    # Prepare
    cfg = MovingDigitsConfig(train_per_class=5, test_per_class=2, class_motion=True, direction_jitter_deg=10.0)

    # Execute
    plan = plan_clips(cfg, "train", seed=0)

    # Assert: class c heads at 2*pi*c/10 within the jitter, at the middle speed 2 px/frame
    angle = np.arctan2(plan.velocity[:, 0], plan.velocity[:, 1])
    expected = 2 * np.pi * plan.labels / 10
    diff = np.angle(np.exp(1j * (angle - expected)))
    assert np.abs(diff).max() <= np.deg2rad(10.0) + 1e-9
    np.testing.assert_allclose(np.hypot(plan.velocity[:, 0], plan.velocity[:, 1]), 2.0)


def test_shifted_domain_is_the_same_clips_seen_through_lower_contrast():
    # Prepare: contrast only, so the expected pixels can be computed by hand
    shifted_cfg = MovingDigitsConfig(
        train_per_class=4,
        test_per_class=2,
        noise_std=0.0,
        shift=ShiftConfig(blur_sigma=0.0, contrast=0.5, noise_std=0.0),
    )

    # Execute
    clean = generate(CLEAN, "train", seed=2)
    shifted = generate(shifted_cfg, "train", seed=2)
    default_shift = generate(MovingDigitsConfig(train_per_class=4, test_per_class=2, shift=ShiftConfig()), "train", 2)

    # Assert: background 0 -> 0.5 + 0.5 * (0 - 0.5) = 0.25 -> 64; full ink 1.0 -> 0.75 -> 191
    np.testing.assert_array_equal(shifted.labels, clean.labels)
    assert (shifted.clips[clean.clips == 0] == 64).all()
    assert (shifted.clips[clean.clips == 255] == 191).all()
    assert np.abs(default_shift.clips.astype(int) - clean.clips.astype(int)).mean() > 20


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="^frames: must be >= 1"):
        MovingDigitsConfig(frames=0)
    with pytest.raises(ValueError, match="^digit_size: must be <= size"):
        MovingDigitsConfig(size=10, digit_size=16)
    with pytest.raises(ValueError, match="^contrast:"):
        ShiftConfig(contrast=0.0)


def test_make_dataset_writes_loadable_splits_and_reuses_same_settings(tmp_path):
    # Prepare
    out = tmp_path / "md"

    # Execute
    first = make_moving_digits_dataset(out, SMALL, seed=5)
    again = make_moving_digits_dataset(out, SMALL, seed=5)
    train = load_split(out, "train")

    # Assert
    assert first.splits["train"].num_examples == 40 and first.splits["test"].num_examples == 20
    assert again.info == first.info
    np.testing.assert_array_equal(train.clips, generate(SMALL, "train", seed=5).clips)
    with pytest.raises(DatasetError, match="other settings"):
        make_moving_digits_dataset(out, SMALL, seed=6)
