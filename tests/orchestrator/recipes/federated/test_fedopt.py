"""FedAdam, FedYogi and FedAdagrad: server math against hand-computed values on tiny arrays, the
reduction of FedAdam to FedAvg, and the moments checkpointed and restored bit for bit (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.recipes.federated.strategies import STRATEGIES, FedAdagrad, FedAdam, FedYogi
from fedtwin.pipelines.federated.aggregate import aggregate_results
from tests.fakes import make_fit_result, make_state

PARAMS = {"server_lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}


def _strategy(cls, **params):
    return cls(cls.parse_params(params), num_devices=1, devices_per_round=1)


def _step(strategy, current, mean_w, mean_b):
    fit = aggregate_results([make_fit_result(0, make_state(mean_w, mean_b), 4)], current)
    return strategy.aggregate_fit(1, current, fit)


# Two rounds from w = 0 with pseudo-gradients 1 (round 1) and 0.5 (round 2); v_{-1} = tau^2 = 1e-6.
#   m_1 = 0.1,                  m_2 = 0.9 * 0.1 + 0.1 * 0.5 = 0.14
#   Adam:    v_1 = 0.99e-6 + 0.01 = 0.01000099          v_2 = 0.99 * v_1 + 0.01 * 0.25 = 0.0124009801
#   Yogi:    v_1 = 1e-6 + 0.01 (v < 1)  = 0.010001      v_2 = v_1 + 0.01 * 0.25 (v < 0.25) = 0.012501
#   Adagrad: v_1 = 1e-6 + 1 = 1.000001                  v_2 = 1.250001
#   w_1 = 0.1 * 0.1 / (sqrt(v_1) + 1e-3);  w_2 = w_1 + 0.1 * 0.14 / (sqrt(v_2) + 1e-3)
@pytest.mark.parametrize(
    ("cls", "v1", "v2"),
    [
        (FedAdam, 0.01000099, 0.0124009801),
        (FedYogi, 0.010001, 0.012501),
        (FedAdagrad, 1.000001, 1.250001),
    ],
)
def test_two_server_steps_match_hand_computation(cls, v1, v2):
    strategy = _strategy(cls, **PARAMS)
    s0 = make_state(0.0, 0.0)
    # Execute
    s1, metrics = _step(strategy, s0, 1.0, 1.0)
    w1 = float(s1["w"][0, 0])
    s2, _ = _step(strategy, s1, w1 + 0.5, w1 + 0.5)
    # Assert
    expected_w1 = 0.01 / (np.sqrt(v1) + 1e-3)
    assert w1 == pytest.approx(expected_w1, rel=1e-6)
    np.testing.assert_allclose(strategy.v["w"], v2, rtol=1e-6)
    np.testing.assert_allclose(strategy.m["b"], 0.14, rtol=1e-6)
    np.testing.assert_allclose(s2["w"], w1 + 0.014 / (np.sqrt(v2) + 1e-3), rtol=1e-6)
    assert int(s2["count"]) == 7  # integer buffers come from the mean
    assert metrics["pseudo_grad_norm"] == pytest.approx(3.0)  # nine entries of 1


def test_yogi_shrinks_v_by_a_step_proportional_to_the_squared_pseudo_gradient():
    # v_{t-1} = 4 > Delta^2 = 1: Yogi lowers v by (1 - beta2) * 1 = 0.5 (beta2 0.5), Adam by 0.5 * (4 - 1) = 1.5
    v = np.array([4.0])
    assert FedYogi.second_moment(v, np.array([1.0]), 0.5)[0] == pytest.approx(3.5)
    assert FedAdam.second_moment(v, np.array([1.0]), 0.5)[0] == pytest.approx(2.5)


def test_fedadam_with_beta1_0_beta2_0_and_large_tau_is_fedavg():
    # With beta1 = beta2 = 0 the step is server_lr * Delta / (|Delta| + tau); server_lr = tau gives
    # Delta * tau / (|Delta| + tau) = Delta - Delta |Delta| / (|Delta| + tau): FedAvg's Delta, off by at most
    # Delta^2 / tau per entry (1e-5 for |Delta| <= 0.1 and tau = 1000), plus float32 rounding of w.
    tau = 1000.0
    strategy = _strategy(FedAdam, server_lr=tau, beta1=0.0, beta2=0.0, tau=tau)
    rng = np.random.default_rng(0)
    current = make_state(0.3, -0.2)
    for round_num in range(1, 4):
        mean = {k: (v + rng.uniform(-0.1, 0.1, v.shape)).astype(v.dtype) for k, v in current.items() if k != "count"}
        mean["count"] = current["count"]
        fit = aggregate_results([make_fit_result(0, mean, 3)], current)
        # Execute
        new, _ = strategy.aggregate_fit(round_num, current, fit)
        # Assert
        for key in ("w", "b"):
            delta = mean[key].astype(np.float64) - current[key]
            bound = delta**2 / tau + 1e-7
            assert np.all(np.abs(new[key] - mean[key]) <= bound), key
        current = new


def test_moments_round_trip_through_state_dict_bit_for_bit():
    a = _strategy(FedYogi, **PARAMS)
    s0 = make_state(0.0, 0.0)
    s1, _ = _step(a, s0, 1.0, -1.0)
    b = _strategy(FedYogi, **PARAMS)
    b.load_state_dict(a.state_dict())
    # Execute: one more identical round on both
    s2a, _ = _step(a, s1, 0.3, 0.7)
    s2b, _ = _step(b, s1, 0.3, 0.7)
    # Assert
    assert sorted(a.state_dict()) == ["m/b", "m/w", "v/b", "v/w"]
    for key in s2a:
        np.testing.assert_array_equal(s2a[key], s2b[key])


def test_registered_and_params_validated_with_dotted_path():
    assert {"fedadam", "fedyogi", "fedadagrad"} <= set(STRATEGIES)
    defaults = FedAdam.parse_params({})
    assert (defaults.beta1, defaults.beta2, defaults.tau) == (0.9, 0.99, 1e-3)
    with pytest.raises(ConfigError, match=r"strategy.params.*beta2"):
        FedAdam.parse_params({"beta2": 1.0})
    with pytest.raises(ConfigError, match=r"strategy.params.tau"):
        FedYogi.parse_params({"tau": 0})
