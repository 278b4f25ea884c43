"""Run-folder outputs of the incremental recipe: the matrix CSV and the per-task metrics line."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.orchestrator.recipes.incremental.report import matrix_csv, plot_matrix, task_record

NAN = np.nan
MATRIX = np.array([[0.9, NAN, NAN], [0.6, 0.8, NAN], [0.5, 0.4, 1.0]])


def test_matrix_csv_leaves_unlearned_cells_empty():
    assert matrix_csv(MATRIX[:2]) == ("after_task,task_1,task_2,task_3\n1,0.900000,,\n2,0.600000,0.800000,\n")


def test_task_record_uses_the_rows_learned_so_far():
    # Execute: after task 2 of 3, equal test sizes
    record = task_record(2, [7, 1], 4, MATRIX, np.array([10, 10, 10]), {"memory_bytes": 5.0})

    # Assert: seen = (0.6 + 0.8) / 2; AIA = (0.9 + 0.7) / 2; forgetting = 0.9 - 0.6; BWT = 0.6 - 0.9
    assert record["task"] == 2 and record["classes"] == [7, 1] and record["num_seen_classes"] == 4
    assert record["seen_accuracy"] == pytest.approx(0.7) and record["test_accuracy"] == pytest.approx(0.7)
    assert record["average_incremental_accuracy"] == pytest.approx(0.8)
    assert record["forgetting"] == pytest.approx(0.3) and record["bwt"] == pytest.approx(-0.3)
    assert record["new_task_accuracy"] == 0.8 and record["old_tasks_accuracy"] == pytest.approx(0.6)
    assert record["task_accuracies"] == [0.6, 0.8] and record["memory_bytes"] == 5.0


def test_task_record_weights_seen_accuracy_by_test_clips_and_plot_is_written(tmp_path):
    # Execute: task 1 has 30 test clips, task 2 has 10
    record = task_record(3, [2], 3, MATRIX, np.array([30, 10, 10]), {})
    path = plot_matrix(MATRIX, tmp_path / "m.png", title="t")

    # Assert: (30*0.5 + 10*0.4 + 10*1.0) / 50 = 0.58; old tasks (30*0.5 + 10*0.4) / 40 = 0.475
    assert record["seen_accuracy"] == pytest.approx(0.58)
    assert record["old_tasks_accuracy"] == pytest.approx(0.475)
    assert record["first_task_accuracy"] == 0.5
    assert path.is_file() and path.stat().st_size > 1000
