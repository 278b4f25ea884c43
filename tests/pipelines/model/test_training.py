"""Tests for fedtwin.pipelines.model.training.

The one loop, its hooks and optimizer state, evaluation and prediction.
"""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError, replace

import numpy as np
import pytest
import torch
from torch import nn

from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.model.networks import ModelConfig, build_model
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import state_from_model
from fedtwin.pipelines.model.training import EvalResult, TrainWorkspace, evaluate, local_train, predict

SMALL = ModelConfig(widths=(4, 8), num_classes=2)


def _separable(n_per_class: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: a bright blob in the top-left quadrant; class 1: bottom-right; plus noise."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2 * n_per_class, 8, 1, 16, 16, generator=gen) * 0.2
    y = torch.arange(2).repeat_interleave(n_per_class)
    x[:n_per_class, :, :, 2:6, 2:6] = 1.0
    x[n_per_class:, :, :, 10:14, 10:14] = 1.0
    return x, y


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _scalar_model(w: float) -> nn.Linear:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(w)
    return model


def _mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    return ((model(x) - y) ** 2).mean(), {}


def test_local_train_learns_a_separable_set() -> None:
    # Prepare
    x, y = _separable()
    model = build_model(SMALL, seed=0)
    before = evaluate(model, (x, y))

    # Execute
    result = local_train(
        model, (x, y), TrainSettings(epochs=8, batch_size=8, lr=1e-2, optimizer="adam"), generator=_gen()
    )
    after = evaluate(model, (x, y))

    # Assert: 24 examples in batches of 8 for 8 epochs is 24 steps.
    assert result.num_examples == 24 and result.steps == 24
    assert after.loss < 0.5 * before.loss
    assert after.accuracy == 1.0
    assert result.final_loss < result.mean_loss


def test_local_train_is_deterministic_for_a_generator_seed_and_leaves_global_rng_alone() -> None:
    # Prepare: dropout makes the model stochastic, so this also covers the forked RNG.
    x, y = _separable()
    cfg = ModelConfig(widths=(4, 8), num_classes=2, dropout=0.5)
    models = [build_model(cfg, seed=0) for _ in range(3)]
    rng_before = torch.random.get_rng_state()

    # Execute
    for model, seed in zip(models, (5, 5, 6)):
        local_train(model, (x, y), TrainSettings(epochs=2, batch_size=5, lr=0.05, momentum=0.9), generator=_gen(seed))

    # Assert
    a, b, c = (state_from_model(m) for m in models)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["head.weight"], c["head.weight"])
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_sgd_step_and_momentum_persisted_across_calls_match_hand_computation() -> None:
    # Prepare: loss (w*1 - 3)^2, so grad = 2(w - 3). lr 0.1, momentum 0.9.
    data = (torch.tensor([[1.0]]), torch.tensor([[3.0]]))
    settings = TrainSettings(epochs=1, batch_size=1, lr=0.1, momentum=0.9)
    model = _scalar_model(1.0)

    # Execute: step 1: g = -4, v = -4, w = 1.4. Step 2 with v carried over: g = -3.2, v = -6.8, w = 2.08.
    first = local_train(model, data, settings, generator=_gen(), loss_fn=_mse)
    w_after_first = model.weight.item()
    second = local_train(model, data, settings, generator=_gen(), loss_fn=_mse, optimizer_state=first.optimizer_state)
    fresh = _scalar_model(1.4)
    local_train(fresh, data, settings, generator=_gen(), loss_fn=_mse)

    # Assert
    assert w_after_first == pytest.approx(1.4)
    assert list(first.optimizer_state) == ["momentum_buffer/weight"]
    np.testing.assert_allclose(first.optimizer_state["momentum_buffer/weight"], [[-4.0]], rtol=1e-6)
    np.testing.assert_allclose(second.optimizer_state["momentum_buffer/weight"], [[-6.8]], rtol=1e-6)
    assert model.weight.item() == pytest.approx(2.08)
    assert fresh.weight.item() == pytest.approx(1.4 + 0.32)  # without the buffer: v = g = -3.2


def test_optimizer_state_round_trip_equals_one_long_call() -> None:
    # Prepare: full batches, so the order of examples cannot matter; Adam has three slots per parameter.
    x, y = _separable(n_per_class=4)
    one, two = build_model(SMALL, seed=0), build_model(SMALL, seed=0)
    settings = TrainSettings(epochs=3, batch_size=8, lr=1e-2, optimizer="adam")

    # Execute
    local_train(one, (x, y), settings, generator=_gen())
    state = local_train(two, (x, y), replace(settings, max_steps=1), generator=_gen()).optimizer_state
    result = local_train(two, (x, y), replace(settings, max_steps=2), generator=_gen(), optimizer_state=state)

    # Assert
    assert result.steps == 2
    assert {k.split("/")[0] for k in state} == {"exp_avg", "exp_avg_sq", "step"}
    assert result.optimizer_state["step/head.weight"] == pytest.approx(3.0)
    for key, value in state_from_model(one).items():
        np.testing.assert_allclose(state_from_model(two)[key], value, rtol=1e-5, atol=1e-7)


def test_optimizer_state_with_an_unknown_parameter_is_rejected() -> None:
    with pytest.raises(KeyError, match="names no trainable parameter"):
        local_train(
            _scalar_model(0.0),
            (torch.ones(1, 1), torch.ones(1, 1)),
            TrainSettings(1, 1, 0.1, momentum=0.9),
            loss_fn=_mse,
            generator=_gen(),
            optimizer_state={"momentum_buffer/nope": np.zeros(1)},
        )


def test_loss_fn_hook_is_called_once_per_step_and_its_metrics_are_averaged() -> None:
    # Prepare
    x, y = _separable(n_per_class=5)
    calls: list[int] = []

    def loss_fn(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        calls.append(int(xb.shape[0]))
        return nn.functional.cross_entropy(model(xb), yb), {"batch_size": float(xb.shape[0])}

    # Execute: 10 examples in batches of 4 -> 4, 4, 2 per epoch.
    result = local_train(
        build_model(SMALL, 0), (x, y), TrainSettings(epochs=2, batch_size=4, lr=0.01), loss_fn=loss_fn, generator=_gen()
    )

    # Assert: metrics are weighted by batch size: (4*4 + 4*4 + 2*2) / 10 = 3.6.
    assert calls == [4, 4, 2, 4, 4, 2]
    assert result.steps == 6
    assert result.metrics == {"batch_size": pytest.approx(3.6)}


def test_grad_fn_hook_owns_the_gradient_and_max_steps_stops_early() -> None:
    # Prepare: the hook ignores the loss and sets grad = 1, so each SGD step moves w by -lr.
    model = _scalar_model(0.0)

    def grad_fn(m: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, dict[str, float]]:
        for p in m.parameters():
            p.grad = torch.ones_like(p)
        return 0.25, {}

    # Execute: 5 examples, batch 1, 2 epochs would be 10 steps; max_steps stops at 3.
    result = local_train(
        model,
        (torch.ones(5, 1), torch.zeros(5, 1)),
        TrainSettings(epochs=2, batch_size=1, lr=0.5, max_steps=3),
        grad_fn=grad_fn,
        generator=_gen(),
    )

    # Assert
    assert result.steps == 3 and result.mean_loss == 0.25 and result.final_loss == 0.25
    assert model.weight.item() == pytest.approx(-1.5)


def test_loss_fn_and_grad_fn_together_are_refused() -> None:
    with pytest.raises(ValueError, match="loss_fn or grad_fn, not both"):
        local_train(
            _scalar_model(0.0),
            (torch.ones(1, 1), torch.ones(1, 1)),
            TrainSettings(1, 1, 0.1),
            loss_fn=_mse,
            grad_fn=lambda m, x, y: (0.0, {}),
            generator=_gen(),
        )


def test_tuple_targets_reach_the_loss_fn_batched_together() -> None:
    x = torch.arange(6, dtype=torch.float32).view(6, 1)
    seen: list[tuple[float, float, float]] = []

    def loss_fn(
        model: nn.Module, xb: torch.Tensor, yb: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        seen.extend(zip(xb[:, 0].tolist(), yb[0].tolist(), yb[1].tolist()))
        return model(xb).sum() * 0.0, {}

    local_train(
        _scalar_model(0.0),
        (x, (x[:, 0] * 10, x[:, 0] * 100)),
        TrainSettings(1, 4, 0.1),
        loss_fn=loss_fn,
        generator=_gen(),
    )

    assert sorted(seen) == [(float(i), 10.0 * i, 100.0 * i) for i in range(6)]


class _ConstantLogits(nn.Module):
    """Predicts the same logits for every clip: class 3 gets log(2), the others 0 (K = 4)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 4)
        logits[:, 3] = math.log(2.0)
        return logits


def test_evaluate_on_a_model_with_a_known_answer() -> None:
    # Prepare: probabilities are 2/5 for class 3 and 1/5 for each other class.
    x = torch.zeros(4, 8, 1, 4, 4)
    y = torch.tensor([3, 3, 0, 1])

    # Execute
    result = evaluate(_ConstantLogits(), (x, y), batch_size=3)

    # Assert: two hits out of four; loss = mean(-ln 0.4, -ln 0.4, -ln 0.2, -ln 0.2).
    assert result == EvalResult(accuracy=0.5, loss=pytest.approx((math.log(2.5) + math.log(5.0)) / 2), num_examples=4)


def test_predict_accepts_clip_arrays_with_the_same_scaling_as_to_float() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    clips = ClipArrays(
        rng.integers(0, 256, size=(5, 8, 1, 16, 16), dtype=np.uint8),
        np.arange(5, dtype=np.int64) % 2,
        np.array([f"v{i}" for i in range(5)]),
    )
    model = build_model(SMALL, seed=0)
    model.train()

    # Execute
    logits = predict(model, clips)
    logits_in_pairs = predict(model, clips, batch_size=2)
    probs = predict(model, clips, output="probs")
    embedding = predict(model, clips, output="embedding")
    with torch.no_grad():
        model.eval()
        expected = model(torch.from_numpy(clips.to_float())).numpy()

    # Assert
    np.testing.assert_array_equal(logits, expected)
    np.testing.assert_allclose(logits_in_pairs, expected, rtol=1e-5, atol=1e-6)  # kernels may differ by batch
    np.testing.assert_allclose(probs.sum(axis=1), np.ones(5), rtol=1e-6)
    assert embedding.shape == (5, 8)


def test_predict_restores_the_training_mode() -> None:
    model = build_model(SMALL, seed=0)
    model.train()

    predict(model, torch.zeros(2, 8, 1, 16, 16))

    assert model.training


def test_bad_hyperparameters_and_data_are_refused() -> None:
    model = build_model(SMALL, seed=0)
    x, y = _separable(n_per_class=2)

    with pytest.raises(ValueError, match="data has 4 clips but targets of lengths \\[3\\]"):
        local_train(model, (x, y[:3]), TrainSettings(epochs=1, batch_size=2, lr=0.1), generator=_gen())
    with pytest.raises(TypeError, match="needs a TrainSettings"):
        local_train(model, (x, y), {"epochs": 1, "batch_size": 2, "lr": 0.1}, generator=_gen())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"epochs": 0}, r"TrainSettings.epochs=0 must be an integer >= 1"),
        ({"batch_size": 0}, r"TrainSettings.batch_size=0 must be an integer >= 1"),
        ({"batch_size": 2.0}, r"TrainSettings.batch_size=2.0 must be an integer"),
        ({"lr": 0.0}, r"TrainSettings.lr=0.0 must be > 0"),
        ({"optimizer": "rmsprop"}, r"TrainSettings.optimizer='rmsprop' is unknown; use one of sgd, adam"),
        ({"momentum": 1.0}, r"TrainSettings.momentum=1.0 must be in \[0, 1\)"),
        ({"weight_decay": -0.1}, r"TrainSettings.weight_decay=-0.1 must be >= 0"),
        ({"max_steps": -1}, r"TrainSettings.max_steps=-1 must be an integer >= 0 or None"),
        ({"optimizer_start": "shared"}, r"TrainSettings.optimizer_start='shared' is unknown"),
    ],
)
def test_train_settings_refuse_bad_values_naming_the_field(changes: dict, message: str) -> None:
    base = {"epochs": 1, "batch_size": 2, "lr": 0.1}
    with pytest.raises(ValueError, match=message):
        TrainSettings(**{**base, **changes})


def test_train_settings_are_frozen_and_replace_validates_again() -> None:
    settings = TrainSettings(epochs=2, batch_size=4, lr=0.1)
    assert (settings.optimizer, settings.momentum, settings.weight_decay) == ("sgd", 0.0, 0.0)
    assert settings.max_steps is None and settings.optimizer_start == "fresh"
    assert replace(settings, momentum=0.9, optimizer_start="local").momentum == 0.9
    with pytest.raises(FrozenInstanceError):
        settings.lr = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="TrainSettings.momentum"):
        replace(settings, momentum=-0.5)


def test_a_reused_workspace_trains_exactly_like_fresh_optimizers() -> None:
    # Prepare: a dropout model (the forked RNG matters) and settings that change optimizer and buffers
    x, y = _separable()
    cfg = ModelConfig(widths=(4, 8), num_classes=2, dropout=0.3)
    runs = [
        (TrainSettings(epochs=1, batch_size=8, lr=0.05, momentum=0.9), None),
        (TrainSettings(epochs=2, batch_size=8, lr=0.01, optimizer="adam", weight_decay=1e-3), None),
        (TrainSettings(epochs=1, batch_size=8, lr=0.02, momentum=0.5, weight_decay=1e-2), "carry"),
        (TrainSettings(epochs=1, batch_size=5, lr=0.05, max_steps=2), None),
    ]
    fresh, reused = build_model(cfg, seed=0), build_model(cfg, seed=0)
    workspace = TrainWorkspace()
    carried: dict = {}
    for i, (settings, carry) in enumerate(runs):
        # Execute: the same call with a new optimizer each time and with the workspace's reset one
        a = local_train(fresh, (x, y), settings, generator=_gen(i), optimizer_state=carried if carry else None)
        b = local_train(
            reused, (x, y), settings, generator=_gen(i), optimizer_state=carried if carry else None, workspace=workspace
        )
        carried = a.optimizer_state
        # Assert: bit-identical weights, losses and optimizer buffers
        assert a.mean_loss == b.mean_loss and a.steps == b.steps
        for key, value in state_from_model(fresh).items():
            np.testing.assert_array_equal(state_from_model(reused)[key], value)
        assert a.optimizer_state.keys() == b.optimizer_state.keys()
        for key, value in a.optimizer_state.items():
            np.testing.assert_array_equal(b.optimizer_state[key], value)
    assert (
        local_train(
            reused, (x, y), runs[0][0], generator=_gen(), workspace=workspace, return_optimizer_state=False
        ).optimizer_state
        == {}
    )
