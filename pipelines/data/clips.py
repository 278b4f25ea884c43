"""``ClipArrays``: the in-memory form of a split or a shard, returned by every loader."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ClipArrays:
    """A batch of labelled video clips as plain numpy arrays.

    Arrays read from Parquet may be read-only views of Arrow buffers (zero-copy); copy before
    editing them in place. ``subset`` and ``concat`` always return fresh arrays.

    Attributes:
        clips: uint8 pixels, shape (N, T, C, H, W), values 0-255.
        labels: int64 class indices, shape (N,).
        video_ids: unicode strings, shape (N,).
    """

    clips: np.ndarray
    labels: np.ndarray
    video_ids: np.ndarray

    def __post_init__(self) -> None:
        if self.clips.dtype != np.uint8 or self.clips.ndim != 5:
            raise ValueError(f"clips must be uint8 of shape (N, T, C, H, W), got {self.clips.dtype} {self.clips.shape}")
        n = self.clips.shape[0]
        if self.labels.dtype != np.int64 or self.labels.shape != (n,):
            raise ValueError(f"labels must be int64 of shape ({n},), got {self.labels.dtype} {self.labels.shape}")
        if self.video_ids.dtype.kind != "U" or self.video_ids.shape != (n,):
            raise ValueError(
                f"video_ids must be unicode strings of shape ({n},), got {self.video_ids.dtype} {self.video_ids.shape}"
            )

    def __len__(self) -> int:
        return int(self.clips.shape[0])

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """(T, C, H, W) of every clip."""
        t, c, h, w = self.clips.shape[1:]
        return (int(t), int(c), int(h), int(w))

    def subset(self, idx: np.ndarray | slice) -> ClipArrays:
        """Rows selected by an index array, a boolean mask or a slice (always copied)."""
        if isinstance(idx, slice):
            return ClipArrays(self.clips[idx].copy(), self.labels[idx].copy(), self.video_ids[idx].copy())
        idx = np.asarray(idx)
        return ClipArrays(self.clips[idx], self.labels[idx], self.video_ids[idx])

    @staticmethod
    def concat(parts: list[ClipArrays] | tuple[ClipArrays, ...]) -> ClipArrays:
        """Rows of all ``parts`` in order; all parts must share one clip shape."""
        if not parts:
            raise ValueError("concat needs at least one ClipArrays")
        shapes = {p.clip_shape for p in parts}
        if len(shapes) > 1:
            raise ValueError(f"cannot concat clips of different shapes: {sorted(shapes)}")
        return ClipArrays(
            np.concatenate([p.clips for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.video_ids for p in parts]),
        )

    @staticmethod
    def empty(clip_shape: tuple[int, int, int, int]) -> ClipArrays:
        """Zero clips of the given (T, C, H, W) shape."""
        return ClipArrays(
            np.zeros((0, *clip_shape), dtype=np.uint8), np.zeros(0, dtype=np.int64), np.zeros(0, dtype="<U1")
        )

    def to_float(self) -> np.ndarray:
        """Clips as float32 in [0, 1], shape (N, T, C, H, W) (a new array)."""
        out = self.clips.astype(np.float32)
        out *= np.float32(1.0 / 255.0)
        return out
