"""Recipe ``transfer``: online adaptation of a meta-model to a new scene with similarity-weighted gradient mixing.

The driver generates (or reuses) two datasets, the clean source domain (``data.generator``) and the
shifted new scene (the same generator through ``transfer.stream.shift``), and hands their paths to one
:class:`~fedtwin.actors.transfer.trainer.TransferTrainer` actor (GPU when the cluster has one). Session 0 is the
meta-model: pre-training on the source and the first fill of the history bank. Each later session
verifies, trains with paired history/transfer batches and gradient mixing, and updates the bank.

Per session the run folder gets one ``metrics.jsonl`` line (new-scene and source accuracy, harmonic mean,
forgetting, similarity statistics, verification counts, bank composition), the per-step trace
``traces/session-XXX.csv`` (similarity ``s``, history weight, projection, both losses), and a checkpoint
(weights, optimizer state, bank), so ``--resume`` continues exactly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray

from fedtwin.actors.placement import actor_options, trainer_gpus
from fedtwin.actors.transfer.ray_actors import TransferTrainerActor
from fedtwin.orchestrator.config.recipes import builtin_sections
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.base import CheckpointState
from fedtwin.orchestrator.recipes.feature_model import FeatureModelRecipe
from fedtwin.orchestrator.run import actor_calls
from fedtwin.orchestrator.run.checkpoint import Checkpoint
from fedtwin.orchestrator.run.data_prep import ensure_generated
from fedtwin.orchestrator.run.plots import plot_curves
from fedtwin.pipelines.core.atomic_write import write_text_atomic
from fedtwin.pipelines.data.moving_digits import NUM_DIGIT_CLASSES, MovingDigitsConfig

logger = logging.getLogger(__name__)

#: Columns of the per-step trace files, in order.
TRACE_COLUMNS = ("session", "step", "s", "w_h", "projected", "inner_after", "loss_new", "loss_history")
_CONTROL_TIMEOUT_S = 120.0


def target_generator(spec: ExperimentSpec) -> MovingDigitsConfig:
    """The new scene: ``data.generator`` through the stream's shift, sized to feed every session."""
    stream = spec.transfer.stream
    source = spec.data.generator
    needed = stream.sessions * stream.clips_per_session
    return dataclasses.replace(
        source,
        shift=stream.shift,
        train_per_class=math.ceil(needed / NUM_DIGIT_CLASSES),
        test_per_class=stream.test_per_class or source.test_per_class,
    )


def _write_trace(folder: Path, session: int, trace: list[dict[str, Any]]) -> None:
    """One CSV per session, steps numbered across its epochs, written atomically (a resumed run
    rewrites the sessions it replays)."""
    lines = [",".join(TRACE_COLUMNS)]
    for row in trace:
        values = {**row, "session": session}
        lines.append(",".join(_csv_value(values[c]) for c in TRACE_COLUMNS))
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / f"session-{session:03d}.csv", "\n".join(lines) + "\n")


def _csv_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def read_traces(run_dir: str | Path) -> list[dict[str, float]]:
    """All per-step trace rows of a run, in session order, with a running ``global_step`` (1-based)."""
    rows: list[dict[str, float]] = []
    for path in sorted((Path(run_dir) / "traces").glob("session-*.csv")):
        header, *lines = path.read_text().splitlines()
        names = header.split(",")
        for line in lines:
            row = dict(zip(names, line.split(",")))
            rows.append(
                {
                    "session": int(row["session"]),
                    "step": int(row["step"]),
                    "global_step": len(rows) + 1,
                    **{k: float(row[k]) for k in ("s", "w_h", "projected", "inner_after", "loss_new", "loss_history")},
                }
            )
    return rows


class TransferRecipe(FeatureModelRecipe):
    """One trainer: the meta-model is pre-trained at step 0, then adapts to the new scene session by session."""

    name = "transfer"
    unit = "session"
    sections = builtin_sections("transfer")
    step_count = "transfer.stream.sessions"
    warmup = True

    def setup(self) -> None:
        spec, ctx = self.spec, self.ctx
        t, data = spec.transfer, spec.data
        self.trainer: Any = None
        self.session = 0
        source_dir = ensure_generated(data.root, data.generator, data.seed)
        target_dir = ensure_generated(data.root, target_generator(spec), data.seed + t.stream.data_seed_offset)
        res = spec.resources
        gpus = trainer_gpus(
            res.gpus_per_host, ctx.cluster_resources.get("GPU", 0.0), ctx.scheduling_strategy is not None
        )
        options = actor_options(
            num_cpus=res.cpus_per_host,
            num_gpus=gpus,
            max_restarts=0,
            scheduling_strategy=ctx.scheduling_strategy,
            plugin_paths=spec.plugins.paths,
        )
        self.trainer = TransferTrainerActor.options(**options).remote(
            str(source_dir), str(target_dir), t, spec.model, spec.seed, res.torch_threads
        )

    def restore(self, ckpt: Checkpoint) -> None:
        self._get(self.trainer.restore.remote({"model": ckpt.model, **ckpt.extra}), "restore", _CONTROL_TIMEOUT_S)

    def step(self, n: int) -> dict[str, Any]:
        timeout = self.spec.transfer.session_timeout_s
        self.session = n
        if n == 0:
            return self._get(self.trainer.pretrain.remote(), "pretrain", timeout)
        record, trace = self._get(self.trainer.run_session.remote(n), f"session {n}", timeout)
        _write_trace(self.ctx.run.path / "traces", n, trace)
        return record

    @staticmethod
    def _get(ref: Any, what: str, timeout_s: float) -> Any:
        """The trainer's answer, or one line and exit 1 (the trainer is not restarted: its model and
        history bank live only in its process; resume from the last checkpoint)."""
        return actor_calls.get(ref, what=f"transfer trainer: {what}", timeout_s=timeout_s)

    def checkpoint_state(self) -> CheckpointState:
        snap = self._get(self.trainer.snapshot.remote(), "snapshot", _CONTROL_TIMEOUT_S)
        model = snap.pop("model")
        return CheckpointState(model, snap, {"session": self.session})

    def summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        t = self.spec.transfer
        records = list(records)
        self._plot(records)
        meta = next((r for r in records if r["session"] == 0), {})
        last = records[-1] if records else {}
        sims = [r["similarity_mean"] for r in records if "similarity_mean" in r]
        return {
            "mixing": dataclasses.asdict(t.mixing),
            "bank_policy": t.bank.policy,
            "bank_update": t.bank.update,
            "sessions": t.stream.sessions,
            "num_classes": t.num_classes,
            "meta_new_scene_accuracy": meta.get("new_scene_accuracy"),
            "meta_source_accuracy": meta.get("source_accuracy"),
            "final_new_scene_accuracy": last.get("new_scene_accuracy"),
            "final_source_accuracy": last.get("source_accuracy"),
            "final_harmonic_mean": last.get("harmonic_mean"),
            "final_forgetting": last.get("forgetting"),
            "mean_similarity": float(np.mean(sims)) if sims else None,
            "final_bank_per_class": last.get("bank_per_class"),
            "final_bank_new_scene_items": last.get("bank_new_scene_items"),
        }

    def _plot(self, records: Sequence[Mapping[str, Any]]) -> None:
        spec = self.spec
        title = f"{spec.name} ({spec.transfer.mixing.mode})"
        plots = self.ctx.run.plots
        plot_curves(
            records,
            plots / "accuracy.png",
            x="session",
            title=title,
            panels=(
                ("accuracy", ("new_scene_accuracy", "source_accuracy", "harmonic_mean")),
                ("similarity s", ("similarity_mean", "similarity_min", "similarity_max")),
                ("bank items from the new scene", ("bank_new_scene_items",)),
            ),
        )
        trace = read_traces(self.ctx.run.path)
        plot_curves(
            trace,
            plots / "similarity_trace.png",
            x="global_step",
            title=title,
            panels=(("cosine s(g_n, g_h)", ("s",)), ("history weight w_h", ("w_h",))),
        )

    def close(self) -> None:
        if getattr(self, "trainer", None) is not None:
            ray.kill(self.trainer)
