"""One twin's epoch on pseudo-labels, as pieces for ``fedtwin.pipelines.model.training.local_train``.

- :func:`reset_head` puts normalised cluster centroids into a classifier head (K rows, zero bias);
- :class:`TwinEpochLoss` is the ``loss_fn`` hook: it augments the batch with the twin's own view,
  computes the hard CE on the pseudo-labels or MMT's mutual loss against the peer EMA's per-clip targets, and runs the
  per-iteration EMA update;
- :func:`select_final` and :func:`convergence_weights` implement the end of training: keep the more
  converged model, or weight a fusion by convergence ``conv_j = 1 / (eps + loss_j)``.

Per-iteration EMA through the loss hook: ``local_train`` calls ``loss_fn`` before every optimiser step,
so when call ``s + 1`` starts the parameters are exactly those after step ``s``. The hook applies the
update for step ``s`` at that moment and :meth:`TwinEpochLoss.finish` applies the one for the last
step, which gives the same sequence of EMA updates as a callback after each step, without a second
training loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from fedtwin.pipelines.mutual.augment import Augmentation
from fedtwin.pipelines.mutual.losses import mmt_net_loss
from fedtwin.pipelines.mutual.settings import LossSettings


def reset_head(model: nn.Module, centroids: np.ndarray) -> None:
    """Replace ``model.head`` by a ``Linear(D, K)`` whose rows are ``centroids`` and whose bias is 0.

    The new head keeps the old head's device and dtype. It is built on the meta device and then given
    its weights, so no random initialisation draws from torch's global RNG.
    """
    old = model.head
    assert isinstance(old, nn.Linear), "reset_head: model.head must be an nn.Linear"  # checked by check_model_api
    centroids = np.asarray(centroids, dtype=np.float32)
    if centroids.ndim != 2 or centroids.shape[1] != old.in_features:
        raise ValueError(
            f"reset_head: centroids shaped {centroids.shape} do not fit a head reading {old.in_features} features"
        )
    head = nn.Linear(old.in_features, centroids.shape[0], device="meta")
    head.weight = nn.Parameter(torch.as_tensor(centroids.copy()).to(old.weight.device, old.weight.dtype))
    head.bias = nn.Parameter(torch.zeros(centroids.shape[0], device=old.weight.device, dtype=old.weight.dtype))
    head.weight.requires_grad_(old.weight.requires_grad)
    head.bias.requires_grad_(old.bias.requires_grad)
    model.head = head
    if hasattr(model, "cfg"):
        cfg: Any = model.cfg  # a dataclass with num_classes (ModelConfig for the built-ins)
        model.cfg = replace(cfg, num_classes=int(centroids.shape[0]))


class TwinEpochLoss:
    """``loss_fn(model, x, y)`` for one epoch; ``y`` is ``(pseudo_labels, row_index)`` per clip.

    Args:
        settings: the loss.
        augment: the twin's own view, applied to every batch.
        generator: randomness of the view (seed it from the run seed and the epoch).
        peer_probs: ``(N, K)`` peer EMA softmax on its view, row ``i`` for clip ``i`` (MMT only).
        peer_features: ``(N, D)`` peer EMA features on its view (MMT triplet only).
        on_step: called once per optimiser step, after it (the per-iteration EMA update), or ``None``.
    """

    def __init__(
        self,
        settings: LossSettings,
        augment: Augmentation,
        generator: torch.Generator,
        *,
        peer_probs: torch.Tensor | None = None,
        peer_features: torch.Tensor | None = None,
        on_step: Callable[[], Any] | None = None,
    ) -> None:
        if settings.needs_peer and peer_probs is None:
            raise ValueError("TwinEpochLoss: the MMT loss needs the peer EMA's targets (peer_probs/peer_features)")
        self.settings = settings
        self.augment = augment
        self.generator = generator
        self.peer_probs = peer_probs
        self.peer_features = peer_features
        self.on_step = on_step
        self.calls = 0

    def __call__(self, model: nn.Module, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, dict[str, float]]:
        labels, rows = y
        if self.calls > 0 and self.on_step is not None:
            self.on_step()  # parameters now hold the result of the previous optimiser step
        self.calls += 1
        view = self.augment(x, self.generator)
        embedding = model.forward_features(view)[1]  # type: ignore[operator]  # Module attrs: Tensor | Module
        logits = model.classify(embedding)  # type: ignore[operator]  # Module attrs: Tensor | Module
        s = self.settings
        if s.kind == "hard":
            parts = mmt_net_loss(logits, embedding, labels, lambda_id=0.0, epsilon=0.0, use_triplet=False)
        else:
            peer_probs = self._rows(self.peer_probs, rows, logits.device)
            peer_features = self._rows(self.peer_features, rows, logits.device)
            features = embedding
            if s.unit_triplet:
                features = nnf.normalize(embedding, dim=1)
                peer_features = nnf.normalize(peer_features, dim=1) if peer_features is not None else None
            parts = mmt_net_loss(
                logits,
                features,
                labels,
                peer_probs=peer_probs,
                peer_features=peer_features,
                lambda_id=s.lambda_id,
                lambda_tri=s.lambda_tri,
                epsilon=s.label_smoothing,
                use_triplet=s.use_triplet,
            )
        metrics = {k: float(v.detach()) for k, v in parts.items() if k != "total"}
        metrics["label_accuracy"] = float((logits.detach().argmax(dim=1) == labels).float().mean())
        return parts["total"], metrics

    @staticmethod
    def _rows(table: torch.Tensor | None, rows: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        return None if table is None else table[rows.to(table.device)].to(device)

    def finish(self) -> None:
        """Apply the update that belongs to the last optimiser step (call once after ``local_train``)."""
        if self.calls > 0 and self.on_step is not None:
            self.on_step()


def select_final(losses: Sequence[float]) -> int:
    """Index of the more converged twin: the lower final training loss (NaN counts as not converged)."""
    if not losses:
        raise ValueError("select_final needs at least one loss")
    keyed = [math.inf if (loss is None or math.isnan(loss)) else float(loss) for loss in losses]
    return int(np.argmin(keyed))


def convergence_weights(losses: Sequence[float], eps: float = 1e-8) -> np.ndarray:
    """Fusion weights by convergence: ``conv_j = 1 / (eps + loss_j)``, normalised to sum to 1."""
    conv = np.array([1.0 / (eps + max(0.0, float(loss))) for loss in losses], dtype=np.float64)
    if not np.all(np.isfinite(conv)) or conv.sum() <= 0:
        raise ValueError(f"convergence_weights: losses {list(losses)} give no usable weights")
    return conv / conv.sum()
