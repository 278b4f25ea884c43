"""The modelled clock in real federated runs: by-hand round times, seeds, deadlines, over-selection, resume.

Most runs use the in-process backend (the same hosts, strategies and round loop, no actor start-up);
the resume test runs on Ray, where the next round is sampled before the last one's evaluation returns.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.federated.system_clock import run_time_to_accuracy
from fedtwin.orchestrator.run.callbacks import RunCallback
from fedtwin.orchestrator.run.experiment import run_experiment
from fedtwin.orchestrator.run.run_folder import RunFolder
from fedtwin.pipelines.data.partition_manifest import load_partition_manifest
from fedtwin.pipelines.model.networks import ModelConfig, build_model
from fedtwin.pipelines.model.state import state_from_model

FLOPS_PER_STEP = 1e9  # pinned, so the test computes device time without the FLOP counter
BATCH = 16


def clock_spec(data_root, out_dir, devices: int, speeds: dict[int, float], **overrides) -> ExperimentSpec:
    """``devices`` iid devices, all of them per round, FedAvg, one local epoch; the clock on with
    per-device speeds (GFLOP/s) from a CSV, 8 Mbit/s down, 4 Mbit/s up, a 10 GFLOP/s server."""
    table = out_dir / "speeds.csv"
    out_dir.mkdir(parents=True, exist_ok=True)
    table.write_text("device_id,value\n" + "".join(f"{d},{v}\n" for d, v in speeds.items()))
    base = {
        "name": "clock",
        "seed": 5,
        "data": {
            "root": str(data_root),
            "generator": {"train_per_class": 40, "test_per_class": 10},
            "partition": {"devices": devices, "scheme": "iid", "seed": 0},
        },
        "training": {"epochs": 1, "batch_size": BATCH, "optimizer": "adam", "lr": 0.003},
        "federation": {"num_rounds": 2, "devices_per_round": devices, "round_timeout_s": 120},
        "system": {
            "enabled": True,
            "flops_per_step": FLOPS_PER_STEP,
            "device_gflops": {"kind": "csv", "path": str(table)},
            "download_mbps": {"kind": "fixed", "value": 8.0},
            "upload_mbps": {"kind": "fixed", "value": 4.0},
            "server_gflops": 10.0,
        },
        "resources": {"hosts": 2, "backend": "local"},
        "run": {"output_dir": str(out_dir / "runs"), "checkpoint_every": 1},
    }
    return ExperimentSpec.from_dict(base).with_overrides(overrides)


def by_hand(result, speeds: dict[int, float]) -> tuple[dict[int, float], int, int]:
    """Each device's modelled seconds (download + train + upload), the model's bytes and its numbers."""
    manifest = load_partition_manifest(result.summary["partition"])
    state = state_from_model(build_model(ModelConfig(arch="tiny3d"), seed=5))
    nbytes = sum(v.nbytes for v in state.values())
    values = sum(v.size for v in state.values())
    times = {}
    for d, gflops in speeds.items():
        n = int(manifest.num_examples[d])  # one epoch: every clip once, the last batch short
        train_s = FLOPS_PER_STEP * (n / BATCH) / (gflops * 1e9)
        times[d] = nbytes / (8e6 / 8) + train_s + nbytes / (4e6 / 8)
    return times, nbytes, values


def test_round_time_equals_the_hand_computed_model(tiny_data_root, tmp_path):
    # Prepare: two devices, one four times faster
    speeds = {0: 2.0, 1: 0.5}
    result = run_experiment(clock_spec(tiny_data_root, tmp_path, 2, speeds))
    records = RunFolder(result.run_dir).read_metrics()
    times, _, values = by_hand(result, speeds)
    # Assert: slowest device + the server folding two results of every weight (2 FLOPs per number)
    server_s = 2 * values * 2 / 10e9
    expected = max(times.values()) + server_s
    assert times[1] > times[0]
    for i, r in enumerate(records, start=1):
        assert r["sim_round_s"] == pytest.approx(expected, rel=1e-12)
        assert r["sim_server_s"] == pytest.approx(server_s, rel=1e-12)
        assert r["sim_time_s"] == pytest.approx(i * expected, rel=1e-12)
        assert r["devices_late"] == 0 and r["round_seconds"] > 0  # wall-clock still there
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["sim_time_s"] == records[-1]["sim_time_s"]
    assert (result.run_dir / "plots" / "accuracy.png").is_file()


def test_same_seed_same_modelled_time_and_another_seed_another(tiny_data_root, tmp_path):
    lognormal = {"kind": "lognormal", "value": 1.0, "sigma": 0.8}
    overrides = {
        "federation.devices_per_round": 3,
        "federation.target_accuracy": 0.05,
        "system.device_gflops": lognormal,
        "system.upload_mbps": {"kind": "lognormal", "value": 4.0, "sigma": 0.5},
    }
    speeds = {d: 1.0 for d in range(6)}

    def sim_times(name: str, **more):
        spec = clock_spec(tiny_data_root, tmp_path / name, 6, speeds, **overrides, **more)
        result = run_experiment(spec)
        return [r["sim_time_s"] for r in RunFolder(result.run_dir).read_metrics()], result.summary

    a, summary = sim_times("a")
    b, _ = sim_times("b")
    c, _ = sim_times("c", **{"system.seed": 99})
    assert a == b
    assert a != c
    # the study helper reads the same from the run folder
    assert run_time_to_accuracy(summary["run_dir"], 0.05) == a[0]
    # both times to the (low) target are in the summary: reached in round 1
    assert summary["sim_time_to_target_s"] == a[0]
    assert summary["wall_time_to_target_s"] > 0


def test_deadline_drops_exactly_the_devices_the_model_says_miss_it(tiny_data_root, tmp_path):
    # Prepare: four devices, two of them 100x slower; a deadline between the fast and the slow ones
    speeds = {0: 1.0, 1: 0.01, 2: 1.0, 3: 0.01}
    probe = run_experiment(clock_spec(tiny_data_root, tmp_path / "probe", 4, speeds, **{"federation.num_rounds": 1}))
    times, _, _ = by_hand(probe, speeds)
    deadline = (max(times[0], times[2]) + min(times[1], times[3])) / 2
    late = sorted(d for d, t in times.items() if t > deadline)
    assert late == [1, 3]
    # Execute
    result = run_experiment(
        clock_spec(tiny_data_root, tmp_path / "run", 4, speeds, **{"federation.deadline_s": deadline})
    )
    records = RunFolder(result.run_dir).read_metrics()
    manifest = load_partition_manifest(result.summary["partition"])
    # Assert: the late devices are counted and never trained; the round's time is the fast ones'
    for r in records:
        assert r["late_devices"] == late and r["devices_late"] == 2
        assert r["devices_ok"] == 2 and r["devices_failed"] == 0
        assert r["num_examples"] == int(manifest.num_examples[0] + manifest.num_examples[2])
        assert r["sim_slowest_device_s"] == pytest.approx(max(times[0], times[2]), rel=1e-12)
    assert result.summary["devices_late"] == 4


def test_over_selection_keeps_the_fastest(tiny_data_root, tmp_path):
    speeds = {0: 4.0, 1: 1.0, 2: 2.0, 3: 0.5}
    spec = clock_spec(
        tiny_data_root,
        tmp_path,
        4,
        speeds,
        **{"federation.devices_per_round": 2, "federation.over_select": 1.0, "federation.num_rounds": 1},
    )
    result = run_experiment(spec)
    (record,) = RunFolder(result.run_dir).read_metrics()
    times, _, _ = by_hand(result, speeds)
    fastest = sorted(sorted(times, key=times.get)[:2])
    manifest = load_partition_manifest(result.summary["partition"])
    assert record["devices_sampled"] == 4 and record["devices_surplus"] == 2 and record["devices_ok"] == 2
    assert record["num_examples"] == int(sum(manifest.num_examples[d] for d in fastest))


def test_clock_keys_need_the_clock(tiny_data_root, tmp_path):
    spec = clock_spec(tiny_data_root, tmp_path, 2, {0: 1.0, 1: 1.0})
    with pytest.raises(ConfigError, match="federation.deadline_s"):
        spec.with_overrides({"system.enabled": False, "federation.deadline_s": 10.0})
    with pytest.raises(ConfigError, match="system.device_gflops.sigma"):
        spec.with_overrides({"system.device_gflops": {"kind": "lognormal", "sigma": -1}})


class _CrashAfter(RunCallback):
    """The driver dies right after ``round_num`` (before that round is checkpointed)."""

    def __init__(self, round_num: int) -> None:
        self.round_num = round_num

    def on_round_end(self, step, metrics):
        if step == self.round_num:
            raise KeyboardInterrupt

    on_step_end = on_round_end  # the hook's newer name


# The clock lives in the driver; the in-process backend runs the same loop without actor start-up costs,
# so the default run resumes there and the Ray variant is a slow test.
@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_resume_continues_the_clock_exactly(request, tiny_data_root, tmp_path, backend):
    # Prepare: lognormal speeds and a deadline (some rounds drop devices), 4 rounds, checkpoints every 2
    if backend == "ray":
        request.getfixturevalue("ray_session")
    speeds = {d: 1.0 for d in range(6)}
    overrides = {
        "resources.backend": backend,
        "federation.num_rounds": 4,
        "federation.devices_per_round": 3,
        "federation.over_select": 0.5,
        "system.device_gflops": {"kind": "lognormal", "value": 1.0, "sigma": 1.0},
        "run.checkpoint_every": 2,
    }
    full = run_experiment(clock_spec(tiny_data_root, tmp_path / "full", 6, speeds, **overrides))
    spec = clock_spec(tiny_data_root, tmp_path / "crash", 6, speeds, **overrides)
    folder = RunFolder.create(spec.run.output_dir, spec.name)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(spec, run_dir=folder.path, callbacks=[_CrashAfter(3)])
    resumed = run_experiment(spec, run_dir=folder.path, resume=True)
    # Assert: identical modelled time per round, resumed or not (round 3 is replayed from round 2's checkpoint)
    a = RunFolder(full.run_dir).read_metrics()
    b = RunFolder(resumed.run_dir).read_metrics()
    assert [r["round"] for r in b] == [1, 2, 3, 4]
    assert [r["sim_time_s"] for r in a] == [r["sim_time_s"] for r in b]
    assert [r["devices_sampled"] for r in a] == [5, 5, 5, 5] and [r["devices_surplus"] for r in a] == [2, 2, 2, 2]
    assert np.all(np.diff([r["sim_time_s"] for r in a]) > 0)
