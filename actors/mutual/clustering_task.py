"""The work of the Ray tasks around the twins: the target quality filter, the hidden labels, and each
epoch's clustering (their Ray shells are in ``fedtwin.actors.mutual.ray_actors``).

The driver passes the twins' feature ``ObjectRef`` s straight into :func:`cluster_epoch`; Ray resolves
them inside the task, so feature matrices go from the twins' object store entries to the task and
never through the driver. The task returns one :class:`Assignment` per twin (handed on to the twins as
references) and a small report of scalars, the only thing the driver reads. Pseudo-label quality is
scored here against the hidden target labels, which a separate task loads once from the dataset path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedtwin.pipelines.data.dataset_io import load_split
from fedtwin.pipelines.mutual.clip_quality import QualityFilter
from fedtwin.pipelines.mutual.cluster_metrics import agreement, cluster_metrics
from fedtwin.pipelines.mutual.clustering import normalized_centroids
from fedtwin.pipelines.mutual.kreciprocal import l2_normalize
from fedtwin.pipelines.mutual.pseudo_labels import (
    Assignment,
    ClusterSettings,
    LabelMode,
    PseudoLabels,
    cluster_once,
    make_pseudo_labels,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterRequest:
    """One epoch's clustering job (small, sent by value).

    Attributes:
        mode: ``"cross"``, ``"shared"`` or ``"self"``.
        settings: the clusterer.
        seed: k-means seed for this epoch.
        num_clusters: K fixed by an earlier epoch (``None``: from settings or estimated).
        eps: DBSCAN eps fixed by an earlier epoch.
        oracle: replace the pseudo-labels by the hidden labels (``twin.adaptation.labels: oracle``, the
            supervised upper bound of a study; never for real training).
    """

    mode: LabelMode
    settings: ClusterSettings
    seed: int
    num_clusters: int | None = None
    eps: float | None = None
    oracle: bool = False


def select_quality_clips(target_dir: str, q_min: float) -> tuple[np.ndarray, dict[str, float]]:
    """The first step of mutual co-training: indices of target ``train`` clips whose quality score exceeds ``q_min``.

    Scores are relative to the collection (sharpness is normalised by a high quantile of its frames).
    Returns the kept indices (possibly none: the caller reports that) and summary statistics.
    """
    clips = load_split(target_dir, "train").clips
    quality = QualityFilter(q_min).fit(clips)
    kept = np.flatnonzero(quality.scores_ > q_min)
    stats = {
        "clips": float(len(clips)),
        "kept": float(kept.size),
        "score_mean": float(quality.scores_.mean()),
        "score_min": float(quality.scores_.min()),
        "score_max": float(quality.scores_.max()),
    }
    return kept, stats


def load_hidden_labels(target_dir: str, kept: np.ndarray) -> np.ndarray:
    """True labels of the kept target clips, for scoring pseudo-labels only (never for training)."""
    return load_split(target_dir, "train").labels[np.asarray(kept, dtype=np.int64)].copy()


def cluster_epoch(
    features_a: np.ndarray,
    features_b: np.ndarray | None,
    request: ClusterRequest,
    previous_a: Assignment | np.ndarray | None,
    previous_b: Assignment | np.ndarray | None,
    hidden_labels: np.ndarray,
) -> tuple[Assignment, Assignment | None, dict[str, Any]]:
    """Cluster the twins' EMA features into pseudo-labels and score them against the hidden labels.

    ``previous_a``/``previous_b`` are last epoch's assignments (or label arrays), for id matching.

    Returns:
        ``(assignment_a, assignment_b or None, report)``; the report holds K, eps, outliers, timing,
        NMI/ARI/Hungarian accuracy of each twin's labels, and ``twin_agreement``: the agreement
        between clusterings of the two EMA models' own features (in cross mode those are exactly the
        two twins' labels).
    """
    started = time.perf_counter()
    features = [features_a] if features_b is None else [features_a, features_b]
    result = make_pseudo_labels(
        features,
        request.mode,
        request.settings,
        seed=request.seed,
        num_clusters=request.num_clusters,
        eps=request.eps,
        previous=[_labels_of(previous_a), _labels_of(previous_b)][: len(features)],
    )
    if request.oracle:
        result = _oracle(features, hidden_labels, result.eps)
    report: dict[str, Any] = {"num_clusters": result.num_clusters, "eps": result.eps}
    for name, assignment in zip("ab", result.assignments, strict=False):
        scores = cluster_metrics(hidden_labels, assignment.labels)
        report.update({f"pseudo_{k}_{name}": v for k, v in scores.items()})
        report[f"outliers_{name}"] = int(np.sum(assignment.labels < 0))
    report.update(_mean_over_twins(report, ("nmi", "ari", "acc"), len(features)))
    if len(features) == 2:
        report["twin_agreement"] = _own_feature_agreement(features, request, result.assignments, result.num_clusters)
    report["cluster_seconds"] = time.perf_counter() - started
    second = result.assignments[1] if len(result.assignments) > 1 else None
    return result.assignments[0], second, report


def _oracle(features: list[np.ndarray], hidden_labels: np.ndarray, eps: float | None) -> PseudoLabels:
    """The hidden labels as every twin's assignment, heads at each twin's own class centroids."""
    labels = np.asarray(hidden_labels, dtype=np.int64)
    k = int(labels.max()) + 1
    return PseudoLabels(
        tuple(Assignment(labels, normalized_centroids(l2_normalize(f), labels, k), "oracle") for f in features),
        k,
        eps,
    )


def _labels_of(previous: Assignment | np.ndarray | None) -> np.ndarray | None:
    """Last epoch's labels, from an assignment (normal epochs) or a bare array (after a resume)."""
    return previous.labels if isinstance(previous, Assignment) else previous


def _mean_over_twins(report: dict[str, Any], keys: Sequence[str], twins: int) -> dict[str, float]:
    return {f"pseudo_{k}": float(np.mean([report[f"pseudo_{k}_{n}"] for n in "ab"[:twins]])) for k in keys}


def _own_feature_agreement(
    features: list[np.ndarray], request: ClusterRequest, assignments: tuple[Assignment, ...], k: int
) -> float:
    if request.mode == "cross":
        return agreement(assignments[0].labels, assignments[1].labels)
    own = [
        cluster_once(f, request.settings, num_clusters=k, eps=request.eps, seed=request.seed + 7)[0] for f in features
    ]
    return agreement(own[0], own[1])
