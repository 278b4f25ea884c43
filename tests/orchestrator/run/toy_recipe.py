"""A complete recipe in one small file, used by the loop tests: least-squares regression by SGD.

It needs no Ray (``needs_ray`` is False) and shows the whole contract: a config section of its own, setup,
steps, checkpoint/restore, summary. ``ToyRecipe`` is referenced from YAML by import path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedtwin import CheckpointState, ExperimentSpec, Recipe
from fedtwin.orchestrator.run.checkpoint import Checkpoint
from fedtwin.pipelines.core.seeding import numpy_rng


@dataclass(frozen=True)
class ToyConfig:
    """The ``toy:`` section."""

    epochs: int = 6
    lr: float = 0.1
    samples: int = 64
    fail_at: int | None = None  # raise in this step (to test that close() still runs)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs: must be >= 1, got {self.epochs}")


class ToyRecipe(Recipe):
    """One step = one pass of SGD over a fixed regression problem."""

    name = "toy"
    unit = "epoch"
    sections = {"toy": ToyConfig}
    warmup = True
    closed: list[str] = []  # run dirs of closed instances (class-level so the test can look)

    @classmethod
    def steps(cls, spec: ExperimentSpec) -> int:
        return spec.toy.epochs

    @classmethod
    def needs_ray(cls, spec: ExperimentSpec) -> bool:
        return False

    def setup(self) -> None:
        rng = numpy_rng(self.spec.seed, 0)
        self.x = rng.normal(size=(self.spec.toy.samples, 3))
        self.y = self.x @ np.array([1.0, -2.0, 0.5]) + 0.01 * rng.normal(size=self.spec.toy.samples)
        self.w = np.zeros(3)

    def step(self, n: int) -> dict[str, Any]:
        if n == self.spec.toy.fail_at:
            raise RuntimeError(f"toy failure in epoch {n}")
        if n > 0:  # step 0 only records the starting loss (the warm-up step)
            order = numpy_rng(self.spec.seed, n).permutation(len(self.y))
            for i in order:
                grad = (self.x[i] @ self.w - self.y[i]) * self.x[i]
                self.w = self.w - self.spec.toy.lr * grad
        return {"loss": float(np.mean((self.x @ self.w - self.y) ** 2))}

    def checkpoint_state(self) -> CheckpointState:
        return CheckpointState({"w": self.w.copy()}, {"seen": np.array(len(self.y))})

    def restore(self, ckpt: Checkpoint) -> None:
        self.w = np.array(ckpt.model["w"])

    def summary(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        return {"final_loss": records[-1]["loss"], "weights": [float(v) for v in self.w]}

    def close(self) -> None:
        ToyRecipe.closed.append(str(self.ctx.run.path))
