"""Label histograms and the Jensen-Shannon divergence used to measure non-IID-ness (FedDU's D).

``js_divergence`` follows the public FedDUAP reference implementation exactly: logs base 2, and KL terms where either
probability is zero are skipped, so identical distributions give 0 and disjoint supports give 1.
All functions broadcast over leading axes, so one call scores thousands of devices at once.
"""

from __future__ import annotations

import numpy as np


def label_histogram(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Count of each class index 0..num_classes-1 in ``labels``.

    Args:
        labels: integer class indices, shape (N,).
        num_classes: length of the histogram.

    Returns:
        int64 array of shape (num_classes,).

    Raises:
        ValueError: a label lies outside [0, num_classes).
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    return np.bincount(labels.astype(np.int64, copy=False), minlength=num_classes).astype(np.int64)


def distribution(hist: np.ndarray) -> np.ndarray:
    """Normalise histogram(s) along the last axis into probabilities (float64).

    Raises:
        ValueError: a histogram is empty (sums to zero) or has negative counts; its distribution is
            undefined and silently returning zeros would corrupt every JS value computed from it.
    """
    hist = np.asarray(hist, dtype=np.float64)
    if np.any(hist < 0):
        raise ValueError("histogram has negative counts")
    total = hist.sum(axis=-1, keepdims=True)
    if np.any(total == 0):
        raise ValueError("histogram is empty (all counts zero); its label distribution is undefined")
    probs: np.ndarray = hist / total
    return probs


def _kl_base2_skip_zeros(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """sum_y p_y log2(p_y / q_y) over the classes where both p_y > 0 and q_y > 0."""
    both = (p > 0) & (q > 0)
    ratio = np.divide(p, q, out=np.ones_like(p), where=both)
    kl: np.ndarray = np.sum(np.where(both, p * np.log2(ratio), 0.0), axis=-1)
    return kl


def js_divergence(p: np.ndarray, q: np.ndarray) -> float | np.ndarray:
    """Base-2 Jensen-Shannon divergence JS(p || q) in [0, 1].

    JS = 0.5 KL(p || m) + 0.5 KL(q || m) with m = (p + q) / 2, zero terms skipped.

    Args:
        p: probabilities, shape (..., K).
        q: probabilities, shape broadcastable to ``p`` (e.g. one global distribution, shape (K,)).

    Returns:
        A float for 1-D inputs, otherwise an array of the broadcast leading shape.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p, q = np.broadcast_arrays(p, q)
    m = (p + q) / 2.0
    js = 0.5 * _kl_base2_skip_zeros(p, m) + 0.5 * _kl_base2_skip_zeros(q, m)
    # Rounding can push identical inputs a hair below 0 or disjoint ones above 1.
    js = np.clip(js, 0.0, 1.0)
    return float(js) if js.ndim == 0 else js
