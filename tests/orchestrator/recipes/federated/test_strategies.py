"""FedAvg / FedAvgM against hand-computed weighted means (no Ray)."""

import numpy as np
import pytest

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.recipes.federated.strategies import FedAvg, FedAvgM
from fedtwin.pipelines.federated.aggregate import OrderedFold, aggregate_results
from fedtwin.pipelines.federated.messages import HostFitResult
from tests.fakes import make_fit_result, make_state


def test_fedavg_is_example_weighted_mean():
    # Prepare: w = 1 with 1 example, w = 4 with 2 examples -> (1*1 + 4*2) / 3 = 3
    current = make_state(0.0, 0.0)
    results = [make_fit_result(0, make_state(1.0, 10.0), 1), make_fit_result(1, make_state(4.0, 40.0), 2)]
    strategy = FedAvg(FedAvg.parse_params({}), num_devices=2, devices_per_round=2)
    # Execute
    new, _ = strategy.aggregate_fit(1, current, aggregate_results(results, current))
    # Assert
    np.testing.assert_allclose(new["w"], (1 * 1 + 4 * 2) / 3)
    np.testing.assert_allclose(new["b"], (10 * 1 + 40 * 2) / 3)
    assert new["w"].dtype == np.float32
    assert int(new["count"]) == 7  # integer buffers are carried, not averaged


def test_fedavg_server_lr_interpolates():
    current = make_state(2.0, 0.0)
    results = [make_fit_result(0, make_state(4.0, 1.0), 5)]
    strategy = FedAvg(FedAvg.parse_params({"server_lr": 0.5}), num_devices=1, devices_per_round=1)
    new, _ = strategy.aggregate_fit(1, current, aggregate_results(results, current))
    np.testing.assert_allclose(new["w"], 2.0 + 0.5 * (4.0 - 2.0))
    np.testing.assert_allclose(new["b"], 0.5)


def test_fedavgm_momentum_two_rounds():
    # Prepare: beta 0.5, lr 1. Round 1: mean 1 from 0 -> g = -1, v = -1, w = 1.
    # Round 2: mean 3 from 1 -> g = -2, v = 0.5*-1 + -2 = -2.5, w = 1 + 2.5 = 3.5.
    strategy = FedAvgM(FedAvgM.parse_params({"server_momentum": 0.5}), num_devices=1, devices_per_round=1)
    s0 = make_state(0.0, 0.0)
    s1, _ = strategy.aggregate_fit(1, s0, aggregate_results([make_fit_result(0, make_state(1.0, 0.0), 3)], s0))
    s2, metrics = strategy.aggregate_fit(2, s1, aggregate_results([make_fit_result(0, make_state(3.0, 0.0), 3)], s1))
    np.testing.assert_allclose(s1["w"], 1.0)
    np.testing.assert_allclose(s2["w"], 3.5)
    assert metrics["server_velocity_norm"] == pytest.approx(2.5 * np.sqrt(6))


def test_fedavgm_state_round_trip():
    strategy = FedAvgM(FedAvgM.parse_params({}), num_devices=1, devices_per_round=1)
    s0 = make_state(0.0, 0.0)
    strategy.aggregate_fit(1, s0, aggregate_results([make_fit_result(0, make_state(1.0, 2.0), 1)], s0))
    other = FedAvgM(FedAvgM.parse_params({}), num_devices=1, devices_per_round=1)
    other.load_state_dict(strategy.state_dict())
    for key, value in strategy.velocity.items():
        np.testing.assert_array_equal(other.velocity[key], value)


def test_params_are_validated_with_dotted_path():
    with pytest.raises(ConfigError, match=r"strategy.params.server_momentum"):
        FedAvgM.parse_params({"server_momentum": 1.5})
    with pytest.raises(ConfigError, match=r"strategy.params.lr: unknown key"):
        FedAvg.parse_params({"lr": 1.0})


def test_ordered_fold_is_bitwise_independent_of_arrival_order():
    # Prepare: three hosts with awkward float values
    rng = np.random.default_rng(0)
    hosts = []
    for h in range(3):
        results = [
            make_fit_result(10 * h + i, make_state(*rng.normal(size=2)), int(rng.integers(1, 50))) for i in range(3)
        ]
        hosts.append(HostFitResult.from_devices(h, results))
    template = make_state(0.0, 0.0)
    # Execute: fold in order and in reverse order
    in_order, reverse = OrderedFold([0, 1, 2]), OrderedFold([0, 1, 2])
    for h in hosts:
        in_order.add(h)
    for h in reversed(hosts):
        reverse.add(h)
    a, b = in_order.finish(template), reverse.finish(template)
    # Assert
    for key in a.mean_state:
        np.testing.assert_array_equal(a.mean_state[key], b.mean_state[key])
    assert a.num_examples == b.num_examples == sum(r.num_examples for h in hosts for r in h.results)
    assert [r.device_id for r in a.results] == sorted(r.device_id for h in hosts for r in h.results)


def test_sampling_is_reproducible_and_without_replacement():
    strategy = FedAvg(FedAvg.parse_params({}), num_devices=50, devices_per_round=10)
    a = strategy.sample_devices(3, np.random.default_rng([0, 3]))
    b = strategy.sample_devices(3, np.random.default_rng([0, 3]))
    assert a == b and len(set(a)) == 10 and all(0 <= d < 50 for d in a)
