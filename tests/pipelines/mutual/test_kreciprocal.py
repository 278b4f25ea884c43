"""Tests for fedtwin.pipelines.mutual.kreciprocal: the k-reciprocal Jaccard distance on hand-checkable inputs."""

import numpy as np
import pytest

from fedtwin.pipelines.mutual.kreciprocal import cosine_distance_matrix, kreciprocal_jaccard_distance


def unit(angle: float) -> list[float]:
    return [np.cos(angle), np.sin(angle)]


def test_two_mutual_pairs_give_closed_form_distances():
    # Prepare: two pairs of unit vectors, each pair the other's nearest neighbour, pairs far apart.
    # With k1=1, k2=1: R*(p) = {p, q}, V_p = (1, e^-d)/(1 + e^-d) on (p, q), V_q mirrored, so
    # sum(min) = 2 e^-d/(1+e^-d), sum(max) = 2/(1+e^-d) and d_J(p, q) = 1 - e^-d, d = 2 - 2 cos.
    X = np.array([unit(0.0), unit(0.2), unit(np.pi), unit(np.pi + 0.3)])

    # Execute
    D = kreciprocal_jaccard_distance(X, k1=1, k2=1)

    # Assert
    d01 = 2 - 2 * np.cos(0.2)
    d23 = 2 - 2 * np.cos(0.3)
    assert D[0, 1] == pytest.approx(1 - np.exp(-d01), abs=1e-6)
    assert D[2, 3] == pytest.approx(1 - np.exp(-d23), abs=1e-6)
    np.testing.assert_allclose(D[:2, 2:], 1.0)
    np.testing.assert_allclose(D, D.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(D), 0.0)


def test_query_expansion_keeps_distances_in_unit_range_and_symmetric():
    # Prepare
    X = np.random.default_rng(0).normal(size=(40, 8))

    # Execute
    D = kreciprocal_jaccard_distance(X, k1=5, k2=3)

    # Assert
    assert D.min() >= 0.0 and D.max() <= 1.0
    np.testing.assert_allclose(D, D.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(D), 0.0)


def test_cosine_distance_matrix_by_hand():
    X = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    expected = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    np.testing.assert_allclose(cosine_distance_matrix(X), expected, atol=1e-6)
