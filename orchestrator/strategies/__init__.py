"""Server strategies by registry name. Only this registry looks at strategy names."""

from orchestrator.strategies.base import AggregatedFit, Strategy
from orchestrator.strategies.context import ServerAccess, StrategyContext
from orchestrator.strategies.fedavg import FedAvg
from orchestrator.strategies.fedavgm import FedAvgM
from orchestrator.strategies.feddu import FedDU

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (FedAvg, FedAvgM, FedDU)}

__all__ = ["STRATEGIES", "AggregatedFit", "FedAvg", "FedAvgM", "FedDU", "ServerAccess", "Strategy", "StrategyContext"]
