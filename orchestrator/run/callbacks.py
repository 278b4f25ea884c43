"""Run callbacks: how progress bars, Tune reporting and tests observe a run without touching the loop.

Every recipe calls the hooks in this order: ``on_run_start`` once, ``on_round_end`` after each round
(or epoch / task / session, whatever the recipe's step is), ``on_checkpoint`` after each checkpoint,
``on_run_end`` once. Hooks are called in the driver process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class RunCallback:
    """No-op base class; override what you need."""

    def on_run_start(self, info: Mapping[str, Any]) -> None:
        """The run folder exists and actors are up; ``info`` has ``run_dir``, ``total_steps``, ``start_step``."""

    def on_round_end(self, step: int, metrics: Mapping[str, Any]) -> None:
        """One round/epoch/task finished; ``metrics`` is the line written to ``metrics.jsonl``."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """A checkpoint for ``step`` was written to ``path``."""

    def on_run_end(self, summary: Mapping[str, Any]) -> None:
        """The run finished; ``summary`` is what ``summary.json`` holds."""


class CallbackList(RunCallback):
    """Fans every hook out to several callbacks, in order."""

    def __init__(self, callbacks: Sequence[RunCallback] = ()) -> None:
        self.callbacks = list(callbacks)

    def on_run_start(self, info: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_run_start(info)

    def on_round_end(self, step: int, metrics: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_round_end(step, metrics)

    def on_checkpoint(self, step: int, path: Path) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(step, path)

    def on_run_end(self, summary: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_run_end(summary)
