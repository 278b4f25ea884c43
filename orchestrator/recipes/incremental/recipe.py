"""Recipe ``incremental``: class-incremental video learning with one trainer actor.

Per task, the trainer expands the head, trains the student from the frozen
previous model with ``CE + L_sf + alpha * L_tf`` (or the method's loss) on the new task's clips plus the
replayed memory, rebuilds the memory, and scores every seen task. The driver only sees weights, the
accuracy row and scalar metrics; it appends one ``metrics.jsonl`` line per task, rewrites
``accuracy_matrix.csv`` and checkpoints the weights after every task (the memory is a Parquet file
under ``memory/`` that the checkpoint names, written before it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray

from fedtwin.actors.incremental.ray_actors import IncrementalTrainerActor
from fedtwin.actors.incremental.trainer import TaskOutcome
from fedtwin.actors.placement import actor_options, trainer_gpus
from fedtwin.orchestrator.config.recipes import builtin_sections
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.base import CheckpointState
from fedtwin.orchestrator.recipes.feature_model import FeatureModelRecipe
from fedtwin.orchestrator.recipes.incremental.report import plot_matrix, task_record, write_matrix_csv
from fedtwin.orchestrator.run import actor_calls
from fedtwin.orchestrator.run.checkpoint import Checkpoint
from fedtwin.orchestrator.run.data_prep import dataset_or_generated
from fedtwin.orchestrator.run.plots import plot_curves
from fedtwin.pipelines.core.errors import FedtwinError
from fedtwin.pipelines.data.manifest import load_dataset_manifest
from fedtwin.pipelines.incremental.metrics import incremental_summary
from fedtwin.pipelines.incremental.task_split import TaskSplit, make_task_split

logger = logging.getLogger(__name__)

#: Seconds allowed for the trainer to start (torch import, loading both splits) and to restore.
CONTROL_TIMEOUT_S = 300.0


class TaskFailedError(FedtwinError, RuntimeError):
    """A task did not finish: the trainer died, raised, or ran past ``incremental.task_timeout_s``."""

    exit_code = 1

    def __init__(self, task: int, reason: str) -> None:
        self.task, self.reason = task, reason
        super().__init__(
            f"task {task}: {reason}; the last finished task is checkpointed, continue with "
            "`fedtwin run --resume RUN_DIR`"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (TaskFailedError, (self.task, self.reason))


def task_split(spec: ExperimentSpec, num_classes: int) -> TaskSplit:
    """The seeded class-incremental split of this run."""
    inc = spec.incremental
    seed = spec.seed if inc.class_order_seed is None else inc.class_order_seed
    try:
        return make_task_split(num_classes, inc.tasks, inc.classes_per_task, None if seed == -1 else seed)
    except ValueError as err:
        raise FedtwinError(f"incremental.{err}") from None


def _wait(ref: ray.ObjectRef, timeout_s: float, task: int, what: str) -> Any:
    """The trainer's answer, or a one-line ``TaskFailedError`` (the trainer is not restarted: its model
    and memory live only in its process; the last task is checkpointed)."""

    def failed(kind: str, err: BaseException) -> Exception:
        if kind == actor_calls.TIMEOUT:
            return TaskFailedError(task, f"{what} ran past {timeout_s:.0f} s (incremental.task_timeout_s)")
        if kind == actor_calls.RAISED:
            return TaskFailedError(task, f"{what} raised {actor_calls.first_line(err, limit=300)}")
        return TaskFailedError(task, f"the trainer actor died during {what} ({type(err).__name__})")

    return actor_calls.get(ref, what=f"incremental trainer: {what}", timeout_s=timeout_s, on_error=failed)


class IncrementalRecipe(FeatureModelRecipe):
    """One trainer learns the classes task by task; every task is a step and a checkpoint."""

    name = "incremental"
    unit = "task"
    sections = builtin_sections("incremental")
    step_count = "incremental.tasks"

    def setup(self) -> None:
        spec, ctx = self.spec, self.ctx
        self.trainer: Any = None
        self.data_dir = dataset_or_generated(spec.data)
        self.split = task_split(spec, load_dataset_manifest(self.data_dir).num_classes)
        n = self.split.num_tasks
        gpus = trainer_gpus(
            spec.resources.gpus_per_host, ctx.cluster_resources.get("GPU", 0.0), ctx.scheduling_strategy is not None
        )
        options = actor_options(
            num_cpus=spec.resources.cpus_per_host,
            num_gpus=gpus,
            max_restarts=0,  # a restarted trainer would have lost its model and memory; resume instead
            scheduling_strategy=ctx.scheduling_strategy,
            plugin_paths=spec.plugins.paths,
        )
        self.trainer = IncrementalTrainerActor.options(**options).remote(
            str(self.data_dir),
            self.split,
            str(ctx.run.path / "memory"),
            spec.incremental,
            spec.training,
            spec.model,
            spec.seed,
            spec.resources.torch_threads,
        )
        self.matrix = np.full((n, n), np.nan)
        self.test_counts = np.zeros(n, dtype=np.int64)
        self.outcome: TaskOutcome | None = None

    def run_info(self) -> dict[str, Any]:
        return {"method": self.spec.incremental.method, "tasks": [list(t) for t in self.split.tasks]}

    def should_checkpoint(self, n: int) -> bool:
        """Every task: the exemplar memory file a checkpoint names is rewritten per task."""
        return True

    def restore(self, ckpt: Checkpoint) -> None:
        self.matrix, self.test_counts = ckpt.extra["accuracy_matrix"], ckpt.extra["test_counts"]
        memory = ckpt.meta.get("memory_file")
        memory_path = str(self.ctx.run.path / memory) if memory else None
        _wait(
            self.trainer.restore.remote(ckpt.step, ckpt.model, memory_path),
            CONTROL_TIMEOUT_S,
            ckpt.step + 1,
            "restore",
        )

    def step(self, n: int) -> dict[str, Any]:
        inc = self.spec.incremental
        outcome: TaskOutcome = _wait(self.trainer.fit_task.remote(n - 1), inc.task_timeout_s, n, "training")
        self.outcome = outcome
        self.matrix[n - 1] = outcome.accuracy_row
        self.test_counts = np.maximum(self.test_counts, outcome.test_counts)
        record = task_record(
            n, self.split.tasks[n - 1], self.split.num_outputs(n - 1), self.matrix, self.test_counts, outcome.metrics
        )
        write_matrix_csv(self.ctx.run.path, self.matrix[:n])
        return record

    def checkpoint_state(self) -> CheckpointState:
        outcome = self.outcome
        assert outcome is not None, "a checkpoint follows a finished task"
        memory_file = None
        if outcome.memory_file is not None:
            memory_file = str(Path(outcome.memory_file).relative_to(self.ctx.run.path))
        return CheckpointState(
            outcome.state,
            {"accuracy_matrix": self.matrix, "test_counts": self.test_counts},
            {"memory_file": memory_file, "dataset": str(self.data_dir)},
        )

    def summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        spec, inc = self.spec, self.spec.incremental
        records = list(records)
        title = f"{spec.name} ({inc.method})"
        plots = self.ctx.run.plots
        plot_curves(
            records,
            plots / "accuracy.png",
            x="task",
            title=title,
            panels=(
                ("accuracy", ("seen_accuracy", "first_task_accuracy", "new_task_accuracy", "old_tasks_accuracy")),
                ("memory (bytes)", ("memory_bytes",)),
                ("frames per stored clip", ("mean_keyframes_per_clip",)),
            ),
        )
        plot_matrix(self.matrix, plots / "accuracy_matrix.png", title=title)
        summary_metrics = incremental_summary(self.matrix, np.maximum(self.test_counts, 1))
        last = records[-1] if records else {}
        return {
            "method": inc.method,
            "tasks": [list(t) for t in self.split.tasks],
            "final_test_accuracy": summary_metrics["final_accuracy"],
            **summary_metrics,
            "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in row] for row in self.matrix],
            "memory_mode": inc.resolved_memory_mode,
            "memory_budget_bytes": inc.memory.budget_bytes,
            "memory_bytes": last.get("memory_bytes"),
            "memory_clips": last.get("memory_clips"),
            "mean_keyframes_per_clip": last.get("mean_keyframes_per_clip"),
            "frames_per_clip": spec.model.frames,
            "train_seconds": float(sum(r.get("train_seconds", 0.0) for r in records)),
            "dataset": str(self.data_dir),
        }

    def close(self) -> None:
        if getattr(self, "trainer", None) is not None:
            ray.kill(self.trainer)
