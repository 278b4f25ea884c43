"""The one run loop: every recipe is set up, resumed, stepped, checkpointed and summarised here.

::

    [resume: pick the newest usable checkpoint] -> setup -> [restore it, truncate metrics] -> on_run_start
          -> for n in start..total: record = step(n); append metrics; on_step_end; checkpoint on cadence
          -> summary (common fields + the recipe's) -> close (always, also after an error)

A warm-up recipe (``warmup``) has a step 0 (e.g. pre-training) that runs once on a fresh start: its
record is written and it is checkpointed, so a crash right after it resumes at step 1, but callbacks
(progress, Tune) only see steps 1..total.

On resume every checkpoint is checked against the sizes and checksums in its ``meta.json``; a damaged
or incomplete newest one is skipped with one warning naming it and why, and the run goes on from the
newest one that checks out (the steps after it are replayed, bit for bit). When checkpoints exist but
none checks out, the resume stops with one line (``CheckpointError``, exit 2).

The loop knows recipes only by the :class:`LoopRecipe` protocol, so this layer imports nothing from
``fedtwin.orchestrator.recipes`` (recipes build on ``run/``, not the other way round).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from fedtwin.orchestrator.run.checkpoint import (
    Checkpoint,
    CheckpointError,
    describe_skipped,
    newest_usable_checkpoint,
    save_checkpoint,
)
from fedtwin.orchestrator.run.context import RecipeContext, versions

logger = logging.getLogger(__name__)


class StepState(Protocol):
    """What a recipe's ``checkpoint_state`` returns (``fedtwin.CheckpointState``)."""

    @property
    def model(self) -> Mapping[str, Any]: ...
    @property
    def extra(self) -> Mapping[str, Any]: ...
    @property
    def meta(self) -> Mapping[str, Any]: ...


class LoopRecipe(Protocol):
    """The part of the recipe contract (``fedtwin.Recipe``) the loop calls."""

    name: str
    unit: str
    warmup: bool

    @property
    def total_steps(self) -> int: ...
    def setup(self) -> None: ...
    def run_info(self) -> dict[str, Any]: ...
    def step(self, n: int) -> dict[str, Any]: ...
    def should_checkpoint(self, n: int) -> bool: ...
    def checkpoint_state(self) -> StepState: ...
    def restore(self, ckpt: Checkpoint) -> None: ...
    def summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]: ...
    def close(self) -> None: ...


def run_recipe(recipe: LoopRecipe, ctx: RecipeContext) -> dict[str, Any]:
    """Run (or resume) ``recipe`` to completion; returns the summary (also written by the caller)."""
    unit = recipe.unit
    try:
        ckpt = _checkpoint_to_resume(ctx) if ctx.resume else None  # a damaged run fails before actors start
        recipe.setup()
        start = _resume(recipe, ctx, ckpt)
        total = recipe.total_steps
        ctx.callbacks.on_run_start(
            {
                # run_dir: the local folder callbacks write into; run_location: where the run lives (maybe a URI)
                "recipe": recipe.name,
                "run_dir": str(ctx.run.path),
                "run_location": ctx.run.location,
                "total_steps": total,
                "start_step": max(start, 1),
                "unit": unit,
                **recipe.run_info(),
            }
        )
        for n in range(start, total + 1):
            record = {unit: n, **recipe.step(n)}
            ctx.run.append_metrics(record)
            if n > 0:
                ctx.callbacks.on_step_end(n, record)
            if n == 0 or recipe.should_checkpoint(n):
                _checkpoint(recipe, ctx, n)
        records = ctx.run.read_metrics()
        summary = {
            "run_dir": ctx.run.location,
            "recipe": recipe.name,
            "name": ctx.spec.name,
            "unit": unit,
            "steps": total,
            **recipe.summary(records),
        }
        summary["wall_seconds"] = time.time() - ctx.started
        summary["versions"] = versions()
        return summary
    finally:
        recipe.close()


def _checkpoint_to_resume(ctx: RecipeContext) -> Checkpoint | None:
    """The newest checkpoint that checks out; one warning for newer ones skipped; an error if none does."""
    ckpt, skipped = newest_usable_checkpoint(ctx.run.checkpoints)
    if skipped and ckpt is None:
        raise CheckpointError(
            f"--resume {ctx.run.location}: no usable checkpoint: {describe_skipped(skipped)}; "
            "restore the checkpoints folder from a copy, or start the run again without --resume"
        )
    if skipped and ckpt is not None:
        logger.warning(
            "%s: skipped damaged checkpoint%s %s; resuming from %s %d",
            ctx.run.location,
            "s" if len(skipped) > 1 else "",
            describe_skipped(skipped),
            _checkpoint_label(ckpt),
            ckpt.step,
        )
    return ckpt


def _checkpoint_label(ckpt: Checkpoint) -> str:
    return str(ckpt.meta.get("unit") or "step")


def _resume(recipe: LoopRecipe, ctx: RecipeContext, ckpt: Checkpoint | None) -> int:
    """The first step to run: after ``ckpt`` when resuming from one, else 0 (warm-up) or 1."""
    first = 0 if recipe.warmup else 1
    if ckpt is None:
        # A resumed run that died before its first checkpoint starts over: drop its partial metrics.
        ctx.run.truncate_metrics(first - 1, key=recipe.unit)
        return first
    recipe.restore(ckpt)
    ctx.run.truncate_metrics(ckpt.step, key=recipe.unit)
    logger.info("resuming after %s %d", recipe.unit, ckpt.step)
    return ckpt.step + 1


def _checkpoint(recipe: LoopRecipe, ctx: RecipeContext, n: int) -> None:
    state = recipe.checkpoint_state()
    meta: Mapping[str, Any] = {"recipe": recipe.name, "unit": recipe.unit, **state.meta}
    sections = getattr(state, "sections", None)  # streamed per-device state (``CheckpointState.sections``)
    path = save_checkpoint(
        ctx.run.checkpoints, n, state.model, state.extra, meta, keep=ctx.spec.run.keep_checkpoints, sections=sections
    )
    on_saved = getattr(state, "on_saved", None)
    if on_saved is not None:
        on_saved(path)
    ctx.run.publish_checkpoint(path)  # object storage: upload, marker last (nothing to do for a local run)
    if n > 0:  # a warm-up step is a restart point, not a reported step
        ctx.callbacks.on_checkpoint(n, path)
