"""Tests for fedtwin.pipelines.mutual.pseudo_labels.

Which features label which twin, id matching, own-space centroids.
"""

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score as nmi

from fedtwin.pipelines.mutual.clustering import normalized_centroids
from fedtwin.pipelines.mutual.kreciprocal import l2_normalize
from fedtwin.pipelines.mutual.pseudo_labels import (
    ClusterSettings,
    combine_shared,
    feature_digest,
    make_pseudo_labels,
    route_features,
)


def blobs(groups: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Rows pointing near one of ``groups.max() + 1`` random directions (tight, well separated)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(int(groups.max()) + 1, dim)) * 5.0
    return (centers[groups] + 0.1 * rng.normal(size=(groups.size, dim))).astype(np.float32)


# Twin 0's features group clips in blocks (0..19 | 20..39 | 40..59); twin 1's by index modulo 3.
BLOCKS = np.repeat(np.arange(3), 20)
STRIPES = np.arange(60) % 3
F0 = l2_normalize(blobs(BLOCKS, dim=8, seed=0))
F1 = l2_normalize(blobs(STRIPES, dim=5, seed=1))
KMEANS3 = ClusterSettings(num_clusters=3)


def test_cross_mode_labels_each_twin_with_its_peers_features():
    # Execute
    result = make_pseudo_labels([F0, F1], "cross", KMEANS3, seed=0)

    # Assert: twin 0 learns twin 1's grouping (stripes) and vice versa; provenance names the peer
    a, b = result.assignments
    assert nmi(STRIPES, a.labels) == pytest.approx(1.0)
    assert nmi(BLOCKS, b.labels) == pytest.approx(1.0)
    assert nmi(BLOCKS, a.labels) < 0.01
    assert a.source == feature_digest(F1) and b.source == feature_digest(F0)


def test_shared_mode_gives_both_twins_one_labeling_of_both_feature_sets():
    # Execute: K=9 can resolve every (block, stripe) pair only when both twins' features are used
    result = make_pseudo_labels([F0, F1], "shared", ClusterSettings(num_clusters=9), seed=0)

    # Assert
    a, b = result.assignments
    np.testing.assert_array_equal(a.labels, b.labels)
    assert nmi(BLOCKS * 3 + STRIPES, a.labels) == pytest.approx(1.0)
    assert a.source == b.source == feature_digest(combine_shared([F0, F1]))


def test_self_mode_labels_a_single_network_with_its_own_features():
    # Execute
    result = make_pseudo_labels([F0], "self", KMEANS3, seed=0)

    # Assert
    (a,) = result.assignments
    assert nmi(BLOCKS, a.labels) == pytest.approx(1.0)
    assert a.source == feature_digest(F0)


def test_heads_get_centroids_of_each_twins_own_features():
    # Execute
    a, b = make_pseudo_labels([F0, F1], "cross", KMEANS3, seed=0).assignments

    # Assert: twin 0's head reads 8-d features, twin 1's 5-d, whoever produced the labels
    assert a.centroids.shape == (3, 8) and b.centroids.shape == (3, 5)
    np.testing.assert_allclose(a.centroids, normalized_centroids(F0, a.labels, 3), atol=1e-6)
    label = a.labels[0]
    members = F0[a.labels == label]
    expected = members.sum(axis=0) / np.linalg.norm(members.sum(axis=0))
    np.testing.assert_allclose(a.centroids[label], expected, atol=1e-5)


def test_ids_follow_last_epoch_and_the_peer_in_cross_mode():
    # Prepare: last epoch called the blocks 2, 0, 1 (a permutation the clusterer cannot guess)
    previous = np.array([2, 0, 1])[BLOCKS]
    same = [F0, F0 * 1.0]  # both twins see the block structure

    # Execute
    result = make_pseudo_labels(same, "cross", KMEANS3, seed=5, previous=[previous, None])

    # Assert: twin 0 keeps last epoch's ids exactly; twin 1 speaks twin 0's ids
    a, b = result.assignments
    np.testing.assert_array_equal(a.labels, previous)
    np.testing.assert_array_equal(b.labels, previous)


def test_combine_shared_concat_cosine_is_mean_of_cosines():
    # Prepare
    u = combine_shared([F0, F1], "concat")

    # Execute
    cos_pair = float(u[0] @ u[25])

    # Assert
    assert cos_pair == pytest.approx((F0[0] @ F0[25] + F1[0] @ F1[25]) / 2, abs=1e-6)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-6)


def test_route_features_checks_mode_and_twin_count():
    with pytest.raises(ValueError, match="label_mode='bogus'"):
        route_features([F0, F1], "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs the features of two twins"):
        route_features([F0], "cross")
    with pytest.raises(ValueError, match="one network"):
        route_features([F0, F1], "self")
    with pytest.raises(ValueError, match="same embedding size"):
        combine_shared([F0, F1], "mean")


def test_dbscan_outliers_stay_unlabelled_and_eps_is_reported():
    # Prepare: three tight blobs of 20 plus 3 isolated points
    rng = np.random.default_rng(99)  # not blobs()'s seed: its first draws are the blob centres
    groups = np.repeat(np.arange(3), 20)
    X = np.concatenate([blobs(groups, dim=6, seed=3), rng.normal(size=(3, 6)).astype(np.float32) * 5])
    settings = ClusterSettings(method="dbscan", dbscan_metric="cosine", dbscan_min_samples=4)

    # Execute: eps fixed (as after the first epoch); within-blob cosine distances are ~1e-3
    result = make_pseudo_labels([l2_normalize(X)], "self", settings, seed=0, eps=0.05)

    # Assert
    (a,) = result.assignments
    assert result.num_clusters == 3 and result.eps == 0.05
    assert nmi(groups, a.labels[:60]) == pytest.approx(1.0)
    assert np.all(a.labels[60:] == -1)
