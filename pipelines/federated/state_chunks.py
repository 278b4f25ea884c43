"""Splitting devices' local state into chunks of bounded size (for checkpoints streamed chunk by chunk).

A host answers the driver's checkpoint one chunk at a time, so neither the host's answer nor the
driver's copy of it ever holds more than about ``max_bytes`` of device state (pure Python, no Ray).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

#: Bytes one chunk of device state may hold (the last device added may take it past).
CHUNK_BYTES = 16 * 2**20
#: What one entry of a device's state costs besides its array bytes (its key and header record).
ENTRY_BYTES = 64


def state_nbytes(state: Any) -> int:
    """Bytes a (nested) device state takes: its arrays' bytes plus :data:`ENTRY_BYTES` per entry."""
    if isinstance(state, Mapping):
        return sum(ENTRY_BYTES + state_nbytes(v) for v in state.values())
    if isinstance(state, np.ndarray):
        return int(state.nbytes)
    return 0


def chunk_by_bytes(sizes: Iterable[tuple[int, int]], max_bytes: int) -> list[list[int]]:
    """Group ``(device_id, bytes)`` pairs, in order, into lists whose bytes stay within ``max_bytes``
    (a device larger than ``max_bytes`` gets a chunk of its own); no empty chunk."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
    chunks: list[list[int]] = []
    current: list[int] = []
    used = 0
    for device_id, size in sizes:
        if current and used + size > max_bytes:
            chunks.append(current)
            current, used = [], 0
        current.append(int(device_id))
        used += size
    if current:
        chunks.append(current)
    return chunks
