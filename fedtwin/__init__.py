"""fedtwin's public Python API.

::

    from fedtwin import ExperimentSpec, run_experiment

    spec = ExperimentSpec.from_yaml("configs/quickstart.yaml", {"federation.num_rounds": 5})
    result = run_experiment(spec)
    print(result.run_dir, result.summary["final_test_accuracy"])

The names below are the supported surface (``docs/api.md``); the packages behind them
(``fedtwin.orchestrator``: config, run loop, recipes, Tune, cluster, CLI; ``fedtwin.actors``: the Ray
actors; ``fedtwin.pipelines``: data, models, training math) are the engine and may change. Names load on
first use, so ``import fedtwin`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "run_experiment": "fedtwin.orchestrator.run.experiment",
    "RunResult": "fedtwin.orchestrator.run.experiment",
    "ExperimentSpec": "fedtwin.orchestrator.config.spec",
    "ConfigError": "fedtwin.orchestrator.config.loader",
    "Recipe": "fedtwin.orchestrator.recipes.base",
    "CheckpointState": "fedtwin.orchestrator.recipes.base",
    "RecipeContext": "fedtwin.orchestrator.run.context",
    "RunCallback": "fedtwin.orchestrator.run.callbacks",
    "Checkpoint": "fedtwin.orchestrator.run.checkpoint",
    "Footprint": "fedtwin.orchestrator.run.footprint",
    "Strategy": "fedtwin.orchestrator.recipes.federated.strategies.base",
    "StrategyContext": "fedtwin.orchestrator.recipes.federated.strategies.context",
    "AggregatedFit": "fedtwin.pipelines.federated.messages",
    "FedtwinError": "fedtwin.pipelines.core.errors",
    "PluginError": "fedtwin.pipelines.plugins",
    "ActorCallError": "fedtwin.orchestrator.run.actor_calls",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fedtwin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
