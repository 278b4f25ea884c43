"""Tests for pipelines/incremental/exemplar_memory.py.

Ranking, key-frame storage, the byte budget, Parquet round trip.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data import schema
from fedtwin.pipelines.incremental.exemplar_memory import ExemplarMemory
from fedtwin.pipelines.incremental.keyframes import KeyFrameSelector

T = 4
FRAME = (1, 2, 2)  # 4 bytes per uint8 frame, 16 bytes per full clip


def static_clips(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` clips whose T frames are identical: one key frame each."""
    first = rng.integers(0, 256, size=(n, 1, *FRAME), dtype=np.uint8)
    return np.repeat(first, T, axis=1)


def moving_clips(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` clips of independent random frames: (almost) every frame is a key frame."""
    return rng.integers(0, 256, size=(n, T, *FRAME), dtype=np.uint8)


def class_bytes(memory: ExemplarMemory) -> dict[int, int]:
    out = {c: 0 for c in memory.seen_classes}
    for e in memory.exemplars:
        out[e.label] += e.nbytes
    return out


def test_confidence_ranking_keeps_the_top_clips_and_trims_the_lowest_first():
    # Prepare: full clips of 16 bytes, budget 64 bytes
    rng = np.random.default_rng(0)
    memory = ExemplarMemory(budget_bytes=64, full_clips=True)
    clips0 = moving_clips(5, rng)
    ids0 = np.array(["a", "b", "c", "d", "e"])
    # Execute / Assert: one class may fill the budget: 4 best clips by confidence
    memory.add_class(clips0, np.zeros(5, dtype=np.int64), np.array([0.1, 0.9, 0.5, 0.8, 0.3]), video_ids=ids0)
    assert [e.video_id for e in memory.exemplars] == ["b", "d", "c", "e"]
    assert memory.nbytes == 64
    # a second class halves the share (32 bytes = 2 clips): class 0 drops its two least confident clips
    memory.add_class(
        moving_clips(3, rng), np.ones(3, dtype=np.int64), np.array([0.2, 0.7, 0.6]), video_ids=np.array(["x", "y", "z"])
    )
    assert [e.video_id for e in memory.exemplars] == ["b", "d", "y", "z"]
    # a third class: floor(64 / 3) = 21 bytes per class -> one 16-byte clip each
    memory.add_class(moving_clips(2, rng), np.full(2, 2), np.array([0.4, 0.6]), video_ids=np.array(["p", "q"]))
    assert [e.video_id for e in memory.exemplars] == ["b", "y", "q"]
    assert memory.nbytes == 48 and memory.mean_keyframes_per_clip == T


def test_keyframe_memory_stores_one_frame_per_static_clip_and_replays_it_exactly():
    # Prepare
    rng = np.random.default_rng(1)
    clips = static_clips(3, rng)
    memory = ExemplarMemory(budget_bytes=1000, keyframes=KeyFrameSelector(delta=0.05))
    # Execute
    memory.add_class(clips, np.array([7, 7, 7]), np.array([0.9, 0.8, 0.7]))
    replayed = memory.replay()
    # Assert
    assert memory.nbytes == 3 * 4 and memory.mean_keyframes_per_clip == 1.0
    assert all(e.frame_indices.tolist() == [0] for e in memory.exemplars)
    np.testing.assert_array_equal(replayed.clips, clips)
    assert replayed.labels.tolist() == [7, 7, 7] and replayed.video_ids.tolist() == ["7-0", "7-1", "7-2"]


def test_keyframes_fit_more_clips_than_full_clips_in_the_same_bytes():
    # Prepare: 10 static clips, a 64-byte budget
    rng = np.random.default_rng(2)
    clips, labels, conf = static_clips(10, rng), np.zeros(10, dtype=np.int64), rng.random(10)
    full = ExemplarMemory(budget_bytes=64, full_clips=True)
    keyframed = ExemplarMemory(budget_bytes=64)
    # Execute
    full.add_class(clips, labels, conf)
    keyframed.add_class(clips, labels, conf)
    # Assert: 4 full clips (16 B) vs 10 one-frame clips (4 B)
    assert (len(full), full.nbytes) == (4, 64)
    assert (len(keyframed), keyframed.nbytes) == (10, 40)


def test_byte_budget_is_never_exceeded_over_random_adds():
    rng = np.random.default_rng(42)
    for trial in range(40):
        # Prepare: a random memory configuration
        budget = int(rng.integers(0, 400))
        ranking = str(rng.choice(["confidence", "random", "herding"]))
        quota = None if rng.random() < 0.5 else int(rng.integers(1, 6))
        full = bool(rng.random() < 0.3)
        memory = ExemplarMemory(budget, per_class_quota=quota, ranking=ranking, full_clips=full)
        next_class = 0
        for _task in range(int(rng.integers(1, 5))):
            n_classes = int(rng.integers(1, 4))
            per_class = rng.integers(1, 8, size=n_classes)
            labels = np.repeat(np.arange(next_class, next_class + n_classes), per_class)
            next_class += n_classes
            n = len(labels)
            clips = np.where(rng.random((n, 1, 1, 1, 1)) < 0.5, static_clips(n, rng), moving_clips(n, rng))
            scores = rng.random(n) if ranking == "confidence" else rng.normal(size=(n, 3))
            # Execute
            memory.add_class(clips, labels, scores, rng)
            # Assert
            share = budget // len(memory.seen_classes)
            assert memory.nbytes <= budget, f"trial {trial}: {memory.nbytes} > {budget}"
            assert all(b <= share for b in class_bytes(memory).values()), f"trial {trial}"
            if quota is not None:
                assert all(k <= quota for k in memory.class_counts().values())
            assert len(memory.replay()) == len(memory)


def test_per_class_quota_caps_the_clips_of_a_class():
    rng = np.random.default_rng(3)
    memory = ExemplarMemory(budget_bytes=10_000, per_class_quota=2, full_clips=True)
    memory.add_class(moving_clips(6, rng), np.array([0, 0, 0, 1, 1, 1]), np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.4]))
    assert memory.class_counts() == {0: 2, 1: 2}
    assert [e.video_id for e in memory.exemplars] == ["0-2", "0-1", "1-3", "1-4"]


def test_save_load_round_trip(tmp_path):
    # Prepare: key-frame memory with a relative threshold fitted on the first task, plus a second task
    rng = np.random.default_rng(4)
    memory = ExemplarMemory(budget_bytes=200, per_class_quota=4)
    clips = np.concatenate([static_clips(4, rng), moving_clips(4, rng)])
    memory.add_class(clips, np.repeat([0, 1], 4), rng.random(8))
    memory.add_class(moving_clips(3, rng), np.array([2, 2, 2]), rng.random(3))
    path = tmp_path / "run" / "memory.parquet"
    # Execute
    memory.save(path)
    loaded = ExemplarMemory.load(path)
    # Assert: same settings, threshold, classes, exemplars and replay; no temp file left behind
    assert sorted(p.name for p in path.parent.iterdir()) == ["memory.parquet"]
    settings = (loaded.budget_bytes, loaded.per_class_quota, loaded.ranking, loaded.full_clips)
    assert settings == (200, 4, "confidence", False)
    assert loaded.keyframe_selector_ is not None and memory.keyframe_selector_ is not None
    assert loaded.keyframe_selector_.delta_ == memory.keyframe_selector_.delta_
    assert loaded.seen_classes == [0, 1, 2] and loaded.nbytes == memory.nbytes
    for a, b in zip(loaded.exemplars, memory.exemplars, strict=True):
        assert (a.video_id, a.label, a.frame_indices.tolist()) == (b.video_id, b.label, b.frame_indices.tolist())
        np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(loaded.replay().clips, memory.replay().clips)
    columns = pq.read_schema(path).names
    assert set(columns) == {schema.CLIP, schema.LABEL, schema.VIDEO_ID, schema.FRAME_INDEX}


def test_round_trip_keeps_classes_the_budget_left_empty(tmp_path):
    # Prepare: 3 classes share 40 bytes -> 13 bytes each, less than one 16-byte full clip
    rng = np.random.default_rng(5)
    memory = ExemplarMemory(budget_bytes=40, full_clips=True)
    memory.add_class(moving_clips(3, rng), np.array([0, 1, 2]), rng.random(3))
    # Execute
    memory.save(tmp_path / "m.parquet")
    loaded = ExemplarMemory.load(tmp_path / "m.parquet")
    # Assert: still 3 seen classes, so a 4th class gets floor(40 / 4) bytes, and replay is empty but shaped
    assert len(loaded) == 0 and loaded.seen_classes == [0, 1, 2]
    assert loaded.replay().clips.shape == (0, T, *FRAME)


def test_load_errors_are_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        ExemplarMemory.load(tmp_path / "missing.parquet")
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), other)
    with pytest.raises(DatasetError, match="not an exemplar memory"):
        ExemplarMemory.load(other)


def test_bad_inputs_are_rejected():
    rng = np.random.default_rng(6)
    memory = ExemplarMemory(budget_bytes=100, full_clips=True)
    with pytest.raises(RuntimeError, match="never seen a clip"):
        memory.replay()
    memory.add_class(moving_clips(2, rng), np.array([0, 0]), np.array([0.5, 0.6]))
    with pytest.raises(ValueError, match="already in the memory"):
        memory.add_class(moving_clips(1, rng), np.array([0]), np.array([0.5]))
    with pytest.raises(ValueError, match="uint8"):
        memory.add_class(moving_clips(1, rng).astype(np.float32), np.array([1]), np.array([0.5]))
    with pytest.raises(ValueError, match="needs an explicit rng"):
        ExemplarMemory(100, ranking="random").add_class(moving_clips(1, rng), np.array([0]))
    with pytest.raises(ValueError, match="keyframes=None"):
        ExemplarMemory(100, keyframes=KeyFrameSelector(), full_clips=True)
