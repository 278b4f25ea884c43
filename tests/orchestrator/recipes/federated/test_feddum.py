"""FedDUM strategy math against hand-computed values (no Ray, no model): server momentum in its three
first-round forms, the guard on the final (after-momentum) update, device and server-pass settings,
the global device buffer, checkpoint state and the old ``feddu`` + ``feddum: true`` flag (now an error naming
the new strategy).

Uses the fake server and the two-device setting of ``test_feddu.py``; ``FakeServer(accuracy=1.0)``
makes alpha 0, so the server pass is skipped and FedDU proposes the FedAvg mean.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.recipes.federated.strategies import STRATEGIES, FedDU, FedDUM, StrategyContext, strategy_class
from fedtwin.orchestrator.recipes.federated.strategies.feddum import momentum_settings
from fedtwin.pipelines.federated.aggregate import aggregate_results
from fedtwin.pipelines.federated.messages import FitResult
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.training import local_train
from tests.fakes import make_state
from tests.orchestrator.recipes.federated.test_feddu import TRAIN, FakeServer, make_feddu, run_round

ADAM = replace(TRAIN, optimizer="adam")


def make_feddum(server, server_hist=(10, 10, 0, 0), global_hist=(100, 100, 100, 100), **params):
    context = StrategyContext(4, np.array(global_hist), np.array(server_hist), server)
    return FedDUM(FedDUM.parse_params(params), num_devices=10, devices_per_round=2, context=context)


def mean_sequence(strategy, means):
    """Run rounds whose FedAvg mean is each of ``means`` (None: the current weights, Delta = 0)."""
    w, got, metrics = make_state(0.0, 0.0), [], []
    for r, mean in enumerate(means, start=1):
        mean = float(w["w"][0, 0]) if mean is None else mean
        strategy.configure_fit(r, [0], TRAIN)
        fit = aggregate_results([FitResult(0, 4, np.array([1, 1, 1, 1]), {}, make_state(mean, mean))], w)
        w, m = strategy.aggregate_fit(r, w, fit)
        got.append(float(w["w"][0, 0]))
        metrics.append(m)
    return got, metrics


def test_default_parameters():
    p = FedDUM.parse_params({})
    assert (p.momentum_init, p.device_momentum_form, p.device_momentum_init) == ("debiased", "ema", "fresh")
    assert (p.momentum, p.device_momentum) == (0.3, 0.5)
    assert p.server_sgd_momentum is None and p.revert_factor == 3.0


def test_debiased_momentum_applies_the_first_update_in_full_and_averages_later_ones():
    # beta_s 0.5. r1: Delta 1, m 0.5, scale 1/(1-0.5) = 2 -> w 1.
    # r2: 1 -> 3, Delta 2, m 0.25 + 1 = 1.25, scale 1/(1-0.25) = 4/3 -> w 1 + 5/3.
    # r3: Delta 0, m 0.625, scale 8/7 -> w + 5/7.
    got, metrics = mean_sequence(
        make_feddum(FakeServer(accuracy=1.0), momentum=0.5, device_momentum=0.0), (1.0, 3.0, None)
    )
    assert got == pytest.approx([1.0, 1.0 + 5 / 3, 1.0 + 5 / 3 + 5 / 7], rel=1e-6)
    assert [m["momentum_scale"] for m in metrics] == pytest.approx([2.0, 4 / 3, 8 / 7])
    assert metrics[-1]["server_momentum_norm"] == pytest.approx(0.625 * 3)  # 9 float entries of 0.625


def test_zero_initialised_momentum_applies_each_update_once_in_total():
    # beta_s 0.5, m_{-1} = 0: r1 mean 1 from 0: m 0.5, w 0.5. r2 Delta 0: m 0.25, w 0.75. r3: m 0.125, w 0.875
    got, _ = mean_sequence(
        make_feddum(FakeServer(accuracy=1.0), momentum=0.5, momentum_init="zero", device_momentum=0.0),
        (1.0, None, None),
    )
    assert got == pytest.approx([0.5, 0.75, 0.875])


def test_delta_initialised_momentum_is_the_reference_code():
    # m_0 = Delta_0: r1 w 1. r2: 1 -> 3: m 0.5 + 1 = 1.5, w 2.5. r3 Delta 0: m 0.75, w 3.25
    got, _ = mean_sequence(
        make_feddum(FakeServer(accuracy=1.0), momentum=0.5, momentum_init="delta", device_momentum=0.0),
        (1.0, 3.0, None),
    )
    assert got == pytest.approx([1.0, 2.5, 3.25])


@pytest.mark.parametrize("init", ["debiased", "zero", "delta"])
def test_without_momenta_feddum_is_feddu(init):
    # beta_s = 0 and beta_d = 0: m_t = Delta_t, so the global state is FedDU's (up to float32 rounding)
    plain = make_feddu(FakeServer(accuracy=0.3), decay=0.9)
    dum = make_feddum(FakeServer(accuracy=0.3), decay=0.9, momentum=0.0, momentum_init=init, device_momentum=0.0)
    for r in (1, 2, 3):
        a, _ = run_round(plain, r, w=float(r))
        b, _ = run_round(dum, r, w=float(r))
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6)
    assert dum.configure_fit(4, [0], TRAIN)[0].settings == TRAIN


def test_guard_judges_the_update_after_momentum_and_keeps_the_velocity_on_revert():
    # Prepare: beta_s 0.5 debiased, no server pass (acc 1). r1: mean 1 from 0 -> w 1 (D0 loss 1).
    # r2: mean 1 again (Delta 0) but momentum would move w to 1 + 0.25 * 4/3 = 4/3, whose D0 loss is 10.
    server = FakeServer(score=lambda s: (1.0, 1.0 if float(s["w"][0, 0]) == 1.0 else 10.0))
    strategy = make_feddum(server, momentum=0.5, device_momentum=0.0)
    got, metrics = mean_sequence(strategy, (1.0,))
    velocity = {k: v.copy() for k, v in strategy.state_dict().items()}
    # Execute
    strategy.configure_fit(2, [0], TRAIN)
    w = make_state(1.0, 1.0)
    fit = aggregate_results([FitResult(0, 4, np.ones(4), {}, make_state(1.0, 1.0))], w)
    new, m2 = strategy.aggregate_fit(2, w, fit)
    # Assert: the skipped FedDU step (w_half) passes, the momentum step is reverted to w_half, m unchanged
    assert got == [1.0] and metrics[0]["reverted"] is False
    assert m2["reverted"] is True and m2["server_loss_after"] == 10.0 and m2["alpha_applied"] == 0.0
    np.testing.assert_array_equal(new["w"], np.ones((2, 3), dtype=np.float32))
    assert strategy.momentum_updates == 1
    for key, value in velocity.items():
        np.testing.assert_array_equal(strategy.state_dict()[key], value)


def test_a_nan_candidate_is_reverted_and_leaves_the_velocity_alone():
    # Prepare: the server pass returns NaN weights; their D0 loss is NaN
    nan_loss = lambda s: (0.0, float("nan") if np.isnan(s["w"]).any() else 1.0)  # noqa: E731
    server = FakeServer(score=nan_loss, pass_state=make_state(np.nan, 0.0))
    strategy = make_feddum(server, fixed_alpha=0.5)
    # Execute
    new, metrics = run_round(strategy, 1, w=1.0)
    # Assert: w_half kept, no momentum update recorded
    np.testing.assert_array_equal(new["w"], np.ones((2, 3), dtype=np.float32))
    assert metrics["reverted"] is True and metrics["tau_eff"] == 0.0
    assert strategy.server_velocity == {} and strategy.momentum_updates == 0
    # with the guard off the NaN goes through (revert_factor: null is an explicit opt-out)
    assert np.isnan(
        run_round(make_feddum(FakeServer(pass_state=make_state(np.nan, 0.0)), fixed_alpha=0.5, revert_factor=None), 1)[
            0
        ]["w"]
    ).all()


def test_device_momentum_is_ema_form_and_starts_fresh_by_default():
    strategy = make_feddum(FakeServer(), device_momentum=0.75)
    tasks = strategy.configure_fit(1, [3, 4], TRAIN)
    # EMA form: PyTorch momentum 0.75 on lr * (1 - 0.75); fresh buffers
    assert [t.settings for t in tasks] == [replace(TRAIN, momentum=0.75, lr=TRAIN.lr * 0.25)] * 2
    assert TRAIN.momentum == 0.0  # the round's settings are not mutated
    assert strategy.round_payload(1) == {}
    classic = make_feddum(
        FakeServer(), device_momentum=0.7, device_momentum_form="classic", device_momentum_init="local"
    )
    assert classic.configure_fit(1, [3], TRAIN)[0].settings == replace(TRAIN, momentum=0.7, optimizer_start="local")
    # Adam: beta_d does not apply, its own moments are the device momentum (restarted, or kept with local)
    assert strategy.configure_fit(1, [3], ADAM)[0].settings == ADAM
    assert classic.configure_fit(1, [3], ADAM)[0].settings == replace(ADAM, optimizer_start="local")
    with pytest.raises(ConfigError, match="training.optimizer"):
        make_feddum(FakeServer(), device_momentum_init="global").configure_fit(1, [3], ADAM)


def test_ema_device_momentum_never_steps_further_than_plain_sgd():
    # Prepare: a constant gradient -1 (loss -w), so plain SGD moves lr per step: K = 12 steps of lr 0.1
    def linear(model, x, y):
        return -model.weight.sum(), {}

    data = (torch.ones(12, 1), torch.zeros(12, 1))
    plain = TrainSettings(epochs=1, batch_size=1, lr=0.1)

    def moved(beta, form):
        model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(model.weight)
        settings = replace(plain, **momentum_settings(plain.lr, beta, form))
        local_train(model, data, settings, generator=torch.Generator().manual_seed(0), loss_fn=linear)
        return model.weight.item()

    # Execute / Assert: EMA form moves lr * sum_k (1 - beta^k) (the buffer's tail is left at the end of the
    # round); classic momentum 1/(1 - beta) times that (4.7x plain SGD at beta 0.9)
    for beta in (0.5, 0.9):
        ema = 0.1 * (12 - beta * (1 - beta**12) / (1 - beta))
        assert moved(beta, "ema") == pytest.approx(ema, rel=1e-5) and ema < 1.2
        assert moved(beta, "classic") == pytest.approx(ema / (1 - beta), rel=1e-5)
    assert moved(0.5, "ema") > 0.9 * 1.2  # 11 of 12 steps at the default beta_d
    assert moved(0.0, "ema") == pytest.approx(1.2)


def test_server_pass_is_plain_sgd_unless_asked():
    # Prepare
    server = FakeServer()
    strategy = make_feddum(server, device_momentum=0.9)
    # Execute
    _, metrics = run_round(strategy, 1)
    asked = make_feddum(server, server_sgd_momentum=0.5)
    run_round(asked, 1)
    # Assert: beta_d is not inherited (tau_eff describes a plain SGD pass); an explicit momentum is EMA form
    assert server.passes[0]["settings"] == TRAIN and server.passes[0]["optimizer_state"] is None
    assert metrics["tau_eff"] == pytest.approx(metrics["alpha_applied"] * metrics["tau0"])
    assert server.passes[1]["settings"] == replace(TRAIN, momentum=0.5, lr=TRAIN.lr * 0.5)


def _two_devices_with_buffers(strategy, round_num=1):
    current = make_state(0.0, 0.0)
    results = [
        FitResult(
            0,
            30,
            np.array([30, 0, 0, 0]),
            {},
            make_state(1.0, 1.0),
            {"optimizer_state": {"momentum_buffer/w": np.full((2, 3), 1.0, dtype=np.float32)}},
        ),
        FitResult(
            1,
            10,
            np.array([0, 10, 0, 0]),
            {},
            make_state(1.0, 1.0),
            {"optimizer_state": {"momentum_buffer/w": np.full((2, 3), 3.0, dtype=np.float32)}},
        ),
    ]
    strategy.configure_fit(round_num, [0, 1], TRAIN)
    return strategy.aggregate_fit(round_num, current, aggregate_results(results, current))


def test_global_device_momentum_is_averaged_and_interpolated_when_the_pass_has_momentum():
    # devices upload buffers 1 (30 ex.) and 3 (10 ex.) -> mean 1.5; server pass buffer 4; alpha 0.5
    # -> v = 1.5 + 0.5 * (4 - 1.5) = 2.75, broadcast next round; the pass starts from v_half = 1.5
    server = FakeServer(buffer={"momentum_buffer/w": np.full((2, 3), 4.0, dtype=np.float32)})
    strategy = make_feddum(server, device_momentum_init="global", fixed_alpha=0.5, server_sgd_momentum=0.9)
    assert strategy.round_payload(1) == {"optimizer_state": {}}
    _, metrics = _two_devices_with_buffers(strategy)
    np.testing.assert_allclose(server.passes[0]["optimizer_state"]["momentum_buffer/w"], 1.5)
    assert server.passes[0]["settings"].momentum == 0.9
    np.testing.assert_allclose(strategy.round_payload(2)["optimizer_state"]["momentum_buffer/w"], 2.75)
    assert metrics["device_momentum_norm"] == pytest.approx(2.75 * np.sqrt(6))


def test_global_device_momentum_with_a_plain_server_pass_carries_the_device_mean():
    server = FakeServer(buffer={"momentum_buffer/w": np.full((2, 3), 4.0, dtype=np.float32)})
    strategy = make_feddum(server, device_momentum_init="global", fixed_alpha=0.5)
    _two_devices_with_buffers(strategy)
    assert server.passes[0]["optimizer_state"] is None
    np.testing.assert_allclose(strategy.round_payload(2)["optimizer_state"]["momentum_buffer/w"], 1.5)


def test_state_round_trip_restores_both_momenta_and_the_update_count():
    server = FakeServer(buffer={"momentum_buffer/w": np.full((2, 3), 4.0, dtype=np.float32)})
    params = dict(device_momentum_init="global", fixed_alpha=0.5, server_sgd_momentum=0.9)
    a = make_feddum(server, **params)
    _two_devices_with_buffers(a)
    b = make_feddum(server, **params)
    b.load_state_dict(a.state_dict())
    assert set(a.state_dict()) == {
        "server_momentum/w",
        "server_momentum/b",
        "device_momentum/momentum_buffer/w",
        "server_momentum_updates",
    }
    assert b.momentum_updates == 1
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[key], value)
    # Execute: the next round continues identically
    for key in (x := _two_devices_with_buffers(a, 2)[0]):
        np.testing.assert_array_equal(_two_devices_with_buffers(b, 2)[0][key], x[key])


def test_registered_and_the_old_flag_says_how_to_switch():
    assert STRATEGIES["feddum"] is FedDUM and strategy_class("feddum") is FedDUM and FedDUM.needs_server
    with pytest.raises(ConfigError, match="set strategy.name: feddum"):
        FedDU.parse_params({"feddum": True, "momentum": 0.5})
    with pytest.warns(FutureWarning):
        assert type(FedDU.parse_params({"feddum": False})).__name__ == "FedDUParams"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FedDUM.parse_params({"momentum": 0.5})  # no warning on the new name
    with pytest.raises(ConfigError, match=r"strategy.params.momentum_init"):
        FedDUM.parse_params({"momentum_init": "ones"})
    with pytest.raises(ConfigError, match=r"strategy.params.momentum"):
        FedDUM.parse_params({"momentum": 1.0})
    with pytest.raises(ConfigError, match=r"strategy.params.momentum"):
        FedDU.parse_params({"momentum": 0.5})  # FedDU without the flag has no momentum
