"""Process kills on real Ray (a drill's ``kills``): device hosts killed mid-fit and at a checkpoint,
two hosts in one round, the server node; every run finishes every round, the killed rounds record their
retries and restarts, and because a retried host folds in its place with device state restored, a run
with kills ends with exactly the weights of the same run without kills (FedAvg and FedDUM)."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.orchestrator.recipes.federated.drill import DrillPlan, Kill, installed
from fedtwin.orchestrator.recipes.federated.host_pool import HostPool
from fedtwin.orchestrator.run.checkpoint import latest_checkpoint
from fedtwin.orchestrator.run.experiment import run_experiment
from fedtwin.orchestrator.run.run_folder import RunFolder
from tests.orchestrator.recipes.federated.test_feddu_ray import FEDDUM
from tests.orchestrator.recipes.federated.test_federated_ray import tiny_spec

FEDAVG = {"federation.num_rounds": 3, "run.checkpoint_every": 2, "training.epochs": 1}


def _run(data_root, out, kills=(), **overrides):
    spec = tiny_spec(data_root, out, **overrides)
    with installed(DrillPlan(kills=tuple(Kill(**k) for k in kills)), spec):
        result = run_experiment(spec)
    return result, RunFolder(result.run_dir).read_metrics(), latest_checkpoint(result.run_dir / "checkpoints")


def _assert_same_weights(a, b):
    assert a.round_num == b.round_num
    for key in a.model:
        np.testing.assert_array_equal(a.model[key], b.model[key])


# The runs without kills are made in process: the in-process backend runs the same hosts, folding and
# loop without actors and gives the Ray backend's weights and scores bit for bit (asserted in
# test_federated_ray), and it saves an actor start-up per baseline.
LOCAL = {"resources.backend": "local"}


@pytest.fixture(scope="module")
def fedavg_baseline(ray_session, tiny_data_root, tmp_path_factory):
    """The same FedAvg run without kills."""
    return _run(tiny_data_root, tmp_path_factory.mktemp("baseline"), **FEDAVG, **LOCAL)


@pytest.mark.parametrize(
    ("kills", "round_num", "retries", "restarts"),
    [
        # the default run covers a kill mid-fit and one at a checkpoint in test_scaffold_ray (one run, with
        # device state to restore); the single-kill FedAvg cases are slow tests
        pytest.param(
            [{"round": 2, "host": 1, "phase": "fit", "after_devices": 2}],
            2,
            5,
            1,
            id="host-mid-fit",
            marks=pytest.mark.slow,
        ),
        # killed while the driver gathers round 2's checkpoint: restored from the round log, asked again;
        # the restart shows in the next round's record
        pytest.param(
            [{"round": 2, "host": 0, "phase": "checkpoint"}], 3, 0, 1, id="host-at-checkpoint", marks=pytest.mark.slow
        ),
        pytest.param(
            [
                {"round": 3, "host": 0, "phase": "fit", "after_devices": 0},
                {"round": 3, "host": 1, "phase": "fit", "after_devices": 4},
            ],
            3,
            10,
            2,
            id="two-in-one-round",
        ),
    ],
)
def test_killed_hosts_are_restored_and_their_devices_retried(
    fedavg_baseline, tiny_data_root, tmp_path, kills, round_num, retries, restarts
):
    # Execute
    _, records, ckpt = _run(tiny_data_root, tmp_path, kills, **FEDAVG)
    # Assert: every round, every device; the killed round shows its retries and restarts
    assert [r["round"] for r in records] == [1, 2, 3]
    assert all(r["devices_ok"] == 10 and r["devices_failed"] == 0 for r in records)
    killed = records[round_num - 1]
    assert killed["device_retries"] == retries and killed["host_restarts"] == restarts
    others = [r for r in records if r["round"] != round_num]
    assert all(r["device_retries"] == 0 and r["host_restarts"] == 0 for r in others)
    # Assert: the same weights and accuracy as without kills
    _, base_records, base_ckpt = fedavg_baseline
    _assert_same_weights(base_ckpt, ckpt)
    assert [r["test_accuracy"] for r in records] == [r["test_accuracy"] for r in base_records]


FEDDUM_RUN = {**FEDDUM, "run.checkpoint_every": 3}  # checkpoints after rounds 3 and 4


# host 1 dies mid-fit in round 3, so its devices' momentum from rounds 1 and 2 must be rebuilt from the log
# (no checkpoint yet); the server node dies before round 2's server pass
FEDDUM_KILLS = [
    {"round": 3, "host": 1, "phase": "fit", "after_devices": 1},
    {"round": 2, "target": "server", "phase": "server_pass"},
]


@pytest.fixture(scope="module")
def feddum_baseline(ray_session, tiny_data_root, tmp_path_factory):
    """The FedDUM run without kills (in process, see LOCAL)."""
    return _run(tiny_data_root, tmp_path_factory.mktemp("feddum-base"), **FEDDUM_RUN, **LOCAL)


def test_feddum_device_momentum_survives_host_and_server_kills(feddum_baseline, tiny_data_root, tmp_path):
    # Prepare
    kills = FEDDUM_KILLS
    _, base_records, base = feddum_baseline
    # Execute
    _, records, killed = _run(tiny_data_root, tmp_path / "kills", kills, **FEDDUM_RUN)
    # Assert: all rounds; the retries and restarts are recorded in the killed rounds
    assert [r["round"] for r in records] == [1, 2, 3, 4]
    assert records[1]["server_restarts"] == 1 and records[2]["host_restarts"] == 1
    assert records[2]["device_retries"] > 0
    # Assert: identical weights, strategy state and device momentum buffers
    _assert_same_weights(base, killed)
    for key, value in base.extra["strategy"].items():
        np.testing.assert_array_equal(value, killed.extra["strategy"][key])
    trained = {d: v for d, v in base.extra["devices"].items() if "optimizer_state" in v}
    assert trained
    for device, state in trained.items():
        for key, value in state["optimizer_state"].items():
            np.testing.assert_array_equal(value, killed.extra["devices"][device]["optimizer_state"][key])
    assert [r["test_accuracy"] for r in records] == [r["test_accuracy"] for r in base_records]


@pytest.mark.slow
def test_feddum_kills_without_the_restore_change_the_result(feddum_baseline, tiny_data_root, tmp_path, monkeypatch):
    # (The default run shows the same for SCAFFOLD's control variates, in process, in test_scaffold_ray.)
    _, _, base = feddum_baseline
    kills = FEDDUM_KILLS

    # Execute: the same kills, but a restarted host gets its devices back empty (no restore)
    def forgetful_sync(self, host_id, deadline):
        self._stale.discard(host_id)
        info = self.handle(host_id).info.remote()
        import ray

        self._note(host_id, ray.get(info))

    monkeypatch.setattr(HostPool, "sync", forgetful_sync)
    _, _, forgetful = _run(tiny_data_root, tmp_path / "forgetful", kills, **FEDDUM_RUN)
    # Assert: losing the momentum buffers changes the result, so the restore above is what kept it
    assert any(not np.array_equal(base.model[k], forgetful.model[k]) for k in base.model)


def test_a_host_that_cannot_be_placed_again_has_its_devices_moved(
    fedavg_baseline, tiny_data_root, tmp_path, monkeypatch
):
    # Prepare: host 1 dies mid-fit in round 2 and is not restarted by Ray (max_restarts 0); its
    # replacement asks for a resource no node has, as when its node is gone and no other has room.
    from fedtwin.actors.federated.ray_actors import DeviceHostActor
    from fedtwin.orchestrator.recipes.federated import host_pool, ray_round
    from fedtwin.orchestrator.recipes.federated.ray_backend import RayBackend

    monkeypatch.setattr(host_pool, "PLACEMENT_WAIT_S", 3.0)
    monkeypatch.setattr(ray_round, "PLACEMENT_WAIT_S", 3.0)
    original, started = RayBackend._make_host, []

    def make_host(self, host_id):
        started.append(host_id)
        if started.count(host_id) == 1:
            return original(self, host_id)
        options = {"num_cpus": 0, "resources": {"fedtwin-test-nowhere": 1}}
        return DeviceHostActor.options(**options).remote(host_id, self.num_hosts, self.partition_dir, self._settings)

    monkeypatch.setattr(RayBackend, "_make_host", make_host)
    kill = {"round": 2, "host": 1, "phase": "fit", "after_devices": 2}
    # Execute
    _, records, ckpt = _run(tiny_data_root, tmp_path, [kill], **FEDAVG, **{"resources.max_restarts": 0})
    # Assert: every device every round, host 1's devices served by host 0 from round 2 on, same weights
    assert started.count(1) == 2  # one replacement asked for, never placed
    assert [r["round"] for r in records] == [1, 2, 3]
    assert all(r["devices_ok"] == 10 and r["devices_failed"] == 0 for r in records)
    assert [r["hosts_live"] for r in records] == [2, 1, 1]
    assert records[1]["device_retries"] == 5
    _, base_records, base_ckpt = fedavg_baseline
    _assert_same_weights(base_ckpt, ckpt)
    assert [r["test_accuracy"] for r in records] == [r["test_accuracy"] for r in base_records]
