import numpy as np
import pytest

from fedtwin.pipelines.transfer.verification import DROPPED, Outcome, verify_predictions, verify_probabilities

# Three digit classes 0..2 and background class 3; threshold 0.5.
PREDICTED = [1, 2, 0, 2, 3, 1, 3, 0]
CONFIDENCE = [0.9, 0.8, 0.3, 0.7, 0.9, 0.2, 0.95, 0.5]
TRUE = [1, 0, 0, 3, 3, 3, 2, 0]


def test_outcomes_and_labels_on_a_hand_made_batch():
    # Execute
    result = verify_predictions(PREDICTED, CONFIDENCE, TRUE, conf_threshold=0.5, background_class=3)

    # Assert
    expected_outcomes = [
        Outcome.CORRECT,  # fires, right class
        Outcome.WRONG,  # fires on class 2, truth 0
        Outcome.MISSED,  # right class but under the threshold: the user sees nothing
        Outcome.FALSE_POSITIVE,  # fires on a background clip
        Outcome.TRUE_NEGATIVE,  # predicts background on background
        Outcome.TRUE_NEGATIVE,  # too unsure on background
        Outcome.MISSED,  # predicts background on a class-2 clip
        Outcome.CORRECT,  # threshold is inclusive
    ]
    np.testing.assert_array_equal(result.outcomes, expected_outcomes)
    np.testing.assert_array_equal(result.labels, [1, 0, 0, 3, DROPPED, DROPPED, 2, 0])
    assert result.counts() == {"correct": 2, "wrong": 1, "missed": 2, "false_positive": 1, "true_negative": 2}
    np.testing.assert_array_equal(result.keep, [True, True, True, True, False, False, True, True])


def test_background_options_drop_or_keep_negatives():
    dropped = verify_predictions(PREDICTED, CONFIDENCE, TRUE, background_class=3, negatives_to_background=False)
    kept = verify_predictions(PREDICTED, CONFIDENCE, TRUE, background_class=3, keep_true_negatives=True)

    np.testing.assert_array_equal(dropped.labels, [1, 0, 0, DROPPED, DROPPED, DROPPED, 2, 0])
    np.testing.assert_array_equal(kept.labels, [1, 0, 0, 3, 3, 3, 2, 0])


def test_without_background_every_clip_is_correct_wrong_or_missed():
    # Prepare: rows of class probabilities; argmax/max give (0, .6), (1, .7), (2, .4)
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]])

    # Execute
    result = verify_probabilities(probs, [0, 2, 2], conf_threshold=0.5)

    # Assert
    np.testing.assert_array_equal(result.outcomes, [Outcome.CORRECT, Outcome.WRONG, Outcome.MISSED])
    np.testing.assert_array_equal(result.labels, [0, 2, 2])
    assert result.counts()["false_positive"] == 0


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="one length"):
        verify_predictions([0, 1], [0.9], [0, 1])
    with pytest.raises(ValueError, match="conf_threshold"):
        verify_predictions([0], [0.9], [0], conf_threshold=1.5)
