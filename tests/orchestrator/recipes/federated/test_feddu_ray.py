"""FedDU/FedDUM end to end on real Ray: logged server-update fields, device momentum across rounds
and across a resume, what the server node receives (weights only), and the in-process backend."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.orchestrator.recipes.federated.local_backend import LocalBackend
from fedtwin.orchestrator.recipes.federated.ray_backend import RayServerAccess
from fedtwin.orchestrator.run.checkpoint import latest_checkpoint
from fedtwin.orchestrator.run.experiment import run_experiment
from fedtwin.orchestrator.run.run_folder import RunFolder
from fedtwin.pipelines.model.networks import ModelConfig, build_model
from fedtwin.pipelines.model.state import state_from_model
from tests.orchestrator.recipes.federated.test_federated_ray import _CrashAfter, tiny_spec

FEDDUM = {
    "data.partition": {
        "devices": 10,
        "scheme": "shards",
        "labels_per_device": 2,
        "seed": 0,
        "shared_fraction": 0.1,
        "shared_classes": 5,
    },
    "training": {"epochs": 1, "batch_size": 16, "optimizer": "sgd", "lr": 0.05},
    # device buffers kept on the hosts between a device's rounds (not the default), so that resume and
    # host restarts have device state to restore
    "strategy": {"name": "feddum", "params": {"decay": 0.99, "device_momentum_init": "local"}},
    "federation.num_rounds": 4,
    "federation.devices_per_round": 6,
    "run.checkpoint_every": 2,
}


def _spy_on_server(monkeypatch):
    """Record every array the driver sends to the server node."""
    sent = []
    evaluate, server_pass = RayServerAccess.evaluate, RayServerAccess.server_pass

    def spy_evaluate(self, state):
        sent.append(dict(state))
        return evaluate(self, state)

    def spy_pass(self, state, settings, *, round_num, optimizer_state=None):
        sent.append(dict(state))
        sent.append(dict(optimizer_state or {}))
        return server_pass(self, state, settings, round_num=round_num, optimizer_state=optimizer_state)

    monkeypatch.setattr(RayServerAccess, "evaluate", spy_evaluate)
    monkeypatch.setattr(RayServerAccess, "server_pass", spy_pass)
    return sent


def test_feddum_logs_server_update_and_resumes_exactly_with_device_momentum(
    ray_session, tiny_data_root, tmp_path, monkeypatch
):
    # Prepare
    sent = _spy_on_server(monkeypatch)
    full = run_experiment(tiny_spec(tiny_data_root, tmp_path / "a", **FEDDUM))
    records = RunFolder(full.run_dir).read_metrics()
    # Assert: alpha_t and tau_eff (and the rest of the FedDU fields) are logged every round
    for key in (
        "acc_t",
        "alpha_t",
        "tau_eff",
        "tau0",
        "js_selected",
        "js_server",
        "n_selected",
        "skipped",
        "reverted",
        "tau_avg_dev",
        "server_momentum_norm",
    ):
        assert all(key in r for r in records), key
    assert all(0 < r["alpha_t"] <= 1 and r["tau_eff"] == pytest.approx(r["alpha_applied"] * r["tau0"]) for r in records)
    assert (full.run_dir / "plots" / "server_update.png").is_file()
    # Assert: the server node received model weights and nothing else (no clips, no labels)
    model_state = state_from_model(build_model(ModelConfig(), seed=0))
    assert sent and all(set(s) <= set(model_state) for s in sent if s)
    assert all(s[k].shape == model_state[k].shape for s in sent for k in s)
    # Assert: devices keep their momentum buffers between rounds and in the checkpoint
    devices = latest_checkpoint(full.run_dir / "checkpoints").extra["devices"]
    trained = {int(d): v for d, v in devices.items() if v["rounds_trained"] > 0}
    assert trained and all(
        set(v["optimizer_state"]) == {f"momentum_buffer/{k}" for k in model_state} for v in trained.values()
    )

    # Execute: crash after round 3 (last checkpoint: round 2), resume; and a resume that drops device
    # state (on the in-process backend, which runs the same hosts without actor start-up costs)
    def crash_and_resume(out, drop_device_state, backend):
        spec = tiny_spec(tiny_data_root, out, **FEDDUM, **{"resources.backend": backend})
        folder = RunFolder.create(spec.run.output_dir, spec.name)
        with pytest.raises(KeyboardInterrupt):
            run_experiment(spec, run_dir=folder.path, callbacks=[_CrashAfter(3)])
        with monkeypatch.context() as patch:
            if drop_device_state:
                patch.setattr(LocalBackend, "load_device_states", lambda self, states: None)
            return latest_checkpoint(run_experiment(spec, run_dir=folder.path, resume=True).run_dir / "checkpoints")

    # the exact resume on Ray itself is test_federated_ray's; here the in-process backend resumes, and
    # its weights equal the Ray run's because both backends give the same weights (asserted last)
    resumed = crash_and_resume(tmp_path / "b", drop_device_state=False, backend="local")
    forgetful = crash_and_resume(tmp_path / "c", drop_device_state=True, backend="local")
    # Assert: bit-identical weights after resume; without the device buffers the run diverges
    a = latest_checkpoint(full.run_dir / "checkpoints")
    for key in a.model:
        np.testing.assert_array_equal(a.model[key], resumed.model[key])
    assert any(not np.array_equal(a.model[k], forgetful.model[k]) for k in a.model)
    for key, value in a.extra["strategy"].items():
        np.testing.assert_array_equal(value, resumed.extra["strategy"][key])
    # Assert: the in-process backend (same hosts, server node and loop, no actors) gives the same weights
    local = run_experiment(tiny_spec(tiny_data_root, tmp_path / "d", **FEDDUM, **{"resources.backend": "local"}))
    c = latest_checkpoint(local.run_dir / "checkpoints")
    for key in a.model:
        np.testing.assert_array_equal(a.model[key], c.model[key])


def test_feddu_needs_a_shared_split(ray_session, tiny_data_root, tmp_path):
    from fedtwin.pipelines.core.errors import FedtwinError

    spec = tiny_spec(tiny_data_root, tmp_path, **{"strategy.name": "feddu"})
    with pytest.raises(FedtwinError, match="shared_fraction > 0"):
        run_experiment(spec)
