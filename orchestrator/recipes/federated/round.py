"""One federated round: sample devices, train them on the hosts, fold, update the strategy, evaluate."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from orchestrator.config.spec import ExperimentSpec
from orchestrator.recipes.federated.backend import Backend
from orchestrator.recipes.federated.strategies.base import Strategy
from pipelines.core.seeding import sampling_rng
from pipelines.model.settings import TrainSettings
from pipelines.model.state import ModelState


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


def run_round(
    spec: ExperimentSpec, strategy: Strategy, backend: Backend, state: ModelState, round_num: int
) -> tuple[ModelState, dict[str, Any]]:
    """Run round ``round_num`` from ``state``; returns the next state and the round's metrics record.

    Raises:
        RoundFailedError: from ``backend.fit``, when too few devices succeeded.
    """
    started = time.perf_counter()
    device_ids = strategy.sample_devices(round_num, sampling_rng(spec.seed, round_num))
    settings = round_settings(spec, round_num)
    tasks = strategy.configure_fit(round_num, device_ids, settings)
    outcome = backend.fit(state, tasks, spec.federation.round_timeout_s, payload=strategy.round_payload(round_num))
    fit_seconds = time.perf_counter() - started
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
        "lr": settings.lr,
        **strategy_metrics,
    }
    if round_num % spec.federation.eval_every == 0 or round_num == spec.federation.num_rounds:
        ev = backend.evaluate(new_state)
        record["test_accuracy"], record["test_loss"] = ev["accuracy"], ev["loss"]
    # Recovery this round: devices dispatched again after their host was lost, processes that came back
    # (a checkpoint's restarts show in the next round's record).
    record.update(backend.take_faults())
    record["fit_seconds"] = fit_seconds
    record["round_seconds"] = time.perf_counter() - started
    return new_state, record
