"""End-to-end federated runs on a real (small) Ray instance with real Parquet shards and torch."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.federated.drill import DrillPlan, installed
from fedtwin.orchestrator.run.callbacks import RunCallback
from fedtwin.orchestrator.run.checkpoint import latest_checkpoint, list_checkpoints
from fedtwin.orchestrator.run.experiment import run_experiment
from fedtwin.orchestrator.run.run_folder import RunFolder


def tiny_spec(data_root, out_dir, **overrides) -> ExperimentSpec:
    """2 hosts, 10 devices, tiny moving digits; every round takes a few seconds on 2 cores."""
    base = {
        "name": "tiny",
        "seed": 3,
        "data": {
            "root": str(data_root),
            "generator": {"train_per_class": 40, "test_per_class": 10},
            "partition": {"devices": 10, "scheme": "iid", "seed": 0},
        },
        "training": {"epochs": 2, "batch_size": 16, "optimizer": "adam", "lr": 0.003},
        "federation": {"num_rounds": 3, "devices_per_round": 10, "round_timeout_s": 120},
        "resources": {"hosts": 2},
        "run": {"output_dir": str(out_dir), "checkpoint_every": 1},
    }
    return ExperimentSpec.from_dict(base).with_overrides(overrides)


def test_two_hosts_ten_devices_three_rounds_beats_chance(ray_session, tiny_data_root, tmp_path):
    # Execute: 8 local epochs so that three rounds on 400 clips learn something measurable
    result = run_experiment(tiny_spec(tiny_data_root, tmp_path, **{"training.epochs": 8}))
    # Assert: real learning, complete run folder
    records = RunFolder(result.run_dir).read_metrics()
    assert [r["round"] for r in records] == [1, 2, 3]
    assert all(r["devices_ok"] == 10 and r["devices_failed"] == 0 for r in records)
    assert result.summary["num_hosts"] == 2
    # chance is 0.1 on 100 test clips (std 0.03): 0.25 is five standard deviations above it
    assert result.summary["final_test_accuracy"] > 0.25
    assert (result.run_dir / "summary.json").is_file()
    assert (result.run_dir / "spec.yaml").is_file()
    assert (result.run_dir / "plots" / "accuracy.png").is_file()
    assert latest_checkpoint(result.run_dir / "checkpoints").round_num == 3


def test_round_survives_failing_and_hanging_devices(ray_session, tiny_data_root, tmp_path):
    # Prepare: in round 1 device 1 raises and device 2 hangs. Device 2 lives on host 0 (2 % 2), so
    # host 0 misses the deadline and all of its 5 devices count as failed; host 1 loses device 1.
    spec = tiny_spec(
        tiny_data_root,
        tmp_path,
        **{
            "federation.num_rounds": 2,
            "federation.round_timeout_s": 15.0,
            "federation.min_success_fraction": 0.3,
        },
    )
    # Execute
    with installed(DrillPlan(fail_devices=(1,), hang_devices=(2,), hang_s=600.0, rounds=(1,)), spec):
        result = run_experiment(spec)
    # Assert
    first, second = RunFolder(result.run_dir).read_metrics()
    assert first["devices_ok"] == 4 and first["devices_failed"] == 6
    assert set(first["failed_devices"]) == {0, 1, 2, 4, 6, 8}
    assert second["devices_ok"] == 10  # the timed-out host was restarted and serves its devices again


def test_round_fails_below_min_success_fraction(ray_session, tiny_data_root, tmp_path):
    from fedtwin.orchestrator.recipes.federated.backend import RoundFailedError

    spec = tiny_spec(
        tiny_data_root,
        tmp_path,
        **{
            "federation.num_rounds": 1,
            "federation.min_success_fraction": 0.95,
        },
    )
    with installed(DrillPlan(fail_devices=(3,)), spec), pytest.raises(RoundFailedError, match=r"round 1: only 9/10"):
        run_experiment(spec)


class _CrashAfter(RunCallback):
    """Simulates the driver dying right after a round (before that round is checkpointed)."""

    def __init__(self, round_num: int) -> None:
        self.round_num = round_num

    def on_step_end(self, step, metrics):
        if step == self.round_num:
            raise KeyboardInterrupt


def test_resume_after_interruption_gives_identical_weights(ray_session, tiny_data_root, tmp_path):
    # Prepare: 4 rounds, checkpoints every 2 rounds, FedAvgM so strategy state matters too
    overrides = {
        "federation.num_rounds": 4,
        "run.checkpoint_every": 2,
        "strategy.name": "fedavgm",
        "federation.devices_per_round": 6,
    }
    # the uninterrupted run in process: both backends give the same weights (the test after this one)
    spec = tiny_spec(tiny_data_root, tmp_path / "a", **overrides, **{"resources.backend": "local"})
    full = run_experiment(spec)
    spec_b = tiny_spec(tiny_data_root, tmp_path / "b", **overrides)
    folder = RunFolder.create(spec_b.run.output_dir, spec_b.name)
    # Execute: crash after round 3 (last checkpoint: round 2), then resume from the folder
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec_b, run_dir=folder.path, callbacks=[_CrashAfter(3)])
    assert latest_checkpoint(folder.checkpoints).round_num == 2
    resumed = run_experiment(spec_b, run_dir=folder.path, resume=True)
    # Assert: bit-identical final weights and the same metric history
    a = latest_checkpoint(full.run_dir / "checkpoints")
    b = latest_checkpoint(resumed.run_dir / "checkpoints")
    assert a.round_num == b.round_num == 4
    for key in a.model:
        np.testing.assert_array_equal(a.model[key], b.model[key])
    rounds_b = [r["round"] for r in RunFolder(resumed.run_dir).read_metrics()]
    assert rounds_b == [1, 2, 3, 4]
    acc_a = [r["test_accuracy"] for r in RunFolder(full.run_dir).read_metrics()]
    acc_b = [r["test_accuracy"] for r in RunFolder(resumed.run_dir).read_metrics()]
    assert acc_a == acc_b
    assert [p.name for p in list_checkpoints(folder.checkpoints)] == ["step-00002", "step-00004"]


def test_rounds_started_ahead_of_evaluation_give_the_in_process_results(ray_session, tiny_data_root, tmp_path):
    # Prepare: no checkpoint before the end, so rounds 2 and 3 are dispatched before rounds 1 and 2 are scored
    overrides = {"run.checkpoint_every": 10, "training.epochs": 1}
    # Execute
    ahead = run_experiment(tiny_spec(tiny_data_root, tmp_path / "ray", **overrides))
    local = run_experiment(tiny_spec(tiny_data_root, tmp_path / "local", **overrides, **{"resources.backend": "local"}))
    # Assert: the same weights and scores, and the idle gaps measured from round 2 on
    a = latest_checkpoint(ahead.run_dir / "checkpoints")
    b = latest_checkpoint(local.run_dir / "checkpoints")
    for key in a.model:
        np.testing.assert_array_equal(a.model[key], b.model[key])
    records = RunFolder(ahead.run_dir).read_metrics()
    assert [r["test_accuracy"] for r in records] == [
        r["test_accuracy"] for r in RunFolder(local.run_dir).read_metrics()
    ]
    assert "host_idle_s" not in records[0]
    assert all(0 <= r["host_idle_min_s"] <= r["host_idle_s"] <= r["host_idle_max_s"] for r in records[1:])
    assert all(r["host_busy_s"] > 0 for r in records[1:])  # the hosts' time inside fit
