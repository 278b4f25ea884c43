"""Class-incremental task splits: seeded class order, output indices, task rows."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.incremental.task_split import TaskSplit, make_task_split


def _clips(labels: list[int]) -> ClipArrays:
    n = len(labels)
    clips = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1, 1).repeat(2, axis=1)
    return ClipArrays(clips, np.asarray(labels, dtype=np.int64), np.array([f"v{i}" for i in range(n)]))


def test_seeded_split_is_a_reproducible_partition_of_the_classes():
    # Execute
    a = make_task_split(10, 5, seed=3)
    b = make_task_split(10, 5, seed=3)
    c = make_task_split(10, 5, seed=4)

    # Assert
    assert a == b and a != c
    assert a.num_tasks == 5 and all(len(t) == 2 for t in a.tasks)
    assert sorted(a.class_order) == list(range(10))
    assert make_task_split(10, 5).tasks == ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


def test_outputs_follow_arrival_order():
    # Prepare
    split = TaskSplit(((3, 7), (0, 9), (5, 1)), num_dataset_classes=10)

    # Assert
    assert [split.num_outputs(t) for t in range(3)] == [2, 4, 6]
    assert list(split.outputs_of_task(1)) == [2, 3]
    np.testing.assert_array_equal(split.task_of_output, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(split.relabel(np.array([7, 3, 9, 1, 2])), [1, 0, 3, 5, -1])


def test_prepare_drops_unused_classes_and_task_rows_select_outputs():
    # Prepare: classes 2 and 4 are in no task
    split = TaskSplit(((3, 0), (1,)), num_dataset_classes=5)
    data = _clips([0, 2, 3, 1, 4, 3])

    # Execute
    prepared = split.prepare(data)
    first = TaskSplit.task_rows(prepared, split.outputs_of_task(0))
    second = TaskSplit.task_rows(prepared, split.outputs_of_task(1))

    # Assert: rows 0, 2, 3, 5 stay, relabelled 0->1, 3->0, 1->2
    assert prepared.video_ids.tolist() == ["v0", "v2", "v3", "v5"]
    assert prepared.labels.tolist() == [1, 0, 2, 0]
    assert first.video_ids.tolist() == ["v0", "v2", "v5"]
    assert second.video_ids.tolist() == ["v3"] and second.labels.tolist() == [2]


def test_classes_per_task_and_errors():
    # Execute
    split = make_task_split(10, 3, classes_per_task=3, seed=0)

    # Assert
    assert split.num_outputs(2) == 9 and len(set(split.class_order)) == 9
    with pytest.raises(ValueError, match="10 classes do not split into 3 equal tasks"):
        make_task_split(10, 3)
    with pytest.raises(ValueError, match="classes_per_task"):
        make_task_split(10, 5, classes_per_task=3)
    with pytest.raises(ValueError, match="distinct"):
        TaskSplit(((1, 2), (2,)), num_dataset_classes=5)
