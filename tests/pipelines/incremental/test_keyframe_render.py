"""Key-frame rendering of whole batches: hold each key frame until the next one."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.pipelines.incremental.keyframe_render import hold_render, render_keyframes
from fedtwin.pipelines.incremental.keyframes import KeyFrameSelector, hold_interpolate


def test_hold_render_repeats_the_latest_key_frame_per_clip():
    # Prepare: frame t of clip n holds the value 10 * n + t
    clips = (10 * np.arange(2)[:, None] + np.arange(5)[None, :]).astype(np.uint8).reshape(2, 5, 1, 1, 1)
    mask = np.array([[1, 0, 1, 0, 0], [1, 1, 0, 0, 1]], dtype=bool)

    # Execute
    out = hold_render(clips, mask)

    # Assert
    assert out[:, :, 0, 0, 0].tolist() == [[0, 0, 2, 2, 2], [10, 11, 11, 11, 14]]
    assert out.dtype == np.uint8 and out.shape == clips.shape


def test_render_keyframes_matches_hold_interpolation_of_the_selected_frames():
    # Prepare
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (4, 8, 1, 6, 6), dtype=np.uint8)
    selector = KeyFrameSelector(rho=1.2).fit(clips)

    # Execute
    rendered, kept = render_keyframes(clips, selector)

    # Assert: the same frames replay() would rebuild from the stored key frames
    for clip, out, k in zip(clips, rendered, kept):
        idx = selector.select(clip)
        assert len(idx) == k
        np.testing.assert_array_equal(out, hold_interpolate(clip[idx], idx, 8))


def test_hold_render_needs_the_first_frame():
    with pytest.raises(ValueError, match="frame 0 kept"):
        hold_render(np.zeros((1, 3, 1, 1, 1)), np.array([[0, 1, 1]], dtype=bool))
