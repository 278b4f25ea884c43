"""Server strategies by registry name. Only this registry looks at strategy names."""

from orchestrator.strategies.base import AggregatedFit, Strategy
from orchestrator.strategies.fedavg import FedAvg
from orchestrator.strategies.fedavgm import FedAvgM

STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (FedAvg, FedAvgM)}

__all__ = ["STRATEGIES", "AggregatedFit", "FedAvg", "FedAvgM", "Strategy"]
