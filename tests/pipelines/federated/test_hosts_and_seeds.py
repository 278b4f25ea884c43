"""The sticky host rule, task grouping, and the seed helpers' bit-identity with the historic formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedtwin.pipelines.core.seeding import derive_seed, numpy_rng, sampling_rng, torch_generator
from fedtwin.pipelines.federated.aggregate import tasks_by_host
from fedtwin.pipelines.federated.hosts import devices_of, host_of
from fedtwin.pipelines.federated.messages import FitTask
from fedtwin.pipelines.model.settings import TrainSettings


def _old_seed(*path: int) -> int:
    """The formula every actor used to copy: SeedSequence(path) -> one 32-bit word."""
    return int(np.random.SeedSequence(list(path)).generate_state(1)[0])


def test_host_of_and_devices_of_are_inverse():
    num_hosts, num_devices = 3, 11
    served = {h: list(devices_of(h, num_hosts, num_devices)) for h in range(num_hosts)}
    assert sorted(d for ds in served.values() for d in ds) == list(range(num_devices))
    assert all(host_of(d, num_hosts) == h for h, ds in served.items() for d in ds)
    assert served[1] == [1, 4, 7, 10]
    with pytest.raises(ValueError, match="host_id 3 outside"):
        devices_of(3, num_hosts, num_devices)
    with pytest.raises(ValueError, match="num_hosts"):
        host_of(1, 0)


def test_tasks_by_host_follows_the_sticky_rule_in_host_order():
    settings = TrainSettings(epochs=1, batch_size=2, lr=0.1)
    tasks = [FitTask(d, 1, settings) for d in (5, 0, 2, 3)]
    grouped = tasks_by_host(tasks, 2)
    assert list(grouped) == [0, 1]
    assert [t.device_id for t in grouped[0]] == [0, 2] and [t.device_id for t in grouped[1]] == [5, 3]


@pytest.mark.parametrize("path", [(3, 1, 7), (3, 2, 0, 1), (7, 4, 1, 5, 2), (0, 1, 0), (0, 0, 2)])
def test_derived_seeds_equal_the_historic_formula(path):
    # device (seed, round, device), server pass (seed, round, 0, 1), twin (seed, 4, index, epoch, stream),
    # task / session (seed, n, stream): every actor's stream keeps its value
    assert derive_seed(*path) == _old_seed(*path)
    assert torch.equal(
        torch.randperm(20, generator=torch_generator(*path)),
        torch.randperm(20, generator=torch.Generator().manual_seed(_old_seed(*path))),
    )
    assert (
        numpy_rng(*path).integers(0, 2**31, 5).tolist()
        == np.random.default_rng(_old_seed(*path)).integers(0, 2**31, 5).tolist()
    )


def test_sampling_rng_keeps_the_historic_device_sampling_stream():
    draws = sampling_rng(3, 2).choice(50, size=10, replace=False)
    assert draws.tolist() == np.random.default_rng([3, 2]).choice(50, size=10, replace=False).tolist()
    # a different stream from numpy_rng(seed, round): the reason sampling has its own helper
    assert draws.tolist() != numpy_rng(3, 2).choice(50, size=10, replace=False).tolist()
