"""The actor-call guard on real Ray: lost actors come back (restart or replacement) and the call is made
again; an actor's own error is not retried; what cannot be made is one ``ActorCallError`` line."""

from __future__ import annotations

import os
import signal
import time

import pytest

from fedtwin.orchestrator.run.actor_calls import ActorCallError, ActorSlot, call, get
from fedtwin.pipelines.core.errors import FedtwinError


class Worker:
    """A tiny actor: it can die, raise, hang, and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def pid(self) -> int:
        return os.getpid()

    def work(self, x: int, die_if_pid: int = -1) -> int:
        self.calls += 1
        if os.getpid() == die_if_pid:
            os.kill(os.getpid(), signal.SIGKILL)
        return x * 2

    def boom(self) -> None:
        self.calls += 1
        raise ValueError("bad input\nsecond line")

    def user_error(self) -> None:
        raise FedtwinError("data.path /nowhere: does not exist")

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def count(self) -> int:
        return self.calls


def _slot(ray, max_restarts: int, replaceable: bool = True) -> ActorSlot:
    actor = ray.remote(Worker).options(num_cpus=0, max_restarts=max_restarts, max_task_retries=0)
    start = (lambda: actor.remote()) if replaceable else None
    return ActorSlot("worker", actor.remote(), start=start)


def test_a_killed_actor_is_restarted_and_the_call_made_again(ray_session):
    # Prepare: the first attempt kills the actor's process mid-call (like a SIGKILL from outside)
    slot = _slot(ray_session, max_restarts=2)
    pid = ray_session.get(slot.handle.pid.remote())
    # Execute: the retry runs on the restarted process (a new pid, so it does not die again)
    result = call(slot, "work", 21, die_if_pid=pid, timeout_s=60, retries=2)
    # Assert
    assert result == 42 and slot.comebacks == 1 and slot.replacements == 0
    assert ray_session.get(slot.handle.pid.remote()) != pid
    slot.kill(restart=False)


def test_an_actor_without_restarts_left_is_replaced_and_on_back_runs_first(ray_session):
    # Prepare: max_restarts=0, so a dead actor stays dead and needs a replacement
    slot = _slot(ray_session, max_restarts=0)
    pid = ray_session.get(slot.handle.pid.remote())
    restored = []
    # Execute
    result = call(slot, "work", 5, die_if_pid=pid, timeout_s=60, retries=1, on_back=lambda s: restored.append(s.name))
    # Assert
    assert result == 10 and slot.replacements == 1 and restored == ["worker"]
    slot.kill(restart=False)


def test_the_actors_own_error_is_not_retried_and_is_one_line(ray_session):
    slot = _slot(ray_session, max_restarts=2)
    with pytest.raises(ActorCallError) as info:
        call(slot, "boom", timeout_s=60, retries=3)
    assert str(info.value).startswith("worker: boom: raised ValueError: bad input;") and "\n" not in str(info.value)
    assert info.value.exit_code == 1
    assert ray_session.get(slot.handle.count.remote()) == 1  # tried once
    slot.kill(restart=False)


def test_a_user_error_raised_in_the_actor_keeps_its_message_and_exit_code(ray_session):
    slot = _slot(ray_session, max_restarts=0)
    with pytest.raises(FedtwinError, match=r"^data.path /nowhere: does not exist$") as info:
        call(slot, "user_error", timeout_s=60, retries=0)
    assert info.value.exit_code == 2
    slot.kill(restart=False)


def test_a_stateful_actor_that_is_lost_ends_in_one_line_with_the_resume_hint(ray_session):
    # Prepare: a stateful actor (no start, no retries), killed from outside
    slot = _slot(ray_session, max_restarts=0, replaceable=False)
    os.kill(ray_session.get(slot.handle.pid.remote()), signal.SIGKILL)
    # Execute / Assert
    with pytest.raises(ActorCallError) as info:
        get(slot.handle.work.remote(1), what="twin a: train_epoch", timeout_s=60)
    text = str(info.value)
    assert text.startswith("twin a: train_epoch: the actor was lost") and "--resume RUN_DIR" in text
    assert "\n" not in text


def test_a_call_past_its_deadline_restarts_a_restartable_actor_and_tries_again(ray_session):
    # Prepare: the first attempt sleeps past the 2 s deadline; the restarted actor answers at once
    slot = _slot(ray_session, max_restarts=2)
    hung = slot.handle.sleep.remote(60)  # queued first: the call below waits behind it and times out
    # Execute
    started = time.monotonic()
    result = call(slot, "work", 4, timeout_s=3, retries=1, deadline=time.monotonic() + 60)
    # Assert
    assert result == 8 and slot.comebacks == 1 and time.monotonic() - started < 40
    del hung
    slot.kill(restart=False)
