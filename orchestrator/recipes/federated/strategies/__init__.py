"""Server strategies by registry name. Only this registry looks at strategy names."""

from orchestrator.recipes.federated.strategies.base import AggregatedFit, Strategy
from orchestrator.recipes.federated.strategies.context import ServerAccess, StrategyContext
from orchestrator.recipes.federated.strategies.fedavg import FedAvg
from orchestrator.recipes.federated.strategies.fedavgm import FedAvgM
from orchestrator.recipes.federated.strategies.feddu import FedDU

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (FedAvg, FedAvgM, FedDU)}

__all__ = ["STRATEGIES", "strategy_class", "AggregatedFit", "FedAvg", "FedAvgM", "FedDU", "ServerAccess", "Strategy", "StrategyContext"]


def strategy_class(name: str) -> type[Strategy]:
    """The strategy class registered under ``name`` (``strategy.name`` in YAML)."""
    from orchestrator.config.loader import ConfigError

    if name not in STRATEGIES:
        raise ConfigError(f"strategy.name: unknown strategy {name!r}; choose one of {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name]
