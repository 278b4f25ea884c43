"""fedtwin's public Python API.

::

    from orchestrator import ExperimentSpec, run_experiment

    spec = ExperimentSpec.from_yaml("configs/quickstart.yaml", {"federation.num_rounds": 5})
    result = run_experiment(spec)
    print(result.run_dir, result.summary["final_test_accuracy"])

The names below are the supported surface (``docs/api.md``); the sub-packages behind them (``config``,
``run``, ``recipes``, ``tune``, ``cluster``, ``cli``) are the engine and may change. Names load on first
use, so ``import orchestrator.config`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "run_experiment": "orchestrator.run.experiment",
    "RunResult": "orchestrator.run.experiment",
    "ExperimentSpec": "orchestrator.config.spec",
    "ConfigError": "orchestrator.config.loader",
    "Recipe": "orchestrator.recipes.base",
    "CheckpointState": "orchestrator.recipes.base",
    "RecipeContext": "orchestrator.run.context",
    "RunCallback": "orchestrator.run.callbacks",
    "Checkpoint": "orchestrator.run.checkpoint",
    "Footprint": "orchestrator.run.footprint",
    "Strategy": "orchestrator.recipes.federated.strategies.base",
    "StrategyContext": "orchestrator.recipes.federated.strategies.context",
    "AggregatedFit": "pipelines.federated.messages",
    "FedtwinError": "pipelines.core.errors",
    "PluginError": "pipelines.plugins",
    "ActorCallError": "orchestrator.run.actor_calls",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
