"""``fedtwin tune``: a Ray Tune sweep where one trial is one ``run_experiment`` (see ``tune_trial``).

The sweep folder ``<output_dir>/<name>/`` is Tune's experiment folder (trial folders with their own
CSV/JSON/TensorBoard logs, ``tuner.pkl`` for ``Tuner.restore``) plus ours: ``sweep.yaml`` and
``base.yaml`` (what the sweep was started with; ``--resume`` runs from these, not from the files that
may have changed since) and the summary (``sweep.csv``, ``sweep.md``, ``best.yaml``, a plot).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config.files import read_mapping
from orchestrator.config.recipes import recipe_class
from orchestrator.config.spec import ExperimentSpec
from orchestrator.config.loader import ConfigError
from orchestrator.run.ray_session import connect
from orchestrator.tune.sweep_config import Dimension, LoadedSweep, SweepSpec, resolve_base, sweep_from_dict, target_of
from orchestrator.tune.sweep_summary import SweepTable, build_table, write_summary
from orchestrator.tune.trial_resources import Footprint, check_fit, max_concurrent, trial_footprint
from orchestrator.tune.trial import ObjectiveSpec, run_trial
from pipelines.core.atomic_write import write_text_atomic
from pipelines.core.errors import FedtwinError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    """Where the sweep lives, its table, the files written, and whether it was interrupted."""

    path: Path
    table: SweepTable
    files: dict[str, Path]
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
        return ASHAScheduler(time_attr="round", max_t=max_t, grace_period=s.grace_period,
                             reduction_factor=s.reduction_factor, stop_last_trials=False)
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
        time_attr="round", perturbation_interval=s.perturbation_interval,
        hyperparam_mutations=mutations, quantile_fraction=s.quantile_fraction,
        resample_probability=s.resample_probability, log_config=True,
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


def sweep_dir(sweep: SweepSpec, output: str | Path | None) -> Path:
    """``<output or sweep.output_dir>/<sweep.name>``, absolute."""
    return (Path(output or sweep.output_dir) / sweep.name).resolve()


def absolute_paths(spec: ExperimentSpec) -> ExperimentSpec:
    """Trials run in their own folders (maybe on other nodes): pin relative data/run paths to this cwd."""
    changes: dict[str, Any] = {"data.root": str(Path(spec.data.root).resolve()),
                               "run.output_dir": str(Path(spec.run.output_dir).resolve())}
    if spec.data.path is not None:
        changes["data.path"] = str(Path(spec.data.path).resolve())
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
    if resume:
        sweep, base = _stored(path)
    else:
        if path.exists() and any(path.iterdir()):
            raise FedtwinError(f"sweep folder {path} exists; pass --resume to continue it, or change name/--output")
        sweep, base = loaded.sweep, absolute_paths(loaded.base)
    metric, mode = objective_metric(sweep)
    session = connect(base.ray, address)
    started = time.time()
    try:
        footprint = trial_footprint(base, sweep.resources)
        concurrent = _concurrency(sweep, footprint)
        logger.info("trial footprint %s; up to %d trials at once", footprint.describe(), concurrent)
        trainable = make_trainable(sweep, base)
        if resume:
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_unfinished=True)
        else:
            tuner = _new_tuner(sweep, base, trainable, path, metric, mode, concurrent, verbose, tune_callbacks)
        tuner.fit()
        analysis = tune.ExperimentAnalysis(str(path), default_metric=metric, default_mode=mode)
        trials = analysis.trials
    finally:
        session.close()
    wall = time.time() - started
    max_rounds = sweep.scheduler.max_t or recipe_class(base.recipe).steps(base)
    table = build_table(trials, keys=sweep.keys, metric=metric, mode=mode,
                        accuracy_key=sweep.objective.accuracy_key, max_rounds=max_rounds)
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
    files = write_summary(path, table, header, base, sweep.dimensions, sweep.name)
    return SweepResult(path, table, files, wall, interrupted, concurrent)


def _new_tuner(sweep: SweepSpec, base: ExperimentSpec, trainable: Any, path: Path, metric: str, mode: str,
               concurrent: int, verbose: int, callbacks: Sequence[Any]) -> Any:
    """Build every Tune component (so bad settings fail here), then record the sweep in its folder."""
    from ray import tune

    space = grid_space(sweep.dimensions) if sweep.search.algorithm == "grid" else param_space(sweep.dimensions)
    tune_config = tune.TuneConfig(
        metric=metric, mode=mode,
        search_alg=make_search_alg(sweep, concurrent),
        scheduler=make_scheduler(sweep, base),
        num_samples=sweep.search.samples,
        max_concurrent_trials=concurrent if sweep.search.algorithm == "optuna" else None,
        time_budget_s=sweep.time_budget_s,
        reuse_actors=False,
        trial_dirname_creator=trial_dirname,
    )
    run_config = tune.RunConfig(
        name=path.name,
        storage_path=str(path.parent),
        failure_config=tune.FailureConfig(max_failures=sweep.failure.max_failures, fail_fast=sweep.failure.fail_fast),
        # PBT clones other trials' checkpoints: keep a few more so none is deleted while being copied.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=4 if sweep.scheduler.name == "pbt" else 2),
        verbose=verbose,
        callbacks=list(callbacks) or None,
    )
    path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path / "sweep.yaml", yaml.safe_dump(sweep.to_dict(), sort_keys=False))
    write_text_atomic(path / "base.yaml", yaml.safe_dump(base.to_dict(), sort_keys=False))
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


def _stored(path: Path) -> tuple[SweepSpec, ExperimentSpec]:
    """The sweep and base experiment a sweep folder was started with (for ``--resume``)."""
    from ray import tune

    if not (path / "sweep.yaml").is_file() or not tune.Tuner.can_restore(str(path)):
        raise FedtwinError(f"--resume: no resumable sweep in {path}; start it without --resume (check name/--output)")
    sweep = sweep_from_dict(read_mapping(path / "sweep.yaml", what="sweep file"))
    base = ExperimentSpec.from_stored(read_mapping(path / "base.yaml", what="sweep base spec"))
    return sweep, resolve_base(sweep, base)


def _counts(table: SweepTable) -> str:
    counts: dict[str, int] = {}
    for row in table.rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
