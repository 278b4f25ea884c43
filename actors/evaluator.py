"""Central evaluation of a global state on a held-out split, inside an actor.

The test split is loaded once in the actor; the driver sends a state reference and gets numbers back.
"""

from __future__ import annotations

import ray
import torch

from actors.resources import torch_device
from pipelines.models import ModelConfig, build_model
from pipelines.partition_manifest import load_partition_manifest, load_shared, load_test
from pipelines.state import ModelState, load_state
from pipelines.training import evaluate


class Evaluator:
    """Holds one split of a partition (``test`` by default) and scores states on it."""

    def __init__(
        self, partition_dir: str, model: ModelConfig, *, split: str = "test", seed: int = 0, torch_threads: int = 1
    ) -> None:
        torch.set_num_threads(torch_threads)
        self.manifest = load_partition_manifest(partition_dir)
        loaders = {"test": load_test, "shared": load_shared}
        if split not in loaders:
            raise ValueError(f"split must be one of {sorted(loaders)}, got {split!r}")
        self.data = loaders[split](self.manifest)
        self.device = torch_device()
        self.model = build_model(model, seed=seed).to(self.device)

    def evaluate(self, state: ModelState, batch_size: int = 256) -> dict[str, float]:
        """Accuracy and mean cross-entropy of ``state`` on the split."""
        load_state(self.model, state)
        result = evaluate(self.model, self.data, batch_size=batch_size, device=self.device)
        return {"accuracy": float(result.accuracy), "loss": float(result.loss), "num_examples": float(result.num_examples)}


EvaluatorActor = ray.remote(Evaluator)
