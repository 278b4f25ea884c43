"""Tests for fedtwin.pipelines.mutual.clustering: cosine k-means, DBSCAN on Jaccard/cosine distance, K estimation."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.metrics import homogeneity_score, normalized_mutual_info_score

from fedtwin.pipelines.mutual.clustering import CosineKMeans, JaccardDBSCAN, estimate_eps, estimate_n_clusters
from fedtwin.pipelines.mutual.kreciprocal import kreciprocal_jaccard_distance


def make_direction_blobs(seed: int, n_clusters: int = 4, per_cluster: int = 30, dim: int = 16, spread: float = 0.15):
    """Blobs that differ in direction; each row gets a random positive scale (cosine must ignore it)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_clusters, dim))
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    X = centers[labels] + spread * rng.normal(size=(labels.size, dim))
    X *= rng.uniform(0.5, 20.0, size=(labels.size, 1))
    return X.astype(np.float32), labels


def test_cosine_kmeans_recovers_well_separated_blobs():
    # Prepare
    X, y = make_direction_blobs(seed=0, n_clusters=5, per_cluster=40)

    # Execute
    km = CosineKMeans(n_clusters=5, n_init=2, random_state=0).fit(X)

    # Assert
    assert normalized_mutual_info_score(y, km.labels_) > 0.95
    np.testing.assert_allclose(np.linalg.norm(km.cluster_centers_, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(km.predict(X), km.labels_)
    assert km.inertia_ >= 0.0 and km.n_iter_ >= 1


def test_cosine_kmeans_centroid_is_normalised_member_mean():
    # Prepare: two rows pointing right and two pointing left, at very different lengths
    X = np.array([[3.0, 4.0], [1.0, 0.0], [-5.0, 0.0], [-0.6, -0.8]])

    # Execute
    km = CosineKMeans(n_clusters=2, n_init=3, random_state=1).fit(X)

    # Assert: unit rows (0.6, 0.8) + (1, 0) = (1.6, 0.8) -> (2, 1)/sqrt(5); (-1, 0) + (-0.6, -0.8) -> (-2, -1)/sqrt(5)
    assert km.labels_[0] == km.labels_[1] != km.labels_[2] == km.labels_[3]
    right = km.cluster_centers_[km.labels_[0]]
    left = km.cluster_centers_[km.labels_[2]]
    np.testing.assert_allclose(right, np.array([2.0, 1.0]) / np.sqrt(5.0), atol=1e-6)
    np.testing.assert_allclose(left, np.array([-2.0, -1.0]) / np.sqrt(5.0), atol=1e-6)
    assert km.inertia_ == pytest.approx(4 * (1 - 2 / np.sqrt(5.0)), abs=1e-5)


def test_cosine_kmeans_same_seed_same_result_and_validates_k():
    # Prepare
    X, _ = make_direction_blobs(seed=3)

    # Execute
    a = CosineKMeans(4, random_state=7).fit(X)
    b = CosineKMeans(4, random_state=7).fit(X)

    # Assert
    np.testing.assert_array_equal(a.labels_, b.labels_)
    with pytest.raises(ValueError, match="n_clusters=500"):
        CosineKMeans(500).fit(X)
    with pytest.raises(NotFittedError):
        CosineKMeans(2).predict(X)


def test_estimate_eps_is_mean_of_smallest_fraction_of_positive_pairs():
    # Prepare: pairs (0,1)=0.1, (0,2)=0.4, (1,2)=0.2
    D = np.array([[0.0, 0.1, 0.4], [0.1, 0.0, 0.2], [0.4, 0.2, 0.0]])

    # Execute / Assert: round(0.5 * 3) = 2 smallest -> (0.1 + 0.2) / 2; round(0.34 * 3) = 1 -> 0.1
    assert estimate_eps(D, rho=0.5) == pytest.approx(0.15)
    assert estimate_eps(D, rho=0.34) == pytest.approx(0.1)


def test_dbscan_cosine_finds_clusters_and_marks_planted_outliers():
    # Prepare: 4 tight direction blobs plus 6 random directions far from all of them
    X, y = make_direction_blobs(seed=0)
    outliers = np.random.default_rng(100).normal(size=(6, X.shape[1])).astype(np.float32)
    data = np.vstack([X, outliers])

    # Execute
    db = JaccardDBSCAN(eps=0.12, metric="cosine").fit(data)

    # Assert
    assert db.n_clusters_ == 4
    np.testing.assert_array_equal(db.labels_[len(X) :], -1)
    assert normalized_mutual_info_score(y, db.labels_[: len(X)]) == pytest.approx(1.0)
    assert db.cluster_centers_.shape == (4, X.shape[1])
    np.testing.assert_array_equal(db.predict(X), db.labels_[: len(X)])


def test_dbscan_jaccard_finds_clusters_with_fixed_and_data_driven_eps():
    # Prepare
    X, y = make_direction_blobs(seed=0)
    distances = kreciprocal_jaccard_distance(X)

    # Execute: within-blob pairs are ~22% of all pairs here (not MMT's ~0.2%), so rho is scaled up
    fixed = JaccardDBSCAN(eps=0.35, metric="jaccard").fit(X)
    estimated = JaccardDBSCAN(rho=0.3, metric="jaccard").fit(X)
    tight = JaccardDBSCAN(rho=0.1, metric="jaccard").fit(X)

    # Assert
    assert fixed.n_clusters_ == 4
    assert normalized_mutual_info_score(y, fixed.labels_) == pytest.approx(1.0)
    assert estimated.eps_ == pytest.approx(estimate_eps(distances, 0.3))
    assert estimated.n_clusters_ == 4
    # A small eps splits blobs and drops points as outliers, but never merges two true blobs.
    kept = tight.labels_ >= 0
    assert homogeneity_score(y[kept], tight.labels_[kept]) == pytest.approx(1.0)


def test_dbscan_jaccard_without_query_expansion_rejects_outliers():
    # Prepare: an outlier is nobody's k-reciprocal neighbour, so with k2=1 its Jaccard distance is 1
    X, _ = make_direction_blobs(seed=0)
    outliers = np.random.default_rng(100).normal(size=(6, X.shape[1])).astype(np.float32)

    # Execute
    db = JaccardDBSCAN(eps=0.7, k2=1, metric="jaccard").fit(np.vstack([X, outliers]))

    # Assert
    assert db.n_clusters_ == 4
    np.testing.assert_array_equal(db.labels_[len(X) :], -1)


def test_dbscan_rejects_unknown_metric():
    X, _ = make_direction_blobs(seed=0)
    with pytest.raises(ValueError, match="metric='euclid'"):
        JaccardDBSCAN(metric="euclid").fit(X)


def test_estimate_n_clusters_prefers_true_k():
    # Prepare
    X, _ = make_direction_blobs(seed=2, n_clusters=4)

    # Execute
    best, scores = estimate_n_clusters(X, range(2, 7), random_state=0)

    # Assert
    assert best == 4
    assert set(scores) == {2, 3, 4, 5, 6}
