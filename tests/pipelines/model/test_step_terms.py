"""The per-step gradient terms of the one training loop: FedProx's proximal gradient and SCAFFOLD's
correction and mean gradient, against hand-computed steps (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedtwin.pipelines.model.networks import ModelConfig, build_model
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import state_from_model
from fedtwin.pipelines.model.training import local_train

# loss (w*1 - 3)^2 on one example: gradient 2(w - 3)
DATA = (torch.tensor([[1.0]]), torch.tensor([[3.0]]))


def _scalar_model(w: float) -> nn.Linear:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(w)
    return model


def _mse(model, x, y):
    return ((model(x) - y) ** 2).mean(), {}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_proximal_gradient_matches_hand_computation() -> None:
    # Prepare: w_start = 1, lr 0.1, mu 0.5, two full-batch steps.
    # Step 1: g = 2(1 - 3) = -4, prox = 0.5 * (1 - 1) = 0        -> w = 1 + 0.4 = 1.4
    # Step 2: g = 2(1.4 - 3) = -3.2, prox = 0.5 * (1.4 - 1) = 0.2 -> w = 1.4 + 0.1 * 3.0 = 1.7
    # (without the term step 2 would reach 1.4 + 0.32 = 1.72)
    settings = TrainSettings(epochs=2, batch_size=1, lr=0.1, prox_mu=0.5)
    model = _scalar_model(1.0)
    plain = _scalar_model(1.0)
    # Execute
    result = local_train(model, DATA, settings, generator=_gen(), loss_fn=_mse)
    local_train(plain, DATA, TrainSettings(epochs=2, batch_size=1, lr=0.1), generator=_gen(), loss_fn=_mse)
    # Assert: the reported loss is the data loss (step 2: (1.4 - 3)^2 = 2.56 on the last batch)
    assert model.weight.item() == pytest.approx(1.7, abs=1e-6)
    assert plain.weight.item() == pytest.approx(1.72, abs=1e-6)
    assert result.final_loss == pytest.approx(2.56, abs=1e-5)


def test_zero_mu_trains_bit_for_bit_like_no_term() -> None:
    x = torch.rand(24, 8, 1, 16, 16, generator=_gen(1))
    y = torch.randint(0, 2, (24,), generator=_gen(2))
    config = ModelConfig(widths=(4, 8), num_classes=2)
    a, b = build_model(config, seed=0), build_model(config, seed=0)
    base = TrainSettings(epochs=2, batch_size=8, lr=0.05, momentum=0.5)
    local_train(a, (x, y), base, generator=_gen())
    local_train(b, (x, y), TrainSettings(epochs=2, batch_size=8, lr=0.05, momentum=0.5, prox_mu=0.0), generator=_gen())
    for key, value in state_from_model(a).items():
        np.testing.assert_array_equal(value, state_from_model(b)[key])


def test_correction_is_added_to_each_step_and_the_raw_gradient_is_averaged() -> None:
    # Prepare: correction +1, lr 0.1, two steps from w = 1.
    # Step 1: g = -4, used -3 -> w = 1.3; step 2: g = 2(1.3 - 3) = -3.4, used -2.4 -> w = 1.54.
    # Mean raw gradient: (-4 - 3.4) / 2 = -3.7.
    model = _scalar_model(1.0)
    settings = TrainSettings(epochs=2, batch_size=1, lr=0.1)
    # Execute
    result = local_train(
        model,
        DATA,
        settings,
        generator=_gen(),
        loss_fn=_mse,
        grad_correction={"weight": np.array([[1.0]], dtype=np.float32)},
        return_mean_gradient=True,
    )
    # Assert
    assert model.weight.item() == pytest.approx(1.54, abs=1e-6)
    assert list(result.mean_gradient) == ["weight"]
    np.testing.assert_allclose(result.mean_gradient["weight"], [[-3.7]], rtol=1e-6)
    assert result.mean_gradient["weight"].dtype == np.float32


def test_mean_gradient_is_option_ii_of_scaffold_under_plain_sgd() -> None:
    # Prepare: a small video model, random c and c_i, plain SGD, K = 6 steps
    x = torch.rand(24, 8, 1, 16, 16, generator=_gen(1))
    y = torch.randint(0, 2, (24,), generator=_gen(2))
    model = build_model(ModelConfig(widths=(4, 8), num_classes=2), seed=0)
    start = {n: p.detach().clone().numpy() for n, p in model.named_parameters()}
    rng = np.random.default_rng(0)
    c = {n: rng.normal(0, 0.05, v.shape).astype(np.float32) for n, v in start.items()}
    c_i = {n: rng.normal(0, 0.05, v.shape).astype(np.float32) for n, v in start.items()}
    lr = 0.05
    settings = TrainSettings(epochs=2, batch_size=8, lr=lr)
    # Execute
    result = local_train(
        model,
        (x, y),
        settings,
        generator=_gen(),
        grad_correction={n: c[n] - c_i[n] for n in c},
        return_mean_gradient=True,
    )
    # Assert: c_i+ = c_i - c + (x - y) / (K lr), the paper's option II, up to float32 rounding of the
    # weights (|w| <~ 1, eps 6e-8, divided by K lr = 0.3: about 2e-7 per entry)
    assert result.steps == 6
    for name, value in model.named_parameters():
        option_ii = c_i[name] - c[name] + (start[name] - value.detach().numpy()) / (result.steps * lr)
        np.testing.assert_allclose(result.mean_gradient[name], option_ii, atol=2e-6)


def test_a_correction_for_an_unknown_parameter_is_refused() -> None:
    with pytest.raises(KeyError, match="grad_correction"):
        local_train(
            _scalar_model(1.0),
            DATA,
            TrainSettings(epochs=1, batch_size=1, lr=0.1),
            generator=_gen(),
            loss_fn=_mse,
            grad_correction={"nope": np.zeros(1, dtype=np.float32)},
        )


def test_settings_refuse_a_negative_mu() -> None:
    with pytest.raises(ValueError, match="prox_mu"):
        TrainSettings(epochs=1, batch_size=1, lr=0.1, prox_mu=-0.1)
