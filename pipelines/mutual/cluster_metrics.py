"""Pseudo-label quality and cluster-id bookkeeping via Hungarian matching.

Cluster ids are arbitrary, so comparing them with true labels, with the peer twin's labels, or with
last epoch's ids needs a one-to-one matching first. ``scipy.optimize.linear_sum_assignment`` finds the
matching that maximises agreement (or centroid cosine similarity).

Outliers: a predicted label of -1 (DBSCAN) is never matched, so it always counts as a miss in
``hungarian_accuracy`` and ``agreement``. NMI and ARI see -1 as one more "noise" group, exactly as
scikit-learn would.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from fedtwin.pipelines.mutual.kreciprocal import l2_normalize


def _check_pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"{what}: label arrays must be non-empty and equally long, got {a.size} and {b.size}")
    return a, b


def _matched_count(a: np.ndarray, b: np.ndarray) -> int:
    """Largest number of positions that agree under a one-to-one map of ids (-1 never matches)."""
    keep = (a >= 0) & (b >= 0)
    if not keep.any():
        return 0
    a_ids, a_idx = np.unique(a[keep], return_inverse=True)
    b_ids, b_idx = np.unique(b[keep], return_inverse=True)
    counts = np.zeros((a_ids.size, b_ids.size), dtype=np.int64)
    np.add.at(counts, (a_idx, b_idx), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return int(counts[rows, cols].sum())


def hungarian_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Accuracy of ``y_pred`` after the best one-to-one relabelling of its cluster ids onto ``y_true``.

    Works for different numbers of clusters and classes (unmatched clusters count as wrong).
    """
    y_true, y_pred = _check_pair(y_true, y_pred, "hungarian_accuracy")
    return _matched_count(y_true, y_pred) / y_true.size


def agreement(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Fraction of items on which two labelings agree after Hungarian matching of their ids."""
    labels_a, labels_b = _check_pair(labels_a, labels_b, "agreement")
    return _matched_count(labels_a, labels_b) / labels_a.size


def cluster_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """``{"nmi", "ari", "acc"}`` of predicted cluster ids against hidden true labels."""
    y_true, y_pred = _check_pair(y_true, y_pred, "cluster_metrics")
    return {
        "nmi": float(normalized_mutual_info_score(y_true, y_pred)),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "acc": hungarian_accuracy(y_true, y_pred),
    }


def _assign(score: np.ndarray) -> np.ndarray:
    """Permutation ``mapping[new_id] = kept_id`` maximising ``score[new_id, kept_id]``.

    ``score`` is ``(K_new, K_prev)``. Columns are padded (or cut) to ``K_new`` so the result is always a
    permutation of ``range(K_new)``: ids stay contiguous and index classifier-head rows directly.
    """
    k_new, k_prev = score.shape
    square = np.zeros((k_new, k_new), dtype=np.float64)
    # Previous ids >= K_new cannot be kept (ids must stay < K_new); new ids beyond K_prev are fresh and
    # score 0, so a new cluster only takes an old id when it resembles that old cluster.
    width = min(k_new, k_prev)
    square[:, :width] = score[:, :width]
    rows, cols = linear_sum_assignment(square, maximize=True)
    mapping = np.empty(k_new, dtype=np.int64)
    mapping[rows] = cols
    return mapping


def match_clusters(prev_centroids: np.ndarray, new_centroids: np.ndarray) -> np.ndarray:
    """Map this epoch's cluster ids onto last epoch's by Hungarian matching of centroid cosines.

    Args:
        prev_centroids: ``(K_prev, D)`` centroids of the previous clustering.
        new_centroids: ``(K_new, D)`` centroids of the new clustering.

    Returns:
        ``mapping`` of length ``K_new``, a permutation of ``range(K_new)``: new cluster ``j`` should be
        called ``mapping[j]``. Apply it with ``relabel``. When ``K_new != K_prev`` only ids below
        ``min(K_new, K_prev)`` can be kept.
    """
    prev = np.asarray(prev_centroids)
    new = np.asarray(new_centroids)
    if prev.ndim != 2 or new.ndim != 2 or prev.shape[1] != new.shape[1]:
        raise ValueError(f"match_clusters: centroid shapes {prev.shape} and {new.shape} are not (K, D) alike")
    return _assign(l2_normalize(new) @ l2_normalize(prev).T)


def match_labels(prev_labels: np.ndarray, new_labels: np.ndarray) -> np.ndarray:
    """Like ``match_clusters`` but from two labelings of the same items (maximises overlap counts)."""
    prev, new = _check_pair(prev_labels, new_labels, "match_labels")
    k_new = int(new.max()) + 1
    k_prev = max(int(prev.max()) + 1, 0)
    keep = (prev >= 0) & (new >= 0)
    counts = np.zeros((k_new, max(k_prev, 1)), dtype=np.float64)
    np.add.at(counts, (new[keep], prev[keep]), 1.0)
    return _assign(counts[:, :k_prev] if k_prev else counts[:, :0])


def relabel(labels: np.ndarray, centroids: np.ndarray, mapping: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply a ``mapping`` from ``match_clusters``: rename ids (-1 stays -1) and reorder centroid rows."""
    labels = np.asarray(labels)
    out_labels = np.where(labels >= 0, mapping[np.clip(labels, 0, None)], -1)
    out_centroids = np.empty_like(centroids)
    out_centroids[mapping] = centroids
    return out_labels, out_centroids
