"""Tests for pipelines/incremental/exemplar_ranking.py: confidence, random and herding orders."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedtwin.pipelines.incremental.exemplar_ranking import (
    confidence_from_logits,
    rank_by_confidence,
    rank_by_herding,
    rank_clips,
)


def test_confidence_from_logits_is_softmax_of_the_true_class():
    # Prepare: logits (ln 3, 0) -> softmax (3/4, 1/4)
    logits = np.array([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    # Execute
    conf = confidence_from_logits(logits, np.array([0, 1]))
    # Assert
    np.testing.assert_allclose(conf, [0.75, 0.25])


def test_confidence_order_is_descending_and_stable_on_ties():
    assert rank_by_confidence(np.array([0.2, 0.9, 0.2, 0.5])).tolist() == [1, 3, 0, 2]


def test_herding_order_on_a_hand_example():
    # Prepare: a = (1, 0), b = (0, 1), c = (1, 1)/sqrt(2); class mean mu = (0.569, 0.569)
    features = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # rows are normalised first
    # Execute
    order = rank_by_herding(features)
    # Assert: c is closest to mu; then (c + a)/2 and (c + b)/2 tie and the first index wins; then b
    assert order.tolist() == [2, 0, 1]
    assert rank_by_herding(features, limit=1).tolist() == [2]


def test_random_order_depends_only_on_the_generator():
    first = rank_clips("random", None, 10, np.random.default_rng(7))
    again = rank_clips("random", None, 10, np.random.default_rng(7))
    assert first.tolist() == again.tolist() and sorted(first.tolist()) == list(range(10))


def test_limit_and_missing_scores():
    assert rank_clips("confidence", np.array([0.1, 0.3, 0.2]), 3, None, limit=2).tolist() == [1, 2]
    with pytest.raises(ValueError, match="one score row per clip"):
        rank_clips("herding", None, 3, None)
