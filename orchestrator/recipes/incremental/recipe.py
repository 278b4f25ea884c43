"""Recipe ``incremental``: class-incremental video learning with one trainer actor (seed 001).

Per task (DESIGN.md "Recipes"): the trainer expands the head, trains the student from the frozen
previous model with ``CE + L_sf + alpha * L_tf`` (or the method's loss) on the new task's clips plus the
replayed memory, rebuilds the memory, and scores every seen task. The driver only sees weights, the
accuracy row and scalar metrics; it appends one ``metrics.jsonl`` line per task, rewrites
``accuracy_matrix.csv`` and checkpoints the weights after every task (the memory is a Parquet file
under ``memory/`` that the checkpoint names, written before it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from actors.incremental.trainer import IncrementalTrainerActor, TaskOutcome, TrainerSettings
from actors.placement import actor_options
from orchestrator.run.checkpoint import latest_checkpoint, save_checkpoint
from orchestrator.config.spec import ExperimentSpec
from orchestrator.run.data_prep import dataset_or_generated
from orchestrator.run.plots import plot_curves
from orchestrator.run.context import RecipeContext, versions
from orchestrator.recipes.incremental.report import plot_matrix, task_record, write_matrix_csv
from pipelines.incremental.task_split import TaskSplit, make_task_split
from pipelines.core.errors import FedtwinError
from pipelines.incremental.metrics import incremental_summary
from pipelines.data.manifest import load_dataset_manifest

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


def trainer_settings(spec: ExperimentSpec) -> TrainerSettings:
    """What the trainer actor needs from the spec (no orchestrator types cross into the actor)."""
    inc, t = spec.incremental, spec.training
    return TrainerSettings(
        seed=spec.seed,
        model=spec.model,
        objective=inc.objective(),
        epochs=inc.epochs_per_task,
        first_task_epochs=inc.first_task_epochs or inc.epochs_per_task,
        batch_size=t.batch_size,
        lr=t.lr,
        lr_decay=t.lr_decay,
        optimizer=t.optimizer,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        memory_mode=inc.resolved_memory_mode,
        memory_budget_bytes=inc.memory_budget_bytes,
        ranking=inc.ranking,
        keyframe_delta=inc.keyframe_delta,
        keyframe_rho=inc.keyframe_rho,
        keyframe_view=inc.keyframe_view,
        per_class_quota=inc.per_class_quota,
        balanced_ce=inc.balanced_ce,
        torch_threads=spec.resources.torch_threads,
    )


def trainer_gpus(spec: ExperimentSpec, cluster_resources: dict[str, float]) -> float:
    """``resources.gpus_per_host`` when set, else one GPU whenever the cluster has one."""
    if spec.resources.gpus_per_host > 0:
        return spec.resources.gpus_per_host
    return 1.0 if cluster_resources.get("GPU", 0.0) >= 1.0 else 0.0


def _wait(ref: ray.ObjectRef, timeout_s: float, task: int, what: str) -> Any:
    try:
        return ray.get(ref, timeout=timeout_s)
    except GetTimeoutError:
        raise TaskFailedError(task, f"{what} ran past {timeout_s:.0f} s (incremental.task_timeout_s)") from None
    except RayActorError as err:
        raise TaskFailedError(task, f"the trainer actor died during {what} ({type(err).__name__})") from None
    except RayTaskError as err:
        cause = err.cause if err.cause is not None else err
        raise TaskFailedError(task, f"{what} raised {type(cause).__name__}: {cause}") from None


def run_incremental(ctx: RecipeContext) -> dict[str, Any]:
    """Run (or resume) a class-incremental experiment; returns the summary written to ``summary.json``."""
    spec = ctx.spec
    inc = spec.incremental
    data_dir = dataset_or_generated(spec.data)
    split = task_split(spec, load_dataset_manifest(data_dir).num_classes)
    n = split.num_tasks
    options = actor_options(
        num_cpus=spec.resources.cpus_per_host,
        num_gpus=trainer_gpus(spec, ctx.cluster_resources),
        max_restarts=0,  # a restarted trainer would have lost its model and memory; resume instead
        scheduling_strategy=ctx.scheduling_strategy,
    )
    trainer = IncrementalTrainerActor.options(**options).remote(  # type: ignore[attr-defined]
        str(data_dir), split, trainer_settings(spec), str(ctx.run.path / "memory")
    )
    matrix = np.full((n, n), np.nan)
    test_counts = np.zeros(n, dtype=np.int64)
    start = 1
    try:
        if ctx.resume:
            ckpt = latest_checkpoint(ctx.run.checkpoints)
            if ckpt is not None:
                matrix, test_counts = ckpt.extra["accuracy_matrix"], ckpt.extra["test_counts"]
                memory = ckpt.meta.get("memory_file")
                memory_path = str(ctx.run.path / memory) if memory else None
                _wait(trainer.restore.remote(ckpt.round_num, ckpt.model, memory_path), CONTROL_TIMEOUT_S,
                      ckpt.round_num + 1, "restore")
                start = ckpt.round_num + 1
                ctx.run.truncate_metrics(ckpt.round_num, key="task")
                logger.info("resuming after task %d", ckpt.round_num)
        ctx.callbacks.on_run_start(
            {"recipe": "incremental", "run_dir": str(ctx.run.path), "total_steps": n, "start_step": start,
             "unit": "task", "method": inc.method, "tasks": [list(t) for t in split.tasks]}
        )
        for task in range(start, n + 1):
            outcome: TaskOutcome = _wait(trainer.fit_task.remote(task - 1), inc.task_timeout_s, task, "training")
            matrix[task - 1] = outcome.accuracy_row
            test_counts = np.maximum(test_counts, outcome.test_counts)
            record = task_record(task, split.tasks[task - 1], split.num_outputs(task - 1), matrix, test_counts,
                                 outcome.metrics)
            ctx.run.append_metrics(record)
            write_matrix_csv(ctx.run.path, matrix[:task])
            ctx.callbacks.on_round_end(task, record)
            memory_file = None
            if outcome.memory_file is not None:
                memory_file = str(Path(outcome.memory_file).relative_to(ctx.run.path))
            path = save_checkpoint(
                ctx.run.checkpoints, task, outcome.state,
                {"accuracy_matrix": matrix, "test_counts": test_counts},
                {"recipe": "incremental", "memory_file": memory_file, "dataset": str(data_dir)},
                keep=spec.run.keep_checkpoints,
            )
            ctx.callbacks.on_checkpoint(task, path)
    finally:
        ray.kill(trainer)
    return _finish(ctx, split, matrix, test_counts, data_dir)


def _finish(
    ctx: RecipeContext, split: TaskSplit, matrix: np.ndarray, test_counts: np.ndarray, data_dir: Path
) -> dict[str, Any]:
    spec, inc = ctx.spec, ctx.spec.incremental
    records = ctx.run.read_metrics()
    title = f"{spec.name} ({inc.method})"
    plot_curves(
        records, ctx.run.plots / "accuracy.png", x="task", title=title,
        panels=(("accuracy", ("seen_accuracy", "first_task_accuracy", "new_task_accuracy", "old_tasks_accuracy")),
                ("memory (bytes)", ("memory_bytes",)), ("frames per stored clip", ("mean_keyframes_per_clip",))),
    )
    plot_matrix(matrix, ctx.run.plots / "accuracy_matrix.png", title=title)
    summary_metrics = incremental_summary(matrix, np.maximum(test_counts, 1))
    last = records[-1] if records else {}
    return {
        "recipe": "incremental",
        "name": spec.name,
        "method": inc.method,
        "tasks": [list(t) for t in split.tasks],
        "final_test_accuracy": summary_metrics["final_accuracy"],
        **summary_metrics,
        "accuracy_matrix": [[None if np.isnan(v) else float(v) for v in row] for row in matrix],
        "memory_mode": inc.resolved_memory_mode,
        "memory_budget_bytes": inc.memory_budget_bytes,
        "memory_bytes": last.get("memory_bytes"),
        "memory_clips": last.get("memory_clips"),
        "mean_keyframes_per_clip": last.get("mean_keyframes_per_clip"),
        "frames_per_clip": spec.model.frames,
        "train_seconds": float(sum(r.get("train_seconds", 0.0) for r in records)),
        "wall_seconds": time.time() - ctx.started,
        "dataset": str(data_dir),
        "versions": versions(),
    }
