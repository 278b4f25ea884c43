"""``training:``, the local-training section recipes share (``federated`` and ``incremental``).

It lives in ``pipelines`` because the actors that train read it as is; the orchestrator's config
package re-exports it (``fedtwin.orchestrator.config.sections.TrainConfig``). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedtwin.pipelines.core.checks import check
from fedtwin.pipelines.model.settings import TrainSettings


@dataclass(frozen=True)
class TrainConfig:
    """Local training (one ``local_train`` call per step); a recipe section, e.g. ``training:``.

    Attributes:
        epochs: passes over the local data per call.
        batch_size: clips per step.
        optimizer: ``sgd`` or ``adam``.
        lr: learning rate.
        lr_decay: the learning rate of step (round) r is ``lr * lr_decay**(r-1)``.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        max_steps: cap on optimizer steps per call; null = none.
    """

    epochs: int = 1
    batch_size: int = 32
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.05
    lr_decay: float = 1.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"epochs: must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size: must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(0 < self.lr_decay <= 1, f"lr_decay: must be in (0, 1], got {self.lr_decay}")
        check(0 <= self.momentum < 1, f"momentum: must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, f"weight_decay: must be >= 0, got {self.weight_decay}")
        check(self.max_steps is None or self.max_steps >= 1, f"max_steps: must be >= 1, got {self.max_steps}")

    def settings(self, step: int, epochs: int | None = None) -> TrainSettings:
        """The ``local_train`` settings of step ``step`` (1-based): ``lr * lr_decay**(step-1)``, and
        ``epochs`` instead of ``self.epochs`` when given (a recipe that counts its own epochs)."""
        return TrainSettings(
            epochs=self.epochs if epochs is None else epochs,
            batch_size=self.batch_size,
            lr=self.lr * self.lr_decay ** (step - 1),
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            max_steps=self.max_steps,
        )
