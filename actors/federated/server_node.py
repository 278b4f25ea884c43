"""The server node: holds the labelled shared server data D0 and runs FedDU's server pass on it.

D0 is the partition's ``shared`` split (carved by ``fedtwin data partition --shared``, possibly restricted
to a few classes). The node only ever receives model weights (and optimizer buffers) and returns
weights and numbers; device data never reaches it, only the devices' label histograms reach the
strategy. It also scores states on the ``test`` split, so one actor (and one GPU, ``resources.server_gpus``)
serves all server-side work of a run.

Work on D0 (the server pass and the evaluations a strategy asks for on it) happens while the device
hosts wait for the server, so it may use more torch threads than the node's own ``torch_threads``:
``pass_threads``, at most the CPUs this process may run on. Scoring the ``test`` split keeps
``torch_threads``, since it can overlap the next round's training.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from fedtwin.actors.federated.evaluator import Evaluator
from fedtwin.pipelines.core.seeding import torch_generator
from fedtwin.pipelines.federated.messages import ServerPassResult
from fedtwin.pipelines.model.networks import ModelConfig
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import ModelState, load_state, state_from_model
from fedtwin.pipelines.model.training import local_train

#: Seed path of a round's server pass after ``(seed, round_num)``: its own stream, distinct from every
#: device's ``(seed, round_num, device_id)``.
_SERVER_PASS_STREAM = (0, 1)


class ServerNode(Evaluator):
    """Plain class behind ``fedtwin.actors.federated.ray_actors.ServerNodeActor``: evaluation on D0 (and test)
    plus SGD passes over D0."""

    def __init__(
        self,
        partition_dir: str,
        model: ModelConfig,
        *,
        seed: int = 0,
        torch_threads: int = 1,
        extra_splits: Sequence[str] = ("test",),
        pass_threads: int | None = None,
    ) -> None:
        super().__init__(
            partition_dir, model, split="shared", extra_splits=extra_splits, seed=seed, torch_threads=torch_threads
        )
        #: Torch threads of the work on D0: ``pass_threads`` (default ``torch_threads``), capped at the
        #: CPUs this process may use.
        self.pass_threads = max(1, min(pass_threads or torch_threads, _usable_cpus()))
        if len(self.data) == 0:
            raise ValueError(
                f"{partition_dir}: the partition has no shared server split; re-partition with "
                "data.partition.shared_fraction > 0 (`fedtwin data partition --shared`)"
            )
        self.seed = seed

    @property
    def num_examples(self) -> int:
        """n0, the size of D0."""
        return len(self.data)

    def server_pass(
        self,
        state: ModelState,
        settings: TrainSettings,
        *,
        round_num: int,
        optimizer_state: Mapping[str, np.ndarray] | None = None,
    ) -> ServerPassResult:
        """Train ``state`` on D0 with the one training loop (tau0 = ceil(n0/B)*E steps).

        Args:
            state: the starting weights (FedAvg's w^{t-1/2}).
            settings: E, B, eta, optimizer and SGD momentum of the pass (FedDU builds them from its
                params and the round's device settings).
            round_num: seeds the batch order (reproducible, independent of devices).
            optimizer_state: momentum buffers to start from (keyed ``"momentum_buffer/<param>"``).
        """
        load_state(self.model, state)
        generator = torch_generator(self.seed, round_num, *_SERVER_PASS_STREAM)
        with _torch_threads(self.pass_threads):
            result = local_train(
                self.model,
                self.data,
                settings,
                optimizer_state=optimizer_state,
                generator=generator,
                device=self.device,
            )
        return ServerPassResult(
            state_from_model(self.model), result.steps, float(result.mean_loss), result.optimizer_state
        )

    def evaluate(self, state: ModelState, batch_size: int = 256, split: str | None = None) -> dict[str, Any]:
        """Scores of ``state`` on ``split`` (default D0); on D0 with ``pass_threads`` threads."""
        threads = self.pass_threads if (split or self.split) == "shared" else torch.get_num_threads()
        with _torch_threads(threads):
            return super().evaluate(state, batch_size=batch_size, split=split)


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity API (macOS)
        return os.cpu_count() or 1


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` intra-op torch threads, then restore the process's setting."""
    before = torch.get_num_threads()
    if threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
