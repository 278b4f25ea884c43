"""FedDU strategy math against hand-computed values (no Ray, no model); FedDUM is in test_feddum.py.

A fake server stands in for the server node: it scores states with a fixed accuracy and loss (or a
callable) and its "server pass" returns a constant state, so every expected weight is arithmetic.
Setting used throughout (K = 4 classes):

- all device data uniform, P = (1/4, 1/4, 1/4, 1/4);
- D0 = 10 + 10 examples of classes 0 and 1 (n0 = 20), P0 = (1/2, 1/2, 0, 0);
- selected devices report (30, 0, 0, 0) and (0, 10, 0, 0): n'_t = 40, P'_t = (3/4, 1/4, 0, 0).

By hand (log base 2, M the mid-point):
- D(P0) = 0.5*log2(4/3) + 0.5*(0.5*log2(2/3) + 0.5*1) = 0.311278;
- D(P'_t) = 0.5*(0.75*log2(1.5)) + 0.5*(-0.25 + 0.5) = 0.344361;
- ratio = 20*0.344361 / (20*0.344361 + 40*0.311278) = 0.356143.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.recipes.federated.strategies import STRATEGIES, FedDU, StrategyContext
from fedtwin.orchestrator.recipes.federated.strategies.feddu import feddu_alpha, should_revert
from fedtwin.pipelines.data.heterogeneity import js_divergence
from fedtwin.pipelines.federated.aggregate import aggregate_results
from fedtwin.pipelines.federated.messages import FitResult, ServerPassResult
from fedtwin.pipelines.model.settings import TrainSettings
from tests.fakes import make_state

D_SERVER = 0.311278
D_SELECTED = 0.344361
RATIO = 0.356143
TRAIN = TrainSettings(epochs=2, batch_size=8, lr=0.1, optimizer="sgd")


class FakeServer:
    """Scores every state with ``score(state) -> (accuracy, loss)``; the pass returns w=10, b=20 (or
    ``pass_state``) and the optimizer buffers ``buffer``."""

    def __init__(self, accuracy=0.25, loss=1.0, score=None, buffer=None, pass_state=None):
        self.score = score or (lambda state: (accuracy, loss))
        self.buffer = buffer or {}
        self.pass_state = pass_state
        self.evaluated = []
        self.passes = []

    def evaluate(self, state):
        self.evaluated.append(state)
        acc, loss = self.score(state)
        return {"accuracy": acc, "loss": loss}

    def server_pass(self, state, settings, *, round_num, optimizer_state=None):
        self.passes.append({"settings": settings, "round_num": round_num, "optimizer_state": optimizer_state})
        state = make_state(10.0, 20.0) if self.pass_state is None else dict(self.pass_state)
        return ServerPassResult(state, 6, 0.5, dict(self.buffer))


def make_feddu(server, server_hist=(10, 10, 0, 0), global_hist=(100, 100, 100, 100), **params):
    context = StrategyContext(4, np.array(global_hist), np.array(server_hist), server)
    return FedDU(FedDU.parse_params(params), num_devices=10, devices_per_round=2, context=context)


def round_fit(w=1.0, hists=((30, 0, 0, 0), (0, 10, 0, 0)), extras=None):
    """Two devices whose weights are all ``w`` (so the FedAvg mean is ``w``) and the given histograms."""
    current = make_state(0.0, 0.0)
    results = [
        FitResult(i, int(sum(h)), np.array(h), {"train_loss": 1.0}, make_state(w, w), extras or {})
        for i, h in enumerate(hists)
    ]
    return current, aggregate_results(results, current)


def run_round(strategy, round_num, w=1.0, **kwargs):
    strategy.configure_fit(round_num, [0, 1], TRAIN)
    current, fit = round_fit(w, **kwargs)
    return strategy.aggregate_fit(round_num, current, fit)


def test_js_known_values():
    # identical = 0, disjoint supports = 1 (base 2), and the two divergences of the module setting
    assert js_divergence(np.array([0.2, 0.8]), np.array([0.2, 0.8])) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    uniform = np.full(4, 0.25)
    assert js_divergence(np.array([0.5, 0.5, 0, 0]), uniform) == pytest.approx(D_SERVER, abs=1e-6)
    assert js_divergence(np.array([0.75, 0.25, 0, 0]), uniform) == pytest.approx(D_SELECTED, abs=1e-6)


def test_alpha_formula_by_hand():
    # round 3 (t = 2), decay 0.9, acc 0.25: 0.81 * 0.75 * ratio
    alpha = feddu_alpha(
        acc=0.25, round_index=2, n0=20, n_selected=40, js_selected=D_SELECTED, js_server=D_SERVER, C=1.0, decay=0.9
    )
    assert alpha == pytest.approx(0.81 * 0.75 * RATIO, abs=1e-6)
    assert alpha == pytest.approx(0.216357, abs=1e-6)


def test_feddu_round_interpolates_towards_the_server_pass_and_logs_everything():
    # Prepare
    server = FakeServer(accuracy=0.25, loss=1.0)
    strategy = make_feddu(server, decay=0.9)
    # Execute: round 3, FedAvg mean w = b = 1
    new, metrics = run_round(strategy, 3, w=1.0)
    # Assert: w = 1 + alpha (10 - 1), b = 1 + alpha (20 - 1)
    alpha = 0.81 * 0.75 * RATIO
    np.testing.assert_allclose(new["w"], 1.0 + alpha * 9.0, rtol=1e-5)
    np.testing.assert_allclose(new["b"], 1.0 + alpha * 19.0, rtol=1e-5)
    assert int(new["count"]) == 7
    assert metrics["alpha_t"] == pytest.approx(alpha, abs=1e-6)
    assert metrics["acc_t"] == 0.25 and metrics["n_selected"] == 40 and metrics["n0"] == 20
    assert metrics["js_selected"] == pytest.approx(D_SELECTED, abs=1e-6)
    assert metrics["js_server"] == pytest.approx(D_SERVER, abs=1e-6)
    assert metrics["tau0"] == 6  # ceil(20 / 8) * 2
    assert metrics["tau_eff"] == pytest.approx(6 * alpha, abs=1e-5)
    assert metrics["tau_avg_dev"] == pytest.approx(40 * 2 / (2 * 8))  # n'_t E / (m B)
    assert metrics["skipped"] is False and metrics["reverted"] is False
    # the pass used the round's device settings, plain SGD
    assert server.passes == [{"settings": TRAIN, "round_num": 3, "optimizer_state": None}]
    # with device SGD momentum in the round's settings, the pass uses it too (fresh buffer), but never
    # the devices' weight decay or step cap
    strategy.configure_fit(4, [0, 1], replace(TRAIN, momentum=0.5, weight_decay=0.1, max_steps=3))
    strategy.aggregate_fit(4, *round_fit(1.0))
    assert server.passes[-1]["settings"] == replace(TRAIN, momentum=0.5)
    assert server.passes[-1]["optimizer_state"] is None


def test_server_pass_settings_come_from_params_when_given():
    server = FakeServer()
    strategy = make_feddu(server, server_epochs=3, server_batch_size=5, server_lr=0.01)
    _, metrics = run_round(strategy, 1)
    assert server.passes[0]["settings"] == TrainSettings(epochs=3, batch_size=5, lr=0.01, optimizer="sgd")
    assert metrics["tau0"] == 12  # ceil(20 / 5) * 3


def test_alpha_falls_as_accuracy_rises_and_as_rounds_pass():
    by_acc = [
        feddu_alpha(acc=a, round_index=0, n0=20, n_selected=40, js_selected=D_SELECTED, js_server=D_SERVER)
        for a in (0.0, 0.3, 0.6, 0.9)
    ]
    by_round = [
        feddu_alpha(
            acc=0.5, round_index=t, n0=20, n_selected=40, js_selected=D_SELECTED, js_server=D_SERVER, decay=0.99
        )
        for t in (0, 10, 50, 200)
    ]
    assert all(a > b for a, b in zip(by_acc, by_acc[1:]))
    assert all(a > b for a, b in zip(by_round, by_round[1:]))
    assert by_round[1] == pytest.approx(by_round[0] * 0.99**10)


def test_more_skewed_devices_or_more_server_data_raise_alpha():
    base = dict(acc=0.5, round_index=0, n_selected=40, js_server=D_SERVER)
    assert feddu_alpha(n0=20, js_selected=0.6, **base) > feddu_alpha(n0=20, js_selected=0.3, **base)
    assert feddu_alpha(n0=80, js_selected=0.3, **base) > feddu_alpha(n0=20, js_selected=0.3, **base)


def test_skip_when_alpha_is_tiny_keeps_fedavg_and_runs_no_pass():
    server = FakeServer(accuracy=0.9995)  # alpha = 0.0005 * ratio < 1e-3
    strategy = make_feddu(server)
    new, metrics = run_round(strategy, 1, w=2.0)
    np.testing.assert_array_equal(new["w"], np.full((2, 3), 2.0, dtype=np.float32))
    assert server.passes == []
    assert metrics["skipped"] is True and metrics["tau_eff"] == 0.0 and metrics["alpha_applied"] == 0.0


def test_alpha_is_clipped_to_alpha_max():
    # devices skewed, server IID (D(P0) = 0): ratio 1; C = 10, acc 0 -> 10, clipped to 0.5
    server = FakeServer(accuracy=0.0)
    strategy = make_feddu(server, server_hist=(5, 5, 5, 5), C=10.0, alpha_max=0.5)
    new, metrics = run_round(strategy, 1, w=0.0)
    assert metrics["alpha_t"] == 0.5 and metrics["js_server"] == 0.0
    np.testing.assert_allclose(new["w"], 5.0)  # 0 + 0.5 * (10 - 0)


def test_revert_when_d0_loss_more_than_triples():
    # loss 1.0 before (state w=1), 3.5 after the update -> reverted to w_half
    server = FakeServer(score=lambda s: (0.0, 1.0 if float(s["w"][0, 0]) == 1.0 else 3.5))
    strategy = make_feddu(server)
    new, metrics = run_round(strategy, 1, w=1.0)
    np.testing.assert_array_equal(new["w"], np.ones((2, 3), dtype=np.float32))
    assert metrics["reverted"] is True and metrics["server_loss_after"] == 3.5 and metrics["tau_eff"] == 0.0
    # exactly 3x is kept, and with the guard off nothing is reverted
    server3 = FakeServer(score=lambda s: (0.0, 1.0 if float(s["w"][0, 0]) == 1.0 else 3.0))
    assert run_round(make_feddu(server3), 1)[1]["reverted"] is False
    assert run_round(make_feddu(server, revert_factor=None), 1)[1]["reverted"] is False


def test_a_non_finite_d0_loss_after_the_update_reverts():
    # Prepare: the server pass returns NaN weights, whose D0 loss is NaN (NaN > 3 * 1.0 is False)
    server = FakeServer(
        score=lambda s: (0.0, float(np.mean(s["w"])) if np.isnan(s["w"]).any() else 1.0),
        pass_state=make_state(np.nan, 0.0),
    )
    # Execute
    new, metrics = run_round(make_feddu(server, fixed_alpha=0.5), 1, w=1.0)
    # Assert: w_half is kept
    np.testing.assert_array_equal(new["w"], np.ones((2, 3), dtype=np.float32))
    assert metrics["reverted"] is True and np.isnan(metrics["server_loss_after"]) and metrics["alpha_applied"] == 0.0
    # an infinite loss reverts too; a NaN loss *before* the update cannot bound a finite one after it
    assert should_revert(float("inf"), 1.0, 3.0) and not should_revert(2.0, float("nan"), 3.0)
    assert should_revert(float("nan"), float("nan"), 3.0)


def test_iid_devices_and_iid_server_fall_back_to_size_ratio():
    # both divergences 0: ratio n0 / (n0 + n'_t) = 20 / 60; acc 0.4, round 1 -> 0.6 / 3
    server = FakeServer(accuracy=0.4)
    strategy = make_feddu(server, server_hist=(5, 5, 5, 5))
    _, metrics = run_round(strategy, 1, hists=((10, 10, 10, 10),))
    assert metrics["js_selected"] == 0.0 and metrics["js_server"] == 0.0
    assert metrics["alpha_t"] == pytest.approx(0.6 * 20 / 60)


def test_js_reference_uniform_differs_from_global():
    # with P = (0.4, 0.4, 0.1, 0.1) the server's (0.5, 0.5, 0, 0) is closer to P than to uniform
    server = FakeServer()
    uniform = make_feddu(server, global_hist=(40, 40, 10, 10), js_reference="uniform")
    glob = make_feddu(server, global_hist=(40, 40, 10, 10))
    assert uniform.js_server == pytest.approx(D_SERVER, abs=1e-6)
    assert glob.js_server == pytest.approx(
        float(js_divergence(np.array([0.5, 0.5, 0, 0]), np.array([0.4, 0.4, 0.1, 0.1])))
    )
    assert glob.js_server < uniform.js_server


def test_naive_full_server_pass_takes_the_server_state():
    server = FakeServer(accuracy=0.99)  # the schedule would skip; the naive baseline never does
    strategy = make_feddu(server, fixed_alpha=1.0)
    new, metrics = run_round(strategy, 5, w=1.0)
    np.testing.assert_allclose(new["w"], 10.0)
    np.testing.assert_allclose(new["b"], 20.0)
    assert metrics["alpha_t"] == 1.0 and metrics["tau_eff"] == 6.0


def test_feddu_needs_server_data_and_is_registered():
    assert STRATEGIES["feddu"] is FedDU and FedDU.needs_server
    assert "momentum" not in FedDU.parse_params({}).__dataclass_fields__  # FedDUM's keys are FedDUM's
    with pytest.raises(ValueError, match="shared_fraction"):
        make_feddu(FakeServer(), server_hist=(0, 0, 0, 0))
    with pytest.raises(ConfigError, match=r"strategy.params.decay"):
        FedDU.parse_params({"decay": 1.5})
    with pytest.raises(ConfigError, match=r"strategy.params.js_reference"):
        FedDU.parse_params({"js_reference": "local"})
