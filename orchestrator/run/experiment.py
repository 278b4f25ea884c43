"""``run_experiment(spec)``: the single entry point shared by ``fedtwin run``, Tune trials, jobs and Python."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedtwin.orchestrator.config.recipes import recipe_class
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.run import phases
from fedtwin.orchestrator.run.callbacks import CallbackList, RunCallback
from fedtwin.orchestrator.run.context import RecipeContext
from fedtwin.orchestrator.run.loop import run_recipe
from fedtwin.orchestrator.run.phases import EndPhasesOnRunStart
from fedtwin.orchestrator.run.preflight import check_cluster, check_common
from fedtwin.orchestrator.run.run_folder import RunFolder
from fedtwin.orchestrator.run.tensorboard import TensorBoardCallback

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """Where the run lives (a path, or a URI string) and what it achieved (``summary`` is ``summary.json``)."""

    run_dir: Path | str
    summary: dict[str, Any]


def run_experiment(
    spec: ExperimentSpec,
    *,
    address: str | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Sequence[RunCallback] = (),
    scheduling_strategy: Any = None,
) -> RunResult:
    """Run ``spec`` to completion.

    Args:
        spec: the validated experiment.
        address: a Ray cluster to attach to (default: ``spec.ray.address``, ``RAY_ADDRESS``, else embedded).
        run_dir: use this folder (a path or a URI) instead of creating ``<run.output_dir>/<name>-<timestamp>``.
        resume: continue from the newest checkpoint in ``run_dir``.
        callbacks: observers of the run (progress bar, Tune reporting, tests).
        scheduling_strategy: Ray scheduling strategy for the run's actors (a Tune trial's placement group).

    Returns:
        The run folder and the summary also written to ``summary.json``.

    Order: the recipe's ``preflight`` checks (no Ray, nothing written), the Ray connection and, on
    embedded Ray, a check that the run's actors fit; only then is the run folder created. A run that
    fails before its first step removes the folder it created.
    """
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run_dir to resume")
    cls = recipe_class(spec.recipe)
    _preflight(cls, spec)  # bad input fails here: nothing started, nothing written
    with phases.reporting(callbacks):  # start-up phases (starting Ray, data, hosts) to the callbacks
        return _run(cls, spec, address, run_dir, resume, callbacks, scheduling_strategy)


def _run(
    cls: Any,
    spec: ExperimentSpec,
    address: str | None,
    run_dir: str | Path | None,
    resume: bool,
    callbacks: Sequence[RunCallback],
    scheduling_strategy: Any,
) -> RunResult:
    session = None
    if cls.needs_ray(spec):
        from fedtwin.orchestrator.run.ray_session import connect  # the in-process path never imports Ray

        session = connect(spec.ray, address, route_logs=True)
    created: RunFolder | None = None
    try:
        if session is not None and session.owned:
            # An attached cluster may autoscale, so only an embedded one is held to its current size.
            check_cluster(cls, spec, session.cluster_resources, in_placement_group=scheduling_strategy is not None)
        if run_dir is not None:
            run = RunFolder.attach(run_dir, resume)
        else:
            run = created = RunFolder.create(spec.run.output_dir, spec.name)
        run.path.mkdir(parents=True, exist_ok=True)
        if session is not None and session.logs is not None:
            session.logs.attach(run.path)  # the embedded Ray's messages, from its start on
        if not resume:
            run.save_spec(spec.to_dict())
        ctx = RecipeContext(
            spec=spec,
            run=run,
            # the run's start ends the last start-up phase; event files beside metrics.jsonl
            callbacks=CallbackList([EndPhasesOnRunStart(), *callbacks, TensorBoardCallback()]),
            resume=resume,
            cluster_resources=session.cluster_resources if session else {"CPU": float(os.cpu_count() or 1)},
            scheduling_strategy=scheduling_strategy,
        )
        try:
            summary = run_recipe(cls(spec, ctx), ctx)
        except BaseException:
            # A start that failed before its first step leaves no run folder (there is nothing to resume).
            if created is not None and not created.has_progress():
                created.remove()
            else:
                _close_quietly(run)  # object storage: what was written so far still goes up
            raise
        run.write_summary(summary)
        ctx.callbacks.on_run_end(summary)
        run.close()  # object storage: the last files (TensorBoard's close) go up, the working copy goes
        return RunResult(run.path if not run.remote else run.location, summary)
    finally:
        if session is not None:
            session.close()


def _close_quietly(run: RunFolder) -> None:
    try:
        run.close()
    except Exception as err:  # noqa: BLE001 (the run's own error is the one to report)
        logger.warning("could not upload the last files of %s (%s)", run.location, err)


def _preflight(cls: type, spec: ExperimentSpec) -> None:
    """The recipe's checks before anything starts (the common ones for a recipe without the hook)."""
    check = getattr(cls, "preflight", None)
    if callable(check):
        check(spec)
    else:
        check_common(spec)
