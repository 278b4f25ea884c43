"""Server strategies by name: built-ins, ``fedtwin.strategies`` entry points and import paths.

``strategy.name`` in YAML is resolved only by :func:`strategy_class`. A strategy plugin is a subclass of
:class:`Strategy` that sets its own ``name`` (shown in summaries), declares ``Params`` (a frozen
dataclass filled from ``strategy.params``) and implements ``aggregate_fit``; see
:mod:`fedtwin.orchestrator.recipes.federated.strategies.base`. Strategies run in the driver only.
"""

from __future__ import annotations

import inspect
from typing import Any

from fedtwin.orchestrator.recipes.federated.strategies.base import AggregatedFit, Strategy
from fedtwin.orchestrator.recipes.federated.strategies.context import ServerAccess, StrategyContext
from fedtwin.orchestrator.recipes.federated.strategies.fedadagrad import FedAdagrad
from fedtwin.orchestrator.recipes.federated.strategies.fedadam import FedAdam
from fedtwin.orchestrator.recipes.federated.strategies.fedavg import FedAvg
from fedtwin.orchestrator.recipes.federated.strategies.fedavgm import FedAvgM
from fedtwin.orchestrator.recipes.federated.strategies.feddu import FedDU
from fedtwin.orchestrator.recipes.federated.strategies.feddum import FedDUM
from fedtwin.orchestrator.recipes.federated.strategies.fedprox import FedProx
from fedtwin.orchestrator.recipes.federated.strategies.fedyogi import FedYogi
from fedtwin.orchestrator.recipes.federated.strategies.scaffold import Scaffold
from fedtwin.pipelines.plugins import PluginError, load_plugin

STRATEGY_GROUP = "fedtwin.strategies"
#: The built-in strategies (the ``builtins`` table of the ``fedtwin.strategies`` group).
STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedAvgM, FedProx, Scaffold, FedAdam, FedYogi, FedAdagrad, FedDU, FedDUM)
}

__all__ = [
    "STRATEGIES",
    "STRATEGY_GROUP",
    "AggregatedFit",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedDU",
    "FedDUM",
    "FedProx",
    "FedYogi",
    "Scaffold",
    "ServerAccess",
    "Strategy",
    "StrategyContext",
    "strategy_class",
]


def _is_strategy(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, Strategy)


def strategy_class(name: str, *, field: str = "strategy.name") -> type[Strategy]:
    """The strategy class that ``strategy.name`` refers to.

    Args:
        name: a built-in name (``fedavg``, ``fedavgm``, ``fedprox``, ``scaffold``, ``fedadam``, ``fedyogi``,
            ``fedadagrad``, ``feddu``, ``feddum``), an entry point of
            ``fedtwin.strategies`` or an import path ``"pkg.module:MyStrategy"``.
        field: the config key named in errors.

    Raises:
        PluginError: one line naming ``field``: unknown name, unimportable module, not a
            :class:`Strategy` subclass, abstract methods left, or no own ``name``.
    """
    cls: type[Strategy] = load_plugin(
        name,
        STRATEGY_GROUP,
        STRATEGIES,
        field=field,
        check=_is_strategy,
        expected=f"a subclass of {Strategy.__module__}.Strategy",
        kind="strategy",
    )
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise PluginError(f"{field}: {cls.__qualname__} ({name!r}) does not implement {missing}")
    own_name = cls.__dict__.get("name")
    if not isinstance(own_name, str) or not own_name:
        raise PluginError(
            f"{field}: {cls.__qualname__} ({name!r}) must set its own class attribute `name` (a non-empty str, "
            "shown in logs and summaries)"
        )
    return cls
