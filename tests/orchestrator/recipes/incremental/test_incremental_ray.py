"""End-to-end ``incremental`` runs on a real (small) Ray instance: run folder, metrics, resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.run.callbacks import RunCallback
from fedtwin.orchestrator.run.checkpoint import latest_checkpoint, list_checkpoints
from fedtwin.orchestrator.run.experiment import run_experiment
from fedtwin.orchestrator.run.run_folder import RunFolder

BUDGET = 10 * 8 * 32 * 32  # ten full clips


def tiny_spec(data_root, out_dir, **overrides) -> ExperimentSpec:
    """2 tasks of 5 motion classes, 20 train clips per class, a few seconds per task on 2 cores."""
    base = {
        "name": "inc",
        "recipe": "incremental",
        "seed": 1,
        "data": {
            "root": str(data_root),
            "generator": {"label_scheme": "digit_motion", "train_per_class": 20, "test_per_class": 6},
        },
        "training": {"optimizer": "adam", "lr": 0.003, "batch_size": 16},
        "incremental": {
            "tasks": 2,
            "epochs_per_task": 2,
            "method": "ours",
            "memory_budget_bytes": BUDGET,
            "task_timeout_s": 120,
        },
        "run": {"output_dir": str(out_dir)},
    }
    return ExperimentSpec.from_dict(base).with_overrides(overrides)


class _Recorder(RunCallback):
    def __init__(self, crash_at: int | None = None) -> None:
        self.events: list[str] = []
        self.crash_at = crash_at

    def on_run_start(self, info):
        self.events.append(f"start:{info['unit']}:{info['start_step']}/{info['total_steps']}")

    def on_step_end(self, step, metrics):
        self.events.append(f"task:{step}")
        if step == self.crash_at:
            raise KeyboardInterrupt

    def on_checkpoint(self, step, path):
        self.events.append(f"ckpt:{step}")

    def on_run_end(self, summary):
        self.events.append("end")


def test_two_tasks_end_to_end_then_resume_after_a_crash_gives_identical_weights(ray_session, tiny_data_root, tmp_path):
    # Execute: an uninterrupted run
    recorder = _Recorder()
    result = run_experiment(tiny_spec(tiny_data_root, tmp_path / "a"), callbacks=[recorder])

    # Assert: hooks, one metrics line per task, matrix, memory within budget, plots, checkpoints
    run = RunFolder(result.run_dir)
    records = run.read_metrics()
    assert recorder.events == ["start:task:1/2", "task:1", "ckpt:1", "task:2", "ckpt:2", "end"]
    assert [r["task"] for r in records] == [1, 2]
    assert [r["num_seen_classes"] for r in records] == [5, 10]
    assert len(records[1]["task_accuracies"]) == 2 and records[1]["old_tasks_accuracy"] is not None
    for r in records:
        assert 0 < r["memory_bytes"] <= BUDGET and 1 <= r["mean_keyframes_per_clip"] < 8
    assert records[1]["replayed_clips"] == records[0]["memory_clips"]
    assert records[1]["train_l_tf"] > 0 and records[1]["train_l_sf"] > 0
    lines = (result.run_dir / "accuracy_matrix.csv").read_text().splitlines()
    assert lines[0] == "after_task,task_1,task_2" and lines[1].endswith(",") and len(lines) == 3
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["final_accuracy"] == pytest.approx(records[1]["seen_accuracy"])
    assert summary["first_task_forgetting"] == pytest.approx(records[1]["forgetting"])
    assert summary["final_accuracy"] > 0.2  # chance over 10 classes is 0.1
    assert (result.run_dir / "plots" / "accuracy.png").is_file()
    assert (result.run_dir / "plots" / "accuracy_matrix.png").is_file()
    assert [p.name for p in list_checkpoints(run.checkpoints)] == ["step-00001", "step-00002"]
    assert (result.run_dir / "memory" / "task-00002.parquet").is_file()

    # Execute: the same spec, crashing after task 2 is logged but before it is checkpointed, then resumed
    spec_b = tiny_spec(tiny_data_root, tmp_path / "b")
    folder = RunFolder.create(spec_b.run.output_dir, spec_b.name)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec_b, run_dir=folder.path, callbacks=[_Recorder(crash_at=2)])
    assert latest_checkpoint(folder.checkpoints).round_num == 1
    resumed_events = _Recorder()
    resumed = run_experiment(spec_b, run_dir=folder.path, resume=True, callbacks=[resumed_events])

    # Assert: only task 2 re-ran, from the checkpoint and the saved memory, to bit-identical weights
    assert resumed_events.events == ["start:task:2/2", "task:2", "ckpt:2", "end"]
    a, b = latest_checkpoint(run.checkpoints), latest_checkpoint(folder.checkpoints)
    for key in a.model:
        np.testing.assert_array_equal(a.model[key], b.model[key])
    assert [r["task"] for r in RunFolder(resumed.run_dir).read_metrics()] == [1, 2]
    assert resumed.summary["accuracy_matrix"] == result.summary["accuracy_matrix"]
