"""The online-transfer trainer: a meta-model adapting to a new scene, session by session.

One actor holds everything that must not travel: the source and new-scene clips (loaded from dataset
paths), the model, its optimizer state and the history bank. The driver asks for the meta-model
(:meth:`TransferTrainer.pretrain`), then one session at a time (:meth:`TransferTrainer.run_session`):

1. the model predicts on the session's new-scene clips; a simulated user verifies the predictions from
   the hidden labels (``fedtwin.pipelines.transfer.verification``) and the kept clips become transfer samples;
2. ``local_train`` walks the transfer samples for a few epochs; its ``grad_fn`` hook
   (``fedtwin.pipelines.transfer.transfer_step.PairedMixStep``) pairs each batch with the next history batch and writes
   the mixed gradient (SimMix, or the fine-tune / replay / A-GEM settings of the same rule);
3. the transfer samples are offered to the history bank (GSS or reservoir), so they become history.

Back come a metrics line and the per-step similarity trace; weights travel only inside
:meth:`snapshot` (checkpoints). Every random choice derives from ``(seed, session)``, so resuming from
a snapshot replays the remaining sessions exactly.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from fedtwin.actors.trainer_base import TorchActor
from fedtwin.pipelines.core.seeding import numpy_rng, torch_generator
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.dataset_io import load_split
from fedtwin.pipelines.data.moving_digits import NUM_DIGIT_CLASSES
from fedtwin.pipelines.model.networks import FEATURE_API, ModelConfig, VideoCNN
from fedtwin.pipelines.model.state import ModelState, load_state, state_from_model
from fedtwin.pipelines.model.training import evaluate, local_train, predict
from fedtwin.pipelines.transfer.gradient_mixing import GradientMixer
from fedtwin.pipelines.transfer.history_bank import HistoryBank
from fedtwin.pipelines.transfer.settings import TransferConfig
from fedtwin.pipelines.transfer.transfer_step import PairedMixStep, harmonic_mean, head_signatures, similarity_summary
from fedtwin.pipelines.transfer.verification import verify_probabilities

logger = logging.getLogger(__name__)


def digit_label_map(background_digits: tuple[int, ...] | None) -> np.ndarray:
    """Class index of each digit: identity, or the other digits in order and ``background_digits`` last.

    >>> digit_label_map((8, 9)).tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 8]
    """
    if background_digits is None:
        return np.arange(NUM_DIGIT_CLASSES, dtype=np.int64)
    kept = [d for d in range(NUM_DIGIT_CLASSES) if d not in background_digits]
    mapping = np.full(NUM_DIGIT_CLASSES, len(kept), dtype=np.int64)
    mapping[kept] = np.arange(len(kept))
    return mapping


#: Random streams of one session (session 0 = pre-training), seeded ``(seed, session, stream)`` so a
#: resumed run replays the remaining sessions exactly.
_TRAIN_STREAM, _HISTORY_STREAM, _BANK_STREAM = 0, 1, 2


def _clip_key(clip: np.ndarray) -> bytes:
    return hashlib.blake2b(clip.tobytes(), digest_size=16).digest()


class TransferTrainer(TorchActor):
    """Plain class behind ``fedtwin.actors.transfer.ray_actors.TransferTrainerActor``; testable in-process.

    Args:
        source_dir: dataset directory of the clean source domain (train: meta-model and bank; test: forgetting).
        target_dir: dataset directory of the shifted new scene (train: the session stream; test: new-scene accuracy).
        transfer: the spec's ``transfer`` section, as loaded.
        model: the spec's ``model`` section; its head is sized to the label space (``transfer.num_classes``).
        seed: the run seed.
        torch_threads: intra-op threads of this actor (``resources.torch_threads``).
    """

    model: VideoCNN  # built in __init__, so never None here

    def __init__(
        self,
        source_dir: str,
        target_dir: str,
        transfer: TransferConfig,
        model: ModelConfig,
        seed: int,
        torch_threads: int,
    ) -> None:
        super().__init__(torch_threads)
        self.transfer, self.seed = transfer, seed
        other = transfer.verification.other_digits
        label_map = digit_label_map(other)
        num_classes = transfer.num_classes
        if model.num_classes != num_classes:
            # The head follows the label space (10 digits, or the digits of interest + "other").
            logger.info("transfer: model.num_classes %d -> %d to match the label space", model.num_classes, num_classes)
            model = replace(model, num_classes=num_classes)
        self.background_class = num_classes - 1 if other is not None else None

        def load(path: str, split: str) -> ClipArrays:
            data = load_split(path, split)
            return ClipArrays(data.clips, label_map[data.labels], data.video_ids)

        self.source_train, self.source_test = load(source_dir, "train"), load(source_dir, "test")
        self.stream, self.target_test = load(target_dir, "train"), load(target_dir, "test")
        self.model = self.new_model(model, seed, needs=FEATURE_API)
        mix, bank = transfer.mixing, transfer.bank
        self.mixer = GradientMixer(
            mode=mix.mode,
            w_min=mix.w_min,
            w_max=mix.w_max,
            project=mix.project,
            granularity=mix.granularity,
            replay_weight=mix.replay_weight,
        )
        self.bank = HistoryBank(
            bank.size, num_classes, policy=bank.policy, n_compare=bank.n_compare, per_class_quota=bank.per_class_quota
        )
        self.optimizer_state: ModelState = {}
        self.meta: dict[str, float] = {}  # the meta-model's accuracies, the reference for forgetting
        # Bank items that came from the new scene, recognised by content (the bank stores only clips).
        self._stream_keys = {_clip_key(c) for c in self.stream.clips}

    @property
    def num_sessions_available(self) -> int:
        """Whole sessions the stream can feed."""
        return len(self.stream) // self.transfer.stream.clips_per_session

    def pretrain(self) -> dict[str, Any]:
        """Train the meta-model on the source train split and fill the bank from it; the session-0 record."""
        started = time.perf_counter()
        result = local_train(
            self.model,
            self.source_train,
            self.transfer.pretrain.train_settings(),
            generator=torch_generator(self.seed, 0, _TRAIN_STREAM),
            device=self.device,
        )
        source_clips = self.transfer.bank.source_clips
        pool = self.source_train if source_clips is None else self.source_train.subset(slice(0, source_clips))
        sigs = head_signatures(self.model, pool.clips, pool.labels, device=self.device)
        outcome = self.bank.add(pool.clips, pool.labels, sigs, numpy_rng(self.seed, 0, _BANK_STREAM))
        scores = self.evaluate()
        self.meta = {"source_accuracy": scores["source_accuracy"], "new_scene_accuracy": scores["new_scene_accuracy"]}
        return {
            "session": 0,
            "train_loss": result.mean_loss,
            "train_steps": result.steps,
            **scores,
            **self._bank_metrics(outcome),
            "session_seconds": time.perf_counter() - started,
        }

    def run_session(self, session: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Verify, train and update the bank for session ``session`` (1-based).

        Returns:
            The session's metrics line and its per-step trace rows (``StepTrace.as_dict``).
        """
        t = self.transfer
        per_session = t.stream.clips_per_session
        if not 1 <= session <= self.num_sessions_available:
            raise ValueError(
                f"session {session} is outside 1..{self.num_sessions_available}: the stream holds "
                f"{len(self.stream)} clips for {per_session} per session"
            )
        started = time.perf_counter()
        clips = self.stream.subset(slice((session - 1) * per_session, session * per_session))
        probs = predict(self.model, clips, output="probs", device=self.device)
        verdict = verify_probabilities(
            probs,
            clips.labels,
            conf_threshold=t.verification.conf_threshold,
            background_class=self.background_class,
            keep_true_negatives=t.verification.keep_true_negatives,
        )
        keep = verdict.keep
        transfer_clips, transfer_labels = clips.clips[keep], verdict.labels[keep]

        history = None
        if len(self.bank) > 0:
            history = self.bank.cycle_batches(t.training.history_batch, numpy_rng(self.seed, session, _HISTORY_STREAM))
        step = PairedMixStep(self.mixer, history)
        train: dict[str, Any] = {"train_steps": 0}
        if keep.any():
            result = local_train(
                self.model,
                (transfer_clips, transfer_labels),
                t.training.train_settings(),
                grad_fn=step,
                optimizer_state=self.optimizer_state,
                generator=torch_generator(self.seed, session, _TRAIN_STREAM),
                device=self.device,
            )
            self.optimizer_state = result.optimizer_state
            train = {
                "train_steps": result.steps,
                "train_loss": result.mean_loss,
                "history_loss": result.metrics.get("loss_history", math.nan),
            }
        outcome = None
        if t.bank.update and keep.any():
            sigs = head_signatures(self.model, transfer_clips, transfer_labels, device=self.device)
            outcome = self.bank.add(transfer_clips, transfer_labels, sigs, numpy_rng(self.seed, session, _BANK_STREAM))
        record = {
            "session": session,
            "stream_accuracy": float(np.mean(probs.argmax(axis=1) == clips.labels)),
            "transfer_samples": int(keep.sum()),
            **{f"verified_{k}": v for k, v in verdict.counts().items()},
            **train,
            **similarity_summary(step.trace),
            **self.evaluate(),
            **self._bank_metrics(outcome),
            "session_seconds": time.perf_counter() - started,
        }
        return record, [t.as_dict() for t in step.trace]

    def evaluate(self) -> dict[str, float]:
        """New-scene and source accuracy, their harmonic mean, and forgetting since the meta-model."""
        new = evaluate(self.model, self.target_test, device=self.device)
        src = evaluate(self.model, self.source_test, device=self.device)
        out = {
            "new_scene_accuracy": new.accuracy,
            "new_scene_loss": new.loss,
            "source_accuracy": src.accuracy,
            "source_loss": src.loss,
            "harmonic_mean": harmonic_mean(new.accuracy, src.accuracy),
        }
        if self.meta:
            out["forgetting"] = self.meta["source_accuracy"] - src.accuracy
        return out

    def _bank_metrics(self, outcome: Any) -> dict[str, Any]:
        from_stream = sum(_clip_key(c) in self._stream_keys for c in self.bank.clips) if len(self.bank) else 0
        out: dict[str, Any] = {
            "bank_size": len(self.bank),
            "bank_per_class": [int(c) for c in self.bank.composition()],
            "bank_new_scene_items": int(from_stream),
        }
        if outcome is not None:
            out.update(bank_added=outcome.added, bank_replaced=outcome.replaced, bank_rejected=outcome.rejected)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Weights plus everything else a resumed run needs (nested dicts of arrays and scalars)."""
        return {
            "model": state_from_model(self.model),
            "optimizer": dict(self.optimizer_state),
            "bank": self.bank.state_dict(),
            "meta": dict(self.meta),
        }

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Continue from a :meth:`snapshot` (e.g. loaded from a checkpoint)."""
        load_state(self.model, snapshot["model"])
        self.optimizer_state = dict(snapshot.get("optimizer", {}))
        self.bank.load_state_dict(snapshot["bank"])
        self.meta = {k: float(v) for k, v in snapshot.get("meta", {}).items()}
