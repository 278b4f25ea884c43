"""One Tune trial: ``run_experiment(base.with_overrides(trial_config))`` reporting every round.

The trial reports with ``ray.tune.report`` (``ray.train.report`` errors inside Tune on Ray 2.60) and
attaches the round's fedtwin checkpoint, so Tune can resume an interrupted trial and PBT can clone a
good trial into a bad one. A Tune checkpoint is a folder::

    step-00007/      the fedtwin checkpoint (model, strategy and device state)
    metrics.jsonl    the run's metric lines up to that round
    spec.yaml        the spec that produced it

A trial that starts with a checkpoint (resume or PBT exploit) rebuilds a run folder from it and
continues with ``run_experiment(..., resume=True)``; under PBT the spec is the *new* trial config.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.run.callbacks import RunCallback
from fedtwin.orchestrator.run.checkpoint import list_checkpoints
from fedtwin.orchestrator.run.run_folder import RunFolder

logger = logging.getLogger(__name__)

#: Keys Tune owns in a result; a recipe metric with one of these names is not forwarded.
_TUNE_RESERVED = {
    "done",
    "training_iteration",
    "time_total_s",
    "time_this_iter_s",
    "timestamp",
    "config",
    "trial_id",
    "experiment_id",
    "date",
    "hostname",
    "node_ip",
    "pid",
    "should_checkpoint",
}


@dataclass(frozen=True)
class ObjectiveSpec:
    """How per-round metrics become the reported objective values (picklable, sent to trials)."""

    accuracy_key: str = "test_accuracy"
    target: float | None = None


def objective_values(
    records_acc: list[float | None], step: int, total_steps: int, obj: ObjectiveSpec
) -> dict[str, Any]:
    """Objective metrics after ``step`` given the accuracy of every step so far (None = not evaluated).

    The accuracy (``obj.accuracy_key``, e.g. ``test_accuracy``) carries the last evaluated value forward
    (0 before the first evaluation) so every result has the metric. ``rounds_to_target`` is the first
    step reaching the target, or ``total_steps + 1`` while/if it is not reached;
    ``rounds_to_target_score`` subtracts the current accuracy (in [0, 1)) so ties on rounds are broken
    by accuracy without reordering rounds.
    """
    seen = [a for a in records_acc if a is not None]
    acc = float(seen[-1]) if seen else 0.0
    key = obj.accuracy_key
    out: dict[str, Any] = {"round": step, key: acc, f"best_{key}": max(seen, default=0.0)}
    if obj.target is not None:
        reached = next((i + 1 for i, a in enumerate(records_acc) if a is not None and a >= obj.target), None)
        rtt = reached if reached is not None else total_steps + 1
        out["rounds_to_target"] = rtt
        out["target_reached"] = reached is not None
        out["rounds_to_target_score"] = rtt - min(acc, 1.0 - 1e-9)
    return out


class TuneReporter(RunCallback):
    """Sends each round to Tune, with the round's checkpoint when the recipe writes one.

    The loop calls ``on_step_end`` then (when due) ``on_checkpoint`` for the same step; a round that gets
    a checkpoint is reported from ``on_checkpoint`` so metrics and checkpoint travel together. A held
    round is flushed on the next hook if no checkpoint followed.
    """

    def __init__(self, objective: ObjectiveSpec, checkpoint_every: int, report: Any = None) -> None:
        self.objective = objective
        self.checkpoint_every = checkpoint_every
        self._report = report  # injectable for tests; default ray.tune.report
        self._acc: list[float | None] = []
        self._held: tuple[int, dict[str, Any]] | None = None
        self.total_steps = 0
        self.start_step = 1
        self.run_dir: Path | None = None

    def on_run_start(self, info: Mapping[str, Any]) -> None:
        self.total_steps = int(info["total_steps"])
        self.start_step = int(info.get("start_step", 1))
        self.run_dir = Path(info["run_dir"])
        # On resume, earlier rounds' accuracies come from the restored metrics.jsonl.
        key = self.objective.accuracy_key
        self._acc = [r.get(key) for r in RunFolder(self.run_dir).read_metrics()][: self.start_step - 1]

    def on_step_end(self, step: int, metrics: Mapping[str, Any]) -> None:
        self._flush()
        self._acc.append(_as_float(metrics.get(self.objective.accuracy_key)))
        result = {k: v for k, v in metrics.items() if _is_scalar(v) and k not in _TUNE_RESERVED}
        result.update(objective_values(self._acc, step, self.total_steps, self.objective))
        result["resumed_from_round"] = self.start_step - 1
        if step % self.checkpoint_every == 0 or step == self.total_steps:
            self._held = (step, result)
        else:
            self._send(result, None)

    def on_checkpoint(self, step: int, path: Path) -> None:
        if self._held is None or self._held[0] != step:
            self._flush()
            return
        _, result = self._held
        self._held = None
        with tempfile.TemporaryDirectory(prefix="fedtwin-tune-ckpt-") as tmp:
            pack_checkpoint(Path(path), self.run_dir, Path(tmp))
            from ray import tune

            self._send(result, tune.Checkpoint.from_directory(tmp))

    def on_run_end(self, summary: Mapping[str, Any]) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._held is not None:
            _, result = self._held
            self._held = None
            self._send(result, None)

    def _send(self, result: dict[str, Any], checkpoint: Any) -> None:
        if self._report is not None:
            self._report(result, checkpoint=checkpoint)
            return
        from ray import tune

        tune.report(result, checkpoint=checkpoint)


def pack_checkpoint(ckpt_dir: Path, run_dir: Path | None, out: Path) -> None:
    """Copy a fedtwin checkpoint plus the run's metrics and spec into the Tune checkpoint folder ``out``."""
    shutil.copytree(ckpt_dir, out / ckpt_dir.name)
    if run_dir is not None:
        for name in ("metrics.jsonl", "spec.yaml"):
            if (run_dir / name).is_file():
                shutil.copy2(run_dir / name, out / name)


def unpack_checkpoint(ckpt: Path, run_dir: Path) -> int:
    """Rebuild a run folder from a Tune checkpoint folder; returns the checkpoint's round."""
    found = list_checkpoints(ckpt)
    if not found:
        raise FileNotFoundError(f"{ckpt}: Tune checkpoint without a fedtwin step-XXXXX folder")
    newest = found[-1]
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a retried trial: its old folder may be ahead of the checkpoint
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copytree(newest, run_dir / "checkpoints" / newest.name)
    if (ckpt / "metrics.jsonl").is_file():
        shutil.copy2(ckpt / "metrics.jsonl", run_dir / "metrics.jsonl")
    return int(newest.name.split("-")[1])


def run_trial(config: dict[str, Any], *, base: dict[str, Any], objective: ObjectiveSpec) -> None:
    """The Tune trainable: one experiment with the trial's dotted overrides."""
    from ray import tune
    from ray.util.placement_group import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from fedtwin.orchestrator.run.experiment import run_experiment

    spec = ExperimentSpec.from_dict(base).with_overrides(config)
    run_dir = Path(tune.get_context().get_trial_dir()) / "run"
    resume = False
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt:
            round_num = unpack_checkpoint(Path(ckpt), run_dir)
        logger.info("trial resumes after round %d", round_num)
        resume = True
        RunFolder(run_dir).save_spec(spec.to_dict())  # PBT may have handed us a new config
    elif run_dir.exists():
        shutil.rmtree(run_dir)  # a retry without any checkpoint starts over
    # Tune places this function's actor in bundle 0 of the trial's placement group and captures child
    # actors into it; naming the group explicitly keeps hosts and evaluator inside it on every Ray version.
    group = get_current_placement_group()
    strategy = PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True) if group else None
    reporter = TuneReporter(objective, spec.run.checkpoint_every)
    run_experiment(spec, run_dir=run_dir, resume=resume, callbacks=[reporter], scheduling_strategy=strategy)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool)) or value is None
