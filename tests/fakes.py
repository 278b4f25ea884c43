"""Shared test helpers: hand-made states and results (no Ray, no model)."""

from __future__ import annotations

import numpy as np

from fedtwin.pipelines.federated.messages import FitResult


def make_state(w: float, b: float) -> dict[str, np.ndarray]:
    """A two-entry float32 state plus an integer buffer, filled with constants."""
    return {
        "w": np.full((2, 3), w, dtype=np.float32),
        "b": np.full((3,), b, dtype=np.float32),
        "count": np.array(7, dtype=np.int64),
    }


def make_fit_result(device_id: int, state: dict[str, np.ndarray], num_examples: int) -> FitResult:
    """A device result carrying ``state`` and a one-class histogram."""
    hist = np.zeros(3, dtype=np.int64)
    hist[device_id % 3] = num_examples
    return FitResult(device_id, num_examples, hist, {"train_loss": 1.0}, state)
