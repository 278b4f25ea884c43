"""Central evaluation of a global state on held-out splits, inside an actor.

The splits are loaded once in the actor; the driver sends a state reference and gets numbers back:
accuracy, mean cross-entropy and the K x K confusion matrix of counts (per-class accuracy follows from
it), never predictions or clips.
:class:`fedtwin.actors.federated.server_node.ServerNode` extends this class with FedDU's server pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.nn import functional as nnf

from fedtwin.actors.trainer_base import TorchActor
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.partition_manifest import load_partition_manifest, load_shared, load_test
from fedtwin.pipelines.model.networks import ModelConfig, VideoCNN
from fedtwin.pipelines.model.state import ModelState, load_state
from fedtwin.pipelines.model.training import predict

_LOADERS = {"test": load_test, "shared": load_shared}


def classification_scores(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Accuracy, mean cross-entropy, confusion matrix and per-class accuracy of ``logits`` (N, K) vs ``labels``.

    Accuracy and loss are computed exactly as :func:`fedtwin.pipelines.model.training.evaluate` does (same torch
    ops on the same logits), so they match it bit for bit.

    Returns:
        ``accuracy``, ``loss``, ``num_examples`` (floats; NaN accuracy and loss when empty),
        ``confusion_matrix`` (K lists of K ints; row = true class, column = predicted class) and
        ``per_class_accuracy`` (K floats, None for a class without examples).
    """
    n = len(labels)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    if n == 0:
        accuracy = loss = math.nan
    else:
        scores = torch.from_numpy(logits)
        target = torch.from_numpy(np.array(labels, dtype=np.int64))  # a copy: Parquet arrays are read-only
        predicted = scores.argmax(dim=1)
        loss = nnf.cross_entropy(scores, target).item()
        accuracy = (predicted == target).float().mean().item()
        # Predictions outside the label range (a head wider than num_classes) count in no column.
        pred = predicted.numpy()
        known = pred < num_classes
        confusion = np.bincount(
            target.numpy()[known] * num_classes + pred[known], minlength=num_classes * num_classes
        ).reshape(num_classes, num_classes)
    support = confusion.sum(axis=1)
    per_class = [float(confusion[c, c] / support[c]) if support[c] else None for c in range(num_classes)]
    return {
        "accuracy": float(accuracy),
        "loss": float(loss),
        "num_examples": float(n),
        "confusion_matrix": confusion.tolist(),
        "per_class_accuracy": per_class,
    }


class Evaluator(TorchActor):
    """Holds splits of a partition (``split``, default ``test``, plus ``extra_splits``) and scores states."""

    model: VideoCNN  # built in __init__, so never None here

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
        self.splits: dict[str, ClipArrays] = {
            s: _LOADERS[s](self.manifest) for s in dict.fromkeys((split, *extra_splits))
        }
        self.data = self.splits[split]
        self.model = self.new_model(model, seed)

    def evaluate(self, state: ModelState, batch_size: int = 256, split: str | None = None) -> dict[str, Any]:
        """Scores of ``state`` on ``split`` (default: the primary split); see :func:`classification_scores`."""
        name = split or self.split
        if name not in self.splits:
            raise ValueError(f"this evaluator holds splits {sorted(self.splits)}, not {name!r}")
        load_state(self.model, state)
        data = self.splits[name]
        logits = predict(self.model, data, batch_size=batch_size, device=self.device)
        return classification_scores(logits, data.labels, self.manifest.num_classes)
