"""What a strategy may know about the run besides its parameters, and how it reaches the server.

Strategies stay pure: the driver builds a :class:`StrategyContext` from the partition manifest (label
histograms, never data) and, for strategies with ``needs_server``, injects a :class:`ServerAccess`:
``RayServerAccess`` (a server-node actor) on Ray, the ``ServerNode`` itself in process, a fake in tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from fedtwin.pipelines.federated.messages import ServerPassResult
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import ModelState


class ServerAccess(Protocol):
    """The server node as a strategy sees it: numbers and weights in, numbers and weights out."""

    def evaluate(self, state: ModelState) -> Mapping[str, float]:
        """``{"accuracy": ..., "loss": ...}`` of ``state`` on the shared server data D0."""
        ...

    def server_pass(
        self,
        state: ModelState,
        settings: TrainSettings,
        *,
        round_num: int,
        optimizer_state: Mapping[str, np.ndarray] | None = None,
    ) -> ServerPassResult:
        """Train ``state`` on D0 with ``settings``, batch order seeded by ``round_num``, the optimizer
        starting from ``optimizer_state`` (see ``fedtwin.actors.federated.server_node.ServerNode.server_pass``)."""
        ...


@dataclass(frozen=True)
class StrategyContext:
    """Run facts a strategy may use.

    Attributes:
        num_classes: K.
        global_label_histogram: class counts over all device data (P), from the partition manifest.
        server_label_histogram: class counts of the shared server data D0 (P0); its sum is n0.
        server: access to the server node, for strategies that declare ``needs_server``.
    """

    num_classes: int
    global_label_histogram: np.ndarray | None = None
    server_label_histogram: np.ndarray | None = None
    server: ServerAccess | None = None

    @property
    def num_server_examples(self) -> int:
        """n0 (0 without a shared split)."""
        hist = self.server_label_histogram
        return 0 if hist is None else int(np.asarray(hist).sum())
