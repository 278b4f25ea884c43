"""Class-incremental metrics over a task accuracy matrix.

Notation: tasks are numbered ``0 .. n-1`` here (1-based in reports). ``A[i, j]`` is the accuracy on task
``j``'s classes measured after training task ``i``; only entries with ``j <= i`` are defined (the upper
triangle is ignored and may hold NaN). Values may be fractions or percentages; every metric keeps the unit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_matrix(acc: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be square (tasks x tasks) and non-empty, got shape {a.shape}")
    lower = a[np.tril_indices(a.shape[0])]
    if not np.all(np.isfinite(lower)):
        raise ValueError("accuracy matrix has NaN/inf on or below the diagonal; A[i, j] for j <= i must be measured")
    return a


def task_accuracies(
    predictions: np.ndarray, labels: np.ndarray, task_of_class: np.ndarray, num_tasks: int
) -> np.ndarray:
    """One row of the matrix: accuracy on each task's classes.

    Args:
        predictions: ``(N,)`` predicted class ids.
        labels: ``(N,)`` true class ids.
        task_of_class: ``(num_classes,)`` task index of every class id.
        num_tasks: length of the returned row.

    Returns:
        ``(num_tasks,)`` accuracies in [0, 1]; NaN for tasks with no test samples here (e.g. unseen tasks).
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.ndim != 1:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} must be equal 1-D shapes")
    tasks = np.asarray(task_of_class)[labels]
    if tasks.size and (tasks.min() < 0 or tasks.max() >= num_tasks):
        raise ValueError(f"task_of_class maps labels to tasks outside 0..{num_tasks - 1}")
    correct = (predictions == labels).astype(np.float64)
    hits = np.bincount(tasks, weights=correct, minlength=num_tasks)[:num_tasks]
    counts = np.bincount(tasks, minlength=num_tasks)[:num_tasks]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def seen_accuracies(
    acc: np.ndarray | Sequence[Sequence[float]], task_sizes: np.ndarray | Sequence[float] | None = None
) -> np.ndarray:
    """Accuracy on all classes seen so far, after each task.

    ``Acc_i = sum_{j<=i} s_j A[i, j] / sum_{j<=i} s_j`` with ``s_j`` the number of test samples of task ``j``
    (``task_sizes``; equal weights when ``None``, i.e. balanced test sets). ``Acc_{n-1}`` is the final
    "Acc": accuracy on all seen classes after the last task.

    Returns:
        ``(n,)`` array.
    """
    a = _check_matrix(acc)
    n = a.shape[0]
    sizes = np.ones(n) if task_sizes is None else np.asarray(task_sizes, dtype=np.float64)
    if sizes.shape != (n,) or np.any(sizes <= 0):
        raise ValueError(f"task_sizes must be {n} positive counts, got {sizes.tolist()}")
    weights = np.tril(np.broadcast_to(sizes, (n, n)))
    return (np.tril(np.nan_to_num(a)) * weights).sum(axis=1) / weights.sum(axis=1)


def average_incremental_accuracy(
    acc: np.ndarray | Sequence[Sequence[float]], task_sizes: np.ndarray | Sequence[float] | None = None
) -> float:
    """Average incremental accuracy (Rebuffi et al., iCaRL): ``(1/n) sum_i Acc_i`` over ``seen_accuracies``."""
    return float(seen_accuracies(acc, task_sizes).mean())


def first_task_forgetting(acc: np.ndarray | Sequence[Sequence[float]]) -> float:
    """First-task "Forget": ``A[0, 0] - A[n-1, 0]``, the first task's accuracy drop (0 for one task)."""
    a = _check_matrix(acc)
    return float(a[0, 0] - a[-1, 0])


def average_forgetting(acc: np.ndarray | Sequence[Sequence[float]]) -> float:
    """Average forgetting (Chaudhry et al., RWalk): ``(1/(n-1)) sum_{j<n-1} max_{j<=l<n-1} A[l, j] - A[n-1, j]``.

    Each old task is compared with its best accuracy before the last task, not only with the accuracy just
    after learning it. Defined as 0 for a single task (nothing to forget yet).
    """
    a = _check_matrix(acc)
    n = a.shape[0]
    if n == 1:
        return 0.0
    best = np.array([a[j : n - 1, j].max() for j in range(n - 1)])
    return float((best - a[-1, : n - 1]).mean())


def backward_transfer(acc: np.ndarray | Sequence[Sequence[float]]) -> float:
    """BWT (Lopez-Paz & Ranzato, GEM): ``(1/(n-1)) sum_{j<n-1} (A[n-1, j] - A[j, j])``.

    Negative values mean forgetting. Defined as 0 for a single task.
    """
    a = _check_matrix(acc)
    n = a.shape[0]
    if n == 1:
        return 0.0
    return float((a[-1, : n - 1] - np.diag(a)[: n - 1]).mean())


def incremental_summary(
    acc: np.ndarray | Sequence[Sequence[float]], task_sizes: np.ndarray | Sequence[float] | None = None
) -> dict[str, float]:
    """All scalar metrics at once, with snake_case keys for ``metrics.jsonl``."""
    seen = seen_accuracies(acc, task_sizes)
    return {
        "final_accuracy": float(seen[-1]),
        "average_incremental_accuracy": float(seen.mean()),
        "first_task_forgetting": first_task_forgetting(acc),
        "average_forgetting": average_forgetting(acc),
        "backward_transfer": backward_transfer(acc),
    }
