"""The one hook through which a fault drill reaches into a federated run.

Production code calls a hook at a few named points and nothing else: a device host before each of its
devices trains and before it answers (in its own process), the Ray backend when it gathers device state
for a checkpoint, before the test evaluation and before a server pass (in the driver). The default hook
does nothing. A drill (``fedtwin drill``, :mod:`fedtwin.orchestrator.recipes.federated.drill`) installs
one that raises, sleeps or SIGKILLs at the points its plan names; nothing in the spec or the backend
knows about drills beyond this call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

#: ``device``: a host is about to train ``device`` (``trained`` of its devices done in this call);
#: ``answer``: a host trained all ``trained`` devices and is about to answer; ``checkpoint``: the driver
#: gathers device state for round ``round_num``'s checkpoint; ``evaluate`` / ``server_pass``: the driver
#: is about to ask the evaluator (or server node) for the test evaluation / the server pass.
Phase = Literal["device", "answer", "checkpoint", "evaluate", "server_pass"]


@dataclass(frozen=True)
class FaultPoint:
    """Where a run is when it calls the hook.

    Attributes:
        phase: see :data:`Phase`.
        round_num: the round.
        host: the device host (its fold slot) for ``device`` and ``answer``.
        device: the device about to train (``device``).
        trained: devices the host has trained so far in this call.
    """

    phase: Phase
    round_num: int
    host: int | None = None
    device: int | None = None
    trained: int = 0


#: ``hook(point, subject)``: ``subject`` is the ``DeviceHost`` (host points) or the backend (driver points).
FaultHook = Callable[[FaultPoint, Any], None]


def no_faults(point: FaultPoint, subject: Any) -> None:
    """The production hook: nothing happens."""
