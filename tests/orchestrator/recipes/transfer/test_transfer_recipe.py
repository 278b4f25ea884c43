"""Recipe ``transfer``: its config section, the settings it hands the trainer, and real runs on Ray."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.transfer.recipe import read_traces, target_generator
from fedtwin.orchestrator.run.callbacks import RunCallback
from fedtwin.orchestrator.run.checkpoint import latest_checkpoint, list_checkpoints
from fedtwin.orchestrator.run.experiment import run_experiment
from fedtwin.orchestrator.run.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[4]


def tiny_spec(data_root, out_dir, **overrides) -> ExperimentSpec:
    """Two sessions of 30 clips on a small meta-model (~0.6 source accuracy); seconds on 2 cores."""
    base = {
        "name": "tiny-transfer",
        "recipe": "transfer",
        "seed": 1,
        "data": {"root": str(data_root), "generator": {"train_per_class": 30, "test_per_class": 10}},
        "model": {"widths": [8, 16]},
        "transfer": {
            "pretrain": {"epochs": 8, "batch_size": 16},
            "stream": {"sessions": 2, "clips_per_session": 30},
            "bank": {"size": 60},
            "training": {"epochs": 2, "batch_size": 10},
            "session_timeout_s": 120,
        },
        "run": {"output_dir": str(out_dir), "checkpoint_every": 1, "keep_checkpoints": 5},
    }
    return ExperimentSpec.from_dict(base).with_overrides(overrides)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"transfer.mixing.w_min": 0.8, "transfer.mixing.w_max": 0.2}, r"transfer.mixing.w_min: need 0 <= w_min"),
        ({"transfer.mixing.mode": "pcgrad"}, r"transfer.mixing.mode: 'pcgrad' is not one of"),
        ({"transfer.bank.policy": "fifo"}, r"transfer.bank.policy: 'fifo' is not one of"),
        ({"transfer.bank.size": 5}, r"transfer.bank.size: must be >= the 10 classes"),
        ({"transfer.verification.background_digits": [8, 8]}, r"transfer.verification.background_digits: must be"),
        ({"transfer.stream.shift.contrast": 0}, r"transfer.stream.shift.contrast: must be in \(0, 1\]"),
        ({"transfer.training.histroy_batch_size": 4}, r"did you mean 'history_batch_size'"),
    ],
)
def test_transfer_config_errors_name_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentSpec.from_dict({"recipe": "transfer"}).with_overrides(override)


def test_shipped_config_loads_and_derives_what_the_trainer_needs():
    # Prepare
    spec = ExperimentSpec.from_yaml(
        ROOT / "configs" / "transfer.yaml",
        {"transfer.verification.background": True, "transfer.training.history_batch_size": 8},
    )

    # Execute
    t = spec.transfer
    target = target_generator(spec)

    # Assert: 8 digits of interest + "other"; 5 sessions x 100 clips need 50 clips per class
    assert t.num_classes == 9 and t.verification.other_digits == (8, 9)
    assert t.training.history_batch == 8 and t.training.train_settings().batch_size == 16
    assert t.pretrain.train_settings().optimizer == "adam"
    assert target.shift == t.stream.shift and target.train_per_class == 50
    assert target.test_per_class == spec.data.generator.test_per_class
    no_other = spec.with_overrides({"transfer.verification.background": False}).transfer
    assert no_other.verification.other_digits is None and no_other.num_classes == 10


class _Sessions(RunCallback):
    def __init__(self) -> None:
        self.info, self.steps, self.checkpoints = {}, [], []

    def on_run_start(self, info):
        self.info = dict(info)

    def on_step_end(self, step, metrics):
        self.steps.append(step)

    def on_checkpoint(self, step, path):
        self.checkpoints.append(step)


def test_two_sessions_on_ray_then_resume_replays_the_last_one_exactly(ray_session, tiny_data_root, tmp_path):
    # Prepare
    spec = tiny_spec(tiny_data_root, tmp_path)
    seen = _Sessions()

    # Execute
    result = run_experiment(spec, callbacks=[seen])

    # Assert: the run folder holds the meta-model line and one line per session
    run = RunFolder(result.run_dir)
    records = run.read_metrics()
    assert [r["session"] for r in records] == [0, 1, 2]
    assert seen.info["unit"] == "session" and seen.info["total_steps"] == 2
    assert seen.steps == [1, 2] and seen.checkpoints == [1, 2]
    assert [p.name for p in list_checkpoints(run.checkpoints)] == ["step-00000", "step-00001", "step-00002"]
    for r in records[1:]:
        assert r["transfer_samples"] == 30 - r["verified_true_negative"]
        assert r["similarity_steps"] == r["train_steps"] > 0
        assert r["bank_size"] <= 60 and max(r["bank_per_class"]) <= 6
    trace = read_traces(result.run_dir)
    assert [row["global_step"] for row in trace] == list(range(1, len(trace) + 1))
    assert len(trace) == records[1]["train_steps"] + records[2]["train_steps"]
    assert np.mean([row["s"] for row in trace if row["session"] == 1]) == pytest.approx(records[1]["similarity_mean"])
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["final_harmonic_mean"] == pytest.approx(records[-1]["harmonic_mean"])
    assert summary["meta_source_accuracy"] == records[0]["source_accuracy"] > 0.2  # chance is 0.1
    assert (result.run_dir / "plots" / "accuracy.png").is_file()
    assert (result.run_dir / "plots" / "similarity_trace.png").is_file()

    # Execute: drop session 2's checkpoint and resume; session 2 is replayed from session 1's checkpoint
    final = latest_checkpoint(run.checkpoints)
    shutil.rmtree(list_checkpoints(run.checkpoints)[-1])
    resumed = run_experiment(spec, run_dir=result.run_dir, resume=True)

    # Assert
    again = RunFolder(resumed.run_dir).read_metrics()
    assert [r["session"] for r in again] == [0, 1, 2]
    for key in ("new_scene_accuracy", "source_accuracy", "similarity_mean", "bank_per_class"):
        assert again[2][key] == records[2][key]
    replayed = latest_checkpoint(run.checkpoints)
    for key, value in final.model.items():
        np.testing.assert_array_equal(replayed.model[key], value, err_msg=key)
