"""k-reciprocal Jaccard distance between feature vectors (re-ranking style), used by ``JaccardDBSCAN``.

Written from the published description (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), which MMT's DBSCAN script clusters on:

1. ``N(p, k)``: ``p`` itself plus its ``k`` nearest neighbours under the original distance.
2. ``R(p, k) = {g in N(p, k) : p in N(g, k)}``: the k-reciprocal neighbours.
3. ``R*(p, k1)``: ``R(p, k1)`` expanded by ``R(q, k1/2)`` for each ``q in R(p, k1)`` whose half-size set
   overlaps ``R(p, k1)`` by at least 2/3 of its own size (recovers true matches that the strict
   reciprocity test misses).
4. ``V_p[g] = exp(-d(p, g))`` for ``g in R*(p, k1)``, else 0, normalised to sum to 1.
5. Local query expansion: ``V_p <- mean of V_g over g in N(p, k2)`` (k2 nearest including ``p``).
6. ``d_J(p, g) = 1 - sum(min(V_p, V_g)) / sum(max(V_p, V_g))``.

Memory and time are O(N^2) for the dense pairwise distances, so this is meant for a few thousand
clips, not for 50,000 (use ``CosineKMeans`` there).
"""

from __future__ import annotations

import numpy as np


def l2_normalize(X: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm; all-zero rows stay zero instead of becoming NaN."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, eps)


def cosine_distance_matrix(X: np.ndarray) -> np.ndarray:
    """Dense ``1 - cos(x_i, x_j)`` for all pairs, clipped to ``[0, 2]`` against rounding."""
    U = l2_normalize(X)
    return np.clip(1.0 - U @ U.T, 0.0, 2.0)


def _reciprocal_set(ranks: np.ndarray, p: int, k: int) -> np.ndarray:
    """``R(p, k)``: members of ``N(p, k)`` (first ``k + 1`` ranks, self included) that also rank ``p``."""
    forward = ranks[p, : k + 1]
    backward = ranks[forward, : k + 1]
    keep = np.any(backward == p, axis=1)
    return forward[keep]


def kreciprocal_jaccard_distance(X: np.ndarray, k1: int = 20, k2: int = 6) -> np.ndarray:
    """Pairwise k-reciprocal Jaccard distances of the rows of ``X``.

    Args:
        X: features, shape ``(N, D)``; rows are L2-normalised here, and the original distance is the
            squared Euclidean distance between unit vectors (``2 - 2 cos``), as in re-ranking practice.
        k1: neighbourhood size for the k-reciprocal sets.
        k2: neighbourhood size for local query expansion (1 disables it).

    Returns:
        A symmetric ``(N, N)`` float32 matrix in ``[0, 1]`` with a zero diagonal.
    """
    n = len(X)
    if n < 2:
        raise ValueError(f"kreciprocal_jaccard_distance needs at least 2 rows, got {n}")
    k1 = min(k1, n - 1)
    k2 = max(1, min(k2, n))
    dist = 2.0 * cosine_distance_matrix(X)  # squared Euclidean between unit vectors
    # Stable sort so ties (duplicates) rank deterministically; self is rank 0 (distance 0).
    ranks = np.argsort(dist, axis=1, kind="stable")
    self_first = ranks[:, 0] != np.arange(n)
    if self_first.any():  # exact duplicates can outrank self; put self first explicitly
        for dup in np.flatnonzero(self_first):
            row = ranks[dup]
            ranks[dup] = np.concatenate(([dup], row[row != dup]))

    half = max(1, int(round(k1 / 2)))
    V = np.zeros((n, n), dtype=np.float32)
    for p in range(n):
        base = _reciprocal_set(ranks, p, k1)
        expanded = base
        for q in base:
            candidate = _reciprocal_set(ranks, int(q), half)
            shared = np.intersect1d(candidate, base, assume_unique=True).size
            if shared >= (2.0 / 3.0) * candidate.size:
                expanded = np.union1d(expanded, candidate)
        weights = np.exp(-dist[p, expanded])
        V[p, expanded] = weights / weights.sum()

    if k2 > 1:
        V = V[ranks[:, :k2]].mean(axis=1)

    # sum_k min(V_pk, V_gk) only gets contributions where both rows are non-zero, so accumulate it
    # column by column over the (few) rows that touch each column instead of an O(N^3) dense min.
    overlap = np.zeros((n, n), dtype=np.float32)
    for col in range(n):
        rows = np.flatnonzero(V[:, col])
        if rows.size:
            vals = V[rows, col]
            overlap[np.ix_(rows, rows)] += np.minimum.outer(vals, vals)
    # Every row of V sums to 1, so sum(max) = 2 - sum(min).
    jaccard = 1.0 - overlap / (2.0 - overlap)
    np.fill_diagonal(jaccard, 0.0)
    return np.clip(jaccard, 0.0, 1.0)
