"""Class-incremental task splits: which classes arrive in which task.

A split fixes a class *arrival order* (seeded permutation, or the natural order) and cuts it into tasks
of ``classes_per_task`` classes. The model's output ``i`` is the ``i``-th class to arrive, so after task
``t`` the head has ``num_outputs(t)`` rows and the new rows are always the last ones. ``relabel`` maps
dataset labels to these output indices once, at load time; everything downstream (memory, metrics) speaks
output indices, and ``class_order`` maps them back to dataset classes for reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedtwin.pipelines.data.clips import ClipArrays


@dataclass(frozen=True)
class TaskSplit:
    """Classes per task, in arrival order.

    Attributes:
        tasks: dataset class ids of each task, e.g. ``((3, 7), (0, 9), ...)``.
        num_dataset_classes: number of classes in the dataset (some may be left out of every task).
    """

    tasks: tuple[tuple[int, ...], ...]
    num_dataset_classes: int

    def __post_init__(self) -> None:
        flat = [c for task in self.tasks for c in task]
        if not self.tasks or any(not task for task in self.tasks):
            raise ValueError(f"a task split needs at least one task and one class per task, got {self.tasks}")
        if len(set(flat)) != len(flat) or min(flat) < 0 or max(flat) >= self.num_dataset_classes:
            raise ValueError(f"task classes must be distinct ids in [0, {self.num_dataset_classes}), got {self.tasks}")

    @property
    def num_tasks(self) -> int:
        """Number of tasks."""
        return len(self.tasks)

    @property
    def class_order(self) -> tuple[int, ...]:
        """Dataset class id of every output index (arrival order)."""
        return tuple(c for task in self.tasks for c in task)

    def num_outputs(self, task: int) -> int:
        """Head size after learning tasks ``0..task``."""
        return sum(len(t) for t in self.tasks[: task + 1])

    def outputs_of_task(self, task: int) -> range:
        """Output indices of the classes that arrive in ``task``."""
        start = self.num_outputs(task - 1) if task > 0 else 0
        return range(start, start + len(self.tasks[task]))

    @property
    def task_of_output(self) -> np.ndarray:
        """``(num_outputs,)`` task index of every output index (for ``task_accuracies``)."""
        return np.concatenate([np.full(len(t), i, dtype=np.int64) for i, t in enumerate(self.tasks)])

    def relabel(self, labels: np.ndarray) -> np.ndarray:
        """Dataset labels -> output indices; classes in no task map to ``-1``."""
        table = np.full(self.num_dataset_classes, -1, dtype=np.int64)
        table[list(self.class_order)] = np.arange(len(self.class_order))
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_dataset_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_dataset_classes}), got [{labels.min()}, {labels.max()}]"
            )
        return table[labels]

    def prepare(self, data: ClipArrays) -> ClipArrays:
        """The clips of every class in some task, relabelled to output indices (loaded once per split)."""
        outputs = self.relabel(data.labels)
        keep = np.flatnonzero(outputs >= 0)
        return ClipArrays(data.clips[keep], outputs[keep], data.video_ids[keep])

    @staticmethod
    def task_rows(prepared: ClipArrays, outputs: range | Sequence[int]) -> ClipArrays:
        """Rows of relabelled data whose output index is in ``outputs`` (e.g. one task, or all seen)."""
        return prepared.subset(np.flatnonzero(np.isin(prepared.labels, np.asarray(list(outputs)))))


def make_task_split(
    num_classes: int, num_tasks: int, classes_per_task: int | None = None, seed: int | None = None
) -> TaskSplit:
    """Cut ``num_classes`` classes into ``num_tasks`` tasks of equal size.

    Args:
        num_classes: classes in the dataset.
        num_tasks: number of tasks (>= 1).
        classes_per_task: classes per task; ``None`` divides all classes evenly (it must divide them).
            With a value, the first ``num_tasks * classes_per_task`` classes of the order are used.
        seed: seeds the permutation of the class order; ``None`` keeps the natural order ``0, 1, ...``.

    Returns:
        The :class:`TaskSplit`.
    """
    if num_tasks < 1:
        raise ValueError(f"tasks: must be >= 1, got {num_tasks}")
    if classes_per_task is None:
        if num_classes % num_tasks:
            raise ValueError(
                f"tasks: {num_classes} classes do not split into {num_tasks} equal tasks; set classes_per_task"
            )
        classes_per_task = num_classes // num_tasks
    if classes_per_task < 1 or num_tasks * classes_per_task > num_classes:
        raise ValueError(
            f"classes_per_task: {num_tasks} tasks x {classes_per_task} classes must fit in the "
            f"dataset's {num_classes} classes (and be >= 1)"
        )
    order = np.arange(num_classes) if seed is None else np.random.default_rng([seed, 1]).permutation(num_classes)
    tasks = tuple(
        tuple(int(c) for c in order[i * classes_per_task : (i + 1) * classes_per_task]) for i in range(num_tasks)
    )
    return TaskSplit(tasks, num_classes)
