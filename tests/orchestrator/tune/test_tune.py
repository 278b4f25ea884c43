"""Real Tune sweeps on the session's 2-CPU Ray: tiny FedDU trials, ASHA, interrupt + resume, fit check.

Each trial is a whole federated run (a 0.5-CPU device host, the server node, a 0.5-CPU driver), so two trials run
side by side on 2 CPUs. Rounds take about a second; most of a trial's time is actor start-up.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import yaml

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.tune.runner import run_sweep
from fedtwin.orchestrator.tune.sweep_config import load_sweep
from fedtwin.orchestrator.tune.trial_resources import SweepResourcesError

# Two rounds are enough for every path below: ASHA's rung at round 1, a resume that crosses the round-1
# checkpoint; most of a trial's time is actor start-up, not rounds.
ROUNDS = 2


def tiny_feddu(data_root: Path, tmp_path: Path) -> Path:
    """ROUNDS rounds of FedDUM on 10 Dirichlet devices with a 10% shared server split."""
    base = {
        "name": "tiny-feddu",
        "seed": 3,
        "data": {
            "root": str(data_root),
            "generator": {"train_per_class": 40, "test_per_class": 10},
            "partition": {"devices": 10, "scheme": "dirichlet", "alpha": 0.5, "shared_fraction": 0.1, "seed": 0},
        },
        "training": {"epochs": 1, "batch_size": 16, "optimizer": "adam", "lr": 0.003},
        "federation": {"num_rounds": ROUNDS, "devices_per_round": 10, "round_timeout_s": 120},
        "strategy": {"name": "feddum", "params": {"device_momentum": 0.0}},
        "resources": {"hosts": 1, "cpus_per_host": 0.5},
        "run": {"output_dir": str(tmp_path / "runs"), "checkpoint_every": 1},
    }
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def write_sweep(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump({"base": "base.yaml", "output_dir": str(tmp_path / "sweeps"), **doc}, sort_keys=False)
    )
    return path


class ResourceProbe:
    """A Tune callback that saves the cluster's free resources once, while a trial is running."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def __getattr__(self, name):  # every other Tune hook is a no-op
        if name.startswith("on_") or name in ("setup",):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        import ray

        if not self.out.exists():
            self.out.write_text(json.dumps({"total": ray.cluster_resources(), "free": ray.available_resources()}))


class InterruptAfterFirstCheckpoint:
    """A Tune callback that interrupts the sweep once (SIGUSR1: Tune's Ctrl-C), right after the first
    checkpoint is registered: a trial resumes from its last *registered* checkpoint."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def __getattr__(self, name):  # every other Tune hook is a no-op
        if name.startswith("on_") or name in ("setup",):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        if not self.flag.exists():
            self.flag.touch()
            os.kill(os.getpid(), signal.SIGUSR1)


def test_asha_sweep_is_interrupted_resumes_from_trial_checkpoints_and_a_failing_trial_does_not_stop_it(
    ray_session, tiny_data_root, tmp_path
):
    # One sweep for what two sweeps checked before (each trial's start-up is most of a sweep's time):
    # ASHA + random search, the trial's placement group, the summary files, interrupt + resume, an error.
    from ray.tune import Callback

    # Prepare: one random draw of decay/C/momentum crossed with a grid of two round deadlines; the trial
    # whose deadline is a millisecond fails in round 1 (no host can answer in time), the other is
    # interrupted after its first round and must continue from that checkpoint.
    tiny_feddu(tiny_data_root, tmp_path)
    path = write_sweep(
        tmp_path,
        {
            "name": "feddu-asha",
            "search_space": {
                "strategy.params.decay": {"uniform": [0.9, 0.999]},
                "strategy.params.C": {"loguniform": [0.5, 2.0]},
                "strategy.params.momentum": {"choice": [0.0, 0.9]},
                "federation.round_timeout_s": {"grid": [120.0, 0.001]},
            },
            "search": {"algorithm": "random", "num_samples": 1, "seed": 0},
            "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
            "resources": {"driver_cpus": 0.5},
            "failure": {"max_failures": 0},
        },
    )
    probe = type("Probe", (ResourceProbe, Callback), {})(tmp_path / "resources.json")
    interrupter = type("Interrupter", (InterruptAfterFirstCheckpoint, Callback), {})(tmp_path / "interrupted.flag")
    # Execute: first invocation is interrupted, the second resumes it
    first = run_sweep(load_sweep(path), verbose=0, tune_callbacks=[probe, interrupter])
    result = run_sweep(load_sweep(path), verbose=0, resume=True)
    # Assert: the trial's host actor runs inside the trial's placement group (its bundle 1 is taken)
    seen = json.loads((tmp_path / "resources.json").read_text())
    host_bundles = [k for k in seen["total"] if k.startswith("CPU_group_1_")]  # bundle 1 = the device host
    assert host_bundles and any(seen["free"].get(k, 0.0) == 0.0 for k in host_bundles), seen
    # Assert: interrupted, then resumed to the end; the failing trial errored, the other completed
    assert first.interrupted and (tmp_path / "interrupted.flag").exists()
    rows = result.table.rows
    assert result.max_concurrent_trials == 2 and not result.interrupted
    by_timeout = {r.params["federation.round_timeout_s"]: r for r in rows}
    good, bad = by_timeout[120.0], by_timeout[0.001]
    assert good.status == "completed" and good.rounds == ROUNDS
    assert bad.status == "error" and "round 1: only 0/10 devices succeeded" in bad.error
    assert len(rows) == 2 and rows[0] is good  # errored trials sort last
    for row in rows:
        assert 0.9 <= row.params["strategy.params.decay"] <= 0.999
        assert 0.5 <= row.params["strategy.params.C"] <= 2.0
        assert row.params["strategy.params.momentum"] in (0.0, 0.9)
    run = Path(good.path) / "run"
    rounds = [yaml.safe_load(line)["round"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1, 2]  # resumed rounds were not duplicated
    assert (run / "summary.json").is_file()  # the trial finished its own run folder (in Tune's trial folder)
    progress = (Path(good.path) / "progress.csv").read_text().splitlines()
    header = progress[0].split(",")
    resumed = [int(float(line.split(",")[header.index("resumed_from_round")])) for line in progress[1:]]
    assert resumed == [0, 1]  # round 1 ran before the interrupt, round 2 in the restored trial
    # Assert: the summary files, sorted by the objective
    for name in ("sweep.csv", "sweep.md", "best.yaml", "plots/objective.png", "sweep.yaml", "base.yaml"):
        assert (result.path / name).is_file(), name
    csv_lines = (result.path / "sweep.csv").read_text().splitlines()
    assert csv_lines[0].startswith(
        "rank,trial_id,status,strategy.params.decay,strategy.params.C,strategy.params.momentum"
    )
    assert len(csv_lines) == 3
    # the best config is a runnable experiment carrying the best trial's values
    best = ExperimentSpec.from_yaml(result.path / "best.yaml")
    assert best.strategy.name == "feddum" and best.name == "feddu-asha-best"
    assert best.strategy.params["decay"] == good.params["strategy.params.decay"]
    assert best.strategy.params["C"] == good.params["strategy.params.C"]
    assert best.federation.round_timeout_s == 120.0


def test_sweep_that_cannot_fit_fails_fast_and_says_what_to_change(ray_session, tiny_data_root, tmp_path):
    # Prepare: 1 host x 4 CPUs + a 1 CPU driver = 5 CPUs on a 2-CPU Ray
    tiny_feddu(tiny_data_root, tmp_path)
    path = write_sweep(
        tmp_path,
        {
            "name": "too-big",
            "overrides": {"resources.cpus_per_host": 4.0},
            "search_space": {"strategy.params.C": {"choice": [1.0, 2.0]}},
        },
    )
    started = time.monotonic()
    # Execute / Assert
    with pytest.raises(SweepResourcesError, match=r"one trial needs \{CPU: 5\} .*only CPU 2.*resources.cpus_per_host"):
        run_sweep(load_sweep(path), verbose=0)
    assert time.monotonic() - started < 10
    assert not (tmp_path / "sweeps" / "too-big").exists()  # nothing half-made to trip a later --resume


@pytest.mark.slow  # ~45 s on 2 cores (2 trials x 6 rounds + a restart per exploit); exploits are not guaranteed
def test_pbt_clones_a_checkpoint_and_continues_with_the_new_config(ray_session, tiny_data_root, tmp_path):
    # Prepare: two trials, perturbation every 2 rounds; the lower half copies the upper trial
    tiny_feddu(tiny_data_root, tmp_path)
    path = write_sweep(
        tmp_path,
        {
            "name": "pbt",
            "overrides": {"federation.num_rounds": 6},
            "search_space": {
                "strategy.params.C": {"loguniform": [0.25, 4.0]},
                "strategy.params.momentum": {"choice": [0.0, 0.9]},
            },
            "search": {"algorithm": "random", "num_samples": 2, "seed": 0},
            "scheduler": {"name": "pbt", "perturbation_interval": 2, "quantile_fraction": 0.5},
            "resources": {"driver_cpus": 0.5},
        },
    )
    # Execute
    result = run_sweep(load_sweep(path), verbose=0)
    # Assert: some trial restarted from a checkpoint; its run has every round once and the new config
    assert {r.status for r in result.table.rows} == {"completed"}
    cloned = []
    for row in result.table.rows:
        lines = (Path(row.path) / "progress.csv").read_text().splitlines()
        header = lines[0].split(",")
        resumed = [int(float(x.split(",")[header.index("resumed_from_round")])) for x in lines[1:]]
        if max(resumed) > 0:
            cloned.append(row)
    assert cloned, "PBT never exploited (no trial restored from a checkpoint)"
    for row in cloned:
        run = Path(row.path) / "run"
        rounds = [yaml.safe_load(line)["round"] for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert rounds == [1, 2, 3, 4, 5, 6]
        spec = ExperimentSpec.from_yaml(run / "spec.yaml")
        assert spec.strategy.params["C"] == row.params["strategy.params.C"]
        assert spec.strategy.params["momentum"] == row.params["strategy.params.momentum"]
    assert list(result.path.glob("pbt_policy_*.txt"))


@pytest.mark.slow  # ~40 s on 2 cores (3 trials); needs the optional optuna extra
def test_optuna_search_drives_a_sweep(ray_session, tiny_data_root, tmp_path):
    pytest.importorskip("optuna")
    tiny_feddu(tiny_data_root, tmp_path)
    path = write_sweep(
        tmp_path,
        {
            "name": "optuna",
            "search_space": {
                "strategy.params.decay": {"uniform": [0.6, 0.95]},
                "strategy.params.C": {"loguniform": [0.25, 4.0]},
                "strategy.params.momentum": {"choice": [0.0, 0.9]},
            },
            "search": {"algorithm": "optuna", "num_samples": 3, "seed": 0},
            "scheduler": {"name": "fifo"},
            "resources": {"driver_cpus": 0.5},
        },
    )
    result = run_sweep(load_sweep(path), verbose=0)
    rows = result.table.rows
    assert len(rows) == 3 and all(r.status == "completed" and r.rounds == ROUNDS for r in rows)
    assert len({r.params["strategy.params.C"] for r in rows}) == 3  # three distinct Optuna suggestions
    assert (result.path / "best.yaml").is_file()
