"""Recipe ``transfer``: online adaptation of a meta-model to a new scene (seed 003, ALGORITHMS.md §4).

The driver generates (or reuses) two datasets, the clean source domain (``data.generator``) and the
shifted new scene (the same generator through ``transfer.stream.shift``), and hands their paths to one
:class:`~actors.transfer.trainer.TransferTrainer` actor (GPU when the cluster has one). Session 0 is the
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
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from actors.placement import actor_options
from actors.transfer.trainer import TrainerSettings, TransferTrainerActor
from orchestrator.run.checkpoint import latest_checkpoint, save_checkpoint
from orchestrator.config.spec import ExperimentSpec
from orchestrator.run.data_prep import ensure_generated
from orchestrator.run.plots import plot_curves
from orchestrator.run.context import RecipeContext, versions
from pipelines.core.atomic_write import write_text_atomic
from pipelines.data.moving_digits import NUM_DIGIT_CLASSES, MovingDigitsConfig

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


def trainer_settings(spec: ExperimentSpec) -> TrainerSettings:
    """Map ``spec.transfer`` onto the keyword arguments of the pipeline pieces the trainer builds."""
    t = spec.transfer
    tr, mix, bank, ver = t.training, t.mixing, t.bank, t.verification
    model = spec.model
    if model.num_classes != t.num_classes:
        # The head follows the label space (10 digits, or the digits of interest + "other").
        logger.info("transfer: model.num_classes %d -> %d to match the label space", model.num_classes, t.num_classes)
        model = dataclasses.replace(model, num_classes=t.num_classes)
    return TrainerSettings(
        seed=spec.seed,
        model=model,
        pretrain={"epochs": t.pretrain.epochs, "batch_size": t.pretrain.batch_size,
                  "optimizer": t.pretrain.optimizer, "lr": t.pretrain.lr},
        session={"epochs": tr.epochs, "batch_size": tr.batch_size, "optimizer": tr.optimizer, "lr": tr.lr,
                 "momentum": tr.momentum, "weight_decay": tr.weight_decay},
        mixer={"mode": mix.mode, "w_min": mix.w_min, "w_max": mix.w_max, "granularity": mix.granularity,
               "replay_weight": mix.replay_weight, "project": mix.project},
        bank={"capacity": bank.size, "policy": bank.policy, "n_compare": bank.n_compare,
              "per_class_quota": bank.per_class_quota},
        clips_per_session=t.stream.clips_per_session,
        history_batch_size=tr.history_batch_size or tr.batch_size,
        bank_source_clips=bank.source_clips,
        update_bank=bank.update,
        conf_threshold=ver.conf_threshold,
        background_digits=ver.background_digits if ver.background else None,
        keep_true_negatives=ver.keep_true_negatives,
        torch_threads=spec.resources.torch_threads,
    )


def run_transfer(ctx: RecipeContext) -> dict[str, Any]:
    """Run (or resume) an online-transfer experiment; returns the summary written to ``summary.json``."""
    spec = ctx.spec
    t = spec.transfer
    data = spec.data
    source_dir = ensure_generated(data.root, data.generator, data.seed)
    target_dir = ensure_generated(data.root, target_generator(spec), data.seed + t.stream.data_seed_offset)
    res = spec.resources
    # One trainer: it takes a whole GPU when the cluster has one, unless resources say otherwise.
    gpus = res.gpus_per_host or (1.0 if ctx.cluster_resources.get("GPU", 0) >= 1 and ctx.scheduling_strategy is None
                                 else 0.0)
    options = actor_options(num_cpus=res.cpus_per_host, num_gpus=gpus, max_restarts=0,
                            scheduling_strategy=ctx.scheduling_strategy)
    trainer = TransferTrainerActor.options(**options).remote(str(source_dir), str(target_dir), trainer_settings(spec))
    try:
        start = 1
        ckpt = latest_checkpoint(ctx.run.checkpoints) if ctx.resume else None
        if ckpt is not None:
            ray.get(trainer.restore.remote({"model": ckpt.model, **ckpt.extra}), timeout=_CONTROL_TIMEOUT_S)
            start = ckpt.round_num + 1
            ctx.run.truncate_metrics(ckpt.round_num, key="session")
            logger.info("resuming after session %d", ckpt.round_num)
        ctx.callbacks.on_run_start(
            {"recipe": "transfer", "run_dir": str(ctx.run.path), "total_steps": t.stream.sessions,
             "start_step": start, "unit": "session"}
        )
        if ckpt is None:
            record = ray.get(trainer.pretrain.remote(), timeout=t.session_timeout_s)
            ctx.run.append_metrics(record)
            _checkpoint(ctx, trainer, 0)
        for session in range(start, t.stream.sessions + 1):
            record, trace = ray.get(trainer.run_session.remote(session), timeout=t.session_timeout_s)
            _write_trace(ctx.run.path / "traces", session, trace)
            ctx.run.append_metrics(record)
            ctx.callbacks.on_round_end(session, record)
            if session % spec.run.checkpoint_every == 0 or session == t.stream.sessions:
                _checkpoint(ctx, trainer, session)
    finally:
        ray.kill(trainer)
    records = ctx.run.read_metrics()
    _plot(ctx, records)
    return _summary(ctx, records)


def _checkpoint(ctx: RecipeContext, trainer: Any, session: int) -> None:
    snap = ray.get(trainer.snapshot.remote(), timeout=_CONTROL_TIMEOUT_S)
    model = snap.pop("model")
    path = save_checkpoint(ctx.run.checkpoints, session, model, snap, {"recipe": "transfer", "session": session},
                           keep=ctx.spec.run.keep_checkpoints)
    if session > 0:
        ctx.callbacks.on_checkpoint(session, path)


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
            rows.append({
                "session": int(row["session"]), "step": int(row["step"]), "global_step": len(rows) + 1,
                **{k: float(row[k]) for k in ("s", "w_h", "projected", "inner_after", "loss_new", "loss_history")},
            })
    return rows


def _plot(ctx: RecipeContext, records: list[dict[str, Any]]) -> None:
    spec = ctx.spec
    title = f"{spec.name} ({spec.transfer.mixing.mode})"
    plot_curves(
        records, ctx.run.plots / "accuracy.png", x="session", title=title,
        panels=(("accuracy", ("new_scene_accuracy", "source_accuracy", "harmonic_mean")),
                ("similarity s", ("similarity_mean", "similarity_min", "similarity_max")),
                ("bank items from the new scene", ("bank_new_scene_items",))),
    )
    trace = read_traces(ctx.run.path)
    plot_curves(trace, ctx.run.plots / "similarity_trace.png", x="global_step", title=title,
                panels=(("cosine s(g_n, g_h)", ("s",)), ("history weight w_h", ("w_h",))))


def _summary(ctx: RecipeContext, records: list[dict[str, Any]]) -> dict[str, Any]:
    spec = ctx.spec
    t = spec.transfer
    meta = next((r for r in records if r["session"] == 0), {})
    last = records[-1] if records else {}
    sims = [r["similarity_mean"] for r in records if "similarity_mean" in r]
    return {
        "recipe": "transfer",
        "name": spec.name,
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
        "wall_seconds": time.time() - ctx.started,
        "versions": versions(),
    }
