"""Tests for fedtwin.pipelines.mutual.cluster_metrics: Hungarian accuracy, NMI/ARI, agreement and id matching."""

import numpy as np
import pytest

from fedtwin.pipelines.mutual.cluster_metrics import (
    agreement,
    cluster_metrics,
    hungarian_accuracy,
    match_clusters,
    match_labels,
    relabel,
)


def test_hungarian_accuracy_is_one_for_a_permutation_of_ids():
    # Prepare
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    permutation = np.array([2, 0, 1])

    # Execute
    metrics = cluster_metrics(y_true, permutation[y_true])

    # Assert
    assert hungarian_accuracy(y_true, permutation[y_true]) == 1.0
    assert metrics == pytest.approx({"nmi": 1.0, "ari": 1.0, "acc": 1.0})


def test_hungarian_accuracy_partial_case_by_hand():
    # Prepare: confusion (true x pred) = [[2, 1], [0, 3]] -> best map 0->0, 1->1 gives 5 of 6
    y_true = np.array([0, 0, 0, 1, 1, 1])
    y_pred = np.array([5, 5, 7, 7, 7, 7])

    # Execute / Assert
    assert hungarian_accuracy(y_true, y_pred) == pytest.approx(5 / 6)


def test_more_clusters_than_classes_and_outliers_count_as_misses():
    # Prepare: cluster 9 cannot be matched (2 classes, 3 clusters); the -1 is an outlier
    y_true = np.array([0, 0, 0, 1, 1, 1])
    y_pred = np.array([3, 3, 9, 4, 4, -1])

    # Execute / Assert: matched 3->0 (2 items) and 4->1 (2 items) = 4 of 6
    assert hungarian_accuracy(y_true, y_pred) == pytest.approx(4 / 6)


def test_agreement_is_symmetric_and_ignores_id_names():
    a = np.array([0, 0, 1, 1, 2, 2])
    b = np.array([1, 1, 0, 0, 0, 2])
    assert agreement(a, b) == pytest.approx(5 / 6)
    assert agreement(b, a) == pytest.approx(5 / 6)


def test_match_clusters_recovers_a_known_permutation():
    # Prepare: new centroids are the old ones shuffled and slightly perturbed
    rng = np.random.default_rng(0)
    prev = rng.normal(size=(6, 16))
    order = np.array([3, 0, 5, 1, 4, 2])  # new id j is old cluster order[j]
    new = prev[order] + 0.05 * rng.normal(size=(6, 16))

    # Execute
    mapping = match_clusters(prev, new)

    # Assert
    np.testing.assert_array_equal(mapping, order)


def test_relabel_applies_mapping_to_labels_and_centroid_rows():
    # Prepare
    mapping = np.array([2, 0, 1])
    labels = np.array([0, 1, 2, -1, 0])
    centroids = np.array([[0.0], [1.0], [2.0]])

    # Execute
    new_labels, new_centroids = relabel(labels, centroids, mapping)

    # Assert: new cluster 0 is now called 2, so its centroid row moves to index 2
    np.testing.assert_array_equal(new_labels, [2, 0, 1, -1, 2])
    np.testing.assert_array_equal(new_centroids.ravel(), [1.0, 2.0, 0.0])


def test_match_clusters_with_more_new_clusters_keeps_ids_contiguous():
    # Prepare: two old clusters, three new ones; new 2 looks like old 0, new 0 like old 1
    prev = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    new = np.array([[0.1, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.1, 0.0]])

    # Execute
    mapping = match_clusters(prev, new)

    # Assert
    np.testing.assert_array_equal(mapping, [1, 2, 0])


def test_match_labels_from_two_labelings():
    prev = np.array([0, 0, 1, 1, 2, 2])
    new = np.array([2, 2, 0, 0, 1, 1])
    np.testing.assert_array_equal(match_labels(prev, new), [1, 2, 0])
