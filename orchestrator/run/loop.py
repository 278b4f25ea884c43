"""The one run loop: every recipe is set up, resumed, stepped, checkpointed and summarised here.

::

    setup -> [resume: restore newest checkpoint, truncate metrics] -> on_run_start
          -> for n in start..total: record = step(n); append metrics; callbacks; checkpoint on cadence
          -> summary (common fields + the recipe's) -> close (always, also after an error)

A warm-up recipe (``Recipe.warmup``) has a step 0 (e.g. pre-training) that runs once on a fresh start:
its record is written and it is checkpointed, so a crash right after it resumes at step 1, but callbacks
(progress, Tune) only see steps 1..total.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from fedtwin.orchestrator.recipes.base import Recipe
from fedtwin.orchestrator.run.checkpoint import latest_checkpoint, save_checkpoint
from fedtwin.orchestrator.run.context import RecipeContext, versions

logger = logging.getLogger(__name__)


def run_recipe(recipe: Recipe, ctx: RecipeContext) -> dict[str, Any]:
    """Run (or resume) ``recipe`` to completion; returns the summary (also written by the caller)."""
    unit = recipe.unit
    try:
        recipe.setup()
        start = _resume(recipe, ctx)
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
                ctx.callbacks.on_round_end(n, record)
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


def _resume(recipe: Recipe, ctx: RecipeContext) -> int:
    """The first step to run: after the newest checkpoint when resuming, else 0 (warm-up) or 1."""
    first = 0 if recipe.warmup else 1
    ckpt = latest_checkpoint(ctx.run.checkpoints) if ctx.resume else None
    if ckpt is None:
        # A resumed run that died before its first checkpoint starts over: drop its partial metrics.
        ctx.run.truncate_metrics(first - 1, key=recipe.unit)
        return first
    recipe.restore(ckpt)
    ctx.run.truncate_metrics(ckpt.round_num, key=recipe.unit)
    logger.info("resuming after %s %d", recipe.unit, ckpt.round_num)
    return ckpt.round_num + 1


def _checkpoint(recipe: Recipe, ctx: RecipeContext, n: int) -> None:
    state = recipe.checkpoint_state()
    meta: Mapping[str, Any] = {"recipe": recipe.name, "unit": recipe.unit, **state.meta}
    path = save_checkpoint(ctx.run.checkpoints, n, state.model, state.extra, meta, keep=ctx.spec.run.keep_checkpoints)
    ctx.run.publish_checkpoint(path)  # object storage: upload, marker last (nothing to do for a local run)
    if n > 0:  # a warm-up step is a restart point, not a reported step
        ctx.callbacks.on_checkpoint(n, path)
