"""The clustering task's oracle switch: the hidden labels replace the pseudo-labels (plain function, no Ray)."""

from __future__ import annotations

import numpy as np

from fedtwin.actors.mutual.clustering_task import ClusterRequest, cluster_epoch
from fedtwin.pipelines.mutual.pseudo_labels import ClusterSettings


def _features(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    centres = rng.normal(size=(4, 8))
    return (centres[labels] + 0.8 * rng.normal(size=(labels.size, 8))).astype(np.float32)


def test_oracle_labels_are_the_hidden_labels_and_the_default_clusters():
    rng = np.random.default_rng(0)
    hidden = np.repeat(np.arange(4), 10)
    rng.shuffle(hidden)
    a, b = _features(rng, hidden), _features(rng, hidden)
    settings = ClusterSettings(num_clusters=4)

    oracle_a, oracle_b, report = cluster_epoch(
        a, b, ClusterRequest("cross", settings, seed=3, oracle=True), None, None, hidden
    )
    plain_a, _, plain = cluster_epoch(a, b, ClusterRequest("cross", settings, seed=3), None, None, hidden)

    assert oracle_b is not None
    for assignment, features in ((oracle_a, a), (oracle_b, b)):
        np.testing.assert_array_equal(assignment.labels, hidden)
        assert assignment.source == "oracle" and assignment.centroids.shape == (4, 8)
        unit = features / np.linalg.norm(features, axis=1, keepdims=True)
        centre = unit[hidden == 2].mean(axis=0)
        np.testing.assert_allclose(assignment.centroids[2], centre / np.linalg.norm(centre), atol=1e-5)
    assert report["pseudo_nmi"] == 1.0 and report["pseudo_acc"] == 1.0 and report["num_clusters"] == 4
    # Without the switch the labels come from the clustering (noisy features: not the hidden labels)
    assert plain_a.source != "oracle" and plain["pseudo_acc"] < 1.0
