"""Pseudo-labels for twin co-training: which EMA features are clustered for which twin.

``label_mode`` picks the route:

- ``"cross"`` (cross pseudo-labelling): twin 0 trains on a clustering of twin 1's EMA features and twin 1
  on a clustering of twin 0's, so each network is supervised by its peer's temporal mean;
- ``"shared"`` (MMT): one clustering of both twins' EMA features, the same labels for both;
- ``"self"`` (one network, the self-training baseline): a twin clusters its own EMA features.

Two bookkeeping rules keep classifier heads meaningful from epoch to epoch:

- cluster ids are renamed by Hungarian matching of label overlap with the previous epoch's ids (and,
  in cross mode, twin 1's ids with twin 0's current ids, so both heads use one id space);
- each twin's head is re-initialised from the normalised centroids of its OWN features grouped by its
  labels. The twins start from different random inits, so their feature spaces are not aligned and a
  head must live in the space of the embedding it reads (in MMT both nets start from one ImageNet
  model, which is why its shared centroids work for both).

Shared mode combines the two unit-normalised feature matrices side by side and scales by 1/sqrt(2)
(``shared_features="concat"``): the cosine of two such rows is the mean of the two twins' cosines,
which needs no alignment between the spaces. ``"mean"`` (MMT's averaged features) is kept as an option.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from fedtwin.pipelines.mutual.cluster_metrics import match_labels
from fedtwin.pipelines.mutual.clustering import CosineKMeans, JaccardDBSCAN, estimate_n_clusters, normalized_centroids
from fedtwin.pipelines.mutual.kreciprocal import l2_normalize
from fedtwin.pipelines.mutual.settings import ClusterSettings

logger = logging.getLogger(__name__)

LabelMode = Literal["cross", "shared", "self"]
LABEL_MODES = ("cross", "shared", "self")


@dataclass(frozen=True, eq=False)
class Assignment:
    """One twin's pseudo-labels for an epoch.

    Attributes:
        labels: ``(N,)`` int64 cluster id per clip, -1 for an outlier (not trained on this epoch).
        centroids: ``(K, D)`` unit-norm centroids in this twin's own feature space (its head rows).
        source: digest of the feature matrix that was clustered (provenance: whose EMA labelled it).
    """

    labels: np.ndarray
    centroids: np.ndarray
    source: str

    @property
    def num_clusters(self) -> int:
        """K, the number of head rows."""
        return int(self.centroids.shape[0])


@dataclass(frozen=True, eq=False)
class PseudoLabels:
    """The outcome of one epoch's clustering.

    Attributes:
        assignments: one :class:`Assignment` per twin, in twin order.
        num_clusters: K used (estimated or found).
        eps: the DBSCAN eps used (``None`` for k-means); pass it back in to keep it fixed.
    """

    assignments: tuple[Assignment, ...]
    num_clusters: int
    eps: float | None


def feature_digest(X: np.ndarray) -> str:
    """Short content hash of a feature matrix, to trace which twin's features produced a labeling."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    return hashlib.sha1(X.tobytes() + str(X.shape).encode()).hexdigest()[:12]


def combine_shared(features: Sequence[np.ndarray], how: Literal["concat", "mean"] = "concat") -> np.ndarray:
    """The matrix shared mode clusters: both twins' unit rows side by side / sqrt(2), or their mean."""
    units = [l2_normalize(f) for f in features]
    if how == "concat":
        return np.concatenate(units, axis=1) / np.float32(np.sqrt(len(units)))
    if how == "mean":
        if len({u.shape[1] for u in units}) != 1:
            raise ValueError("shared_features='mean' needs both twins to have the same embedding size")
        return np.mean(units, axis=0).astype(np.float32)
    raise ValueError(f"shared_features={how!r} must be 'concat' or 'mean'")


def route_features(
    features: Sequence[np.ndarray], mode: LabelMode, how: Literal["concat", "mean"] = "concat"
) -> list[np.ndarray]:
    """The matrix each twin's labels are clustered from: ``routes[j]`` labels twin ``j``.

    In shared mode both entries are the same object (one clustering serves both twins).
    """
    if mode not in LABEL_MODES:
        raise ValueError(f"label_mode={mode!r} must be one of {LABEL_MODES}")
    if mode == "self":
        if len(features) != 1:
            raise ValueError(f"label_mode='self' is for one network, got {len(features)} feature matrices")
        return [features[0]]
    if len(features) != 2:
        raise ValueError(f"label_mode={mode!r} needs the features of two twins, got {len(features)}")
    if mode == "cross":
        return [features[1], features[0]]
    shared = combine_shared(features, how)
    return [shared, shared]


def cluster_once(
    X: np.ndarray, settings: ClusterSettings, *, num_clusters: int | None, eps: float | None, seed: int
) -> tuple[np.ndarray, int, float | None]:
    """Cluster rows of ``X``; returns ``(labels, K, eps)`` (K estimated when ``num_clusters`` is None)."""
    if settings.method == "kmeans":
        k = num_clusters
        if k is None:
            k, _ = estimate_n_clusters(X, settings.k_candidates, random_state=seed)
        labels = CosineKMeans(k, n_init=settings.n_init, random_state=seed).fit(X).labels_
        return labels.astype(np.int64), int(k), None
    if settings.method == "dbscan":
        db = JaccardDBSCAN(
            eps, rho=settings.dbscan_rho, min_samples=settings.dbscan_min_samples, metric=settings.dbscan_metric
        ).fit(X)
        if db.n_clusters_ == 0:
            raise ValueError(
                f"DBSCAN found no clusters (eps={db.eps_:.4f}); raise dbscan_rho or lower dbscan_min_samples"
            )
        return db.labels_, db.n_clusters_, db.eps_
    raise ValueError(f"clustering method={settings.method!r} must be 'kmeans' or 'dbscan'")


def _rename(labels: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    """Rename ids to agree with ``reference`` (same clips) by Hungarian matching; -1 stays -1."""
    if reference is None or not np.any(labels >= 0) or not np.any(reference >= 0):
        return labels
    mapping = match_labels(reference, labels)
    return np.where(labels >= 0, mapping[np.clip(labels, 0, None)], -1)


def make_pseudo_labels(
    features: Sequence[np.ndarray],
    mode: LabelMode,
    settings: ClusterSettings,
    *,
    seed: int,
    num_clusters: int | None = None,
    eps: float | None = None,
    previous: Sequence[np.ndarray | None] | None = None,
) -> PseudoLabels:
    """Cluster each twin's routed features and build its head centroids in its own feature space.

    Args:
        features: the twins' L2-normalised EMA features ``(N, D_j)``, in twin order (one for ``"self"``).
        mode: ``"cross"``, ``"shared"`` or ``"self"``.
        settings: clusterer settings.
        seed: k-means seed (derive it from the run seed and the epoch).
        num_clusters: K to use; ``None`` falls back to ``settings.num_clusters`` (then to an estimate).
        eps: DBSCAN eps fixed by an earlier epoch (``None`` estimates it).
        previous: last epoch's labels per twin (``None`` entries at the first epoch), for id matching.

    Returns:
        :class:`PseudoLabels` with one assignment per twin.
    """
    routes = route_features(features, mode, settings.shared_features)
    k = num_clusters if num_clusters is not None else settings.num_clusters
    previous = list(previous) if previous is not None else [None] * len(routes)
    labels: list[np.ndarray] = []
    for j, X in enumerate(routes):
        if j == 1 and mode == "shared":
            labels.append(labels[0])  # one clustering serves both twins
            continue
        raw, k, eps = cluster_once(X, settings, num_clusters=k, eps=eps, seed=seed + j)
        # Twin 0 keeps last epoch's ids; in cross mode twin 1 speaks twin 0's ids (soft targets need that).
        reference = previous[0] if j == 0 else labels[0]
        labels.append(_rename(raw, reference))
    assert k is not None
    # A clustering with fewer ids than K still gets K head rows (empty clusters get zero rows).
    k = max(k, *(int(lab.max()) + 1 for lab in labels))
    assignments = tuple(
        Assignment(lab, normalized_centroids(l2_normalize(features[j]), lab, k), feature_digest(routes[j]))
        for j, lab in enumerate(labels)
    )
    return PseudoLabels(assignments, k, eps)
