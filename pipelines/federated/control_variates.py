"""SCAFFOLD's control-variate arithmetic on a device host (pure numpy, no Ray, no torch).

A device keeps ``c_i`` under :data:`CONTROL_KEY` in its local state; the round payload carries the
server's ``c`` under the same key. Before training the host turns them into the gradient correction
``c - c_i``; after training the device's mean raw gradient becomes its new ``c_i`` and the change
``c_i+ - c_i`` goes back under :data:`DELTA_KEY`, pre-summed by the host with the weights. A missing
``c`` or ``c_i`` (the first round, a device that never trained) is zero.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedtwin.pipelines.model.state import ModelState

#: Round-payload key of the server's ``c`` and device-state key of a device's ``c_i``.
CONTROL_KEY = "control_variate"
#: The extra a device returns for its host to pre-sum: ``c_i+ - c_i``.
DELTA_KEY = "control_delta"


def correction(c: Mapping[str, np.ndarray], c_i: Mapping[str, np.ndarray]) -> ModelState | None:
    """``c - c_i`` by parameter (float32), a missing side counting as 0; None when both are empty."""
    if not c and not c_i:
        return None
    out: ModelState = {}
    for key in dict.fromkeys([*c, *c_i]):
        if key in c and key in c_i:
            out[key] = np.asarray(c[key], dtype=np.float32) - np.asarray(c_i[key], dtype=np.float32)
        elif key in c:
            out[key] = np.array(c[key], dtype=np.float32)
        else:
            out[key] = -np.asarray(c_i[key], dtype=np.float32)
    return out


def change(new: Mapping[str, np.ndarray], old: Mapping[str, np.ndarray]) -> ModelState:
    """``c_i+ - c_i`` by parameter of ``new`` (float32; a missing ``old`` entry counts as 0)."""
    return {
        k: np.asarray(v, dtype=np.float32) - np.asarray(old[k], dtype=np.float32)
        if k in old
        else np.array(v, dtype=np.float32)
        for k, v in new.items()
    }
