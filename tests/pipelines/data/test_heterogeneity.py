"""Label histograms and base-2 JS divergence against hand-computed values (FedDU's D, see docs/feddu.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedtwin.pipelines.data.heterogeneity import distribution, js_divergence, label_histogram


def test_label_histogram_counts_every_class_including_absent_ones():
    assert label_histogram(np.array([2, 0, 2, 2]), 4).tolist() == [1, 0, 3, 0]
    assert label_histogram(np.array([], dtype=np.int64), 3).tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        label_histogram(np.array([0, 3]), 3)


def test_distribution_normalises_rows_and_rejects_empty_histograms():
    np.testing.assert_allclose(distribution(np.array([1, 0, 3])), [0.25, 0.0, 0.75])
    np.testing.assert_allclose(distribution(np.array([[2, 2], [0, 5]])), [[0.5, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="empty"):
        distribution(np.array([0, 0]))


def test_js_of_identical_distributions_is_zero_and_of_disjoint_ones_is_one():
    p = np.array([0.2, 0.3, 0.5])
    assert js_divergence(p, p) == 0.0
    assert js_divergence(np.array([0.5, 0.5, 0.0, 0.0]), np.array([0.0, 0.0, 0.3, 0.7])) == pytest.approx(
        1.0, abs=1e-12
    )


def test_js_of_a_point_mass_and_a_fair_coin_matches_the_hand_computation():
    # p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4)
    # KL(p||m) = log2(4/3);  KL(q||m) = 1/2 log2(2/3) + 1/2 log2(2)
    # JS = 1/2 log2(4/3) + 1/4 log2(2/3) + 1/4 = 0.311278...
    expected = 0.5 * math.log2(4 / 3) + 0.25 * math.log2(2 / 3) + 0.25
    assert expected == pytest.approx(0.3112781245, abs=1e-10)
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(expected, abs=1e-12)


def test_js_skips_terms_where_a_probability_is_zero():
    # p = (1/2, 1/2, 0), q = (1/2, 0, 1/2), m = (1/2, 1/4, 1/4)
    # KL(p||m) = 1/2 log2(1) + 1/2 log2(2) + [skipped 0 term] = 1/2, likewise KL(q||m) = 1/2 -> JS = 1/2
    assert js_divergence(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.0, 0.5])) == pytest.approx(0.5, abs=1e-12)


def test_js_is_symmetric_and_broadcasts_over_rows():
    # Prepare
    rows = distribution(np.array([[1, 0], [1, 1], [3, 1]]))
    q = np.array([0.5, 0.5])

    # Execute
    batch = js_divergence(rows, q)

    # Assert
    assert batch.shape == (3,)
    np.testing.assert_allclose(batch, [js_divergence(r, q) for r in rows], atol=1e-15)
    np.testing.assert_allclose(batch, [js_divergence(q, r) for r in rows], atol=1e-15)
    assert batch[1] == 0.0
