"""Pseudo-label clusterers for twin co-training: scikit-learn style estimators.

- ``CosineKMeans``: spherical k-means (k-means on L2-normalised rows, centroids re-normalised), the
  "cosine k-means" of cross pseudo-labelling and MMT's default clusterer. Scales to 50,000 x 128 in seconds.
- ``JaccardDBSCAN``: DBSCAN on the k-reciprocal Jaccard distance (MMT's DBSCAN script) or on cosine
  distance, for when the number of classes is unknown. O(N^2) memory: a few thousand rows.
- ``estimate_n_clusters``: a cheap silhouette search over a small range of K.

All estimators follow the scikit-learn contract: ``__init__`` only stores parameters, ``fit`` sets the
trailing-underscore attributes and returns ``self``. Randomness comes only from ``random_state``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
import scipy.sparse
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import DBSCAN
from sklearn.exceptions import NotFittedError
from sklearn.metrics import silhouette_score

from fedtwin.pipelines.mutual.kreciprocal import cosine_distance_matrix, kreciprocal_jaccard_distance, l2_normalize

logger = logging.getLogger(__name__)

RandomState = int | np.random.Generator | None


def _check_features(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or len(X) == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D feature matrix (N, D), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name}: features contain NaN or inf; check the embedding model's outputs")
    return X


def normalized_centroids(U: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Unit-norm mean of each cluster's rows (label -1 ignored); what classifier heads are reset to.

    Args:
        U: features ``(N, D)``, normally already L2-normalised.
        labels: cluster id per row in ``[-1, n_clusters)``.
        n_clusters: number of clusters (rows of the result).

    Returns:
        ``(n_clusters, D)`` float32 array; a cluster with no rows gets a zero row.
    """
    keep = labels >= 0
    rows = labels[keep]
    cols = np.flatnonzero(keep)
    # A sparse (K x N) indicator matmul sums members without an (N x K) dense one-hot.
    indicator = scipy.sparse.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n_clusters, len(U))
    )
    sums = np.asarray(indicator @ U, dtype=np.float32)
    return l2_normalize(sums)


def _kmeans_plusplus(U: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding with cosine distance (proportional to squared Euclidean on unit vectors)."""
    n = len(U)
    centers = np.empty((k, U.shape[1]), dtype=np.float32)
    centers[0] = U[rng.integers(n)]
    closest = np.clip(1.0 - U @ centers[0], 0.0, None)
    for i in range(1, k):
        total = float(closest.sum())
        idx = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
        centers[i] = U[idx]
        closest = np.minimum(closest, np.clip(1.0 - U @ centers[i], 0.0, None))
    return centers


def _spherical_lloyd(
    U: np.ndarray, centers: np.ndarray, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Alternate assignment by maximum cosine and re-normalised mean updates until labels settle."""
    k = len(centers)
    labels = np.full(len(U), -1)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (n_iter is returned: the iterations used)
        sims = U @ centers.T
        new_labels = sims.argmax(axis=1)
        best = sims[np.arange(len(U)), new_labels]
        new_centers = normalized_centroids(U, new_labels, k)
        empty = np.flatnonzero(np.bincount(new_labels, minlength=k) == 0)
        if empty.size:
            # Re-seed empty clusters with the worst-fitting points so K stays what was asked for.
            worst = np.argsort(best, kind="stable")[: empty.size]
            new_centers[empty] = U[worst]
            new_labels[worst] = empty
        shift = float(np.sum((new_centers - centers) ** 2))
        stable = np.array_equal(new_labels, labels)
        labels, centers = new_labels, new_centers
        if stable or shift <= tol:
            break
    sims = U @ centers.T
    labels = sims.argmax(axis=1)
    inertia = float(np.sum(1.0 - sims[np.arange(len(U)), labels]))
    return labels, centers, inertia, n_iter


class CosineKMeans(ClusterMixin, BaseEstimator):
    """Spherical k-means: k-means on unit vectors with unit-norm centroids.

    Args:
        n_clusters: K, the number of clusters.
        n_init: independent k-means++ restarts; the one with the lowest inertia is kept.
        max_iter: Lloyd iterations per restart.
        tol: stop when the summed squared centroid shift is at most this.
        random_state: seed or ``np.random.Generator``; 0 by default so runs are reproducible.

    Attributes:
        cluster_centers_: ``(K, D)`` unit-norm centroids.
        labels_: cluster id of each training row.
        inertia_: sum over rows of the cosine distance ``1 - cos`` to the assigned centroid.
        n_iter_: Lloyd iterations of the kept restart.
    """

    def __init__(
        self,
        n_clusters: int = 10,
        *,
        n_init: int = 3,
        max_iter: int = 100,
        tol: float = 1e-6,
        random_state: RandomState = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: None = None) -> CosineKMeans:
        """Cluster the rows of ``X`` (any scale; rows are L2-normalised first)."""
        X = _check_features(X, "CosineKMeans.fit")
        if not 1 <= self.n_clusters <= len(X):
            raise ValueError(f"CosineKMeans: n_clusters={self.n_clusters} must be in [1, {len(X)}] (rows)")
        if self.n_init < 1 or self.max_iter < 1:
            raise ValueError(f"CosineKMeans: n_init={self.n_init} and max_iter={self.max_iter} must be >= 1")
        U = l2_normalize(X)
        rng = np.random.default_rng(self.random_state)
        best: tuple[np.ndarray, np.ndarray, float, int] | None = None
        for _ in range(self.n_init):
            seeds = _kmeans_plusplus(U, self.n_clusters, rng)
            result = _spherical_lloyd(U, seeds, self.max_iter, self.tol)
            if best is None or result[2] < best[2]:
                best = result
        assert best is not None
        self.labels_, self.cluster_centers_, self.inertia_, self.n_iter_ = best
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Id of the centroid with the highest cosine similarity to each row."""
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError("CosineKMeans.predict called before fit")
        X = _check_features(X, "CosineKMeans.predict")
        return (l2_normalize(X) @ self.cluster_centers_.T).argmax(axis=1)


def estimate_eps(distances: np.ndarray, rho: float) -> float:
    """Mean of the smallest ``rho`` fraction of the positive pairwise distances (MMT's eps rule).

    Only the upper triangle (each pair once) is used; zero distances (self pairs, exact duplicates)
    are left out so duplicated clips cannot drive eps to 0.
    """
    if not 0.0 < rho <= 1.0:
        raise ValueError(f"JaccardDBSCAN: rho={rho} must be in (0, 1]; MMT uses 1.6e-3")
    upper = distances[np.triu_indices(len(distances), k=1)]
    upper = np.sort(upper[upper > 0])
    if upper.size == 0:
        raise ValueError("JaccardDBSCAN: all pairwise distances are 0 (identical features); cannot set eps")
    top = max(1, int(round(rho * upper.size)))
    return float(upper[:top].mean())


class JaccardDBSCAN(ClusterMixin, BaseEstimator):
    """DBSCAN on k-reciprocal Jaccard (or cosine) distance for an unknown number of clusters.

    Args:
        eps: neighbourhood radius; ``None`` sets it in ``fit`` with ``estimate_eps(distances, rho)``.
            To fix eps after the first epoch (as MMT does), pass the first fit's ``eps_`` back in.
        rho: fraction of the smallest pairwise distances averaged into eps (MMT: 1.6e-3).
        min_samples: DBSCAN core-point threshold (neighbours within eps, self included).
        k1: k-reciprocal neighbourhood size (Jaccard only).
        k2: local query expansion size (Jaccard only).
        metric: ``"jaccard"`` (k-reciprocal Jaccard) or ``"cosine"``.

    Attributes:
        labels_: cluster id per row, -1 for outliers.
        n_clusters_: number of clusters found (outliers excluded).
        eps_: the eps actually used.
        cluster_centers_: ``(n_clusters_, D)`` unit-norm centroids of the clusters' rows.
        core_sample_indices_: indices of DBSCAN core rows.
    """

    def __init__(
        self,
        eps: float | None = None,
        *,
        rho: float = 1.6e-3,
        min_samples: int = 4,
        k1: int = 20,
        k2: int = 6,
        metric: str = "jaccard",
    ) -> None:
        self.eps = eps
        self.rho = rho
        self.min_samples = min_samples
        self.k1 = k1
        self.k2 = k2
        self.metric = metric

    def fit(self, X: np.ndarray, y: None = None) -> JaccardDBSCAN:
        """Cluster the rows of ``X``; rows are L2-normalised first."""
        X = _check_features(X, "JaccardDBSCAN.fit")
        if self.metric == "jaccard":
            distances = kreciprocal_jaccard_distance(X, k1=self.k1, k2=self.k2)
        elif self.metric == "cosine":
            distances = cosine_distance_matrix(X)
        else:
            raise ValueError(f"JaccardDBSCAN: metric={self.metric!r} is not one of 'jaccard', 'cosine'")
        if self.eps is not None and self.eps <= 0:
            raise ValueError(f"JaccardDBSCAN: eps={self.eps} must be > 0 (or None to estimate it)")
        self.eps_ = float(self.eps) if self.eps is not None else estimate_eps(distances, self.rho)
        dbscan = DBSCAN(eps=self.eps_, min_samples=self.min_samples, metric="precomputed").fit(distances)
        self.labels_ = dbscan.labels_.astype(np.int64)
        self.core_sample_indices_ = dbscan.core_sample_indices_
        self.n_clusters_ = int(self.labels_.max()) + 1 if self.labels_.size else 0
        self.cluster_centers_ = normalized_centroids(l2_normalize(X), self.labels_, self.n_clusters_)
        outliers = int(np.sum(self.labels_ < 0))
        logger.info(
            "DBSCAN(%s) eps=%.4f: %d clusters, %d/%d outliers",
            self.metric,
            self.eps_,
            self.n_clusters_,
            outliers,
            len(X),
        )
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Nearest cluster centroid by cosine for new rows (never -1: DBSCAN itself has no predict)."""
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError("JaccardDBSCAN.predict called before fit")
        if self.n_clusters_ == 0:
            raise ValueError("JaccardDBSCAN.predict: the fit found no clusters (all rows were outliers)")
        X = _check_features(X, "JaccardDBSCAN.predict")
        return (l2_normalize(X) @ self.cluster_centers_.T).argmax(axis=1)


def estimate_n_clusters(
    X: np.ndarray,
    candidates: Iterable[int],
    *,
    random_state: RandomState = 0,
    sample_size: int = 2000,
) -> tuple[int, dict[int, float]]:
    """Pick K by the cosine silhouette of a one-restart ``CosineKMeans`` per candidate.

    Args:
        X: features ``(N, D)``.
        candidates: the K values to try (each in ``[2, N - 1]``).
        random_state: seed or generator for k-means and the silhouette subsample.
        sample_size: rows used by the silhouette (it is O(sample_size^2)).

    Returns:
        ``(best_k, {k: silhouette})``.
    """
    X = _check_features(X, "estimate_n_clusters")
    rng = np.random.default_rng(random_state)
    scores: dict[int, float] = {}
    for k in candidates:
        if not 2 <= k < len(X):
            raise ValueError(f"estimate_n_clusters: candidate K={k} must be in [2, {len(X) - 1}]")
        labels = CosineKMeans(k, n_init=1, random_state=rng).fit(X).labels_
        sub = int(rng.integers(2**31 - 1))
        scores[k] = float(
            silhouette_score(X, labels, metric="cosine", sample_size=min(sample_size, len(X)), random_state=sub)
        )
    if not scores:
        raise ValueError("estimate_n_clusters: candidates is empty")
    best = max(scores, key=lambda k: scores[k])
    logger.info("estimated K=%d from silhouettes %s", best, scores)
    return best, scores
