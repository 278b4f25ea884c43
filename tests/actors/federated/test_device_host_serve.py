"""A device host that takes over the devices of a host whose node was lost (``DeviceHost.serve``): it
answers for that host id with the very partial sum that host would have sent, and gives the devices back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedtwin.actors.federated.device_host import DeviceHost, HostSettings
from fedtwin.orchestrator.config.loader import from_dict
from fedtwin.orchestrator.config.spec import DataConfig
from fedtwin.orchestrator.run.data_prep import ensure_partition
from fedtwin.pipelines.federated.hosts import devices_of
from fedtwin.pipelines.federated.messages import FitTask
from fedtwin.pipelines.model.networks import ModelConfig, build_model
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import state_from_model

MODEL = ModelConfig(widths=(4, 8))
LOCAL = TrainSettings(epochs=1, batch_size=16, lr=0.05, momentum=0.9, max_steps=2, optimizer_start="local")


@pytest.fixture(scope="module")
def partition(tiny_data_root):
    data = from_dict(
        DataConfig,
        {
            "root": str(tiny_data_root),
            "generator": {"train_per_class": 40, "test_per_class": 10},
            "partition": {"devices": 10, "scheme": "iid", "seed": 0},
        },
    )
    return str(ensure_partition(data))


def _host(partition, host_id):
    return DeviceHost(host_id, 2, partition, HostSettings(seed=0, model=MODEL))


def test_a_host_serving_another_host_id_answers_with_that_hosts_partial_sum(partition):
    state = state_from_model(build_model(MODEL, seed=0))
    tasks = [FitTask(d, 2, LOCAL) for d in devices_of(1, 2, 10)]
    # Prepare: host 1 trains its devices in round 1, then round 2 (its momentum carried over)
    own = _host(partition, 1)
    own.fit(state, [replace(t, round_num=1) for t in tasks])
    saved = own.device_states()
    expected = own.fit(state, tasks)
    # Execute: host 0 takes host 1's devices, restored from host 1's round-1 state, and trains round 2
    adopter = _host(partition, 0)
    adopter.fit(state, [FitTask(d, 1, LOCAL) for d in devices_of(0, 2, 10)])
    mine = adopter.device_states()
    adopter.serve([0, 1])
    adopter.load_device_states({**mine, **saved})
    answer = adopter.fit(state, tasks)
    # Assert: the answer is host 1's, bit for bit, and host 0's own devices kept their state
    assert answer.host_id == 1 and answer.total_examples == expected.total_examples
    assert [r.device_id for r in answer.results] == [r.device_id for r in expected.results]
    for key in expected.partial_sum:
        np.testing.assert_array_equal(answer.partial_sum[key], expected.partial_sum[key])
    for d in devices_of(0, 2, 10):
        for key, value in mine[d]["optimizer_state"].items():
            np.testing.assert_array_equal(adopter.device_states()[d]["optimizer_state"][key], value)
    # Execute / Assert: giving the devices back leaves only its own
    adopter.serve([0])
    assert sorted(adopter.device_states()) == list(devices_of(0, 2, 10))
    refused = adopter.fit(state, tasks[:1])
    assert not refused.results and "not served by host 0/2" in refused.failures[0].reason
