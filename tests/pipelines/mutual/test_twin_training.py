"""Tests for fedtwin.pipelines.mutual.twin_training.

Head reset, the epoch loss hook and its EMA timing, final choice.
"""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as nnf

from fedtwin.pipelines.model.networks import ModelConfig, build_model
from fedtwin.pipelines.model.state import state_from_model
from fedtwin.pipelines.model.training import TrainSettings, local_train
from fedtwin.pipelines.mutual.augment import IdentityAugment
from fedtwin.pipelines.mutual.twin_training import (
    LossSettings,
    TwinEpochLoss,
    convergence_weights,
    reset_head,
    select_final,
)

TINY = ModelConfig(widths=(4, 8), frames=4, num_classes=3)


def tiny_batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 4, 1, 16, 16, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def test_select_final_picks_the_lower_loss_model():
    assert select_final([0.8, 0.5]) == 1
    assert select_final([0.3, 0.9]) == 0
    assert select_final([float("nan"), 2.0]) == 1  # a diverged twin is never the more converged one
    with pytest.raises(ValueError):
        select_final([])


def test_convergence_weights_by_hand():
    # conv = 1/1 and 1/3 -> normalised 0.75 and 0.25
    np.testing.assert_allclose(convergence_weights([1.0, 3.0], eps=0.0), [0.75, 0.25])


def test_reset_head_copies_centroids_zeroes_bias_and_leaves_global_rng_alone():
    # Prepare
    model = build_model(TINY, seed=0)
    centroids = np.arange(5 * 8, dtype=np.float32).reshape(5, 8) / 10
    rng_before = torch.get_rng_state()

    # Execute
    reset_head(model, centroids)

    # Assert
    np.testing.assert_array_equal(model.head.weight.detach().numpy(), centroids)
    np.testing.assert_array_equal(model.head.bias.detach().numpy(), np.zeros(5))
    assert model.cfg.num_classes == 5 and model(tiny_batch()[0]).shape == (12, 5)
    assert torch.equal(torch.get_rng_state(), rng_before)
    with pytest.raises(ValueError, match="do not fit a head reading 8 features"):
        reset_head(model, np.zeros((3, 7), dtype=np.float32))


def test_hard_loss_is_plain_cross_entropy_on_the_view():
    # Prepare
    model = build_model(TINY, seed=1)
    x, y = tiny_batch()
    loss_fn = TwinEpochLoss(LossSettings(kind="hard"), IdentityAugment(), torch.Generator())

    # Execute
    loss, metrics = loss_fn(model, x, (y, torch.arange(12)))

    # Assert
    assert loss.item() == pytest.approx(nnf.cross_entropy(model(x), y).item(), rel=1e-6)
    assert set(metrics) == {"ce", "label_accuracy"}


def test_mmt_loss_reads_peer_targets_by_row_and_needs_them():
    # Prepare: peer targets for 20 clips; the batch holds rows 3..14
    model = build_model(TINY, seed=1)
    x, y = tiny_batch()
    rows = torch.arange(3, 15)
    peer_probs = torch.softmax(torch.randn(20, 3, generator=torch.Generator().manual_seed(2)), dim=1)
    settings = LossSettings(kind="mmt", lambda_id=1.0, use_triplet=False)
    loss_fn = TwinEpochLoss(settings, IdentityAugment(), torch.Generator(), peer_probs=peer_probs)

    # Execute
    loss, _ = loss_fn(model, x, (y, rows))

    # Assert: lambda_id=1 leaves only the soft CE against the peer rows of this batch
    expected = -(peer_probs[rows] * nnf.log_softmax(model(x), dim=1)).sum(dim=1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="needs the peer EMA's targets"):
        TwinEpochLoss(LossSettings(kind="mmt"), IdentityAugment(), torch.Generator())


def test_on_step_runs_once_after_every_optimiser_step():
    # Prepare: record the weights each time the hook fires
    model = build_model(TINY, seed=3)
    x, y = tiny_batch(n=10)
    initial = state_from_model(model)["head.weight"].copy()
    seen: list[np.ndarray] = []
    loss_fn = TwinEpochLoss(
        LossSettings(kind="hard"),
        IdentityAugment(),
        torch.Generator(),
        on_step=lambda: seen.append(state_from_model(model)["head.weight"].copy()),
    )

    # Execute: 10 clips in batches of 4 -> 3 steps
    result = local_train(
        model,
        (x, (y, torch.arange(10))),
        TrainSettings(epochs=1, batch_size=4, lr=0.1),
        generator=torch.Generator().manual_seed(0),
        loss_fn=loss_fn,
    )
    loss_fn.finish()

    # Assert: one call per step, the first after step 1 (weights moved), the last = final weights
    assert result.steps == 3 and len(seen) == 3
    assert not np.array_equal(seen[0], initial)
    assert not np.array_equal(seen[0], seen[1])
    np.testing.assert_array_equal(seen[-1], state_from_model(model)["head.weight"])
    assert math.isfinite(result.mean_loss)
