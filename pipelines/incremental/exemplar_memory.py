"""Dual-granularity exemplar memory under a byte budget.

After each task the memory keeps, per new class, the best-ranked training clips (confidence by default) and,
inside each clip, only its key frames plus their original indices. ``replay()`` rebuilds full T-frame clips
by hold interpolation. Size is the stored frame bytes (uint8); it never exceeds ``budget_bytes``: each of the
``n`` seen classes may use at most ``floor(budget_bytes / n)`` bytes, and a class over its share drops its
lowest-ranked clips first. ``full_clips=True`` stores every frame, the replay baselines' memory at the same
byte budget.

On disk (``save``/``load``) it is one Parquet file, one row per stored clip: ``VIDEO_ID``, ``LABEL``,
``FRAME_INDEX`` (the K kept indices, ``list<int16>``) and ``CLIP`` (the K kept frames as one uint8 blob of
``K*C*H*W`` bytes, variable-length binary). The clip shape, settings and seen classes (with those the budget
left empty) travel in the schema metadata. Rows are in class order, best-ranked first, which is all that
trimming needs after a reload.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data import schema
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.incremental.exemplar_ranking import RANKINGS, rank_clips
from fedtwin.pipelines.incremental.keyframes import KeyFrameSelector, hold_interpolate

logger = logging.getLogger(__name__)

METADATA_KEY = b"fedtwin.exemplar_memory"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Exemplar:
    """One stored clip: its key frames ``(K, C, H, W)`` uint8 and their original indices ``(K,)``."""

    video_id: str
    label: int
    frame_indices: np.ndarray
    frames: np.ndarray

    @property
    def nbytes(self) -> int:
        """Stored frame bytes (indices and ids are bookkeeping and not counted)."""
        return int(self.frames.nbytes)


def _prefix_within(ranked: list[Exemplar], share: int) -> list[Exemplar]:
    """The longest best-first prefix of ``ranked`` whose frame bytes fit in ``share``."""
    kept, used = [], 0
    for exemplar in ranked:
        used += exemplar.nbytes
        if used > share:
            break
        kept.append(exemplar)
    return kept


class ExemplarMemory:
    """Per-class exemplar clips stored as key frames, within a byte budget.

    Args:
        budget_bytes: hard cap on ``nbytes`` (sum of stored uint8 frame bytes).
        per_class_quota: most clips taken per new class (``None``: as many as the byte share allows).
        ranking: ``"confidence"`` (default), ``"random"`` or ``"herding"``.
        keyframes: the key-frame selector; ``None`` means ``KeyFrameSelector()`` (relative, rho = 1.5). If it
            is not fitted, a copy is fitted on the clips of the first ``add_class`` call and then kept, so
            every task uses the same threshold.
        full_clips: store all T frames (no key frames); for the full-clip replay baselines.
    """

    def __init__(
        self,
        budget_bytes: int,
        per_class_quota: int | None = None,
        ranking: str = "confidence",
        keyframes: KeyFrameSelector | None = None,
        full_clips: bool = False,
    ) -> None:
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        if per_class_quota is not None and per_class_quota < 1:
            raise ValueError(f"per_class_quota must be >= 1 or None, got {per_class_quota}")
        if ranking not in RANKINGS:
            raise ValueError(f"ranking={ranking!r} is not supported; use one of {list(RANKINGS)}")
        if full_clips and keyframes is not None:
            raise ValueError("full_clips=True stores every frame; pass keyframes=None with it")
        self.budget_bytes = int(budget_bytes)
        self.per_class_quota = per_class_quota
        self.ranking = ranking
        self.keyframes = keyframes
        self.full_clips = full_clips
        self._classes: dict[int, list[Exemplar]] = {}  # insertion order = order classes were seen
        self.clip_shape_: tuple[int, int, int, int] | None = None  # (T, C, H, W), fixed by the first add
        self.keyframe_selector_: KeyFrameSelector | None = None

    # ----------------------------------------------------------------- queries
    @property
    def seen_classes(self) -> list[int]:
        """Every class added so far, in order, including classes left with no exemplar by the budget."""
        return list(self._classes)

    @property
    def exemplars(self) -> list[Exemplar]:
        """All stored exemplars, class by class, best-ranked first."""
        return [e for kept in self._classes.values() for e in kept]

    @property
    def nbytes(self) -> int:
        """Stored frame bytes; always ``<= budget_bytes``."""
        return sum(e.nbytes for e in self.exemplars)

    @property
    def mean_keyframes_per_clip(self) -> float:
        """Mean number of stored frames per stored clip (0.0 for an empty memory)."""
        stored = self.exemplars
        return float(np.mean([len(e.frame_indices) for e in stored])) if stored else 0.0

    def class_counts(self) -> dict[int, int]:
        """Number of stored clips per seen class."""
        return {c: len(kept) for c, kept in self._classes.items()}

    def __len__(self) -> int:
        return sum(len(kept) for kept in self._classes.values())

    # ----------------------------------------------------------------- updates
    def add_class(
        self,
        clips: np.ndarray,
        labels: np.ndarray,
        scores: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
        *,
        video_ids: np.ndarray | list[str] | None = None,
    ) -> None:
        """Add the exemplars of the new classes found in ``labels``, then re-fit everyone to the budget.

        Args:
            clips: ``(N, T, C, H, W)`` uint8 training clips of one task (one or more new classes).
            labels: ``(N,)`` class ids; none of them may be in the memory already.
            scores: ``(N,)`` confidences (``softmax[y]``) for ``"confidence"``, ``(N, D)`` features for
                ``"herding"``, ignored for ``"random"``.
            rng: generator for ``"random"`` ranking (required there).
            video_ids: ``(N,)`` ids to carry along; default ``"<label>-<position in this call>"``.
        """
        clips, labels, video_ids = self._check_input(clips, labels, video_ids)
        new_classes = [int(c) for c in np.unique(labels)]
        repeated = sorted(set(new_classes) & set(self._classes))
        if repeated:
            raise ValueError(
                f"classes {repeated} are already in the memory; class-incremental tasks add new classes only"
            )
        t, c, h, w = (int(s) for s in clips.shape[1:])  # 5-D, checked above
        self.clip_shape_ = (t, c, h, w)
        if not self.full_clips and self.keyframe_selector_ is None:
            selector = copy.deepcopy(self.keyframes) if self.keyframes is not None else KeyFrameSelector()
            self.keyframe_selector_ = selector if hasattr(selector, "delta_") else selector.fit(clips)
        share = self.budget_bytes // (len(self._classes) + len(new_classes))
        for c in self._classes:
            self._classes[c] = _prefix_within(self._classes[c], share)
        for c in new_classes:
            self._classes[c] = self._select_class(clips, labels, video_ids, c, scores, rng, share)
            if not self._classes[c]:
                logger.warning("class %d keeps no exemplar: one clip needs more than its %d-byte share", c, share)
        logger.info(
            "memory: %d classes, %d clips, %d / %d bytes, %.2f frames per clip",
            len(self._classes),
            len(self),
            self.nbytes,
            self.budget_bytes,
            self.mean_keyframes_per_clip,
        )

    def _check_input(
        self, clips: np.ndarray, labels: np.ndarray, video_ids: np.ndarray | list[str] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        clips, labels = np.asarray(clips), np.asarray(labels)
        if clips.ndim != 5 or clips.dtype != np.uint8:
            raise ValueError(f"clips must be uint8 (N, T, C, H, W), got {clips.dtype} {clips.shape}; store raw frames")
        if labels.shape != (len(clips),):
            raise ValueError(f"labels must be ({len(clips)},), got {labels.shape}")
        if self.clip_shape_ is not None and clips.shape[1:] != self.clip_shape_:
            raise ValueError(f"clip shape {clips.shape[1:]} differs from the memory's (T, C, H, W) {self.clip_shape_}")
        if video_ids is None:
            ids = np.array([f"{int(y)}-{i}" for i, y in enumerate(labels)])
        else:
            ids = np.asarray(video_ids, dtype=str)
            if ids.shape != (len(clips),):
                raise ValueError(f"video_ids must be ({len(clips)},), got {ids.shape}")
        return clips, labels.astype(np.int64), ids

    def _select_class(
        self,
        clips: np.ndarray,
        labels: np.ndarray,
        video_ids: np.ndarray,
        label: int,
        scores: np.ndarray | None,
        rng: np.random.Generator | None,
        share: int,
    ) -> list[Exemplar]:
        positions = np.flatnonzero(labels == label)
        class_scores = None if scores is None else np.asarray(scores)[positions]
        chosen = positions[rank_clips(self.ranking, class_scores, len(positions), rng, self.per_class_quota)]
        if self.full_clips:
            masks = np.ones((len(chosen), clips.shape[1]), dtype=bool)
        else:
            assert self.keyframe_selector_ is not None  # set in add_class
            masks = self.keyframe_selector_.keyframe_mask(clips[chosen])
        frame_bytes = int(np.prod(clips.shape[2:])) * clips.itemsize
        # Cumulative bytes rise monotonically, so "<= share" keeps a prefix of the ranking.
        fits = np.cumsum(masks.sum(axis=1) * frame_bytes) <= share
        return [
            Exemplar(
                video_id=str(video_ids[p]),
                label=label,
                frame_indices=np.flatnonzero(mask).astype(np.int16),
                frames=clips[p][mask].copy(),
            )
            for p, mask in zip(chosen[fits], masks[fits])
        ]

    # ------------------------------------------------------------------ replay
    def replay(self) -> ClipArrays:
        """All exemplars as full clips, rebuilt to T frames by hold interpolation.

        Returns:
            ``ClipArrays`` with uint8 ``(M, T, C, H, W)`` clips (``M`` may be 0 once a shape is known).

        Raises:
            RuntimeError: nothing was ever added, so the clip shape is unknown; check ``len(memory)``.
        """
        if self.clip_shape_ is None:
            raise RuntimeError("the memory has never seen a clip, so its shape is unknown; check len(memory) first")
        stored = self.exemplars
        if not stored:
            return ClipArrays.empty(self.clip_shape_)
        t = self.clip_shape_[0]
        clips = np.stack([hold_interpolate(e.frames, e.frame_indices, t) for e in stored])
        return ClipArrays(
            clips=clips,
            labels=np.array([e.label for e in stored], dtype=np.int64),
            video_ids=np.array([e.video_id for e in stored], dtype=str),
        )

    # ------------------------------------------------------------- persistence
    def _metadata(self) -> dict[str, object]:
        selector = self.keyframe_selector_
        return {
            "format_version": FORMAT_VERSION,
            "budget_bytes": self.budget_bytes,
            "per_class_quota": self.per_class_quota,
            "ranking": self.ranking,
            "full_clips": self.full_clips,
            "clip_shape": list(self.clip_shape_) if self.clip_shape_ is not None else None,
            "seen_classes": self.seen_classes,
            "keyframes": None
            if selector is None
            else {
                "delta": selector.delta,
                "rho": selector.rho,
                "delta_": getattr(selector, "delta_", None),
            },
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the memory to one Parquet file atomically (temp file in the same folder, then rename)."""
        path = Path(path)
        stored = self.exemplars
        metadata = {
            METADATA_KEY: json.dumps(self._metadata()).encode(),
            schema.META_SCHEMA_VERSION: str(schema.SCHEMA_VERSION).encode(),
        }
        if self.clip_shape_ is not None:
            metadata[schema.META_CLIP_SHAPE] = json.dumps(list(self.clip_shape_)).encode()
        # CLIP holds only the K stored frames, so it is variable-length binary here, not the fixed-size
        # binary of full-clip tables; large_binary keeps big GPU-sized memories under one chunk.
        table = pa.table(
            {
                schema.CLIP: pa.array([e.frames.tobytes() for e in stored], type=pa.large_binary()),
                schema.LABEL: pa.array([e.label for e in stored], type=pa.int64()),
                schema.VIDEO_ID: pa.array([e.video_id for e in stored], type=pa.string()),
                schema.FRAME_INDEX: pa.array([e.frame_indices.tolist() for e in stored], type=pa.list_(pa.int16())),
            }
        ).replace_schema_metadata(metadata)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExemplarMemory:
        """Read a memory written by ``save`` (settings, fitted threshold, seen classes and exemplars)."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError(f"exemplar memory file {path} does not exist; write it with ExemplarMemory.save")
        table = pq.read_table(path)
        raw = (table.schema.metadata or {}).get(METADATA_KEY)
        needed = (schema.VIDEO_ID, schema.LABEL, schema.FRAME_INDEX, schema.CLIP)
        missing = [c for c in needed if c not in table.column_names]
        if raw is None or missing:
            raise DatasetError(
                f"{path} is not an exemplar memory file (missing columns {missing} or metadata {METADATA_KEY!r}); "
                "write it with ExemplarMemory.save"
            )
        meta = json.loads(raw)
        if meta.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{path}: memory format_version {meta.get('format_version')} is not {FORMAT_VERSION}")
        memory = cls(meta["budget_bytes"], meta["per_class_quota"], meta["ranking"], full_clips=meta["full_clips"])
        if meta["clip_shape"] is not None:
            t, c, h, w = (int(s) for s in meta["clip_shape"])
            memory.clip_shape_ = (t, c, h, w)
        if meta["keyframes"] is not None:
            selector = KeyFrameSelector(meta["keyframes"]["delta"], meta["keyframes"]["rho"])
            if meta["keyframes"]["delta_"] is not None:
                selector.delta_ = float(meta["keyframes"]["delta_"])
            memory.keyframes = memory.keyframe_selector_ = selector
        memory._classes = {int(c): [] for c in meta["seen_classes"]}
        memory._restore_rows(table, path)
        return memory

    def _restore_rows(self, table: pa.Table, path: Path) -> None:
        if table.num_rows == 0:
            return
        if self.clip_shape_ is None:
            raise DatasetError(f"{path} stores {table.num_rows} clips but no clip_shape in its metadata")
        frame_shape = self.clip_shape_[1:]
        rows = zip(
            table.column(schema.VIDEO_ID).to_pylist(),
            table.column(schema.LABEL).to_pylist(),
            table.column(schema.FRAME_INDEX).to_pylist(),
            table.column(schema.CLIP).to_pylist(),
        )
        for row, (vid, label, kept, blob) in enumerate(rows):
            frames = np.frombuffer(blob, dtype=np.uint8)
            if frames.size != len(kept) * int(np.prod(frame_shape)) or label not in self._classes:
                raise DatasetError(f"{path}: row {row} ({vid}) does not match its frame indices or the seen classes")
            indices = np.asarray(kept, dtype=np.int16)
            self._classes[label].append(Exemplar(vid, label, indices, frames.reshape(len(kept), *frame_shape).copy()))
