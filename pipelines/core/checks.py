"""The range-check helper of every settings dataclass (config sections and the settings they hold)."""

from __future__ import annotations


def check(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``; ``message`` starts with the field, e.g. ``"lr: must be > 0"``."""
    if not ok:
        raise ValueError(message)
