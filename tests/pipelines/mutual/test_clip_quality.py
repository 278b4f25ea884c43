"""Tests for fedtwin.pipelines.mutual.clip_quality: sharpness x exposure scores and the QualityFilter."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.exceptions import NotFittedError

from fedtwin.pipelines.mutual.clip_quality import QualityFilter, frame_statistics, quality_scores


def moving_square_clip(frames: int = 4, size: int = 16) -> np.ndarray:
    """A bright square with hard edges moving right on a black background, uint8 (T, 1, H, W)."""
    clip = np.zeros((frames, 1, size, size), dtype=np.uint8)
    for t in range(frames):
        clip[t, 0, 5:10, 2 + t : 7 + t] = 200
    return clip


def test_laplacian_variance_and_exposure_by_hand():
    # Prepare: 5x5 frames with one lit pixel in the middle. The valid 3x3 Laplacian response is
    # -4v at the centre and +v at its four edge neighbours: mean 0, variance 20 v^2 / 9.
    clips = np.zeros((1, 2, 1, 5, 5), dtype=np.float32)
    clips[0, 0, 0, 2, 2] = 0.5  # v = 0.5: variance 5/9, no clipped pixel
    clips[0, 1, 0, 2, 2] = 1.0  # v = 1: variance 20/9, 1 of 25 pixels blown out

    # Execute
    lap_var, exposure = frame_statistics(clips, presmooth_sigma=0.0)
    score = quality_scores(clips, sharpness_ref=10 / 9, presmooth_sigma=0.0)

    # Assert: frame scores min(1, (5/9)/(10/9)) * 1 = 0.5 and min(1, 2) * 24/25 = 0.96
    np.testing.assert_allclose(lap_var[0], [5 / 9, 20 / 9], rtol=1e-5)
    np.testing.assert_allclose(exposure[0], [1.0, 24 / 25], rtol=1e-6)
    assert score[0] == pytest.approx((0.5 + 0.96) / 2, rel=1e-5)


def test_filter_ranks_blurred_and_overexposed_clips_below_sharp_one():
    # Prepare: sharp clip, a box-blurred copy, and an over-exposed copy (most pixels saturate)
    sharp = moving_square_clip()
    blurred = F.avg_pool2d(torch.from_numpy(sharp).float(), 5, stride=1, padding=2).round().to(torch.uint8).numpy()
    overexposed = np.clip(sharp.astype(np.int32) + 250, 0, 255).astype(np.uint8)
    clips = np.stack([sharp, blurred, overexposed])

    # Execute
    qf = QualityFilter(q_min=0.5).fit(clips)
    kept = qf.select(clips)

    # Assert
    assert qf.scores_[0] > qf.scores_[1] and qf.scores_[0] > qf.scores_[2]
    assert qf.scores_[2] < 0.05  # every pixel is at 250-255 >= 0.98 * 255 -> nothing valid
    np.testing.assert_array_equal(kept, [0])
    np.testing.assert_allclose(qf.score(clips), qf.scores_)


def test_presmoothing_keeps_a_noisy_blurred_clip_below_a_clean_one():
    # Prepare: the moving-digits "shifted domain" recipe: blur, then pixel noise (std 0.1)
    clean = moving_square_clip(size=24)
    blurred = F.avg_pool2d(torch.from_numpy(clean).float(), 3, stride=1, padding=1)
    noise = torch.randn(blurred.shape, generator=torch.Generator().manual_seed(0)) * 0.1 * 255
    shifted = (blurred + noise).clamp(0, 255).round().to(torch.uint8).numpy()
    clips = np.stack([clean, shifted])

    # Execute
    bare, _ = frame_statistics(clips, presmooth_sigma=0.0)
    smoothed, _ = frame_statistics(clips, presmooth_sigma=1.0)

    # Assert: a bare Laplacian mistakes noise for detail; the pre-smoothed one does not
    assert bare[1].mean() > bare[0].mean()
    assert smoothed[1].mean() < smoothed[0].mean()


def test_float_and_uint8_inputs_agree():
    clip = moving_square_clip()[None]
    as_float = clip.astype(np.float32) / 255.0
    np.testing.assert_allclose(quality_scores(clip, 1.0), quality_scores(as_float, 1.0), rtol=1e-5)


def test_filter_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"\(N, T, C, H, W\)"):
        QualityFilter().fit(np.zeros((2, 3, 8, 8), dtype=np.uint8))
    with pytest.raises(NotFittedError):
        QualityFilter().select(np.zeros((1, 2, 1, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match="flat"):
        QualityFilter().fit(np.zeros((1, 2, 1, 8, 8), dtype=np.uint8))
