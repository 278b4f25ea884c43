"""One federated round: sample devices, train them on the hosts, fold, update the strategy, evaluate.

Every backend dispatches a round and collects it later (``start_fit`` / ``finish_fit``, and
``start_evaluate`` / ``finish_evaluate``), so the recipe can start round n+1 before round n's evaluation
has come back (:func:`run_round` with ``ahead=True``): on Ray the hosts train while the evaluator scores,
instead of waiting for it (the in-process backend does the work when it is collected). Round n+1 is
the same either way: its devices, settings and payload depend only on the seed, the round and the
strategy's state after round n's update, all known before the evaluation. What differs is bookkeeping:
with ``ahead``, a process that comes back during round n's evaluation is counted in round n+1's record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.federated.backend import Backend
from fedtwin.orchestrator.recipes.federated.strategies.base import Strategy
from fedtwin.pipelines.core.seeding import sampling_rng
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import ModelState


def round_settings(spec: ExperimentSpec, round_num: int) -> TrainSettings:
    """Local-training settings of round ``round_num`` (``training.*``; lr decays per round)."""
    t = spec.training
    return TrainSettings(
        epochs=t.epochs,
        batch_size=t.batch_size,
        lr=t.lr * t.lr_decay ** (round_num - 1),
        optimizer=t.optimizer,
        momentum=t.momentum,
        weight_decay=t.weight_decay,
        max_steps=t.max_steps,
    )


@dataclass
class StartedRound:
    """A round dispatched to the hosts and not collected yet (``backend.start_fit``'s handle)."""

    round_num: int
    settings: TrainSettings
    started: float
    handle: Any


@dataclass
class RoundResult:
    """What :func:`run_round` returns: the next state, the round's record and, with ``ahead``, the next
    round already dispatched (None otherwise)."""

    state: ModelState
    record: dict[str, Any]
    following: StartedRound | None = None


def _recovery(backend: Backend, record: dict[str, Any]) -> None:
    """Recovery this round (devices dispatched again after their host was lost, processes that came
    back; a checkpoint's restarts show in the next round's record) and how long hosts sat idle."""
    record.update(backend.take_faults())
    record.update(backend.take_timings())


def start_round(
    spec: ExperimentSpec, strategy: Strategy, backend: Backend, state: ModelState, round_num: int
) -> StartedRound:
    """Sample round ``round_num``'s devices and dispatch them (``backend.start_fit``)."""
    started = time.perf_counter()
    device_ids = strategy.sample_devices(round_num, sampling_rng(spec.seed, round_num))
    settings = round_settings(spec, round_num)
    tasks = strategy.configure_fit(round_num, device_ids, settings)
    handle = backend.start_fit(state, tasks, spec.federation.round_timeout_s, payload=strategy.round_payload(round_num))
    return StartedRound(round_num, settings, started, handle)


def run_round(
    spec: ExperimentSpec,
    strategy: Strategy,
    backend: Backend,
    state: ModelState,
    round_num: int,
    *,
    started: StartedRound | None = None,
    ahead: bool = False,
) -> RoundResult:
    """Run round ``round_num`` from ``state``: the next state and the round's metrics record.

    Args:
        started: this round, already dispatched by the previous call (``ahead=True``).
        ahead: dispatch round ``round_num + 1`` before waiting for this round's evaluation; its handle
            is the result's ``following``.

    Raises:
        RoundFailedError: from ``backend.finish_fit``, when too few devices succeeded.
    """
    if started is None:
        started = start_round(spec, strategy, backend, state, round_num)
    elif started.round_num != round_num:
        raise RuntimeError(f"round {started.round_num} was started ahead but round {round_num} is next")
    outcome = backend.finish_fit(started.handle)
    fit_seconds = time.perf_counter() - started.started
    new_state, strategy_metrics = strategy.aggregate_fit(round_num, state, outcome)
    weights = np.array([r.num_examples for r in outcome.results], dtype=np.float64)
    losses = np.array([r.metrics.get("train_loss", np.nan) for r in outcome.results], dtype=np.float64)
    record: dict[str, Any] = {
        "round": round_num,
        "devices_ok": len(outcome.results),
        "devices_failed": len(outcome.failures),
        "failed_devices": [f.device_id for f in outcome.failures],
        "num_examples": outcome.num_examples,
        "train_loss": float(np.sum(weights * losses) / weights.sum()),
        "lr": started.settings.lr,
        **strategy_metrics,
    }
    evaluate = round_num % spec.federation.eval_every == 0 or round_num == spec.federation.num_rounds
    pending = backend.start_evaluate(new_state) if evaluate else None
    following = None
    if ahead:
        _recovery(backend, record)  # before the next round's dispatch, whose recovery is its own
        following = start_round(spec, strategy, backend, new_state, round_num + 1)
    if pending is not None:
        ev = backend.finish_evaluate(pending)
        record["test_accuracy"], record["test_loss"] = ev["accuracy"], ev["loss"]
    if not ahead:
        _recovery(backend, record)
    record["fit_seconds"] = fit_seconds
    record["round_seconds"] = time.perf_counter() - started.started
    return RoundResult(new_state, record, following)
