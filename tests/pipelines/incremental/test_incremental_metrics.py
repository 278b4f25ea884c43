"""Tests for pipelines/incremental/metrics.py against a hand-computed 3-task accuracy matrix."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.pipelines.incremental.metrics import (
    average_forgetting,
    average_incremental_accuracy,
    backward_transfer,
    first_task_forgetting,
    incremental_summary,
    seen_accuracies,
    task_accuracies,
)

NAN = float("nan")
# A[i, j]: accuracy on task j's classes after training task i (upper triangle not measured).
ACC = np.array(
    [
        [0.90, NAN, NAN],
        [0.70, 0.80, NAN],
        [0.60, 0.75, 0.95],
    ]
)


def test_seen_accuracies_equal_and_sample_weighted():
    # Execute
    equal = seen_accuracies(ACC)
    weighted = seen_accuracies(ACC, task_sizes=[100, 100, 200])
    # Assert: (0.7+0.8)/2 = 0.75; (0.6+0.75+0.95)/3; weighted (60+75+190)/400
    np.testing.assert_allclose(equal, [0.90, 0.75, 2.30 / 3])
    np.testing.assert_allclose(weighted, [0.90, 0.75, 325 / 400])


def test_scalar_metrics_match_hand_values():
    # Assert each definition on the matrix above
    assert average_incremental_accuracy(ACC) == pytest.approx((0.90 + 0.75 + 2.30 / 3) / 3)
    assert first_task_forgetting(ACC) == pytest.approx(0.90 - 0.60)
    # best-before-last minus last: task 0: max(0.9, 0.7) - 0.6 = 0.3; task 1: 0.8 - 0.75 = 0.05
    assert average_forgetting(ACC) == pytest.approx((0.30 + 0.05) / 2)
    # BWT: ((0.6 - 0.9) + (0.75 - 0.8)) / 2
    assert backward_transfer(ACC) == pytest.approx(-0.175)


def test_average_forgetting_uses_the_best_earlier_accuracy_not_the_first():
    # Prepare: task 0 improves after task 1 (backward transfer) and then drops
    acc = np.array([[0.5, NAN, NAN], [0.8, 0.9, NAN], [0.6, 0.9, 0.7]])
    # Execute / Assert: forgetting of task 0 is 0.8 - 0.6, not 0.5 - 0.6
    assert average_forgetting(acc) == pytest.approx((0.2 + 0.0) / 2)
    assert backward_transfer(acc) == pytest.approx(((0.6 - 0.5) + (0.9 - 0.9)) / 2)


def test_single_task_has_no_forgetting():
    acc = np.array([[0.8]])
    assert incremental_summary(acc) == {
        "final_accuracy": 0.8,
        "average_incremental_accuracy": 0.8,
        "first_task_forgetting": 0.0,
        "average_forgetting": 0.0,
        "backward_transfer": 0.0,
    }


def test_task_accuracies_row_from_predictions():
    # Prepare: classes 0,1 -> task 0; classes 2,3 -> task 1; nothing of task 2 in this test set
    labels = np.array([0, 1, 1, 2, 3, 3])
    predictions = np.array([0, 0, 1, 2, 2, 3])
    # Execute
    row = task_accuracies(predictions, labels, task_of_class=np.array([0, 0, 1, 1, 2, 2]), num_tasks=3)
    # Assert
    np.testing.assert_allclose(row[:2], [2 / 3, 2 / 3])
    assert np.isnan(row[2])


def test_unmeasured_lower_triangle_is_rejected():
    with pytest.raises(ValueError, match="below the diagonal"):
        first_task_forgetting(np.array([[0.9, NAN], [NAN, 0.8]]))
