"""Run callbacks: how progress bars, Tune reporting and tests observe a run without touching the loop.

The loop calls the hooks in this order for every recipe: ``on_run_start`` once, ``on_step_end`` after
each step (a round, an epoch, a task or a session: whatever the recipe's ``unit`` is), ``on_checkpoint``
after each checkpoint, ``on_run_end`` once. Hooks are called in the driver process.

``on_round_end`` is the name ``on_step_end`` had in fedtwin 0.2 and earlier. A callback that still overrides
it keeps being called (with a ``DeprecationWarning``) for one release; so is a call of ``on_round_end``
on a callback that overrides ``on_step_end``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class RunCallback:
    """No-op base class; override what you need."""

    def on_run_start(self, info: Mapping[str, Any]) -> None:
        """The run folder exists and actors are up; ``info`` has ``run_dir``, ``total_steps``, ``start_step``."""

    def on_step_end(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Step ``step`` finished; ``metrics`` is the line written to ``metrics.jsonl``."""
        if _overrides(self, "on_round_end"):
            _deprecated(self)
            self.on_round_end(step, metrics)

    def on_round_end(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Deprecated alias of :meth:`on_step_end` (removed in the release after next)."""
        if _overrides(self, "on_step_end"):
            _deprecated(self)
            self.on_step_end(step, metrics)

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

    def on_step_end(self, step: int, metrics: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            hook = getattr(cb, "on_step_end", None)
            if hook is None:  # a duck-typed callback written before the rename
                _deprecated(cb)
                hook = cb.on_round_end
            hook(step, metrics)

    def on_round_end(self, step: int, metrics: Mapping[str, Any]) -> None:
        warnings.warn("CallbackList.on_round_end is deprecated; call on_step_end", DeprecationWarning, stacklevel=2)
        self.on_step_end(step, metrics)

    def on_checkpoint(self, step: int, path: Path) -> None:
        for cb in self.callbacks:
            cb.on_checkpoint(step, path)

    def on_run_end(self, summary: Mapping[str, Any]) -> None:
        for cb in self.callbacks:
            cb.on_run_end(summary)


def _overrides(callback: object, name: str) -> bool:
    """Whether ``callback``'s class defines hook ``name`` itself (not just inherits RunCallback's)."""
    return getattr(type(callback), name, None) is not getattr(RunCallback, name)


def _deprecated(callback: object) -> None:
    warnings.warn(
        f"{type(callback).__name__}.on_round_end: the hook is called on_step_end after fedtwin 0.2; rename it",
        DeprecationWarning,
        stacklevel=3,
    )
