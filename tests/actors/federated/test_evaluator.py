"""Evaluator in-process (no Ray): accuracy and loss as before, plus the confusion matrix and per-class accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedtwin.actors.federated.evaluator import Evaluator, classification_scores
from fedtwin.orchestrator.config.loader import from_dict
from fedtwin.orchestrator.config.spec import DataConfig
from fedtwin.orchestrator.run.data_prep import ensure_partition
from fedtwin.pipelines.data.partition_manifest import load_test
from fedtwin.pipelines.model.networks import ModelConfig, build_model
from fedtwin.pipelines.model.state import state_from_model
from fedtwin.pipelines.model.training import evaluate

MODEL = ModelConfig(widths=(4, 8))


@pytest.fixture(scope="module")
def partition(tiny_data_root):
    data = from_dict(
        DataConfig,
        {
            "root": str(tiny_data_root),
            "generator": {"train_per_class": 40, "test_per_class": 10},
            "partition": {"devices": 10, "scheme": "iid", "seed": 0},
        },
    )
    return str(ensure_partition(data))


def test_scores_match_evaluate_and_the_confusion_matrix_adds_up(partition):
    # Prepare
    model = build_model(MODEL, seed=3)
    evaluator = Evaluator(partition, MODEL, seed=0)

    # Execute
    scores = evaluator.evaluate(state_from_model(model), batch_size=64)

    # Assert: accuracy and loss bit for bit as fedtwin.pipelines.model.training.evaluate gives them
    test = load_test(partition)
    reference = evaluate(model, test, batch_size=64)
    assert scores["accuracy"] == reference.accuracy and scores["loss"] == reference.loss
    assert scores["num_examples"] == 100.0
    confusion = np.asarray(scores["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.dtype == np.int64
    np.testing.assert_array_equal(confusion.sum(axis=1), np.bincount(test.labels, minlength=10))
    assert np.trace(confusion) / confusion.sum() == pytest.approx(scores["accuracy"], abs=1e-6)
    assert scores["per_class_accuracy"] == [pytest.approx(confusion[c, c] / 10) for c in range(10)]


def test_classification_scores_by_hand():
    # Prepare: 5 clips of classes 0,0,1,1,2 predicted 0,1,1,1,0; class 3 never appears
    logits = np.eye(4, dtype=np.float32)[[0, 1, 1, 1, 0]] * 5
    labels = np.array([0, 0, 1, 1, 2])

    # Execute
    scores = classification_scores(logits, labels, 4)
    empty = classification_scores(np.zeros((0, 0), np.float32), np.zeros(0, np.int64), 4)

    # Assert
    assert scores["confusion_matrix"] == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert scores["per_class_accuracy"] == [0.5, 1.0, 0.0, None]
    assert scores["accuracy"] == pytest.approx(0.6)
    assert math.isnan(empty["accuracy"]) and empty["confusion_matrix"] == [[0] * 4] * 4
    assert empty["per_class_accuracy"] == [None] * 4
