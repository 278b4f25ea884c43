"""Start-up phases: what a run is doing before its first step, told to whoever listens.

Starting Ray, generating the demo data on first use, partitioning it and starting the device hosts can
take tens of seconds before round 1. Code doing one of these calls :func:`phase` (a ``with`` block) or
:func:`begin` (a phase that lasts until the next one begins or the run starts). ``run_experiment``
forwards them, for the duration of the run, to its callbacks that define ``on_phase_start(text)`` and
``on_phase_end(text, seconds, ok)`` (the progress printer does; ``ok`` is false for a phase that ended in
an error). Outside a run, nothing listens and both calls only cost a clock read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from fedtwin.orchestrator.run.callbacks import RunCallback


class _Listeners:
    """The callbacks of one run and the phase open right now."""

    def __init__(self, callbacks: Sequence[Any]) -> None:
        self.callbacks = [cb for cb in callbacks if hasattr(cb, "on_phase_start") and hasattr(cb, "on_phase_end")]
        self.open: tuple[str, float] | None = None

    def start(self, text: str) -> None:
        self.end()
        self.open = (text, time.monotonic())
        for cb in self.callbacks:
            cb.on_phase_start(text)

    def end(self, ok: bool = True) -> None:
        if self.open is None:
            return
        text, t0 = self.open
        self.open = None
        seconds = time.monotonic() - t0
        for cb in self.callbacks:
            cb.on_phase_end(text, seconds, ok)


_current: ContextVar[_Listeners | None] = ContextVar("fedtwin_phase_listeners", default=None)


@contextmanager
def reporting(callbacks: Sequence[Any]) -> Iterator[None]:
    """Forward the phases begun inside this block to ``callbacks``; an open phase ends with the block."""
    listeners = _Listeners(callbacks)
    token = _current.set(listeners)
    try:
        yield
    except BaseException:
        listeners.end(ok=False)
        raise
    else:
        listeners.end()
    finally:
        _current.reset(token)


def begin(text: str) -> None:
    """A phase that lasts until the next phase begins or :func:`end` is called (the run's start calls it)."""
    listeners = _current.get()
    if listeners is not None:
        listeners.start(text)


def end(ok: bool = True) -> None:
    """End the open phase, if any (its time is reported; ``ok=False``: it ended in an error)."""
    listeners = _current.get()
    if listeners is not None:
        listeners.end(ok)


@contextmanager
def phase(text: str) -> Iterator[None]:
    """A phase that lasts as long as the ``with`` block."""
    begin(text)
    try:
        yield
    except BaseException:
        end(ok=False)
        raise
    end()


class EndPhasesOnRunStart(RunCallback):
    """Put first among a run's callbacks: the run's start ends the last start-up phase."""

    def on_run_start(self, info: Mapping[str, Any]) -> None:
        end()
