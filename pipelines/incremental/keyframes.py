"""Key-frame selection inside a clip and hold interpolation back to T frames.

Greedy rule (the tests' 12-frame example keeps images 1, 4 and 9): the first frame is always
a key frame; each later frame becomes the new key frame when its L2 distance to the *latest* key frame is at
least ``delta``. Distances are computed on frames scaled to [0, 1]. ``delta`` is either preset or relative,
``rho * median ||x_{i+1} - x_i||`` over the clips given to ``fit``.

A stored clip is replayed by hold interpolation: each original frame index maps to the latest key frame at
or before it, which keeps the order and the approximate timing.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def _as_unit_frames(clips: np.ndarray) -> np.ndarray:
    """(N, T, C, H, W) -> (N, T, D) float64 in [0, 1]: uint8 is divided by 255, floats are taken as is."""
    clips = np.asarray(clips)
    flat = clips.reshape(clips.shape[0], clips.shape[1], -1)
    if clips.dtype == np.uint8:
        return flat.astype(np.float64) / 255.0
    if np.issubdtype(clips.dtype, np.floating):
        return flat.astype(np.float64, copy=False)
    raise TypeError(f"clips must be uint8 (0-255) or float in [0, 1], got dtype {clips.dtype}")


def _as_batch(clips: np.ndarray) -> np.ndarray:
    clips = np.asarray(clips)
    if clips.ndim == 4:
        return clips[None]
    if clips.ndim == 5:
        return clips
    raise ValueError(
        f"expected one clip (T, C, H, W) or a batch (N, T, C, H, W), got shape {clips.shape}; "
        "add a channel axis for grayscale frames"
    )


def consecutive_distances(clips: np.ndarray) -> np.ndarray:
    """L2 distances ``||x_{i+1} - x_i||`` between consecutive [0, 1] frames, shape ``(N, T - 1)``."""
    frames = _as_unit_frames(_as_batch(clips))
    return np.linalg.norm(np.diff(frames, axis=1), axis=2)


class KeyFrameSelector:
    """Greedy L2-threshold key-frame selector with the scikit-learn estimator contract.

    Args:
        delta: absolute threshold on the L2 distance between [0, 1] frames; ``None`` makes it relative.
        rho: multiplier of the median consecutive-frame distance when ``delta`` is ``None`` (default 1.5,
            ``incremental.memory.keyframe_rho``'s default).

    Attributes:
        delta_: the threshold in use, set by ``fit``.

    ``fit`` on a relative threshold uses the median over *all* clips it is given, so fitting once on a
    task's data gives a dataset-level threshold: still clips then keep few frames and fast ones many. A frame
    identical to the latest key frame is never kept, even when ``delta_`` is 0 (a degenerate median on
    perfectly static data); hold interpolation restores it exactly.
    """

    def __init__(self, delta: float | None = None, rho: float = 1.5) -> None:
        self.delta = delta
        self.rho = rho

    def fit(self, clips: np.ndarray) -> KeyFrameSelector:
        """Set ``delta_`` from the preset ``delta`` or from ``rho`` times the median consecutive distance.

        Args:
            clips: one clip ``(T, C, H, W)`` or a batch ``(N, T, C, H, W)``, uint8 or float in [0, 1].

        Returns:
            ``self``.
        """
        clips = _as_batch(clips)
        if self.delta is not None:
            if self.delta < 0:
                raise ValueError(f"delta must be >= 0, got {self.delta}")
            self.delta_ = float(self.delta)
            return self
        if self.rho <= 0:
            raise ValueError(f"rho must be > 0, got {self.rho}")
        distances = consecutive_distances(clips)
        if distances.size == 0:
            raise ValueError("a relative threshold needs clips of at least 2 frames to measure frame distances")
        self.delta_ = float(self.rho * np.median(distances))
        logger.debug("key-frame threshold delta_=%.4f (rho=%s over %d clips)", self.delta_, self.rho, len(distances))
        return self

    def _threshold(self) -> float:
        if not hasattr(self, "delta_"):
            raise RuntimeError("KeyFrameSelector is not fitted; call fit(clips) before select()")
        return self.delta_

    def keyframe_mask(self, clips: np.ndarray) -> np.ndarray:
        """Boolean key-frame mask ``(N, T)`` for a batch (vectorised over clips, a loop over T only).

        Args:
            clips: ``(N, T, C, H, W)`` or a single ``(T, C, H, W)`` clip (then ``N = 1``).
        """
        delta = self._threshold()
        frames = _as_unit_frames(_as_batch(clips))
        n, t, _ = frames.shape
        mask = np.zeros((n, t), dtype=bool)
        if t == 0:
            return mask
        mask[:, 0] = True
        last = frames[:, 0].copy()
        for i in range(1, t):
            dist = np.linalg.norm(frames[:, i] - last, axis=1)
            keep = (dist >= delta) & (dist > 0.0)
            mask[:, i] = keep
            last[keep] = frames[keep, i]
        return mask

    def select(self, clip: np.ndarray) -> np.ndarray:
        """Key-frame indices (0-based, increasing, starting with 0) of one ``(T, C, H, W)`` clip."""
        clip = np.asarray(clip)
        if clip.ndim != 4:
            raise ValueError(f"select takes one clip (T, C, H, W), got shape {clip.shape}; use select_batch")
        return np.flatnonzero(self.keyframe_mask(clip)[0])

    def select_batch(self, clips: np.ndarray) -> list[np.ndarray]:
        """Key-frame indices of every clip in a ``(N, T, C, H, W)`` batch."""
        return [np.flatnonzero(row) for row in self.keyframe_mask(clips)]

    def fit_select(self, clip: np.ndarray) -> np.ndarray:
        """``fit(clip).select(clip)``: a per-clip threshold, fitted on the clip itself."""
        return self.fit(clip).select(clip)

    def __repr__(self) -> str:
        return f"KeyFrameSelector(delta={self.delta!r}, rho={self.rho!r})"


def hold_interpolate(frames: np.ndarray, indices: np.ndarray, num_frames: int) -> np.ndarray:
    """Rebuild ``num_frames`` frames from key frames by holding the latest key frame.

    Args:
        frames: ``(K, ...)`` stored key frames, in order.
        indices: ``(K,)`` their original frame indices, strictly increasing, starting at 0.
        num_frames: ``T``, the original clip length.

    Returns:
        ``(T, ...)`` array whose frame ``i`` is the key frame with the largest index ``<= i``.
    """
    frames = np.asarray(frames)
    indices = np.asarray(indices)
    if indices.ndim != 1 or len(indices) != len(frames) or len(indices) == 0:
        raise ValueError(
            f"need one index per stored frame (K >= 1), got {indices.shape} indices for {len(frames)} frames"
        )
    if indices[0] != 0 or np.any(np.diff(indices) <= 0) or indices[-1] >= num_frames:
        raise ValueError(
            f"key-frame indices must start at 0, increase strictly and stay below T={num_frames}, "
            f"got {indices.tolist()}"
        )
    source = np.searchsorted(indices, np.arange(num_frames), side="right") - 1
    return frames[source]
