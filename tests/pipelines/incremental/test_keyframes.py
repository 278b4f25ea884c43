"""Tests for pipelines/incremental/keyframes.py: a worked 12-frame example, relative thresholds, hold interpolation."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.pipelines.incremental.keyframes import KeyFrameSelector, consecutive_distances, hold_interpolate


def seed_example_clip() -> np.ndarray:
    """12 uint8 frames of 1x2x2 pixels of a worked example whose key frames are images 1, 4 and 9.

    All four pixels of frame i share one value v_i, so the L2 distance of two frames is 2 * |v_i - v_j| / 255.
    With delta = 1.0 (a value gap of 0.5): images 2-3 stay within 0.2 of image 1; image 4 is 0.6 away from
    image 1 although only 0.4 from image 3 (so the rule must compare with the latest key frame, not the
    previous frame); images 5-8 drift up to 0.4 from image 4; image 9 jumps back 0.6; images 10-12 stay close.
    """
    values = np.array([0, 25, 51, 153, 178, 204, 229, 255, 0, 25, 51, 76], dtype=np.uint8)
    return np.broadcast_to(values[:, None, None, None], (12, 1, 2, 2)).copy()


def greedy_reference(clip: np.ndarray, delta: float) -> list[int]:
    """The greedy rule written out plainly, one clip at a time (test oracle)."""
    frames = clip.reshape(len(clip), -1).astype(np.float64) / 255.0
    kept, last = [0], frames[0]
    for i in range(1, len(frames)):
        dist = np.linalg.norm(frames[i] - last)
        if dist >= delta and dist > 0:
            kept.append(i)
            last = frames[i]
    return kept


def test_seed_example_selects_images_1_4_9():
    # Prepare
    clip = seed_example_clip()
    selector = KeyFrameSelector(delta=1.0).fit(clip)
    # Execute
    kept = selector.select(clip)
    # Assert: 0-based indices of images 1, 4 and 9
    assert kept.tolist() == [0, 3, 8]
    assert selector.delta_ == 1.0


def test_relative_threshold_is_rho_times_median_consecutive_distance():
    # Prepare: one pixel rising by exactly 1/8 per frame -> every consecutive distance is 0.125
    clip = (np.arange(8, dtype=np.float64) / 8).reshape(8, 1, 1, 1)
    # Execute
    selector = KeyFrameSelector(rho=2.0).fit(clip)
    kept = selector.select(clip)
    # Assert: delta_ = 0.25, so every second frame becomes a key frame
    assert selector.delta_ == pytest.approx(0.25)
    assert kept.tolist() == [0, 2, 4, 6]
    np.testing.assert_allclose(consecutive_distances(clip), np.full((1, 7), 0.125))


def test_static_clip_keeps_only_its_first_frame_even_with_a_zero_threshold():
    # Prepare
    clip = np.full((6, 1, 3, 3), 17, dtype=np.uint8)
    # Execute
    kept = KeyFrameSelector().fit_select(clip)
    # Assert
    assert kept.tolist() == [0]


def test_batch_selection_matches_the_plain_greedy_rule():
    # Prepare: random walks of varied speed, so clips keep different numbers of frames
    rng = np.random.default_rng(3)
    steps = rng.normal(0, 1, size=(20, 10, 1, 4, 4)) * rng.uniform(0, 25, size=(20, 1, 1, 1, 1))
    clips = np.clip(128 + np.cumsum(steps, axis=1), 0, 255).astype(np.uint8)
    selector = KeyFrameSelector().fit(clips)
    # Execute
    batch = selector.select_batch(clips)
    # Assert
    expected = [greedy_reference(clip, selector.delta_) for clip in clips]
    assert [k.tolist() for k in batch] == expected
    assert len({len(k) for k in batch}) > 1  # the fixture really exercises different key-frame counts


def test_select_before_fit_and_bad_shapes_raise():
    with pytest.raises(RuntimeError, match="not fitted"):
        KeyFrameSelector(delta=0.1).select(seed_example_clip())
    with pytest.raises(ValueError, match="one clip"):
        KeyFrameSelector(delta=0.1).fit(np.zeros((4, 4)))


def test_hold_interpolation_restores_t_frames_in_order():
    # Prepare: key frames of the 12-frame example, each marked by its original index
    frames = np.array([0, 3, 8]).reshape(3, 1, 1, 1)
    # Execute
    rebuilt = hold_interpolate(frames, np.array([0, 3, 8]), 12)
    # Assert: image i shows the latest key frame at or before it
    assert rebuilt.shape == (12, 1, 1, 1)
    assert rebuilt.ravel().tolist() == [0, 0, 0, 3, 3, 3, 3, 3, 8, 8, 8, 8]


def test_hold_interpolation_of_selected_frames_reproduces_a_piecewise_constant_clip():
    # Prepare: a clip that changes only at frames 0, 2 and 5
    values = np.array([10, 10, 90, 90, 90, 200, 200], dtype=np.uint8)
    clip = np.broadcast_to(values[:, None, None, None], (7, 1, 2, 2)).copy()
    kept = KeyFrameSelector(delta=0.1).fit(clip).select(clip)
    # Execute
    rebuilt = hold_interpolate(clip[kept], kept, len(clip))
    # Assert
    assert kept.tolist() == [0, 2, 5]
    np.testing.assert_array_equal(rebuilt, clip)


def test_hold_interpolation_rejects_indices_not_starting_at_zero():
    with pytest.raises(ValueError, match="start at 0"):
        hold_interpolate(np.zeros((2, 1)), np.array([1, 3]), 5)
