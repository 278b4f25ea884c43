"""SCAFFOLD's device control variates on real Ray survive what FedDUM's device momentum survives: a host
SIGKILLed mid-fit and another at a checkpoint, and a SIGKILL of the driver itself followed by
``fedtwin run --resume``; each run ends with exactly the weights, server control variate and device
control variates of the same run without faults. Without the restore the result differs."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from fedtwin.orchestrator.recipes.federated import ray_backend
from fedtwin.orchestrator.recipes.federated.local_backend import LocalBackend
from fedtwin.orchestrator.run.checkpoint import (
    checkpoint_section,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from fedtwin.orchestrator.run.experiment import run_experiment
from fedtwin.orchestrator.run.run_folder import RunFolder
from tests.orchestrator.recipes.federated.test_failures_ray import _assert_same_weights, _run
from tests.orchestrator.recipes.federated.test_federated_ray import tiny_spec
from tests.orchestrator.run.test_clean_exit import _CLI, ROOT, _Watched

# Label-skewed devices (2 classes each) so the control variates differ; checkpoints after rounds 3 and 5.
SCAFFOLD = {
    "data.partition": {"devices": 10, "scheme": "shards", "labels_per_device": 2, "seed": 0},
    "training": {"epochs": 1, "batch_size": 16, "optimizer": "sgd", "lr": 0.05},
    "strategy": {"name": "scaffold"},
    "federation.num_rounds": 5,
    "federation.devices_per_round": 6,
    "run.checkpoint_every": 3,
}


def _assert_same_control_variates(a, b):
    assert set(a.extra["strategy"]) == set(b.extra["strategy"]) and a.extra["strategy"]
    for key, value in a.extra["strategy"].items():
        np.testing.assert_array_equal(value, b.extra["strategy"][key])
    trained = {d: v for d, v in a.extra["devices"].items() if "control_variate" in v}
    assert len(trained) >= 6  # 6 devices a round over 5 rounds: most devices hold a c_i
    assert {d for d, v in b.extra["devices"].items() if "control_variate" in v} == set(trained)
    for device, state in trained.items():
        for key, value in state["control_variate"].items():
            np.testing.assert_array_equal(value, b.extra["devices"][device]["control_variate"][key])


@pytest.fixture(scope="module")
def baseline(ray_session, tiny_data_root, tmp_path_factory):
    """The SCAFFOLD run without faults."""
    return _run(tiny_data_root, tmp_path_factory.mktemp("scaffold-base"), **SCAFFOLD)


def test_control_variates_survive_host_kills_mid_fit_and_at_a_checkpoint(
    baseline, tiny_data_root, tmp_path, monkeypatch
):
    # Prepare: host 1 dies mid-fit in round 2 (its devices' c_i from round 1 exist only in the round log:
    # no checkpoint yet); host 0 dies while round 3's checkpoint streams device state; host 1 dies
    # mid-fit in round 5 (its devices' c_i come back from round 3's checkpoint files). Checkpoints hold
    # one device per chunk file, so writing and restoring both go chunk by chunk.
    monkeypatch.setattr(ray_backend, "CHUNK_BYTES", 1)
    kills = [
        {"round": 2, "host": 1, "phase": "fit", "after_devices": 1},
        {"round": 3, "host": 0, "phase": "checkpoint"},
        {"round": 5, "host": 1, "phase": "fit", "after_devices": 1},
    ]
    # Execute
    result, records, killed = _run(tiny_data_root, tmp_path, kills, **SCAFFOLD)
    # Assert: every round ran; the kills were recovered (restart and retries recorded)
    assert [r["round"] for r in records] == [1, 2, 3, 4, 5]
    assert records[1]["host_restarts"] == 1 and records[1]["device_retries"] > 0
    assert records[3]["host_restarts"] == 1  # the checkpoint's restart shows in the next round
    assert records[4]["host_restarts"] == 1 and records[4]["device_retries"] > 0
    assert len(checkpoint_section(list_checkpoints(result.run_dir / "checkpoints")[-1], "devices").files) == 10
    assert all(r["devices_ok"] == 6 and r["control_norm"] > 0 for r in records)
    # Assert: identical weights, server c and every device's c_i
    _, base_records, base = baseline
    _assert_same_weights(base, killed)
    _assert_same_control_variates(base, killed)
    assert [r["test_accuracy"] for r in records] == [r["test_accuracy"] for r in base_records]


def _wait_for(path, proc, timeout_s=240.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        if path():
            return
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting (driver exit code {proc.poll()})")


def test_control_variates_survive_a_driver_sigkill_and_resume(baseline, tiny_data_root, tmp_path):
    # Prepare: the same experiment as a `fedtwin run` process with its own embedded Ray
    spec = tiny_spec(tiny_data_root, tmp_path / "runs", **SCAFFOLD)
    cfg = tmp_path / "scaffold.yaml"
    cfg.write_text(yaml.safe_dump({**spec.to_dict(), "ray": {**spec.to_dict()["ray"], "num_cpus": 2}}))
    run = _Watched(cfg)
    # Execute: SIGKILL the driver once round 4 is under way (round 3's checkpoint written), then resume
    try:
        _wait_for(lambda: list((tmp_path / "runs").glob("*/checkpoints/step-00003")), run.proc)
        run_dir = next((tmp_path / "runs").glob("*/checkpoints/step-00003")).parents[1]
        run.proc.kill()
        run.proc.wait(timeout=30)
    finally:
        run.kill_leftovers()
    assert run.proc.returncode == -9
    rounds_before = [r["round"] for r in RunFolder(run_dir).read_metrics()]
    resumed = subprocess.run(
        [sys.executable, "-c", _CLI, "run", "--resume", str(run_dir), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Assert: the resumed run finished all rounds with the faultless run's weights and control variates
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert rounds_before[:3] == [1, 2, 3] and len(rounds_before) < 5
    final = latest_checkpoint(run_dir / "checkpoints")
    assert final.round_num == 5
    _, _, base = baseline
    _assert_same_weights(base, final)
    _assert_same_control_variates(base, final)


def test_a_run_folder_whose_checkpoint_holds_device_state_in_one_file_resumes(baseline, tiny_data_root, tmp_path):
    # Prepare: the faultless run's folder as an older fedtwin left it: its round-3 checkpoint with every
    # device's state inside state.safetensors (no streamed section), and no later checkpoint
    result, _, base = baseline
    run_dir = tmp_path / "old"
    shutil.copytree(result.run_dir, run_dir)
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    assert [p.name for p in checkpoints] == ["step-00003", "step-00005"]
    shutil.rmtree(checkpoints[1])
    three = load_checkpoint(checkpoints[0])
    extra = {**three.extra, "devices": dict(three.extra["devices"])}
    save_checkpoint(run_dir / "checkpoints", 3, three.model, extra, three.meta)
    assert checkpoint_section(checkpoints[0], "devices") is None
    # Execute: resume it on Ray (the devices' states go to the hosts from the driver's object store)
    spec = tiny_spec(tiny_data_root, tmp_path / "runs", **SCAFFOLD)
    final = latest_checkpoint(run_experiment(spec, run_dir=run_dir, resume=True).run_dir / "checkpoints")
    # Assert: rounds 4 and 5 end exactly as in the run that never stopped, written in the new layout
    _assert_same_weights(base, final)
    _assert_same_control_variates(base, final)
    assert checkpoint_section(list_checkpoints(run_dir / "checkpoints")[-1], "devices") is not None


def test_resume_without_the_control_variates_changes_the_result(tiny_data_root, tmp_path, monkeypatch):
    # Prepare: in process (the same hosts and loop without actors): a run, then a crashed-and-resumed run
    # whose hosts get no device state back, so every device restarts from c_i = 0
    from tests.orchestrator.recipes.federated.test_federated_ray import _CrashAfter

    spec = tiny_spec(tiny_data_root, tmp_path / "a", **SCAFFOLD, **{"resources.backend": "local"})
    full = latest_checkpoint(run_experiment(spec).run_dir / "checkpoints")
    forgetful_spec = tiny_spec(tiny_data_root, tmp_path / "b", **SCAFFOLD, **{"resources.backend": "local"})
    folder = RunFolder.create(forgetful_spec.run.output_dir, forgetful_spec.name)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(forgetful_spec, run_dir=folder.path, callbacks=[_CrashAfter(4)])
    monkeypatch.setattr(LocalBackend, "load_device_states", lambda self, states: None)
    # Execute
    forgetful = latest_checkpoint(
        run_experiment(forgetful_spec, run_dir=folder.path, resume=True).run_dir / "checkpoints"
    )
    # Assert: losing the device control variates changes the weights, so the restores above matter
    assert any(not np.array_equal(full.model[k], forgetful.model[k]) for k in full.model)
