"""``fedtwin tune``: a Ray Tune sweep where one trial is one ``run_experiment`` (see ``tune_trial``).

The sweep folder ``<output_dir>/<name>/`` is Tune's experiment folder (trial folders with their own
CSV/JSON/TensorBoard logs, ``tuner.pkl`` for ``Tuner.restore``) plus ours: ``sweep.yaml`` and
``base.yaml`` (what the sweep was started with; ``--resume`` runs from these, not from the files that
may have changed since) and the summary (``sweep.csv``, ``sweep.md``, ``best.yaml``, a plot).

The sweep folder may be a URI (``--output s3://bucket/sweeps``): it is then Tune's ``storage_path``
(with the ``pyarrow.fs`` filesystem of :mod:`fedtwin.pipelines.core.storage`, so the endpoint and credentials
settings are the same as everywhere else), trials on any node upload their checkpoints there and a
trial restarted elsewhere downloads its last one; our files are written next to Tune's.
"""

from __future__ import annotations

import functools
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fedtwin.orchestrator.config.files import read_mapping
from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.recipes import recipe_class
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.run.ray_session import connect
from fedtwin.orchestrator.tune.sweep_config import (
    Dimension,
    LoadedSweep,
    SweepSpec,
    resolve_base,
    sweep_from_dict,
    target_of,
)
from fedtwin.orchestrator.tune.sweep_summary import SweepTable, build_table, write_summary
from fedtwin.orchestrator.tune.trial import ObjectiveSpec, run_trial
from fedtwin.orchestrator.tune.trial_resources import Footprint, check_fit, max_concurrent, trial_footprint
from fedtwin.pipelines.core import storage
from fedtwin.pipelines.core.errors import FedtwinError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    """Where the sweep lives, its table, the files written, and whether it was interrupted."""

    path: Path | str  # a local folder, or a URI
    table: SweepTable
    files: dict[str, Path | str]
    wall_seconds: float
    interrupted: bool
    max_concurrent_trials: int


def objective_metric(sweep: SweepSpec) -> tuple[str, str]:
    """The Tune metric and mode for the sweep's objective."""
    if sweep.objective.name == "rounds_to_target":
        return "rounds_to_target_score", "min"
    return sweep.objective.accuracy_key, "max"


def param_space(dims: tuple[Dimension, ...]) -> dict[str, Any]:
    """Tune search-space domains keyed by the dotted experiment keys."""
    from ray import tune

    space: dict[str, Any] = {}
    for dim in dims:
        if dim.kind == "grid":
            space[dim.key] = tune.grid_search(list(dim.values))
        elif dim.kind == "choice":
            space[dim.key] = tune.choice(list(dim.values))
        elif dim.kind == "uniform":
            space[dim.key] = tune.uniform(dim.low, dim.high)
        else:
            space[dim.key] = tune.loguniform(dim.low, dim.high)
    return space


def grid_space(dims: tuple[Dimension, ...]) -> dict[str, Any]:
    """``search.algorithm: grid``: every value of every grid/choice dimension, crossed."""
    from ray import tune

    return {d.key: tune.grid_search(list(d.values)) for d in dims}


def make_search_alg(sweep: SweepSpec, max_concurrent_trials: int) -> Any:
    """Random/grid use Tune's variant generator (seeded); Optuna's TPE when the extra is installed.

    Metric and mode reach both through ``TuneConfig``; the variant generator takes the concurrency cap
    itself (Tune ignores ``max_concurrent_trials`` for it), a ``Searcher`` gets it from ``TuneConfig``.
    """
    search = sweep.search
    if search.algorithm == "optuna":
        try:
            import optuna  # noqa: F401  (OptunaSearch itself imports lazily and fails late)
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise ConfigError(
                "search.algorithm: optuna is not installed; `pip install 'fedtwin[optuna]'` or use random"
            ) from None
        return OptunaSearch(seed=search.seed)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=search.seed, max_concurrent=max_concurrent_trials)


def make_scheduler(sweep: SweepSpec, base: ExperimentSpec) -> Any:
    """ASHA on rounds (default), PBT on rounds, or FIFO; metric and mode come from ``TuneConfig``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    s = sweep.scheduler
    if s.name == "fifo":
        return FIFOScheduler()
    max_t = s.max_t or recipe_class(base.recipe).steps(base)
    if s.name == "asha":
        if s.grace_period > max_t:
            raise ConfigError(f"scheduler.grace_period: {s.grace_period} exceeds max_t {max_t} (the rounds of a trial)")
        # stop_last_trials=False: a trial that reaches max_t finishes on its own and writes its summary.
        return ASHAScheduler(
            time_attr="round",
            max_t=max_t,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
            stop_last_trials=False,
        )
    if s.perturbation_interval % base.run.checkpoint_every:
        raise ConfigError(
            f"scheduler.perturbation_interval: {s.perturbation_interval} is not a multiple of "
            f"run.checkpoint_every {base.run.checkpoint_every}; PBT clones the checkpoint of that round"
        )
    mutations: dict[str, Any] = {}
    for dim in sweep.dimensions:
        if dim.is_range:
            mutations[dim.key] = (tune.uniform if dim.kind == "uniform" else tune.loguniform)(dim.low, dim.high)
        else:
            mutations[dim.key] = list(dim.values)
    return PopulationBasedTraining(
        time_attr="round",
        perturbation_interval=s.perturbation_interval,
        hyperparam_mutations=mutations,
        quantile_fraction=s.quantile_fraction,
        resample_probability=s.resample_probability,
        log_config=True,
    )


def _trial_resources(config: dict[str, Any], *, base: dict[str, Any], sweep: dict[str, Any]) -> Any:
    """Placement group of one trial (a function of its config, in case resources.* are searched)."""
    from ray import tune

    spec = ExperimentSpec.from_dict(base).with_overrides(
        {k: v for k, v in config.items() if k.startswith("resources.")}
    )
    res = sweep_from_dict(sweep).resources
    fp = trial_footprint(spec, res)
    return tune.PlacementGroupFactory(list(fp.bundles), strategy=res.placement_strategy)


def make_trainable(sweep: SweepSpec, base: ExperimentSpec) -> Any:
    """``run_trial`` with its fixed arguments and per-trial placement group."""
    from ray import tune

    objective = ObjectiveSpec(sweep.objective.accuracy_key, target_of(sweep, base))
    base_dict, sweep_dict = base.to_dict(), sweep.to_dict()
    fn = tune.with_parameters(run_trial, base=base_dict, objective=objective)
    return tune.with_resources(fn, functools.partial(_trial_resources, base=base_dict, sweep=sweep_dict))


def sweep_dir(sweep: SweepSpec, output: str | Path | None) -> Path | str:
    """``<output or sweep.output_dir>/<sweep.name>``: absolute, or a URI."""
    parent = output or sweep.output_dir
    storage.check_scheme(parent, "--output" if output else "output_dir")
    if storage.is_remote(parent):
        return storage.join(str(parent), sweep.name)
    return (Path(storage.as_location(parent)) / sweep.name).resolve()


def absolute_paths(spec: ExperimentSpec) -> ExperimentSpec:
    """Trials run in their own folders (maybe on other nodes): pin relative data/run paths to this cwd."""
    changes: dict[str, Any] = {
        "data.root": storage.absolute(spec.data.root),
        "run.output_dir": storage.absolute(spec.run.output_dir),
    }
    if spec.data.path is not None:
        changes["data.path"] = storage.absolute(spec.data.path)
    return spec.with_overrides(changes)


def run_sweep(
    loaded: LoadedSweep,
    *,
    address: str | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    verbose: int = 1,
    tune_callbacks: Sequence[Any] = (),
) -> SweepResult:
    """Run (or with ``resume`` continue) a sweep and write its summary.

    ``tune_callbacks`` are ``ray.tune.Callback`` observers of a new sweep (a resumed sweep keeps the
    ones it was started with, as Tune restores its run config).

    Raises:
        SweepResourcesError: one trial cannot fit the cluster (checked before any trial starts).
        FedtwinError: the sweep folder exists without ``resume``, or is missing with it.
    """
    from ray import tune

    path = sweep_dir(loaded.sweep, output)
    if storage.is_remote(path):
        storage.check_location(path, "--output" if output else "output_dir", writable=True)
    if resume:
        sweep, base = _stored(path)
    else:
        if storage.list_dir(path):
            raise FedtwinError(f"sweep folder {path} exists; pass --resume to continue it, or change name/--output")
        sweep, base = loaded.sweep, absolute_paths(loaded.base)
    metric, mode = objective_metric(sweep)
    storage_path, storage_fs = tune_location(path)
    session = connect(base.ray, address)
    started = time.time()
    try:
        footprint = trial_footprint(base, sweep.resources)
        concurrent = _concurrency(sweep, footprint)
        logger.info("trial footprint %s; up to %d trials at once", footprint.describe(), concurrent)
        trainable = make_trainable(sweep, base)
        if resume:
            tuner = tune.Tuner.restore(
                storage_path, trainable=trainable, resume_unfinished=True, storage_filesystem=storage_fs
            )
        else:
            tuner = _new_tuner(sweep, base, trainable, path, metric, mode, concurrent, verbose, tune_callbacks)
        tuner.fit()
        analysis = tune.ExperimentAnalysis(
            storage_path, default_metric=metric, default_mode=mode, storage_filesystem=storage_fs
        )
        trials = analysis.trials
    finally:
        session.close()
    wall = time.time() - started
    max_rounds = sweep.scheduler.max_t or recipe_class(base.recipe).steps(base)
    table = build_table(
        trials,
        keys=sweep.keys,
        metric=metric,
        mode=mode,
        accuracy_key=sweep.objective.accuracy_key,
        max_rounds=max_rounds,
    )
    interrupted = any(r.status == "unfinished" for r in table.rows)
    header = {
        "name": sweep.name,
        "objective": f"{sweep.objective.name} (Tune metric {metric}, {mode})",
        "search": f"{sweep.search.algorithm}, {len(table.rows)} trials, seed {sweep.search.seed}",
        "scheduler": sweep.scheduler.name,
        "trial footprint": footprint.describe(),
        "max concurrent trials": concurrent,
        "wall time (this invocation)": f"{wall:.0f} s",
        "status counts": _counts(table),
    }
    files = _write_summary_to(path, table, header, base, sweep)
    return SweepResult(path, table, files, wall, interrupted, concurrent)


def tune_location(path: Path | str) -> tuple[str, Any]:
    """``(path, filesystem)`` for Tune: a local folder as is (no filesystem); a URI as its ``pyarrow.fs`` pair."""
    if not storage.is_remote(path):
        return str(path), None
    fs, inner = storage.resolve(path)
    return inner, fs


def _write_summary_to(
    path: Path | str, table: SweepTable, header: dict[str, Any], base: ExperimentSpec, sweep: SweepSpec
) -> dict[str, Path | str]:
    """The sweep summary files in the sweep folder (written locally and uploaded for a URI)."""
    if not storage.is_remote(path):
        return dict(write_summary(Path(path), table, header, base, sweep.dimensions, sweep.name))
    with tempfile.TemporaryDirectory(prefix="fedtwin-sweep-") as tmp:
        files = write_summary(Path(tmp), table, header, base, sweep.dimensions, sweep.name)
        out: dict[str, Path | str] = {}
        for key, local in files.items():
            rel = Path(local).relative_to(tmp).as_posix()
            out[key] = storage.join(str(path), rel)
            storage.upload_file(local, out[key])
    return out


def _new_tuner(
    sweep: SweepSpec,
    base: ExperimentSpec,
    trainable: Any,
    path: Path | str,
    metric: str,
    mode: str,
    concurrent: int,
    verbose: int,
    callbacks: Sequence[Any],
) -> Any:
    """Build every Tune component (so bad settings fail here), then record the sweep in its folder."""
    from ray import tune

    space = grid_space(sweep.dimensions) if sweep.search.algorithm == "grid" else param_space(sweep.dimensions)
    tune_config = tune.TuneConfig(
        metric=metric,
        mode=mode,
        search_alg=make_search_alg(sweep, concurrent),
        scheduler=make_scheduler(sweep, base),
        num_samples=sweep.search.samples,
        max_concurrent_trials=concurrent if sweep.search.algorithm == "optuna" else None,
        time_budget_s=sweep.time_budget_s,
        reuse_actors=False,
        trial_dirname_creator=trial_dirname,
    )
    parent, storage_fs = tune_location(storage.parent_of(path))
    run_config = tune.RunConfig(
        name=storage.name_of(path),
        storage_path=parent,
        storage_filesystem=storage_fs,
        failure_config=tune.FailureConfig(max_failures=sweep.failure.max_failures, fail_fast=sweep.failure.fail_fast),
        # PBT clones other trials' checkpoints: keep a few more so none is deleted while being copied.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if sweep.scheduler.name == "pbt" else 2),
        verbose=verbose,
        callbacks=list(callbacks) or None,
    )
    storage.write_text_atomic(storage.join(str(path), "sweep.yaml"), yaml.safe_dump(sweep.to_dict(), sort_keys=False))
    storage.write_text_atomic(storage.join(str(path), "base.yaml"), yaml.safe_dump(base.to_dict(), sort_keys=False))
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (Tune's default spells out every parameter)."""
    return f"trial_{trial.trial_id}"


def _concurrency(sweep: SweepSpec, footprint: Footprint) -> int:
    import ray

    nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    if sweep.resources.check_fit:
        check_fit(footprint, nodes)
    if sweep.resources.max_concurrent_trials is not None:
        return sweep.resources.max_concurrent_trials
    return max_concurrent(footprint, ray.cluster_resources())


def _stored(path: Path | str) -> tuple[SweepSpec, ExperimentSpec]:
    """The sweep and base experiment a sweep folder was started with (for ``--resume``)."""
    from ray import tune

    inner, fs = tune_location(path)
    sweep_file = storage.join(str(path), "sweep.yaml")
    if not storage.is_file(sweep_file) or not tune.Tuner.can_restore(inner, storage_filesystem=fs):
        raise FedtwinError(f"--resume: no resumable sweep in {path}; start it without --resume (check name/--output)")
    sweep = sweep_from_dict(read_mapping(sweep_file, what="sweep file"))
    base = ExperimentSpec.from_stored(read_mapping(storage.join(str(path), "base.yaml"), what="sweep base spec"))
    return sweep, resolve_base(sweep, base)


def _counts(table: SweepTable) -> str:
    counts: dict[str, int] = {}
    for row in table.rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
