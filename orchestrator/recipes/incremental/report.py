"""Run-folder outputs of the ``incremental`` recipe: the task accuracy matrix (CSV + heatmap) and records.

``accuracy_matrix.csv``: row ``i`` = after learning task ``i`` (1-based), column ``j`` = accuracy on task
``j``'s test clips; cells of tasks not yet learned are empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedtwin.pipelines.core.atomic_write import write_text_atomic, write_with
from fedtwin.pipelines.incremental.metrics import incremental_summary

MATRIX_CSV = "accuracy_matrix.csv"


def matrix_csv(matrix: np.ndarray) -> str:
    """The CSV text of a (tasks x tasks) matrix with NaN for unmeasured cells."""
    n = matrix.shape[1]
    lines = ["after_task," + ",".join(f"task_{j + 1}" for j in range(n))]
    for i, row in enumerate(matrix):
        cells = ["" if np.isnan(v) else f"{v:.6f}" for v in row]
        lines.append(f"{i + 1}," + ",".join(cells))
    return "\n".join(lines) + "\n"


def write_matrix_csv(run_dir: Path, matrix: np.ndarray) -> Path:
    """Write ``accuracy_matrix.csv`` atomically (rows learned so far only)."""
    path = Path(run_dir) / MATRIX_CSV
    write_text_atomic(path, matrix_csv(matrix))
    return path


def task_record(
    task: int,
    classes: Sequence[int],
    num_seen_classes: int,
    matrix: np.ndarray,
    test_counts: np.ndarray,
    metrics: dict[str, float],
) -> dict[str, Any]:
    """The ``metrics.jsonl`` line after task ``task`` (1-based), from the matrix rows learned so far.

    ``classes`` are the dataset class ids that arrived in this task.

    ``matrix`` holds rows ``0..task-1``; running metrics (AIA, forgetting, BWT) use those rows only, so
    the last line equals the run's summary.
    """
    learned = matrix[:task, :task]
    sizes = np.maximum(test_counts[:task], 1)
    summary = incremental_summary(learned, sizes)
    row = matrix[task - 1, :task]
    old = row[: task - 1]
    return {
        "task": task,
        "classes": [int(c) for c in classes],
        "num_seen_classes": int(num_seen_classes),
        "test_accuracy": summary["final_accuracy"],  # accuracy on the test clips of all seen classes
        "seen_accuracy": summary["final_accuracy"],
        "new_task_accuracy": float(row[-1]),
        "old_tasks_accuracy": float(np.average(old, weights=sizes[: task - 1])) if task > 1 else None,
        "first_task_accuracy": float(row[0]),
        "task_accuracies": [float(v) for v in row],
        "average_incremental_accuracy": summary["average_incremental_accuracy"],
        "forgetting": summary["first_task_forgetting"],
        "average_forgetting": summary["average_forgetting"],
        "bwt": summary["backward_transfer"],
        **metrics,
    }


def plot_matrix(matrix: np.ndarray, path: Path, title: str = "") -> Path:
    """Heatmap of the accuracy matrix (lower triangle), values written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = matrix.shape[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n))
    shown = np.ma.masked_invalid(matrix)
    image = ax.imshow(shown, vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(n):
        for j in range(n):
            if not np.isnan(matrix[i, j]):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if matrix[i, j] < 0.6 else "black",
                )
    ax.set_xticks(range(n), [str(j + 1) for j in range(n)])
    ax.set_yticks(range(n), [str(i + 1) for i in range(n)])
    ax.set_xlabel("accuracy on task")
    ax.set_ylabel("after task")
    fig.colorbar(image, ax=ax, fraction=0.046)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path
