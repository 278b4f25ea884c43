"""Server strategies by registry name. Only this registry looks at strategy names."""

from orchestrator.recipes.federated.strategies.base import AggregatedFit, Strategy
from orchestrator.recipes.federated.strategies.context import ServerAccess, StrategyContext
from orchestrator.recipes.federated.strategies.fedavg import FedAvg
from orchestrator.recipes.federated.strategies.fedavgm import FedAvgM
from orchestrator.recipes.federated.strategies.feddu import FedDU

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (FedAvg, FedAvgM, FedDU)}

__all__ = ["STRATEGIES", "AggregatedFit", "FedAvg", "FedAvgM", "FedDU", "ServerAccess", "Strategy", "StrategyContext"]
