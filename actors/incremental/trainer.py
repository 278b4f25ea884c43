"""The class-incremental trainer: one model that learns task after task, with its exemplar memory.

The actor loads the dataset's train and test splits itself (raw clips never pass through the driver),
relabels them to output indices once (:class:`fedtwin.pipelines.incremental.task_split.TaskSplit`), and keeps the
model and the memory between tasks. One :meth:`IncrementalTrainer.fit_task` call is one task:

1. from task 1 on, freeze a copy of the model as the teacher and expand the head for the new classes;
2. train on the task's clips plus the memory replayed to T frames, through ``local_train`` with
   :class:`fedtwin.pipelines.incremental.objective.IncrementalObjective` as its ``loss_fn``;
3. add the new classes' exemplars (ranked with the *new* model) and trim old classes to the byte budget;
   save the memory to Parquet;
4. score the test clips of every seen class and return the accuracy row, the weights and the metrics.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedtwin.actors.trainer_base import TorchActor
from fedtwin.pipelines.core.seeding import numpy_rng, torch_generator
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.dataset_io import load_split
from fedtwin.pipelines.incremental.exemplar_memory import ExemplarMemory
from fedtwin.pipelines.incremental.exemplar_ranking import confidence_from_logits
from fedtwin.pipelines.incremental.keyframe_render import render_keyframes
from fedtwin.pipelines.incremental.keyframes import KeyFrameSelector
from fedtwin.pipelines.incremental.metrics import task_accuracies
from fedtwin.pipelines.incremental.objective import IncrementalObjective, balanced_class_weights
from fedtwin.pipelines.incremental.settings import IncrementalConfig
from fedtwin.pipelines.incremental.task_split import TaskSplit
from fedtwin.pipelines.model.networks import FEATURE_API, ModelConfig, VideoCNN, expand_head
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import ModelState, load_state, state_from_model
from fedtwin.pipelines.model.train_config import TrainConfig
from fedtwin.pipelines.model.training import local_train, predict

logger = logging.getLogger(__name__)

#: Clips per forward pass when ranking exemplars and scoring the test clips.
EVAL_BATCH_SIZE = 256


@dataclass(frozen=True)
class TaskOutcome:
    """What one task returns to the driver: weights, the accuracy row and scalar metrics only."""

    task: int
    state: ModelState
    accuracy_row: np.ndarray  # (num_tasks,) accuracy on each task's test clips; NaN for unseen tasks
    test_counts: np.ndarray  # (num_tasks,) test clips per task (0 for unseen tasks)
    metrics: dict[str, float] = field(default_factory=dict)
    memory_file: str | None = None


#: Random streams of one task, seeded ``(seed, task, stream)`` so a resumed run replays later tasks exactly.
_TRAIN_STREAM, _MEMORY_STREAM = 0, 1


class IncrementalTrainer(TorchActor):
    """Plain class behind ``fedtwin.actors.incremental.ray_actors.IncrementalTrainerActor``; testable in-process.

    Args:
        dataset_dir: a dataset directory (``train`` and ``test`` splits, manifest).
        split: the classes of each task.
        memory_dir: where the memory is saved after each task (``task-XXXXX.parquet``).
        incremental: the spec's ``incremental`` section (tasks, loss, memory), as loaded.
        training: the spec's ``training`` section (batch size, optimizer, learning rate and its decay).
        model: the spec's ``model`` section; its ``num_classes`` is ignored (the head starts with the
            first task's classes and grows).
        seed: the run seed.
        torch_threads: intra-op threads of this actor (``resources.torch_threads``).
    """

    def __init__(
        self,
        dataset_dir: str,
        split: TaskSplit,
        memory_dir: str,
        incremental: IncrementalConfig,
        training: TrainConfig,
        model: ModelConfig,
        seed: int,
        torch_threads: int,
    ) -> None:
        super().__init__(torch_threads)
        self.split = split
        self.inc, self.training, self.model_config, self.seed = incremental, training, model, seed
        self.memory_dir = Path(memory_dir)
        self.train = split.prepare(load_split(dataset_dir, "train"))
        self.test = split.prepare(load_split(dataset_dir, "test"))
        self.model: VideoCNN | None = None
        self.memory = self._new_memory()
        self.tasks_done = 0

    def _new_memory(self) -> ExemplarMemory | None:
        mode, m = self.inc.resolved_memory_mode, self.inc.memory
        if mode == "none":
            return None
        keyframes = KeyFrameSelector(m.keyframe_delta, m.keyframe_rho) if mode == "keyframes" else None
        return ExemplarMemory(m.budget_bytes, m.per_class_quota, m.ranking, keyframes, full_clips=mode == "full")

    def _model_needs(self) -> tuple[str, ...]:
        """Feature taps the objective reads; feature distillation also reads ``model.stages``."""
        return (*FEATURE_API, "stages") if self.inc.objective().distillation == "features" else FEATURE_API

    def _build_model(self, num_outputs: int) -> VideoCNN:
        return self.new_model(replace(self.model_config, num_classes=num_outputs), self.seed, needs=self._model_needs())

    # ------------------------------------------------------------------ one task
    def fit_task(self, task: int) -> TaskOutcome:
        """Learn task ``task`` (0-based; tasks must come in order) and return its outcome."""
        if task != self.tasks_done:
            raise ValueError(f"fit_task({task}): the trainer has finished {self.tasks_done} tasks; tasks come in order")
        started = time.perf_counter()
        teacher = None
        if task == 0:
            self.model = self._build_model(self.split.num_outputs(0))
        else:
            assert self.model is not None
            teacher = copy.deepcopy(self.model)
            expand_head(self.model, self.split.num_outputs(task))
        new = self.split.task_rows(self.train, self.split.outputs_of_task(task))
        replay = self.memory.replay() if self.memory is not None and len(self.memory) else None
        view = self._keyframe_view(new, task)
        data = ClipArrays.concat([view, replay]) if replay is not None else view
        result = local_train(
            self.model,
            data,
            self.task_settings(task),
            loss_fn=IncrementalObjective(self.inc.objective(), teacher, self._class_weights(data, task)),
            generator=torch_generator(self.seed, task, _TRAIN_STREAM),
            device=self.device,
        )
        train_seconds = time.perf_counter() - started
        memory_file = self._update_memory(task, new)
        row, counts = self._evaluate(task)
        self.tasks_done = task + 1
        metrics: dict[str, float] = {
            "train_loss": result.mean_loss,
            "train_steps": float(result.steps),
            "train_clips": float(len(data)),
            "replayed_clips": float(0 if replay is None else len(replay)),
            **{f"train_{k}": float(v) for k, v in result.metrics.items()},
            **self.memory_stats(),
            "train_seconds": train_seconds,
            "task_seconds": time.perf_counter() - started,
        }
        return TaskOutcome(task, state_from_model(self.model), row, counts, metrics, memory_file)

    def task_settings(self, task: int) -> TrainSettings:
        """Training settings of task ``task`` (0-based): its epochs and the decayed learning rate."""
        return self.training.settings(step=task + 1, epochs=self.inc.epochs_of(task))

    def _keyframe_view(self, new: ClipArrays, task: int) -> ClipArrays:
        """With ``keyframe_view`` and a key-frame memory: the clips rendered as key-frame replay shows them.

        Replayed clips repeat frames; untouched new clips never do, so a model trained on both learns
        "repeated frames = old class" instead of the classes. Training on key-frame renditions of every
        clip, from the first task on, removes the cue. The threshold is fitted on the first task's clips,
        as the memory would fit it, and then shared with the memory.
        """
        m = self.inc.memory
        if not m.keyframe_view or self.memory is None or self.inc.resolved_memory_mode != "keyframes":
            return new
        if task == 0:
            self.memory.keyframes = KeyFrameSelector(m.keyframe_delta, m.keyframe_rho).fit(new.clips)
        assert self.memory.keyframes is not None
        clips, _ = render_keyframes(new.clips, self.memory.keyframes)
        return ClipArrays(clips, new.labels, new.video_ids)

    def _class_weights(self, data: ClipArrays, task: int) -> torch.Tensor | None:
        if not self.inc.loss.balanced_ce:
            return None
        return balanced_class_weights(data.labels, self.split.num_outputs(task))

    def _update_memory(self, task: int, new: ClipArrays) -> str | None:
        if self.memory is None:
            return None
        assert self.model is not None
        ranking = self.inc.memory.ranking
        scores: np.ndarray | None = None
        if ranking == "confidence":
            logits = predict(self.model, new, batch_size=EVAL_BATCH_SIZE, device=self.device)
            scores = confidence_from_logits(logits, new.labels)
        elif ranking == "herding":
            scores = predict(self.model, new, batch_size=EVAL_BATCH_SIZE, output="embedding", device=self.device)
        rng = numpy_rng(self.seed, task, _MEMORY_STREAM)
        self.memory.add_class(new.clips, new.labels, scores, rng, video_ids=new.video_ids)
        path = self.memory_dir / f"task-{task + 1:05d}.parquet"
        self.memory.save(path)
        return str(path)

    def _evaluate(self, task: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.model is not None
        seen = self.split.task_rows(self.test, range(self.split.num_outputs(task)))
        logits = predict(self.model, seen, batch_size=EVAL_BATCH_SIZE, device=self.device)
        predictions = logits.argmax(axis=1) if len(seen) else np.zeros(0, dtype=np.int64)
        task_of = self.split.task_of_output
        row = task_accuracies(predictions, seen.labels, task_of, self.split.num_tasks)
        counts = np.bincount(task_of[seen.labels], minlength=self.split.num_tasks).astype(np.int64)
        return row, counts

    # ------------------------------------------------------------------ state
    def memory_stats(self) -> dict[str, float]:
        """Memory size in bytes, stored clips and mean stored frames per clip (zeros without memory)."""
        if self.memory is None:
            return {"memory_bytes": 0.0, "memory_clips": 0.0, "mean_keyframes_per_clip": 0.0}
        return {
            "memory_bytes": float(self.memory.nbytes),
            "memory_clips": float(len(self.memory)),
            "mean_keyframes_per_clip": self.memory.mean_keyframes_per_clip,
        }

    def restore(self, tasks_done: int, state: ModelState, memory_file: str | None) -> None:
        """Continue after ``tasks_done`` tasks from a checkpoint's weights and saved memory (resume)."""
        self.model = self._build_model(self.split.num_outputs(tasks_done - 1))
        load_state(self.model, state)
        self.memory = ExemplarMemory.load(memory_file) if memory_file else self._new_memory()
        self.tasks_done = tasks_done

    def info(self) -> dict[str, Any]:
        """Where the trainer runs and what it holds (tests and logs)."""
        return {
            "torch_device": self.device,
            "train_clips": len(self.train),
            "test_clips": len(self.test),
            "tasks_done": self.tasks_done,
        }
