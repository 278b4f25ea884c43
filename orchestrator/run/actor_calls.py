"""Every call from the driver to an actor goes through here: a deadline, recovery of a lost actor, bounded
retries, and at the end one line (``fedtwin: error: ...``, exit 1), never a traceback.

A failed call is one of three kinds (:func:`classify`):

``lost``
    The actor's process died or is restarting (``RayActorError`` and its subclasses, a lost object, a
    dead worker or node), or it answered that it restarted since the driver last synced it (e.g. a
    device host's ``StaleHostError``). The call is tried again once the actor is back: Ray restarts it
    (``resources.max_restarts``) or, when it is dead for good, :class:`ActorSlot` starts a replacement.
``timeout``
    No answer before the deadline. A restartable actor is killed (Ray restarts it) and the call tried
    again; a stateful one (twins, trainers) is an error.
``raised``
    The actor's own code raised. Not retried: the same inputs raise the same error. A ``FedtwinError``
    raised inside the actor (a user error it found) keeps its own message and exit code.

Stateful actors whose state lives only in their process (twin networks, the incremental and transfer
trainers) are called with ``retries=0`` and no ``start``: losing one ends the run with one line that
names the actor and how to resume from the last checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import (
    ActorUnavailableError,
    GetTimeoutError,
    NodeDiedError,
    ObjectLostError,
    RayActorError,
    RayError,
    RayTaskError,
    WorkerCrashedError,
)

from fedtwin.pipelines.core.errors import FedtwinError

__all__ = [
    "LOST",
    "RAISED",
    "RESUME_HINT",
    "TIMEOUT",
    "ActorCallError",
    "ActorSlot",
    "call",
    "classify",
    "describe",
    "get",
]

logger = logging.getLogger(__name__)

LOST, TIMEOUT, RAISED = "lost", "timeout", "raised"

#: What to do after a run stopped on a failed call.
RESUME_HINT = "the last checkpoint is kept; continue with `fedtwin run --resume RUN_DIR`"

#: Replacements one :meth:`ActorSlot.wait_back` may start before it gives up (a constructor that
#: raises every time must not loop).
MAX_REPLACEMENTS = 2

#: How long one liveness probe waits before it is sent again.
_PROBE_S = 30.0


class ActorCallError(FedtwinError, RuntimeError):
    """An actor call that could not be made, even after recovery and retries (CLI: one line, exit 1)."""

    exit_code = 1

    def __init__(self, what: str, reason: str, hint: str = RESUME_HINT) -> None:
        self.what, self.reason, self.hint = what, reason, hint
        text = f"{what}: {reason}" + (f"; {hint}" if hint else "")
        super().__init__(" ".join(text.split()))  # always one line

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorCallError, (self.what, self.reason, self.hint))


def cause_of(err: BaseException) -> BaseException:
    """The exception the actor's code raised, for a ``RayTaskError``; else ``err``."""
    cause = getattr(err, "cause", None) if isinstance(err, RayTaskError) else None
    return cause if isinstance(cause, BaseException) else err


def first_line(err: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (Ray's messages span many lines)."""
    inner = cause_of(err)
    lines = [line.strip() for line in str(inner).strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if getattr(inner, "actor_init_failed", False) and lines:
        text = f"its constructor raised {lines[-1]}"  # Ray puts the constructor's own error last
    elif isinstance(inner, RayActorError) and "worker process has died" in str(inner):
        text = "its worker process died"
    elif isinstance(inner, ActorUnavailableError):
        text = "it is restarting or unreachable"
    text = text[:limit]
    return f"{type(inner).__name__}: {text}" if text else type(inner).__name__


def classify(err: BaseException, lost: tuple[type[BaseException], ...] = ()) -> str | None:
    """``lost``, ``timeout`` or ``raised`` for a failure of ``ray.get``; None for a non-Ray error.

    Args:
        err: what ``ray.get`` raised.
        lost: exception types that, raised by the actor, mean it restarted (e.g. ``StaleHostError``).
    """
    if isinstance(err, GetTimeoutError):
        return TIMEOUT
    if lost and isinstance(cause_of(err), lost):
        return LOST
    if isinstance(err, RayTaskError):
        return RAISED
    if isinstance(err, (RayActorError, ObjectLostError, WorkerCrashedError, NodeDiedError)):
        return LOST
    if isinstance(err, RayError):
        return LOST
    return None


def describe(kind: str, err: BaseException, timeout_s: float | None = None) -> str:
    """A short reason for a failed call (no newlines)."""
    if kind == TIMEOUT:
        return f"no answer within {timeout_s:.0f}s" if timeout_s is not None else "no answer in time"
    if kind == RAISED:
        return f"raised {first_line(err)}"
    return f"the actor was lost ({first_line(err)})"


@dataclass
class ActorSlot:
    """One actor the driver relies on, and how to start it again.

    Attributes:
        name: how errors and logs name it (``host 1``, ``server node``, ``twin a``).
        handle: the current actor handle (replaced by :meth:`replace`).
        start: builds a fresh actor; None for an actor that cannot be replaced (its state would be lost).
        comebacks: how often it came back after a loss (a Ray restart or a replacement).
        replacements: how often :meth:`replace` started a new actor.
    """

    name: str
    handle: Any
    start: Callable[[], Any] | None = None
    comebacks: int = 0
    replacements: int = 0

    def wait_back(self, deadline: float) -> None:
        """Block until the actor answers again: Ray's restart, or a replacement when it is dead for good.

        Raises:
            ActorCallError: it did not come back before ``deadline`` (``time.monotonic()``), it cannot
                be replaced, or replacements keep dying.
        """
        replaced = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ActorCallError(self.name, "did not come back in time after it was lost")
            try:
                ray.get(self.handle.__ray_ready__.remote(), timeout=min(left, _PROBE_S))
            except GetTimeoutError:
                continue  # still starting (a busy node); the deadline bounds the wait
            except ActorUnavailableError:
                time.sleep(min(0.2, max(0.0, left)))  # Ray is restarting it
                continue
            except RayActorError as err:  # dead for good: restarts used up, or its constructor raised
                if self.start is None:
                    raise ActorCallError(self.name, f"died ({first_line(err)})") from None
                if replaced >= MAX_REPLACEMENTS:
                    raise ActorCallError(self.name, f"replacements keep dying ({first_line(err)})") from None
                logger.warning("%s is dead (%s); starting a replacement", self.name, first_line(err))
                self.replace()
                replaced += 1
                continue
            self.comebacks += 1
            return

    def replace(self) -> None:
        """Start a new actor in place of the current one (which is killed for good, if still there)."""
        if self.start is None:
            raise ActorCallError(self.name, "cannot be replaced (its state lives only in its process)")
        self.kill(restart=False)
        self.handle = self.start()
        self.replacements += 1

    def kill(self, restart: bool = True) -> None:
        """Kill the actor's process; with ``restart`` Ray starts it again (within ``max_restarts``)."""
        try:
            ray.kill(self.handle, no_restart=not restart)
        except (RayError, ValueError) as err:  # already gone
            logger.debug("kill %s: %s", self.name, err)


def call(
    slot: ActorSlot,
    method: str,
    *args: Any,
    timeout_s: float,
    retries: int = 2,
    lost: tuple[type[BaseException], ...] = (),
    on_back: Callable[[ActorSlot], None] | None = None,
    deadline: float | None = None,
    dynamic: Callable[[], dict[str, Any]] | None = None,
    **kwargs: Any,
) -> Any:
    """``slot.handle.<method>.remote(*args, **kwargs)`` and its result, surviving the actor's loss.

    Args:
        slot: the actor.
        method: the method's name.
        timeout_s: how long one attempt may take.
        retries: attempts after the first one (0 for stateful actors).
        lost: exception types that, raised by the actor, mean it restarted and must be synced again.
        on_back: called after the actor came back and before the retry (e.g. restore device state); it
            may raise Ray errors of its own, which count as another loss.
        deadline: ``time.monotonic()`` by which recovery must be done (default: one ``timeout_s`` per attempt).
        dynamic: keyword arguments computed again for every attempt (e.g. a sync token that changes
            when the actor is restored).

    Raises:
        ActorCallError: the call still fails after ``retries``, or the actor's code raised.
        FedtwinError: the actor's code raised a user error (its own message and exit code).
    """
    if deadline is None:
        deadline = time.monotonic() + timeout_s * (retries + 1)
    what = f"{slot.name}: {method}"
    attempt = 0
    while True:
        try:
            extra = dynamic() if dynamic is not None else {}
            ref = getattr(slot.handle, method).remote(*args, **kwargs, **extra)
            return ray.get(ref, timeout=max(0.001, min(timeout_s, deadline - time.monotonic())))
        except Exception as err:  # noqa: BLE001 - classified below; anything else is re-raised
            kind = classify(err, lost)
            if kind is None:
                raise
            if kind == RAISED:
                inner = cause_of(err)
                if isinstance(inner, FedtwinError):
                    raise inner from None
                raise ActorCallError(what, describe(kind, err)) from None
            reason = describe(kind, err, timeout_s)
            if attempt >= retries or (kind == TIMEOUT and slot.start is None):
                tries = f" after {attempt + 1} attempts" if attempt else ""
                raise ActorCallError(what, reason + tries) from None
            logger.warning("%s: %s; waiting for it to come back and trying again", what, reason)
            attempt += 1
            if kind == TIMEOUT:
                slot.kill(restart=True)
        _recover(slot, deadline, on_back, lost)


def _recover(
    slot: ActorSlot,
    deadline: float,
    on_back: Callable[[ActorSlot], None] | None,
    lost: tuple[type[BaseException], ...],
) -> None:
    """Wait for the actor and run ``on_back``; a loss inside ``on_back`` is left to the caller's next attempt."""
    slot.wait_back(deadline)
    if on_back is None:
        return
    try:
        on_back(slot)
    except Exception as err:  # noqa: BLE001 - a loss while syncing: the next attempt finds out again
        kind = classify(err, lost)
        if kind is None or isinstance(err, FedtwinError):
            raise
        if kind != LOST:
            raise ActorCallError(slot.name, f"restoring it failed: {describe(kind, err)}") from None
        logger.warning("%s was lost again while being restored (%s)", slot.name, first_line(err))


def get(
    refs: Any,
    *,
    what: str,
    timeout_s: float,
    on_error: Callable[[str, BaseException], Exception] | None = None,
) -> Any:
    """``ray.get(refs)`` under a deadline, with a one-line error instead of a Ray traceback.

    For calls that are not retried: stateful actors (twins, trainers) and Ray tasks (which Ray retries
    itself).

    Args:
        refs: one object reference or a list of them.
        what: names the call in the error (``twin a: train_epoch``).
        timeout_s: the deadline.
        on_error: builds the exception to raise from ``(kind, error)`` (a recipe's own error type);
            default :class:`ActorCallError`.

    Raises:
        ActorCallError: (or ``on_error``'s exception) any Ray failure.
        FedtwinError: the actor's code raised a user error (its own message and exit code).
    """
    try:
        return ray.get(refs, timeout=timeout_s)
    except Exception as err:  # noqa: BLE001 - classified below; anything else is re-raised
        kind = classify(err)
        if kind is None:
            raise
        inner = cause_of(err)
        if kind == RAISED and isinstance(inner, FedtwinError):
            raise inner from None
        if on_error is not None:
            raise on_error(kind, err) from None
        raise ActorCallError(what, describe(kind, err, timeout_s)) from None
