"""Simulated user verification of meta-model predictions, classification form.

In its detection form, online transfer builds transfer samples from the meta-model's boxes and the
user's verdict (correct, missed, false detection). For clip classification the same logic reads, with
the hidden true label standing in for the user:

================  =========================================  ======================================
outcome           condition                                  transfer label
================  =========================================  ======================================
CORRECT           model fires, prediction == true class      the prediction
WRONG             model fires, prediction != true class      the true (user) label
MISSED            model silent, clip shows a class           the true (user) label
FALSE_POSITIVE    model fires, clip is background            background class, if enabled, else dropped
TRUE_NEGATIVE     model silent, clip is background           dropped (kept as background if asked)
================  =========================================  ======================================

"Fires" means confidence >= ``conf_threshold`` and a prediction other than the background class (a silent
detector shows the user nothing). Background clips exist only when ``background_class`` is given: their
true label equals it. Dropped samples get label -1.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np

DROPPED = -1


class Outcome(enum.IntEnum):
    """Verdict codes stored per sample in :attr:`Verification.outcomes`."""

    CORRECT = 0
    WRONG = 1
    MISSED = 2
    FALSE_POSITIVE = 3
    TRUE_NEGATIVE = 4


@dataclass(frozen=True)
class Verification:
    """Transfer labels and verdicts for a batch of new-scene clips.

    Attributes:
        labels: (N,) int64 transfer labels; ``DROPPED`` (-1) where the sample is not used.
        outcomes: (N,) int8 :class:`Outcome` codes.
    """

    labels: np.ndarray
    outcomes: np.ndarray

    @property
    def keep(self) -> np.ndarray:
        """(N,) bool mask of samples that become transfer samples."""
        return self.labels != DROPPED

    def counts(self) -> dict[str, int]:
        """Number of samples per outcome, keyed by lower-case outcome name (every outcome present)."""
        per_code = np.bincount(self.outcomes.astype(np.int64), minlength=len(Outcome))
        return {o.name.lower(): int(per_code[o]) for o in Outcome}


def verify_predictions(
    predicted: np.ndarray,
    confidence: np.ndarray,
    true_labels: np.ndarray,
    *,
    conf_threshold: float = 0.5,
    background_class: int | None = None,
    negatives_to_background: bool = True,
    keep_true_negatives: bool = False,
) -> Verification:
    """Simulate the user's verdict on each prediction and build the transfer labels.

    Args:
        predicted: (N,) predicted class per clip (argmax of the model's probabilities).
        confidence: (N,) confidence of that prediction (its probability).
        true_labels: (N,) hidden true labels; equal to ``background_class`` for background clips.
        conf_threshold: predictions below it count as "no detection".
        background_class: label of the background / "other" class, or ``None`` when every clip shows a
            class of interest.
        negatives_to_background: label false positives as background (hard negatives); when False they
            are dropped.
        keep_true_negatives: also keep silent-on-background clips as background samples.

    Returns:
        A :class:`Verification` with per-sample labels and outcome codes.
    """
    predicted = np.asarray(predicted, dtype=np.int64)
    confidence = np.asarray(confidence, dtype=np.float64)
    true_labels = np.asarray(true_labels, dtype=np.int64)
    if predicted.ndim != 1 or predicted.shape != confidence.shape or predicted.shape != true_labels.shape:
        raise ValueError(
            f"verification needs 1-D predicted, confidence, true_labels of one length; got "
            f"{predicted.shape}, {confidence.shape}, {true_labels.shape}"
        )
    if not 0.0 <= conf_threshold <= 1.0:
        raise ValueError(f"verification conf_threshold={conf_threshold} must lie in [0, 1]")

    if background_class is None:
        is_background = np.zeros(predicted.shape, dtype=bool)
        predicts_background = is_background
    else:
        is_background = true_labels == background_class
        predicts_background = predicted == background_class
    fires = (confidence >= conf_threshold) & ~predicts_background

    outcomes = np.empty(predicted.shape, dtype=np.int8)
    labels = np.full(predicted.shape, DROPPED, dtype=np.int64)
    object_clip = ~is_background

    correct = fires & object_clip & (predicted == true_labels)
    wrong = fires & object_clip & (predicted != true_labels)
    missed = ~fires & object_clip
    false_pos = fires & is_background
    true_neg = ~fires & is_background

    outcomes[correct] = Outcome.CORRECT
    outcomes[wrong] = Outcome.WRONG
    outcomes[missed] = Outcome.MISSED
    outcomes[false_pos] = Outcome.FALSE_POSITIVE
    outcomes[true_neg] = Outcome.TRUE_NEGATIVE

    labels[correct] = predicted[correct]  # a verified correct prediction keeps the model's own answer
    labels[wrong | missed] = true_labels[wrong | missed]
    if background_class is not None:
        if negatives_to_background:
            labels[false_pos] = background_class
        if keep_true_negatives:
            labels[true_neg] = background_class
    return Verification(labels=labels, outcomes=outcomes)


def verify_probabilities(probs: np.ndarray, true_labels: np.ndarray, **options: Any) -> Verification:
    """:func:`verify_predictions` from (N, K) class probabilities (prediction = argmax, confidence = max);
    ``options`` are its keyword arguments."""
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(f"verification needs (N, K) probabilities; got shape {probs.shape}")
    return verify_predictions(probs.argmax(axis=1), probs.max(axis=1), true_labels, **options)
