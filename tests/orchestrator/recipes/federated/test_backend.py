"""The backend contract without Ray: the in-process backend never imports Ray, satisfies ``Backend``,
and applies the round threshold (``federation.min_success_fraction``) itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fedtwin.orchestrator.recipes.federated.backend import Backend, RoundFailedError
from fedtwin.orchestrator.recipes.federated.backend_common import finish_round, min_successes
from fedtwin.orchestrator.recipes.federated.drill import DrillPlan, installed
from fedtwin.orchestrator.recipes.federated.local_backend import LocalBackend
from fedtwin.orchestrator.recipes.federated.round import RoundResult, round_settings, run_round
from fedtwin.orchestrator.recipes.federated.strategies import FedAvg
from fedtwin.orchestrator.run.data_prep import ensure_partition
from fedtwin.pipelines.federated.aggregate import OrderedFold
from fedtwin.pipelines.federated.messages import DeviceFailure, FitTask, HostFitResult
from fedtwin.pipelines.model.networks import build_model
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import state_from_model
from tests.fakes import make_fit_result, make_state
from tests.orchestrator.recipes.federated.test_federated_ray import tiny_spec

SETTINGS = TrainSettings(epochs=1, batch_size=4, lr=0.1)

PLAIN_MODULES = (
    "fedtwin.orchestrator.recipes.federated.local_backend",
    "fedtwin.orchestrator.recipes.federated.backend",
    "fedtwin.orchestrator.recipes.federated.round",
    "fedtwin.orchestrator.recipes.federated.drill",
    "fedtwin.actors.federated.device_host",
    "fedtwin.actors.federated.evaluator",
    "fedtwin.actors.federated.server_node",
    "fedtwin.actors.mutual.twin_network",
    "fedtwin.actors.mutual.clustering_task",
    "fedtwin.actors.incremental.trainer",
    "fedtwin.actors.transfer.trainer",
    "fedtwin.actors.placement",
)


def test_in_process_backend_and_plain_actor_classes_import_without_ray():
    code = f"import sys\nfor m in {PLAIN_MODULES!r}: __import__(m)\nassert 'ray' not in sys.modules, 'ray imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def _fold(ok_devices, failed_devices, round_num=1):
    fold = OrderedFold([0])
    results = [make_fit_result(d, make_state(1.0, 1.0), 2) for d in ok_devices]
    failures = [DeviceFailure(d, round_num, f"device {d} broke") for d in failed_devices]
    fold.add(HostFitResult.from_devices(0, results, failures))
    tasks = [FitTask(d, round_num, SETTINGS) for d in sorted([*ok_devices, *failed_devices])]
    return fold, tasks


def test_finish_round_applies_min_success_fraction():
    assert min_successes(10, 0.95) == 10 and min_successes(10, 0.9) == 9 and min_successes(1, 0.01) == 1
    fold, tasks = _fold(range(9), [9])
    assert len(finish_round(fold, make_state(0.0, 0.0), tasks, 0.9).results) == 9
    fold, tasks = _fold(range(9), [9])
    with pytest.raises(RoundFailedError, match=r"round 1: only 9/10 devices succeeded.*device 9 broke"):
        finish_round(fold, make_state(0.0, 0.0), tasks, 0.95)
    fold, tasks = _fold([], [3, 4], round_num=7)
    with pytest.raises(RoundFailedError, match=r"round 7: only 0/2 devices succeeded.*device 3 broke"):
        finish_round(fold, make_state(0.0, 0.0), tasks, 0.5)


def test_round_settings_decay_the_learning_rate(tmp_path):
    spec = tiny_spec(tmp_path, tmp_path, **{"training.lr_decay": 0.5, "training.max_steps": 3})
    first, third = round_settings(spec, 1), round_settings(spec, 3)
    assert first == TrainSettings(epochs=2, batch_size=16, lr=0.003, optimizer="adam", max_steps=3)
    assert third.lr == 0.003 * 0.5**2 and third.epochs == 2


def test_local_backend_raises_below_the_threshold_and_folds_above_it(tiny_data_root, tmp_path):
    # Prepare: device 3 always fails; 10 devices on 2 in-process hosts, one step each
    overrides = {"resources.backend": "local", "training": {"epochs": 1, "batch_size": 16, "max_steps": 1}}
    strict = tiny_spec(tiny_data_root, tmp_path, **overrides, **{"federation.min_success_fraction": 0.95})
    lenient = tiny_spec(tiny_data_root, tmp_path, **overrides, **{"federation.min_success_fraction": 0.9})
    partition = str(ensure_partition(strict.data))
    state = state_from_model(build_model(strict.model, seed=strict.seed))
    strategy = FedAvg(FedAvg.parse_params({}), num_devices=10, devices_per_round=10)
    tasks = strategy.configure_fit(1, list(range(10)), round_settings(strict, 1))
    # Execute / Assert: a drill makes device 3 fail (the hook reaches the in-process hosts too)
    with installed(DrillPlan(fail_devices=(3,))):
        backend = LocalBackend(strict, partition, 10, 2)
        lenient_backend = LocalBackend(lenient, partition, 10, 2)
    assert isinstance(backend, Backend) and backend.host_of(3) == 1
    with pytest.raises(RoundFailedError, match=r"round 1: only 9/10 devices succeeded.*injected failure"):
        backend.fit(state, tasks, timeout_s=60.0)
    outcome = lenient_backend.fit(state, tasks, timeout_s=60.0)
    assert [f.device_id for f in outcome.failures] == [3] and len(outcome.results) == 9
    assert outcome.num_examples == sum(r.num_examples for r in outcome.results)
    assert np.isfinite(outcome.mean_state["head.weight"]).all()


def test_idle_clock_measures_each_hosts_gap_between_rounds_on_its_own_clock():
    from fedtwin.orchestrator.recipes.federated.backend_common import IdleClock

    clock = IdleClock()
    for host, (start, end) in enumerate([(0.0, 10.0), (0.0, 12.0)]):
        clock.note(HostFitResult(host, (), (), None, 0, started=start, finished=end))
    assert clock.take() == {}  # the first round has no gap
    for host, start in enumerate([12.5, 12.25]):
        clock.note(HostFitResult(host, (), (), None, 0, started=start, finished=start + 5))
    assert clock.take() == {"host_idle_s": 1.375, "host_idle_min_s": 0.25, "host_idle_max_s": 2.5, "host_busy_s": 10.0}
    assert clock.take() == {}


def test_one_round_path_dispatching_ahead_gives_the_same_rounds_in_process(tiny_data_root, tmp_path):
    # Prepare: the same three FedAvg rounds, once one by one and once with each next round dispatched
    # before the last one's evaluation (what the recipe does between checkpoints)
    spec = tiny_spec(
        tiny_data_root,
        tmp_path,
        **{"resources.backend": "local", "training": {"epochs": 1, "batch_size": 16, "max_steps": 2}},
    )
    partition = str(ensure_partition(spec.data))

    def three_rounds(ahead):
        backend = LocalBackend(spec, partition, 10, 2)
        strategy = FedAvg(FedAvg.parse_params({}), num_devices=10, devices_per_round=10)
        state, started, records = state_from_model(build_model(spec.model, seed=spec.seed)), None, []
        for n in (1, 2, 3):
            result = run_round(spec, strategy, backend, state, n, started=started, ahead=ahead and n < 3)
            assert isinstance(result, RoundResult)
            assert (result.following is not None) == (ahead and n < 3)
            state, started = result.state, result.following
            records.append(result.record)
        return state, records

    # Execute
    plain, plain_records = three_rounds(False)
    ahead, ahead_records = three_rounds(True)
    # Assert: bit-identical weights and scores; every record says all hosts were live
    for key in plain:
        np.testing.assert_array_equal(plain[key], ahead[key])
    assert [r["test_accuracy"] for r in plain_records] == [r["test_accuracy"] for r in ahead_records]
    assert all(r["hosts_live"] == 2 and r["device_retries"] == 0 for r in plain_records + ahead_records)
