"""The one run loop, driven by a recipe that lives outside the package (``toy_recipe.ToyRecipe``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fedtwin import ExperimentSpec, RunCallback, run_experiment
from fedtwin.orchestrator.run.checkpoint import list_checkpoints
from fedtwin.orchestrator.run.run_folder import RunFolder
from tests.orchestrator.run.toy_recipe import ToyRecipe

TOY = "tests.orchestrator.run.toy_recipe:ToyRecipe"


class Recorder(RunCallback):
    """Records every hook call (name, step) in order."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.crash_after = crash_after

    def on_run_start(self, info: Mapping[str, Any]) -> None:
        self.calls.append(("start", (info["start_step"], info["total_steps"], info["unit"])))

    def on_step_end(self, step: int, metrics: Mapping[str, Any]) -> None:
        self.calls.append(("step", step))

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.calls.append(("checkpoint", step))
        if self.crash_after is not None and step >= self.crash_after:
            raise KeyboardInterrupt  # the driver dies right after a checkpoint

    def on_run_end(self, summary: Mapping[str, Any]) -> None:
        self.calls.append(("end", summary["steps"]))


def _spec(tmp_path: Path, **toy: Any) -> ExperimentSpec:
    return ExperimentSpec.from_dict(
        {
            "name": "toy",
            "recipe": TOY,
            "toy": {"epochs": 6, **toy},
            "run": {"output_dir": str(tmp_path / "runs"), "checkpoint_every": 2, "keep_checkpoints": 5},
        }
    )


def test_every_hook_fires_in_order_and_the_summary_has_common_and_recipe_fields(tmp_path):
    # Prepare
    recorder = Recorder()

    # Execute
    result = run_experiment(_spec(tmp_path), callbacks=[recorder])

    # Assert: warm-up step 0 is written and checkpointed but not reported; cadence 2 plus the last step
    assert recorder.calls == [
        ("start", (1, 6, "epoch")),
        ("step", 1),
        ("step", 2),
        ("checkpoint", 2),
        ("step", 3),
        ("step", 4),
        ("checkpoint", 4),
        ("step", 5),
        ("step", 6),
        ("checkpoint", 6),
        ("end", 6),
    ]
    records = RunFolder(result.run_dir).read_metrics()
    assert [r["epoch"] for r in records] == [0, 1, 2, 3, 4, 5, 6]
    assert records[-1]["loss"] < records[0]["loss"] / 10  # it learns
    assert [int(p.name.split("-")[1]) for p in list_checkpoints(result.run_dir / "checkpoints")] == [0, 2, 4, 6]
    s = result.summary
    assert (s["recipe"], s["unit"], s["steps"], s["name"]) == ("toy", "epoch", 6, "toy")
    assert s["final_loss"] == records[-1]["loss"] and "wall_seconds" in s and "versions" in s
    assert (result.run_dir / "summary.json").is_file()


def test_spec_yaml_holds_the_recipe_section_and_no_other(tmp_path):
    result = run_experiment(_spec(tmp_path))
    saved = RunFolder(result.run_dir).load_spec()
    assert saved["toy"]["epochs"] == 6
    assert not {"twin", "incremental", "transfer", "federation", "strategy"} & set(saved)


def test_resume_after_a_crash_ends_bit_identical_and_truncates_replayed_metrics(tmp_path):
    # Prepare: an uninterrupted run, and one whose driver dies after the checkpoint of step 4
    full = run_experiment(_spec(tmp_path))
    crashing = Recorder(crash_after=4)
    spec = _spec(tmp_path)
    run_dir = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec, run_dir=run_dir, callbacks=[crashing])
    RunFolder(run_dir).append_metrics({"epoch": 5, "loss": -1.0})  # a line the crash left behind

    # Execute
    resumed = Recorder()
    result = run_experiment(spec, run_dir=run_dir, resume=True, callbacks=[resumed])

    # Assert: continues at step 5, same weights and losses as the uninterrupted run, no stale line
    assert resumed.calls[0] == ("start", (5, 6, "epoch"))
    assert result.summary["weights"] == full.summary["weights"]
    assert [r["loss"] for r in RunFolder(run_dir).read_metrics()] == [
        r["loss"] for r in RunFolder(full.run_dir).read_metrics()
    ]


def test_close_runs_after_a_failing_step(tmp_path):
    ToyRecipe.closed.clear()
    with pytest.raises(RuntimeError, match="toy failure in epoch 3"):
        run_experiment(_spec(tmp_path, fail_at=3))
    assert len(ToyRecipe.closed) == 1
