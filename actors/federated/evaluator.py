"""Central evaluation of a global state on held-out splits, inside an actor.

The splits are loaded once in the actor; the driver sends a state reference and gets numbers back.
:class:`actors.federated.server_node.ServerNode` extends this class with FedDU's server pass.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.trainer_base import TorchActor
from pipelines.data.clips import ClipArrays
from pipelines.model.networks import ModelConfig
from pipelines.data.partition_manifest import load_partition_manifest, load_shared, load_test
from pipelines.model.state import ModelState, load_state
from pipelines.model.training import evaluate

_LOADERS = {"test": load_test, "shared": load_shared}


class Evaluator(TorchActor):
    """Holds splits of a partition (``split``, default ``test``, plus ``extra_splits``) and scores states."""

    def __init__(
        self,
        partition_dir: str,
        model: ModelConfig,
        *,
        split: str = "test",
        extra_splits: Sequence[str] = (),
        seed: int = 0,
        torch_threads: int = 1,
    ) -> None:
        super().__init__(torch_threads)
        self.manifest = load_partition_manifest(partition_dir)
        unknown = [s for s in (split, *extra_splits) if s not in _LOADERS]
        if unknown:
            raise ValueError(f"split must be one of {sorted(_LOADERS)}, got {unknown[0]!r}")
        self.split = split
        self.splits: dict[str, ClipArrays] = {s: _LOADERS[s](self.manifest) for s in dict.fromkeys((split, *extra_splits))}
        self.data = self.splits[split]
        self.model = self.new_model(model, seed)

    def evaluate(self, state: ModelState, batch_size: int = 256, split: str | None = None) -> dict[str, float]:
        """Accuracy and mean cross-entropy of ``state`` on ``split`` (default: the primary split)."""
        name = split or self.split
        if name not in self.splits:
            raise ValueError(f"this evaluator holds splits {sorted(self.splits)}, not {name!r}")
        load_state(self.model, state)
        result = evaluate(self.model, self.splits[name], batch_size=batch_size, device=self.device)
        return {"accuracy": float(result.accuracy), "loss": float(result.loss), "num_examples": float(result.num_examples)}
