"""One federated round: sample devices, train them on the hosts, fold, update the strategy, evaluate."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from orchestrator.config.spec import ExperimentSpec
from orchestrator.recipes.federated.local_backend import LocalBackend
from orchestrator.recipes.federated.ray_backend import RayBackend, RoundFailedError, min_successes
from orchestrator.recipes.federated.strategies import Strategy
from pipelines.model.state import ModelState


def round_train_config(spec: ExperimentSpec, round_num: int) -> dict[str, Any]:
    """Local-training settings of one round (lr decays per round)."""
    t = spec.training
    return {
        "epochs": t.epochs,
        "batch_size": t.batch_size,
        "optimizer": t.optimizer,
        "lr": t.lr * t.lr_decay ** (round_num - 1),
        "momentum": t.momentum,
        "weight_decay": t.weight_decay,
        "max_steps": t.max_steps,
    }


def run_round(
    spec: ExperimentSpec, strategy: Strategy, backend: RayBackend | LocalBackend, state: ModelState, round_num: int
) -> tuple[ModelState, dict[str, Any]]:
    started = time.perf_counter()
    rng = np.random.default_rng([spec.seed, round_num])
    device_ids = strategy.sample_devices(round_num, rng)
    tasks = strategy.configure_fit(round_num, device_ids, round_train_config(spec, round_num))
    outcome = backend.fit(state, tasks, spec.federation.round_timeout_s, payload=strategy.round_payload(round_num))
    fit_seconds = time.perf_counter() - started
    needed = min_successes(len(tasks), spec.federation.min_success_fraction)
    if isinstance(outcome, list) or len(outcome.results) < needed:
        failures = outcome if isinstance(outcome, list) else outcome.failures
        succeeded = 0 if isinstance(outcome, list) else len(outcome.results)
        raise RoundFailedError(round_num, succeeded, len(tasks), [f.reason for f in failures])
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
        "lr": round_train_config(spec, round_num)["lr"],
        **strategy_metrics,
    }
    if round_num % spec.federation.eval_every == 0 or round_num == spec.federation.num_rounds:
        ev = backend.evaluate(new_state)
        record["test_accuracy"], record["test_loss"] = ev["accuracy"], ev["loss"]
    record["fit_seconds"] = fit_seconds
    record["round_seconds"] = time.perf_counter() - started
    return new_state, record
