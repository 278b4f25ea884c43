"""Small recipe classes for config tests: only the declarations the config package reads.

They stand in for the built-in recipes where a test is about the config rules, not about a recipe
(the built-ins import Ray and torch code). Tests point ``recipe:`` at them by import path, or put them
in place of the built-ins with ``monkeypatch.setitem(BUILTIN_RECIPES, ...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.sections import TrainConfig
from fedtwin.orchestrator.recipes.federated.config import FederationConfig, StrategyConfig


@dataclass(frozen=True)
class TwinSection:
    """A stand-in for the ``twin:`` section."""

    epochs: int = 10
    lr: float = 1e-3


@dataclass(frozen=True)
class LoopSection:
    """A plain section with a range check."""

    steps: int = 3

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps: must be >= 1, got {self.steps}")


class FakeFederated:
    """The federated recipe's sections; ``validate`` checks across sections like the real one."""

    name = "federated"
    sections: ClassVar[dict[str, type]] = {
        "training": TrainConfig,
        "federation": FederationConfig,
        "strategy": StrategyConfig,
    }

    @classmethod
    def validate(cls, spec: Any) -> None:
        if spec.strategy.name not in ("fedavg", "fedavgm", "feddu"):
            raise ConfigError(f"strategy.name: unknown strategy {spec.strategy.name!r}")


class FakeMutual:
    """The mutual recipe's sections."""

    name = "mutual"
    sections: ClassVar[dict[str, type]] = {"twin": TwinSection}

    @classmethod
    def validate(cls, spec: Any) -> None:
        pass


class FakeIncremental:
    """Owns ``training`` too, like the real incremental recipe."""

    name = "incremental"
    sections: ClassVar[dict[str, type]] = {"training": TrainConfig, "incremental": LoopSection}

    @classmethod
    def validate(cls, spec: Any) -> None:
        pass


class Loop:
    """A user recipe found by import path."""

    sections: ClassVar[dict[str, type]] = {"loop": LoopSection}

    @classmethod
    def validate(cls, spec: Any) -> None:
        if spec.loop.steps > 100:
            raise ConfigError("loop.steps: at most 100")


class NotARecipe:
    """No ``sections``."""
