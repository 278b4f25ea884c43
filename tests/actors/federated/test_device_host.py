"""DeviceHost in-process (no Ray): which devices it serves, typed tasks, and where optimizer buffers start."""

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
SGD = TrainSettings(epochs=1, batch_size=16, lr=0.05, momentum=0.9, max_steps=2)


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


def _host(partition, host_id=0, num_hosts=2):
    return DeviceHost(host_id, num_hosts, partition, HostSettings(seed=0, model=MODEL))


def _state():
    return state_from_model(build_model(MODEL, seed=0))


def test_host_serves_the_sticky_devices_and_refuses_others(partition):
    host = _host(partition, host_id=1, num_hosts=3)
    assert sorted(host.devices) == list(devices_of(1, 3, 10)) == [1, 4, 7]
    answer = host.fit(_state(), [FitTask(1, 1, SGD), FitTask(2, 1, SGD)])
    assert [r.device_id for r in answer.results] == [1]
    assert [f.device_id for f in answer.failures] == [2] and "not served by host 1/3" in answer.failures[0].reason
    assert answer.results[0].metrics["steps"] == 2.0  # the task's max_steps reached local_train


def test_local_optimizer_start_keeps_buffers_and_resumes_exactly(partition):
    # Prepare: host A trains device 0 in rounds 1 and 2 with its own momentum buffer carried over
    local = replace(SGD, optimizer_start="local")
    a = _host(partition)
    a.fit(_state(), [FitTask(0, 1, local)])
    second_a = a.fit(_state(), [FitTask(0, 2, local)])
    # Execute: host B trains round 1, host C is restored from B's device states and trains round 2
    b = _host(partition)
    b.fit(_state(), [FitTask(0, 1, local)])
    c = _host(partition)
    c.load_device_states(b.device_states())
    second_c = c.fit(_state(), [FitTask(0, 2, local)])
    # Assert: bit-identical, and only the local mode stores buffers on the device
    for key, value in second_a.partial_sum.items():
        np.testing.assert_array_equal(second_c.partial_sum[key], value)
    assert set(b.device_states()[0]) == {"rounds_trained", "optimizer_state"}
    fresh = _host(partition)
    fresh.fit(_state(), [FitTask(0, 1, SGD)])
    assert fresh.device_states()[0] == {"rounds_trained": 1}


def test_global_optimizer_start_reads_the_payload_and_returns_buffers(partition):
    shared = replace(SGD, optimizer_start="global")
    host = _host(partition)
    answer = host.fit(_state(), [FitTask(0, 1, shared), FitTask(2, 1, shared)], {"optimizer_state": {}})
    sums = answer.extra_sums["optimizer_state"]
    assert sums and all(k.startswith("momentum_buffer/") for k in sums)
    assert "optimizer_state" not in host.device_states()[0]


def test_host_results_equal_training_each_device_from_scratch_with_or_without_the_store(partition, tmp_path):
    # Prepare: the reference is the plain path: a fresh model, optimizer and generator per device,
    # the shard read from Parquet, per-device weights pre-summed by HostFitResult.from_devices
    from fedtwin.pipelines.core.seeding import torch_generator
    from fedtwin.pipelines.data.partition_manifest import load_device_shard
    from fedtwin.pipelines.federated.messages import FitResult, HostFitResult
    from fedtwin.pipelines.model.state import load_state
    from fedtwin.pipelines.model.training import local_train

    settings = replace(SGD, max_steps=None, epochs=2, batch_size=3)
    devices = [0, 4, 2, 8]
    expected = []
    for d in devices:
        model = build_model(MODEL, seed=0)
        load_state(model, _state())
        shard = load_device_shard(partition, d)
        local_train(model, shard, settings, generator=torch_generator(0, 3, d))
        expected.append(FitResult(d, len(shard), np.bincount(shard.labels, minlength=10), {}, state_from_model(model)))
    reference = HostFitResult.from_devices(0, expected)
    # Execute: a host with its store, a second host on the same node, a host with the store off
    hosts = [
        DeviceHost(0, 2, partition, HostSettings(seed=0, model=MODEL, cache_dir=str(tmp_path), cache_max_gb=gb))
        for gb in (1.0, 1.0, 0.0)
    ]
    answers = [h.fit(_state(), [FitTask(d, 3, settings) for d in devices]) for h in hosts]
    # Assert: bit-identical partial sums, same counts and histograms; what each host read
    for answer in answers:
        assert answer.total_examples == reference.total_examples
        assert [r.num_examples for r in answer.results] == [r.num_examples for r in reference.results]
        for got, want in zip(answer.results, reference.results, strict=True):
            np.testing.assert_array_equal(got.label_histogram, want.label_histogram)
        for key, value in reference.partial_sum.items():
            np.testing.assert_array_equal(answer.partial_sum[key], value)
    built, reused, direct = (h.info() for h in hosts)
    assert built["cache_hits"] == 0 and built["source_reads"] and built["store"]["devices"] == 5
    assert (
        reused["cache_hits"] == 1 and reused["source_reads"] == [] and reused["store"]["path"] == built["store"]["path"]
    )
    assert direct["store"] is None and direct["shard_reads"] == len(devices)
    assert answers[0].started <= answers[0].finished


def test_a_store_that_cannot_be_built_leaves_only_the_bad_files_devices_failing(partition, tmp_path):
    # Prepare: a copy of the partition whose (only) device file lost device 9's rows
    import shutil

    import pyarrow.parquet as pq

    from fedtwin.pipelines.data.partition_manifest import load_partition_manifest

    copy = shutil.copytree(partition, tmp_path / "copy")
    manifest = load_partition_manifest(copy)
    path = copy / manifest.device_paths[0]
    pq.write_table(pq.read_table(path).slice(0, int(manifest.row_offsets[9])), path)  # device 9 is gone
    host = DeviceHost(1, 2, str(copy), HostSettings(seed=0, model=MODEL, cache_dir=str(tmp_path / "cache")))
    # Execute
    answer = host.fit(_state(), [FitTask(d, 1, SGD) for d in (1, 3, 9)])
    # Assert: the host fell back to reading devices one by one; only device 9 failed
    assert [r.device_id for r in answer.results] == [1, 3]
    assert [f.device_id for f in answer.failures] == [9]
    info = host.info()
    assert info["store"] is None and "device 9" in info["store_error"] and info["shard_reads"] == 2
