"""Losses of twin co-training: hard CE on pseudo-labels and MMT's mutual terms.

One network's loss, given its outputs on its own view and its peer's mean-model (EMA) outputs:

    L_j = (1 - λ_id)  CE_ls(p_j, ŷ)   + λ_id  SoftCE(p_j | p̃_peer)
        + (1 - λ_tri) Ltri(f_j, ŷ)    + λ_tri Lstri(f_j | f̃_peer)

MMT's total loss is ``L_1 + L_2``; the two networks share no parameters, so each twin actor can
minimise its own ``L_j`` alone. The hard-label loss (``loss: hard``) is the special case ``λ_id = 0``,
``ε = 0``, no triplet.

Triplet distances are Euclidean between the feature vectors as given (MMT's ``SoftTripletLoss`` with
``normalize_feature=False``); the hardest positive may be the anchor itself (distance 0) when the batch
holds no other sample of its class, and anchors with no negative in the batch are skipped.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def label_smoothed_ce(logits: torch.Tensor, labels: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Cross-entropy against ``(1 - ε) one_hot(y) + ε / K``, averaged over the batch."""
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"label_smoothed_ce: epsilon={epsilon} must be in [0, 1)")
    log_probs = F.log_softmax(logits, dim=1)
    num_classes = logits.shape[1]
    targets = torch.full_like(log_probs, epsilon / num_classes)
    targets.scatter_(1, labels.view(-1, 1), 1.0 - epsilon + epsilon / num_classes)
    return -(targets * log_probs).sum(dim=1).mean()


def soft_ce(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """``mean_i -Σ_c q_ic log p_ic`` with ``q`` the peer EMA probabilities (treated as constants)."""
    if target_probs.shape != logits.shape:
        raise ValueError(
            f"soft_ce: target_probs shape {tuple(target_probs.shape)} != logits shape "
            f"{tuple(logits.shape)}; peer heads must have the same number of clusters"
        )
    return -(target_probs.detach() * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def pairwise_euclidean(features: torch.Tensor) -> torch.Tensor:
    """``(B, B)`` Euclidean distances, with a floor inside the sqrt so gradients stay finite at 0."""
    sq = features.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * features @ features.T
    return d2.clamp_min(1e-12).sqrt()


def hardest_pairs(dist: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch-hard mining: per anchor, the farthest positive and the closest negative.

    Returns:
        ``(pos_idx, neg_idx, valid)``: column indices into ``dist`` and a mask of anchors that have
        at least one negative in the batch.
    """
    same = labels[:, None] == labels[None, :]
    big = torch.finfo(dist.dtype).max
    pos_idx = dist.detach().masked_fill(~same, -1.0).argmax(dim=1)
    neg_idx = dist.detach().masked_fill(same, big).argmin(dim=1)
    valid = (~same).any(dim=1)
    return pos_idx, neg_idx, valid


def _anchor_pair_logits(dist: torch.Tensor, pos_idx: torch.Tensor, neg_idx: torch.Tensor) -> torch.Tensor:
    rows = torch.arange(dist.shape[0], device=dist.device)
    return torch.stack((dist[rows, pos_idx], dist[rows, neg_idx]), dim=1)


def triplet_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Batch-hard softmax-triplet ``Ltri = mean -log(e^{d_an} / (e^{d_ap} + e^{d_an}))`` (margin 0)."""
    dist = pairwise_euclidean(features)
    pos_idx, neg_idx, valid = hardest_pairs(dist, labels)
    if not valid.any():
        return features.sum() * 0.0  # one class only: nothing to separate, keep the graph intact
    log_p = F.log_softmax(_anchor_pair_logits(dist, pos_idx, neg_idx), dim=1)
    return -log_p[valid, 1].mean()


def soft_triplet_loss(features: torch.Tensor, peer_features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``Lstri(f | f̃)``: softmax-triplet with soft targets from the peer EMA's distances.

    The hardest positive/negative are mined on ``features``; the peer's distances on the same index
    pairs give the target ``softmax(d̃_ap, d̃_an)``, and the loss is the cross-entropy against
    ``log_softmax(d_ap, d_an)``, averaged over anchors.
    """
    if peer_features.shape[0] != features.shape[0]:
        raise ValueError(f"soft_triplet_loss: peer batch {peer_features.shape[0]} != batch {features.shape[0]}")
    dist = pairwise_euclidean(features)
    pos_idx, neg_idx, valid = hardest_pairs(dist, labels)
    if not valid.any():
        return features.sum() * 0.0
    log_p = F.log_softmax(_anchor_pair_logits(dist, pos_idx, neg_idx), dim=1)
    with torch.no_grad():
        peer_dist = pairwise_euclidean(peer_features.detach())
        target = F.softmax(_anchor_pair_logits(peer_dist, pos_idx, neg_idx), dim=1)
    return -(target * log_p)[valid].sum(dim=1).mean()


def mmt_net_loss(
    logits: torch.Tensor,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    peer_probs: torch.Tensor | None = None,
    peer_features: torch.Tensor | None = None,
    lambda_id: float = 0.5,
    lambda_tri: float = 0.8,
    epsilon: float = 0.1,
    use_triplet: bool = True,
) -> dict[str, torch.Tensor]:
    """One network's MMT loss; its ``"total"`` is what that twin back-propagates.

    Args:
        logits: ``(B, K)`` classifier outputs of this network on its view.
        features: ``(B, D)`` features feeding the triplet terms.
        labels: ``(B,)`` pseudo-labels (outliers already removed).
        peer_probs: ``(B, K)`` softmax of the peer EMA model on its view of the same clips; needed
            when ``lambda_id > 0``.
        peer_features: ``(B, D')`` peer EMA features of the same clips; needed when
            ``use_triplet`` and ``lambda_tri > 0``.
        lambda_id: weight of the soft CE against the hard (label-smoothed) CE.
        lambda_tri: weight of the soft triplet against the hard triplet.
        epsilon: label smoothing of the hard CE (0 gives plain CE, as in the hard-label loss).
        use_triplet: include the two triplet terms at all.

    Returns:
        A dict with ``"total"`` and every non-zero-weighted component (``"ce"``, ``"soft_ce"``,
        ``"tri"``, ``"soft_tri"``) as unweighted values, for logging.
    """
    for name, value in (("lambda_id", lambda_id), ("lambda_tri", lambda_tri)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"mmt_net_loss: {name}={value} must be in [0, 1]")
    parts: dict[str, torch.Tensor] = {}
    total = logits.new_zeros(())
    if lambda_id < 1.0:
        parts["ce"] = label_smoothed_ce(logits, labels, epsilon)
        total = total + (1.0 - lambda_id) * parts["ce"]
    if lambda_id > 0.0:
        if peer_probs is None:
            raise ValueError("mmt_net_loss: lambda_id > 0 needs peer_probs (the peer EMA's softmax outputs)")
        parts["soft_ce"] = soft_ce(logits, peer_probs)
        total = total + lambda_id * parts["soft_ce"]
    if use_triplet:
        if lambda_tri < 1.0:
            parts["tri"] = triplet_loss(features, labels)
            total = total + (1.0 - lambda_tri) * parts["tri"]
        if lambda_tri > 0.0:
            if peer_features is None:
                raise ValueError("mmt_net_loss: lambda_tri > 0 needs peer_features (the peer EMA's features)")
            parts["soft_tri"] = soft_triplet_loss(features, peer_features, labels)
            total = total + lambda_tri * parts["soft_tri"]
    parts["total"] = total
    return parts


def mmt_total_loss(
    out1: tuple[torch.Tensor, torch.Tensor],
    out2: tuple[torch.Tensor, torch.Tensor],
    ema_out1: tuple[torch.Tensor, torch.Tensor],
    ema_out2: tuple[torch.Tensor, torch.Tensor],
    labels: torch.Tensor,
    *,
    lambda_id: float = 0.5,
    lambda_tri: float = 0.8,
    epsilon: float = 0.1,
    use_triplet: bool = True,
) -> torch.Tensor:
    """MMT's full objective ``L_1 + L_2`` for both networks in one process.

    Each ``out`` is ``(logits, features)``; ``ema_out1`` comes from ``E[θ_1]`` and supervises net 2,
    ``ema_out2`` from ``E[θ_2]`` supervises net 1.
    """
    net_loss = functools.partial(
        mmt_net_loss, lambda_id=lambda_id, lambda_tri=lambda_tri, epsilon=epsilon, use_triplet=use_triplet
    )
    loss1 = net_loss(out1[0], out1[1], labels, peer_probs=F.softmax(ema_out2[0], dim=1), peer_features=ema_out2[1])
    loss2 = net_loss(out2[0], out2[1], labels, peer_probs=F.softmax(ema_out1[0], dim=1), peer_features=ema_out1[1])
    return loss1["total"] + loss2["total"]
