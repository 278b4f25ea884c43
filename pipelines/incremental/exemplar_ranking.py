"""Orderings of a class's training clips for the exemplar memory: best candidates first.

The order is a priority: the memory keeps a prefix of it and trims from the end when the budget shrinks.
- ``confidence`` (default): ``softmax(f(v; theta_k))[y_v]`` descending, the clips the new model
  classifies most confidently first;
- ``random``: a uniformly random permutation from the caller's generator;
- ``herding`` (iCaRL): greedily pick the clip that brings the running mean of the chosen L2-normalised
  features closest to the class mean.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Ranking = Literal["confidence", "random", "herding"]
RANKINGS: tuple[str, ...] = ("confidence", "random", "herding")


def confidence_from_logits(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``softmax(logits)[i, labels[i]]`` per row, computed stably; ``(N,)`` float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return np.exp(log_p[np.arange(len(z)), np.asarray(labels)])


def rank_by_confidence(confidences: np.ndarray) -> np.ndarray:
    """Positions sorted by descending confidence; ties keep their original order."""
    conf = np.asarray(confidences, dtype=np.float64)
    if conf.ndim != 1:
        raise ValueError(f"ranking='confidence' needs one confidence per clip (N,), got shape {conf.shape}")
    return np.argsort(-conf, kind="stable")


def rank_randomly(n: int, rng: np.random.Generator | None) -> np.ndarray:
    """A random permutation of ``range(n)`` drawn from ``rng``."""
    if rng is None:
        raise ValueError("ranking='random' needs an explicit rng=np.random.Generator")
    return rng.permutation(n)


def rank_by_herding(features: np.ndarray, limit: int | None = None) -> np.ndarray:
    """iCaRL herding order over ``(N, D)`` features (L2-normalised per row first).

    Step ``k`` picks the unchosen clip ``i`` minimising ``|| mu - (S + x_i) / k ||`` where ``mu`` is the
    class mean and ``S`` the sum of the ``k - 1`` clips already chosen.

    Args:
        features: ``(N, D)`` embeddings of the class's clips.
        limit: stop after this many picks (``None``: order every clip).

    Returns:
        ``(min(N, limit),)`` positions in pick order.
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"ranking='herding' needs one feature vector per clip (N, D), got shape {x.shape}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    steps = n if limit is None else min(n, limit)
    mu = x.mean(axis=0)
    chosen: list[int] = []
    available = np.ones(n, dtype=bool)
    running = np.zeros_like(mu)
    for k in range(1, steps + 1):
        gaps = np.linalg.norm(mu - (running + x) / k, axis=1)
        gaps[~available] = np.inf
        pick = int(np.argmin(gaps))
        chosen.append(pick)
        available[pick] = False
        running += x[pick]
    return np.asarray(chosen, dtype=np.int64)


def rank_clips(
    ranking: str, scores: np.ndarray | None, n: int, rng: np.random.Generator | None, limit: int | None = None
) -> np.ndarray:
    """Dispatch to one ranking; ``scores`` are confidences ``(n,)`` or features ``(n, D)`` as it needs."""
    if ranking == "random":
        order = rank_randomly(n, rng)
    elif scores is None or len(scores) != n:
        got = None if scores is None else len(scores)
        raise ValueError(f"ranking={ranking!r} needs one score row per clip ({n}), got {got}")
    elif ranking == "confidence":
        order = rank_by_confidence(scores)
    elif ranking == "herding":
        order = rank_by_herding(scores, limit)
    else:
        raise ValueError(f"ranking={ranking!r} is not supported; use one of {list(RANKINGS)}")
    return order if limit is None else order[:limit]
