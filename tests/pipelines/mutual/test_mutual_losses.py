"""Tests for fedtwin.pipelines.mutual.losses against hand-computed values on tiny batches."""

import math

import pytest
import torch
import torch.nn.functional as F

from fedtwin.pipelines.mutual.losses import (
    label_smoothed_ce,
    mmt_net_loss,
    mmt_total_loss,
    soft_ce,
    soft_triplet_loss,
    triplet_loss,
)

# Four 1-D points, labels [0, 0, 1, 1]; pairwise distances d01=1 d02=3 d03=5 d12=2 d13=4 d23=2.
FEATURES = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
LABELS = torch.tensor([0, 0, 1, 1])
# Batch-hard (d_ap, d_an) per anchor: 0 -> (1, 3), 1 -> (1, 2), 2 -> (2, 2), 3 -> (2, 4).
HARD_PAIRS = [(1.0, 3.0), (1.0, 2.0), (2.0, 2.0), (2.0, 4.0)]


def test_soft_ce_equals_hard_ce_for_one_hot_targets():
    # Prepare
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 2])

    # Execute
    soft = soft_ce(logits, F.one_hot(labels, 3).float())

    # Assert
    assert soft.item() == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)
    assert label_smoothed_ce(logits, labels, epsilon=0.0).item() == pytest.approx(soft.item(), abs=1e-6)


def test_label_smoothing_value_by_hand():
    # Prepare: p = (0.75, 0.25), label 0, eps 0.1 -> targets (0.95, 0.05)
    logits = torch.tensor([[math.log(3.0), 0.0]])
    expected = -(0.95 * math.log(0.75) + 0.05 * math.log(0.25))

    # Execute
    loss = label_smoothed_ce(logits, torch.tensor([0]), epsilon=0.1)

    # Assert
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.3426127, abs=1e-6)


def test_triplet_loss_on_a_hand_made_four_point_batch():
    # Prepare: softmax-triplet with margin 0 is log(1 + exp(d_ap - d_an)) per anchor
    expected = sum(math.log1p(math.exp(ap - an)) for ap, an in HARD_PAIRS) / 4

    # Execute
    loss = triplet_loss(FEATURES, LABELS)

    # Assert
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_soft_triplet_with_uninformative_peer_is_half_half_cross_entropy():
    # Prepare: a collapsed peer (all features equal) gives target (0.5, 0.5) for every anchor, so
    # the loss per anchor is -0.5 (log p_ap + log p_an) = logsumexp(d_ap, d_an) - (d_ap + d_an) / 2
    peer = torch.zeros(4, 3)
    expected = sum(math.log(math.exp(ap) + math.exp(an)) - (ap + an) / 2 for ap, an in HARD_PAIRS) / 4

    # Execute
    loss = soft_triplet_loss(FEATURES, peer, LABELS)

    # Assert
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_soft_triplet_with_identical_peer_is_the_entropy_of_own_triplet_softmax():
    # Prepare
    def entropy(ap: float, an: float) -> float:
        p = 1.0 / (1.0 + math.exp(an - ap))
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))

    expected = sum(entropy(ap, an) for ap, an in HARD_PAIRS) / 4

    # Execute / Assert
    assert soft_triplet_loss(FEATURES, FEATURES.clone(), LABELS).item() == pytest.approx(expected, abs=1e-5)


def test_triplet_with_a_single_class_is_zero_and_differentiable():
    features = torch.randn(3, 2, requires_grad=True)
    loss = triplet_loss(features, torch.tensor([1, 1, 1]))
    loss.backward()
    assert loss.item() == 0.0 and features.grad is not None


def test_net_loss_combines_components_with_lambda_weights():
    # Prepare
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=gen)
    peer_probs = torch.softmax(torch.randn(4, 3, generator=gen), dim=1)
    peer_features = torch.randn(4, 1, generator=gen)

    # Execute
    parts = mmt_net_loss(
        logits,
        FEATURES,
        LABELS,
        peer_probs=peer_probs,
        peer_features=peer_features,
        lambda_id=0.5,
        lambda_tri=0.8,
        epsilon=0.1,
    )

    # Assert
    expected = (
        0.5 * label_smoothed_ce(logits, LABELS, 0.1)
        + 0.5 * soft_ce(logits, peer_probs)
        + 0.2 * triplet_loss(FEATURES, LABELS)
        + 0.8 * soft_triplet_loss(FEATURES, peer_features, LABELS)
    )
    assert parts["total"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert set(parts) == {"ce", "soft_ce", "tri", "soft_tri", "total"}


def test_net_loss_seed_variant_is_plain_cross_entropy_and_needs_no_peer():
    logits = torch.tensor([[1.0, 2.0], [0.5, -0.5]])
    labels = torch.tensor([1, 0])
    parts = mmt_net_loss(logits, torch.zeros(2, 4), labels, lambda_id=0.0, epsilon=0.0, use_triplet=False)
    assert parts["total"].item() == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-6)
    with pytest.raises(ValueError, match="peer_probs"):
        mmt_net_loss(logits, torch.zeros(2, 4), labels, lambda_id=0.5, use_triplet=False)


def test_total_loss_is_sum_of_crossed_net_losses_and_sends_no_gradient_to_ema():
    # Prepare
    gen = torch.Generator().manual_seed(1)
    out1 = (torch.randn(4, 3, generator=gen, requires_grad=True), torch.randn(4, 2, generator=gen))
    out2 = (torch.randn(4, 3, generator=gen, requires_grad=True), torch.randn(4, 2, generator=gen))
    ema1 = (torch.randn(4, 3, generator=gen, requires_grad=True), torch.randn(4, 2, generator=gen))
    ema2 = (torch.randn(4, 3, generator=gen, requires_grad=True), torch.randn(4, 2, generator=gen))

    # Execute
    total = mmt_total_loss(out1, out2, ema1, ema2, LABELS)
    total.backward()

    # Assert: net 1 learns from E[θ_2] and net 2 from E[θ_1]
    l1 = mmt_net_loss(*out1, LABELS, peer_probs=torch.softmax(ema2[0], 1), peer_features=ema2[1])["total"]
    l2 = mmt_net_loss(*out2, LABELS, peer_probs=torch.softmax(ema1[0], 1), peer_features=ema1[1])["total"]
    assert total.item() == pytest.approx((l1 + l2).item(), abs=1e-6)
    assert out1[0].grad is not None and ema1[0].grad is None and ema2[0].grad is None
