"""The modelled clock's arithmetic: profiles, FLOP counts, device and round times, admission."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.pipelines.federated.system_model import (
    DeviceFleet,
    Profile,
    admit,
    device_time,
    examples_processed,
    read_table,
    round_time,
    time_to_accuracy,
)
from fedtwin.pipelines.model.flops import count_step_flops
from fedtwin.pipelines.model.networks import ModelConfig, build_model


def test_profiles_fixed_lognormal_and_table(tmp_path):
    assert np.array_equal(Profile("fixed", 4.0).draw(3, seed=0, stream=1), [4.0, 4.0, 4.0])
    # lognormal: seeded (same seed, same draw; another seed or stream, another draw), median near value
    a = Profile("lognormal", 10.0, sigma=0.5).draw(4000, seed=7, stream=1)
    assert np.array_equal(a, Profile("lognormal", 10.0, sigma=0.5).draw(4000, seed=7, stream=1))
    assert not np.array_equal(a, Profile("lognormal", 10.0, sigma=0.5).draw(4000, seed=8, stream=1))
    assert not np.array_equal(a, Profile("lognormal", 10.0, sigma=0.5).draw(4000, seed=7, stream=2))
    assert 9.5 < np.median(a) < 10.5 and 0.45 < np.std(np.log(a)) < 0.55
    # table from a CSV, one row per device
    path = tmp_path / "speeds.csv"
    path.write_text("device_id,value\n1,2.5\n0,1.5\n")
    assert np.array_equal(Profile("table", table=read_table(path)).draw(2, seed=0, stream=1), [1.5, 2.5])
    with pytest.raises(ValueError, match="no value for device 2"):
        Profile("table", table=read_table(path)).draw(3, seed=0, stream=1)
    (tmp_path / "bad.csv").write_text("id,speed\n0,1\n")
    with pytest.raises(ValueError, match="header row 'device_id,value'"):
        read_table(tmp_path / "bad.csv")


def test_examples_processed_counts_short_batches_and_the_step_cap():
    assert examples_processed(45, epochs=5, batch_size=10) == 225  # 5 steps per epoch, the last of 5 clips
    assert examples_processed(40, epochs=2, batch_size=10, max_steps=6) == 60  # 4 + 2 full steps
    assert examples_processed(45, epochs=2, batch_size=10, max_steps=7) == 45 + 20
    assert examples_processed(0, epochs=3, batch_size=10) == 0


def test_flop_count_is_linear_in_the_batch_and_leaves_the_model_alone():
    model = build_model(ModelConfig(arch="tiny3d"), seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = count_step_flops(model, (8, 1, 32, 32), batch_size=4)
    large = count_step_flops(model, (8, 1, 32, 32), batch_size=8)
    assert small.train > 2 * small.forward > 0  # backward costs about twice the forward
    assert large.train == 2 * small.train and large.forward == 2 * small.forward
    assert small.train_per_example == large.train_per_example
    assert all(p.grad is None for p in model.parameters())
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


def test_device_time_and_round_time_by_hand():
    fleet = DeviceFleet.draw(
        2,
        seed=0,
        speed=Profile("table", table={0: 2.0, 1: 0.5}),  # GFLOP/s
        download=Profile("fixed", 8.0),  # Mbit/s
        upload=Profile("table", table={0: 8.0, 1: 4.0}),
        scale=(1e9, 1e6 / 8, 1e6 / 8),
    )
    # 4e9 FLOPs, 2 MB each way: device 0 = 2 + 2 + 2 s, device 1 = 2 + 8 + 4 s
    t0 = device_time(fleet, 0, train_flops=4e9, download_bytes=2e6, upload_bytes=2e6)
    t1 = device_time(fleet, 1, train_flops=4e9, download_bytes=2e6, upload_bytes=2e6)
    assert (t0.download_s, t0.compute_s, t0.upload_s, t0.total_s) == (2.0, 2.0, 2.0, 6.0)
    assert t1.total_s == 14.0
    assert round_time([t0.total_s, t1.total_s], server_s=0.5) == 14.5


def test_admission_deadline_and_over_selection():
    times = {3: 5.0, 7: 1.0, 9: 12.0, 11: 3.0, 12: 3.0}
    # deadline only: the late ones go, all others stay
    a = admit(times, wanted=10, deadline_s=4.0)
    assert a.kept == (7, 11, 12) and a.late == (3, 9) and a.surplus == ()
    # over-selection: the 2 fastest on time; ties broken by device id
    b = admit(times, wanted=2, deadline_s=10.0)
    assert b.kept == (7, 11) and b.late == (9,) and b.surplus == (3, 12)
    assert admit(times, wanted=5).kept == (3, 7, 9, 11, 12)


def test_time_to_accuracy_in_modelled_and_wall_clock_time():
    records = [
        {"round": 1, "test_accuracy": 0.2, "sim_time_s": 10.0, "round_seconds": 1.5},
        {"round": 2, "test_accuracy": 0.6, "sim_time_s": 25.0, "round_seconds": 2.0},
        {"round": 3, "test_accuracy": 0.7, "sim_time_s": 31.0, "round_seconds": 1.0},
    ]
    assert time_to_accuracy(records, 0.5) == 25.0
    assert time_to_accuracy(records, 0.5, clock="round_seconds") == 3.5
    assert time_to_accuracy(records, 0.9) is None and time_to_accuracy(records, None) is None
