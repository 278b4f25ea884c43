"""Render clips the way key-frame replay shows them: keep the key frames, hold each until the next one.

``ExemplarMemory.replay`` rebuilds stored clips this way. A model that trains on replayed old clips next
to untouched new clips can learn the rendering itself (frames that repeat = an old class) instead of
the classes; rendering the new clips alike removes that shortcut (docs/incremental.md, "Decisions").
"""

from __future__ import annotations

import numpy as np

from fedtwin.pipelines.incremental.keyframes import KeyFrameSelector


def hold_render(clips: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(N, T, ...)`` clips where frame ``i`` becomes the latest frame ``<= i`` with ``mask`` set.

    Args:
        clips: ``(N, T, ...)`` clips.
        mask: ``(N, T)`` boolean key-frame mask; column 0 must be set in every row.

    Returns:
        A new array of the same shape and dtype (``hold_interpolate`` for a whole batch).
    """
    clips, mask = np.asarray(clips), np.asarray(mask, dtype=bool)
    if mask.shape != clips.shape[:2] or (len(mask) and not mask[:, 0].all()):
        raise ValueError(f"mask must be (N, T) = {clips.shape[:2]} with frame 0 kept in every clip, got {mask.shape}")
    t = clips.shape[1]
    source = np.maximum.accumulate(np.where(mask, np.arange(t), 0), axis=1)
    index = source.reshape(source.shape + (1,) * (clips.ndim - 2))
    return np.take_along_axis(clips, index, axis=1)


def render_keyframes(clips: np.ndarray, selector: KeyFrameSelector) -> tuple[np.ndarray, np.ndarray]:
    """Key-frame rendering of a batch with a fitted selector: ``(rendered clips, key frames per clip)``."""
    mask = selector.keyframe_mask(clips)
    return hold_render(clips, mask), mask.sum(axis=1)
