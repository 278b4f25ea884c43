"""SCAFFOLD in-process, without Ray: on a heterogeneous least-squares problem FedAvg settles at a biased
fixed point and SCAFFOLD at the global optimum; the control variates add up as the paper says.

Each device runs the host's SCAFFOLD step (the same helpers ``DeviceHost`` calls: the correction
``c - c_i``, the one training loop with the mean gradient, ``c_i+ - c_i``) and the strategy folds them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.recipes.federated.strategies import FedAvg, FedProx, Scaffold, StrategyContext
from fedtwin.pipelines.federated.aggregate import aggregate_results
from fedtwin.pipelines.federated.control_variates import CONTROL_KEY, DELTA_KEY, change, correction
from fedtwin.pipelines.federated.messages import FitResult
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.training import local_train

DIM = 3


def _problem(sizes, seed=0):
    """Devices with different curvatures and different optima: f_i(w) = mean_j (a_j . w - b_j)^2."""
    rng = np.random.default_rng(seed)
    devices = []
    for i, m in enumerate(sizes):
        scale = np.diag([1.0 + i, 1.0, 0.5 + 0.5 * i])  # heterogeneous curvature
        a = rng.normal(size=(m, DIM)) @ scale
        w_i = rng.normal(size=DIM) * 2 + i  # heterogeneous optima
        b = a @ w_i
        devices.append((a.astype(np.float32), b.astype(np.float32)))
    # Global objective sum_i (n_i / n) f_i: gradient sum_i (n_i/n) (2/n_i) A_i^T (A_i w - b_i)
    n = sum(sizes)
    hess = sum(2.0 / n * a.astype(np.float64).T @ a for a, _ in devices)
    rhs = sum(2.0 / n * a.astype(np.float64).T @ b for a, b in devices)
    return devices, hess, np.linalg.solve(hess, rhs)


def _mse(model, x, y):
    return ((model(x).squeeze(1) - y) ** 2).mean(), {}


def _train(w, data, settings, grad_correction=None, scaffold=False):
    model = nn.Linear(DIM, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(w["weight"]))
    result = local_train(
        model,
        (torch.from_numpy(data[0]), torch.from_numpy(data[1])),
        settings,
        generator=torch.Generator().manual_seed(0),
        loss_fn=_mse,
        grad_correction=grad_correction,
        return_mean_gradient=scaffold,
    )
    return {"weight": model.weight.detach().numpy().copy()}, result


def _run(strategy, devices, rounds, per_round, seed=0, controls=None):
    """``rounds`` rounds; returns the final weights and every device's c_i (the hosts' device state)."""
    rng = np.random.default_rng(seed)
    state = {"weight": np.zeros((1, DIM), dtype=np.float32)}
    controls = {} if controls is None else controls
    for round_num in range(1, rounds + 1):
        ids = sorted(rng.choice(len(devices), size=per_round, replace=False)) if per_round < len(devices) else None
        tasks = strategy.configure_fit(round_num, ids if ids is not None else range(len(devices)), SETTINGS)
        payload = strategy.round_payload(round_num)
        results = []
        for task in tasks:
            settings, d = task.settings, task.device_id
            extras = {}
            if settings.control_variates:
                c_i = controls.get(d, {})
                weights, train = _train(
                    state, devices[d], settings, correction(payload.get(CONTROL_KEY, {}), c_i), True
                )
                extras[DELTA_KEY] = change(train.mean_gradient, c_i)
                controls[d] = train.mean_gradient
            else:
                weights, train = _train(state, devices[d], settings)
            n = len(devices[d][1])
            results.append(FitResult(d, n, np.array([n]), {}, weights, extras))
        state, _ = strategy.aggregate_fit(round_num, state, aggregate_results(results, state))
    return state, controls


# Full-batch gradient descent: K = 10 local steps of lr 0.02 (each epoch is one batch of all the data)
SETTINGS = TrainSettings(epochs=10, batch_size=1000, lr=0.02)


def _make(cls, sizes, **params):
    hist = np.array([sum(sizes)])
    context = StrategyContext(num_classes=1, global_label_histogram=hist)
    return cls(cls.parse_params(params), num_devices=len(sizes), devices_per_round=len(sizes), context=context)


def test_scaffold_reaches_the_global_optimum_where_fedavg_is_biased():
    # Prepare: four equal-sized devices, full participation
    sizes = [40, 40, 40, 40]
    devices, hess, w_star = _problem(sizes)
    # Tolerance: for this quadratic ||w - w*|| <= ||grad F(w)|| / lambda_min(H) exactly. In float32 the
    # iteration stalls where the rounding of one round's arithmetic (relative eps = 6e-8 on terms of size
    # ||H|| ||w*||, accumulated over K = 10 steps and 4 devices: a factor of about 40) balances the
    # gradient, so ||w - w*|| <= 40 eps kappa(H) ||w*||.
    eig = np.linalg.eigvalsh(hess)
    tol = 40 * np.finfo(np.float32).eps * (eig[-1] / eig[0]) * np.linalg.norm(w_star)
    # Execute
    fedavg, _ = _run(_make(FedAvg, sizes), devices, rounds=60, per_round=4)
    scaffold, controls = _run(_make(Scaffold, sizes), devices, rounds=60, per_round=4)
    # Assert: FedAvg's fixed point is biased by far more than the tolerance; SCAFFOLD is within it
    fedavg_err = np.linalg.norm(fedavg["weight"][0] - w_star)
    scaffold_err = np.linalg.norm(scaffold["weight"][0] - w_star)
    assert tol < 1e-3
    assert fedavg_err > 100 * tol, (fedavg_err, tol)
    assert scaffold_err <= tol, (scaffold_err, tol)
    # Assert: at the optimum each c_i is device i's gradient there and they cancel (c = mean c_i = 0)
    for d, (a, b) in enumerate(devices):
        grad = 2.0 / len(b) * a.astype(np.float64).T @ (a @ w_star - b)
        np.testing.assert_allclose(controls[d]["weight"][0], grad, atol=1e-3)


def test_server_control_variate_is_the_example_weighted_sum_of_the_device_ones():
    # Prepare: unequal devices, two of four per round; c must equal sum_i (n_i / n) c_i every round
    # (the paper's c = mean_i c_i for equal sizes), devices that never trained counting as c_i = 0
    sizes = [10, 30, 20, 40]
    devices, _, _ = _problem(sizes, seed=1)
    strategy = _make(Scaffold, sizes)
    controls: dict = {}
    for round_num in range(1, 6):
        # Execute: one round at a time, continuing from the previous state
        strategy.devices_per_round = 2
        _run_one = _run(strategy, devices, rounds=1, per_round=2, seed=round_num, controls=controls)
        del _run_one
        # Assert
        expected = sum(sizes[d] / sum(sizes) * c["weight"].astype(np.float64) for d, c in controls.items())
        np.testing.assert_allclose(strategy.control["weight"], expected, rtol=1e-5, atol=1e-7)
    assert len(controls) >= 3


def test_first_round_payload_is_empty_and_state_round_trips():
    sizes = [10, 10]
    devices, _, _ = _problem(sizes)
    strategy = _make(Scaffold, sizes)
    assert strategy.round_payload(1) == {}
    _run(strategy, devices, rounds=2, per_round=2)
    payload = strategy.round_payload(3)[CONTROL_KEY]
    assert payload["weight"].dtype == np.float32
    other = _make(Scaffold, sizes)
    other.load_state_dict(strategy.state_dict())
    np.testing.assert_array_equal(other.control["weight"], strategy.control["weight"])
    assert list(strategy.state_dict()) == ["control/weight"]


def test_fedprox_sets_mu_in_the_round_settings_and_validates_it():
    strategy = _make(FedProx, [10], mu=0.1)
    (task,) = strategy.configure_fit(1, [0], SETTINGS)
    assert task.settings.prox_mu == 0.1 and SETTINGS.prox_mu == 0.0
    assert FedProx.parse_params({}).mu == 0.01
    with pytest.raises(ConfigError, match=r"strategy.params.mu"):
        FedProx.parse_params({"mu": -1})
