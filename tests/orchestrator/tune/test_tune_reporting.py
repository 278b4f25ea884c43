"""What a trial reports to Tune each round, and Tune checkpoints that rebuild a run folder (no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedtwin.orchestrator.run.checkpoint import latest_checkpoint, save_checkpoint
from fedtwin.orchestrator.tune.sweep_summary import SweepTable, TrialRow, best_spec, to_csv, to_markdown, trial_status
from fedtwin.orchestrator.tune.trial import (
    ObjectiveSpec,
    TuneReporter,
    objective_values,
    pack_checkpoint,
    unpack_checkpoint,
)


def test_objective_values_carry_accuracy_and_count_rounds_to_target():
    obj = ObjectiveSpec("test_accuracy", target=0.5)
    # round 2 was not evaluated: accuracy carries round 1's value; the target is first reached in round 3
    accs = [0.3, None, 0.55, 0.52]
    out = [objective_values(accs[:n], n, 6, obj) for n in range(1, 5)]
    assert [o["test_accuracy"] for o in out] == [0.3, 0.3, 0.55, 0.52]
    assert [o["best_test_accuracy"] for o in out] == [0.3, 0.3, 0.55, 0.55]
    assert [o["rounds_to_target"] for o in out] == [7, 7, 3, 3]  # 6 rounds + 1 while not reached
    assert [o["target_reached"] for o in out] == [False, False, True, True]
    assert out[0]["rounds_to_target_score"] == pytest.approx(7 - 0.3)
    assert out[3]["rounds_to_target_score"] == pytest.approx(3 - 0.52)
    assert "rounds_to_target" not in objective_values([0.3], 1, 6, ObjectiveSpec())  # no target, no metric


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, metrics, *, checkpoint=None):
        files = None
        if checkpoint is not None:
            files = sorted(p.name for p in __import__("pathlib").Path(checkpoint.path).iterdir())
        self.calls.append((dict(metrics), files))


def test_reporter_sends_every_round_and_attaches_the_checkpoint_of_that_round(tmp_path):
    # Prepare: a run folder where rounds 2 and 3 get checkpoints (checkpoint_every=2, 3 rounds)
    (tmp_path / "metrics.jsonl").write_text("")
    (tmp_path / "spec.yaml").write_text("name: x\n")
    rec = Recorder()
    reporter = TuneReporter(ObjectiveSpec("test_accuracy"), checkpoint_every=2, report=rec)
    reporter.on_run_start({"run_dir": str(tmp_path), "total_steps": 3, "start_step": 1})
    state = {"w": np.ones(2, dtype=np.float32)}
    # Execute: the recipe's order of hooks
    for rnd, acc in [(1, 0.2), (2, 0.4), (3, 0.6)]:
        record = {"round": rnd, "test_accuracy": acc, "failed_devices": [1], "lr": 0.1}
        with open(tmp_path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        reporter.on_step_end(rnd, record)
        if rnd in (2, 3):
            path = save_checkpoint(tmp_path / "checkpoints", rnd, state, {}, {}, keep=2)
            reporter.on_checkpoint(rnd, path)
    reporter.on_run_end({})
    # Assert: one report per round, in order; lists are not forwarded; checkpoints carry run files
    assert [c[0]["round"] for c in rec.calls] == [1, 2, 3]
    assert rec.calls[0][1] is None
    assert rec.calls[1][1] == ["metrics.jsonl", "spec.yaml", "step-00002"]
    assert rec.calls[2][1] == ["metrics.jsonl", "spec.yaml", "step-00003"]
    assert "failed_devices" not in rec.calls[0][0] and rec.calls[0][0]["lr"] == 0.1
    assert [c[0]["resumed_from_round"] for c in rec.calls] == [0, 0, 0]


def test_a_held_round_is_flushed_when_no_checkpoint_follows(tmp_path):
    rec = Recorder()
    reporter = TuneReporter(ObjectiveSpec(), checkpoint_every=1, report=rec)
    reporter.on_run_start({"run_dir": str(tmp_path), "total_steps": 2})
    reporter.on_step_end(1, {"test_accuracy": 0.1})
    reporter.on_step_end(2, {"test_accuracy": 0.2})  # round 1's checkpoint never came
    reporter.on_run_end({})
    assert [(c[0]["round"], c[1]) for c in rec.calls] == [(1, None), (2, None)]


def test_packed_checkpoint_rebuilds_a_resumable_run_folder(tmp_path):
    # Prepare: a run with metrics for 3 rounds and a checkpoint at round 2
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"round": r}) + "\n" for r in (1, 2)))
    (run / "spec.yaml").write_text("name: x\n")
    ckpt = save_checkpoint(run / "checkpoints", 2, {"w": np.arange(3, dtype=np.float32)}, {"strategy": {}}, {})
    packed = tmp_path / "packed"
    packed.mkdir()
    pack_checkpoint(ckpt, run, packed)
    # Execute: a new trial folder (stale content from a failed attempt is replaced)
    target = tmp_path / "new" / "run"
    (target / "checkpoints" / "step-00009").mkdir(parents=True)
    round_num = unpack_checkpoint(packed, target)
    # Assert
    assert round_num == 2
    restored = latest_checkpoint(target / "checkpoints")
    assert restored.round_num == 2
    np.testing.assert_array_equal(restored.model["w"], np.arange(3, dtype=np.float32))
    assert (target / "metrics.jsonl").read_text() == (run / "metrics.jsonl").read_text()


def test_table_sorts_by_objective_and_best_yaml_applies_the_best_values():
    from fedtwin.orchestrator.config.spec import ExperimentSpec

    def row(tid, obj, status="completed", lr=0.1):
        return TrialRow(tid, status, {"training.lr": lr}, 3, obj, obj, obj, None)

    table = SweepTable(
        [row("a", 0.4, lr=0.1), row("b", 0.7, lr=0.2), row("c", None, "error")], "test_accuracy", "max", ["training.lr"]
    )
    table.rows.sort(key=lambda r: (r.objective is None, -(r.objective or 0)))
    csv_text = to_csv(table)
    assert [line.split(",")[1] for line in csv_text.splitlines()[1:]] == ["b", "a", "c"]
    assert "| 1 | b | completed | 0.2 | 3 | 0.7 |" in to_markdown(table, {"name": "s"})
    best = best_spec(ExperimentSpec(), table, "s")
    assert best.training.lr == 0.2 and best.name == "s-best"
    assert trial_status("TERMINATED", 2, 3) == "stopped early"
    assert trial_status("TERMINATED", 3, 3) == "completed"
    assert trial_status("PENDING", 1, 3) == "unfinished"
