"""The server node: holds the labelled shared server data D0 and runs FedDU's server pass on it.

D0 is the partition's ``shared`` split (carved by ``fedtwin data partition --shared``, possibly restricted
to a few classes). The node only ever receives model weights (and optimizer buffers) and returns
weights and numbers; device data never reaches it, only the devices' label histograms reach the
strategy. It also scores states on the ``test`` split, so one actor (and one GPU, ``resources.server_gpus``)
serves all server-side work of a run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import ray
import torch

from actors.federated.evaluator import Evaluator
from pipelines.federated.messages import ServerPassResult
from pipelines.model.networks import ModelConfig
from pipelines.model.state import ModelState, load_state, state_from_model
from pipelines.model.training import local_train


def server_pass_seed(seed: int, round_num: int) -> int:
    """Seed of the server pass of one round; its own stream, distinct from every device's."""
    return int(np.random.SeedSequence([seed, round_num, 0, 1]).generate_state(1)[0])


class ServerNode(Evaluator):
    """Plain class behind ``ServerNodeActor``: evaluation on D0 (and test) plus SGD passes over D0."""

    def __init__(
        self,
        partition_dir: str,
        model: ModelConfig,
        *,
        seed: int = 0,
        torch_threads: int = 1,
        extra_splits: Sequence[str] = ("test",),
    ) -> None:
        super().__init__(
            partition_dir, model, split="shared", extra_splits=extra_splits, seed=seed, torch_threads=torch_threads
        )
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
        *,
        round_num: int,
        epochs: int,
        batch_size: int,
        lr: float,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        optimizer_state: Mapping[str, np.ndarray] | None = None,
    ) -> ServerPassResult:
        """Train ``state`` on D0 for ``epochs`` (tau0 = ceil(n0/B)*E steps) with the one training loop.

        Args:
            state: the starting weights (FedAvg's w^{t-1/2}).
            round_num: seeds the batch order (reproducible, independent of devices).
            epochs: E.
            batch_size: B.
            lr: eta.
            optimizer: ``"sgd"`` (the reference) or ``"adam"``.
            momentum: SGD momentum (FedDUM's global device-momentum variant); 0 is plain SGD.
            optimizer_state: momentum buffers to start from (keyed ``"momentum_buffer/<param>"``).
        """
        load_state(self.model, state)
        generator = torch.Generator().manual_seed(server_pass_seed(self.seed, round_num))
        result = local_train(
            self.model,
            self.data,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            momentum=momentum,
            optimizer=optimizer,  # type: ignore[arg-type]
            optimizer_state=optimizer_state,
            generator=generator,
            device=self.device,
        )
        return ServerPassResult(state_from_model(self.model), result.steps, float(result.mean_loss), result.optimizer_state)


ServerNodeActor = ray.remote(ServerNode)
