"""One twin of mutual co-training (mutual pseudo-labels, or MMT): a network, its EMA mean model, its
own view, its data.

``TwinNetwork`` is a plain class (testable in-process); ``fedtwin.actors.mutual.ray_actors.TwinNetworkActor`` is
its Ray shell. A twin
loads its data itself from dataset paths: the clean source split for pre-training and the shifted
target split for adaptation, of which it keeps only the clips (the target labels are never in its
training data; it holds the target *test* split, labels included, only to score itself). Features,
peer targets and weights leave the actor as numpy return values, which Ray keeps in the object store,
so the driver can hand them to the clustering task and the peer as references.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from fedtwin.actors.trainer_base import TorchActor
from fedtwin.pipelines.core.seeding import derive_seed, torch_generator
from fedtwin.pipelines.data.dataset_io import load_split
from fedtwin.pipelines.model.networks import FEATURE_API, ModelConfig, VideoCNN
from fedtwin.pipelines.model.state import ModelState, load_state, state_from_model, weighted_average
from fedtwin.pipelines.model.training import evaluate, local_train, predict
from fedtwin.pipelines.mutual.augment import build_augmentation
from fedtwin.pipelines.mutual.cluster_metrics import cluster_metrics
from fedtwin.pipelines.mutual.clustering import normalized_centroids
from fedtwin.pipelines.mutual.ema import EmaSchedule, init_ema
from fedtwin.pipelines.mutual.kreciprocal import l2_normalize
from fedtwin.pipelines.mutual.pseudo_labels import Assignment, feature_digest
from fedtwin.pipelines.mutual.settings import LossSettings, TwinConfig
from fedtwin.pipelines.mutual.twin_training import TwinEpochLoss, reset_head

logger = logging.getLogger(__name__)

_HEAD = ("head.weight", "head.bias")


#: Second element of every twin seed path ``(seed, TWIN_STREAMS, index, epoch, stream)``: it keeps twin
#: streams apart from other paths of the same run seed. Part of every twin seed: changing it changes runs.
TWIN_STREAMS = 4


class TwinNetwork(TorchActor):
    """A network, its EMA mean model and its own augmentation, trained on pseudo-labels.

    Args:
        twin: the spec's ``twin`` section, as loaded.
        index: 0 or 1 (twin a or b); with ``seed`` it fixes the initial weights and every random stream.
        seed: the run seed.
        model: the spec's ``model`` section; ``twin.adaptation.dropout`` overrides its embedding dropout.
        torch_threads: intra-op threads of this actor (``resources.torch_threads``).
        source_dir: clean labelled dataset (``train`` for pre-training, ``test`` for its accuracy).
        target_dir: shifted dataset; ``train`` clips are the unlabelled set, ``test`` is for scoring.
        kept: indices of the target ``train`` clips that passed the quality filter.
    """

    model: VideoCNN  # built in __init__, so never None here

    def __init__(
        self,
        twin: TwinConfig,
        index: int,
        seed: int,
        model: ModelConfig,
        torch_threads: int,
        source_dir: str,
        target_dir: str,
        kept: np.ndarray,
    ) -> None:
        super().__init__(torch_threads)
        self.twin, self.index, self.seed = twin, index, seed
        self.source_dir = source_dir
        target = load_split(target_dir, "train")
        self.target_clips = np.ascontiguousarray(target.clips[np.asarray(kept, dtype=np.int64)])
        self.target_test = load_split(target_dir, "test")
        init_seed = derive_seed(seed, TWIN_STREAMS, index, 0, 0)
        self.model = self.new_model(replace(model, dropout=twin.adaptation.dropout), init_seed, needs=FEATURE_API)
        self.ema = init_ema(self.model)
        self.schedule = EmaSchedule.of(twin.ema)
        self.augment = build_augmentation(twin.views.name(index), **dict(twin.views.params(index)))
        self.optimizer_state: ModelState = {}
        self.ema_step = 0
        self.labels = np.full(len(self.target_clips), -1, dtype=np.int64)
        self.last_embedding = ""
        self.last_loss = float("nan")

    # ------------------------------------------------------------------ phases
    def pretrain(self) -> dict[str, float]:
        """Supervised training on the clean source split; the EMA starts as a copy (``E^(0) = θ``)."""
        source = load_split(self.source_dir, "train")
        pretrain = self.twin.pretrain.train_settings()
        result = local_train(self.model, source, pretrain, generator=self._generator(0, 1), device=self.device)
        self.ema = init_ema(self.model)
        source_acc = evaluate(self.ema, load_split(self.source_dir, "test"), device=self.device).accuracy
        target = self.evaluate_test()
        return {
            "pretrain_loss": result.mean_loss,
            "source_test_accuracy": float(source_acc),
            # The source classifier read with the true label order (no matching): "source only".
            "source_only_target_accuracy": float(evaluate(self.ema, self.target_test, device=self.device).accuracy),
            **target,
        }

    def embed(self) -> np.ndarray:
        """L2-normalised EMA embeddings ``(N, D)`` float32 of the (unaugmented) target clips."""
        features = l2_normalize(
            predict(self.ema, (self.target_clips, self._zeros()), output="embedding", device=self.device)
        )
        self.last_embedding = feature_digest(features)
        return features

    def peer_targets(self, assignment: Assignment, epoch: int) -> dict[str, np.ndarray]:
        """EMA softmax ``(N, K)`` and features ``(N, D)`` on this twin's own view: the peer's soft targets."""
        self._apply_heads(assignment)
        gen = self._generator(epoch, 3)
        probs, feats = [], []
        self.ema.eval()
        with torch.inference_mode():
            for start in range(0, len(self.target_clips), 256):
                x = torch.as_tensor(self.target_clips[start : start + 256]).to(self.device).float().mul_(1.0 / 255.0)
                embedding = self.ema.forward_features(self.augment(x, gen))[1]
                probs.append(self.ema.classify(embedding).softmax(dim=1).cpu().numpy())
                feats.append(embedding.cpu().numpy())
        return {"probs": np.concatenate(probs), "features": np.concatenate(feats)}

    def train_epoch(
        self, assignment: Assignment, peer_targets: Mapping[str, np.ndarray] | None = None, *, epoch: int
    ) -> dict[str, Any]:
        """One pass over the pseudo-labelled clips (outliers skipped), then the per-epoch EMA update."""
        self._apply_heads(assignment)
        rows = np.flatnonzero(assignment.labels >= 0)
        peer = peer_targets or {}
        loss_fn = TwinEpochLoss(
            self.twin.loss,
            self.augment,
            self._generator(epoch, 2),
            peer_probs=torch.as_tensor(np.array(peer["probs"])) if "probs" in peer else None,
            peer_features=torch.as_tensor(np.array(peer["features"])) if "features" in peer else None,
            on_step=self._ema_iteration,
        )
        data = (self.target_clips[rows], (assignment.labels[rows], rows))
        result = local_train(
            self.model,
            data,
            self.twin.adaptation.train_settings(epochs=1),
            generator=self._generator(epoch, 1),
            loss_fn=loss_fn,
            optimizer_state=self.optimizer_state,
            device=self.device,
        )
        loss_fn.finish()
        self.schedule.after_epoch(self.ema, self.model)
        self.optimizer_state = result.optimizer_state
        self.labels = np.array(assignment.labels, copy=True)
        self.last_loss = result.mean_loss
        return {
            "loss": result.mean_loss,
            "steps": result.steps,
            "examples": int(rows.size),
            **result.metrics,
            "label_source": assignment.source,
            "embedding": self.last_embedding,
        }

    def evaluate_test(self) -> dict[str, float]:
        """Hungarian accuracy, NMI and ARI of the EMA model's head on the target test split."""
        logits = predict(self.ema, self.target_test, device=self.device)
        scores = cluster_metrics(self.target_test.labels, logits.argmax(axis=1))
        return {"test_acc": scores["acc"], "test_nmi": scores["nmi"], "test_ari": scores["ari"]}

    def fuse_and_finetune(
        self,
        peer_ema: Mapping[str, np.ndarray],
        weights: tuple[float, float],
        assignment: Assignment,
        epochs: int,
    ) -> dict[str, float]:
        """Convergence-weighted average of the two EMA backbones, then fine-tuning (the ``fuse`` ending).

        The head is not averaged (the twins' cluster spaces differ); it restarts from the centroids of
        the fused model's own features under ``assignment``'s labels. Fine-tuning uses hard CE on this
        twin's view. Afterwards both this twin's network and its EMA hold the fused, fine-tuned model.
        """
        own = state_from_model(self.ema)
        backbone = [k for k in own if k not in _HEAD]
        fused = weighted_average([{k: own[k] for k in backbone}, {k: peer_ema[k] for k in backbone}], weights)
        load_state(self.model, {**state_from_model(self.model), **fused})
        feats = l2_normalize(
            predict(self.model, (self.target_clips, self._zeros()), output="embedding", device=self.device)
        )
        reset_head(self.model, normalized_centroids(feats, assignment.labels, assignment.num_clusters))
        rows = np.flatnonzero(assignment.labels >= 0)
        loss_fn = TwinEpochLoss(LossSettings(kind="hard"), self.augment, self._generator(10_000, 2))
        result = local_train(
            self.model,
            (self.target_clips[rows], (assignment.labels[rows], rows)),
            self.twin.adaptation.train_settings(epochs),
            generator=self._generator(10_000, 1),
            loss_fn=loss_fn,
        )
        self.ema = init_ema(self.model)
        return {"finetune_loss": result.mean_loss, **self.evaluate_test()}

    # ------------------------------------------------------------------ state
    def ema_state(self) -> ModelState:
        """The EMA mean model's weights."""
        return state_from_model(self.ema)

    def get_state(self) -> dict[str, Any]:
        """Everything needed to resume this twin exactly (for checkpoints)."""
        return {
            "model": state_from_model(self.model),
            "ema": state_from_model(self.ema),
            "optimizer": dict(self.optimizer_state),
            "labels": self.labels.copy(),
            "ema_step": self.ema_step,
            "last_loss": self.last_loss,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`get_state` output (heads are resized to the saved number of clusters)."""
        for net, key in ((self.model, "model"), (self.ema, "ema")):
            weights = state[key]
            if tuple(weights["head.weight"].shape) != tuple(net.head.weight.shape):
                reset_head(net, np.asarray(weights["head.weight"]))
            load_state(net, weights)
        self.optimizer_state = {k: np.array(v) for k, v in state["optimizer"].items()}
        self.labels = np.array(state["labels"], dtype=np.int64)
        self.ema_step = int(state["ema_step"])
        self.last_loss = float(state["last_loss"])

    # ------------------------------------------------------------------ helpers
    def _apply_heads(self, assignment: Assignment) -> None:
        """Both heads := the assignment's centroids; head optimiser slots survive only if K is unchanged."""
        if assignment.num_clusters != self.model.head.out_features:
            self.optimizer_state = {k: v for k, v in self.optimizer_state.items() if k.split("/", 1)[-1] not in _HEAD}
        reset_head(self.model, assignment.centroids)
        reset_head(self.ema, assignment.centroids)

    def _ema_iteration(self) -> None:
        self.schedule.after_iteration(self.ema, self.model, self.ema_step)
        self.ema_step += 1

    def _generator(self, epoch: int, stream: int) -> torch.Generator:
        """One random stream of this twin in one epoch (batch order, view, peer-target view, ...)."""
        return torch_generator(self.seed, TWIN_STREAMS, self.index, epoch, stream)

    def _zeros(self) -> np.ndarray:
        return np.zeros(len(self.target_clips), dtype=np.int64)
