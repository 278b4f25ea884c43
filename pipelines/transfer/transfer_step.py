"""One online-transfer step as a ``local_train`` hook, and the helpers around it.

Online transfer pairs every transfer batch with a history batch. :class:`PairedMixStep` is the ``grad_fn`` that
does it: ``local_train`` walks the transfer samples in shuffled batches as usual, and each call draws the
next batch of an endless history iterator (:meth:`fedtwin.pipelines.transfer.history_bank.HistoryBank.cycle_batches`),
runs one forward pass over both batches, and lets a :class:`~fedtwin.pipelines.transfer.gradient_mixing.GradientMixer`
write the mixed gradient. Every step leaves a :class:`StepTrace` (similarity, weight, projection) behind.

:func:`head_signatures` computes the bank's GSS signatures from a model, and :func:`similarity_summary`
condenses a session's trace for the metrics line.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from fedtwin.pipelines.model.training import predict
from fedtwin.pipelines.transfer.gradient_mixing import GradientMixer
from fedtwin.pipelines.transfer.history_bank import signatures

HistoryBatches = Iterator[tuple[np.ndarray, np.ndarray]]
#: Edges of the similarity histogram in the metrics: 10 bins of width 0.2 over [-1, 1].
SIMILARITY_BINS = np.linspace(-1.0, 1.0, 11)


@dataclass(frozen=True)
class StepTrace:
    """What one mixing step did (plain values, one row of the per-step trace file)."""

    step: int
    s: float
    w_h: float
    projected: bool
    inner_after: float
    loss_new: float
    loss_history: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def clips_to_tensor(clips: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 clips ``(N, T, C, H, W)`` to float32 in ``[0, 1]`` on ``device``, scaled like ``local_train``."""
    return torch.from_numpy(np.ascontiguousarray(clips)).to(device).float().mul_(1.0 / 255.0)


class PairedMixStep:
    """``grad_fn`` for :func:`fedtwin.pipelines.model.training.local_train` mixing transfer and history gradients.

    Args:
        mixer: how the two gradients are combined (SimMix, fine-tune, replay or A-GEM).
        history: endless ``(clips, labels)`` history batches; ``None`` trains on the transfer batch alone
            (allowed only for a mixer that does not need the history, i.e. plain fine-tune).

    Attributes:
        trace: one :class:`StepTrace` per call, in order.

    Fine-tune with a history iterator still computes the history gradient (it does not change the
    update, ``w_h = 0`` reproduces ``g_n`` exactly) so that every arm reports the same similarity trace.
    """

    def __init__(self, mixer: GradientMixer, history: HistoryBatches | None) -> None:
        if history is None and mixer.needs_history:
            raise ValueError(f"gradient mixing mode={mixer.mode!r} needs history batches; give a non-empty bank")
        self.mixer = mixer
        self.history = history
        self.trace: list[StepTrace] = []

    def __call__(self, model: nn.Module, x: torch.Tensor, y: Any) -> tuple[float, Mapping[str, float]]:
        if self.history is None:
            loss_new = nnf.cross_entropy(model(x), y)
            stats = self.mixer.mix(model, loss_new, None)
            loss_hist_value = math.nan
        else:
            clips_h, labels_h = next(self.history)
            x_h = clips_to_tensor(clips_h, x.device)
            y_h = torch.from_numpy(np.asarray(labels_h, dtype=np.int64)).to(x.device)
            # One forward over both batches: the model has no batch statistics (GroupNorm), so this equals
            # two separate passes, and the mixer differentiates the two halves of one graph.
            logits = model(torch.cat([x, x_h]))
            loss_new = nnf.cross_entropy(logits[: len(x)], y)
            loss_hist = nnf.cross_entropy(logits[len(x) :], y_h)
            stats = self.mixer.mix(model, loss_new, loss_hist)
            loss_hist_value = float(loss_hist.item())
        row = StepTrace(
            step=len(self.trace) + 1,
            s=stats.s,
            w_h=stats.w_h,
            projected=stats.projected,
            inner_after=stats.inner_after,
            loss_new=float(loss_new.item()),
            loss_history=loss_hist_value,
        )
        self.trace.append(row)
        return row.loss_new, {"loss_history": loss_hist_value, "w_h": stats.w_h, "projected": float(stats.projected)}


def head_signatures(
    model: nn.Module,
    clips: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """GSS signatures ``(p - onehot(y)) ⊗ embedding`` of clips under ``model`` (no autograd, eval mode).

    Args:
        model: a video model with ``forward_features`` and a linear ``head``.
        clips: (N, T, C, H, W) uint8 clips.
        labels: (N,) labels the signatures are taken against.

    Returns:
        (N, K*D) float32 signatures (see :func:`fedtwin.pipelines.transfer.history_bank.signatures`).
    """
    labels = np.asarray(labels, dtype=np.int64)
    embedding = predict(model, (clips, labels), batch_size=batch_size, output="embedding", device=device)
    head = model.head
    assert isinstance(head, nn.Linear), "signatures need a linear model.head"  # checked by check_model_api
    weight = head.weight.detach().cpu().numpy()
    bias = head.bias.detach().cpu().numpy()
    logits = embedding @ weight.T + bias
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return signatures(probs, labels, embedding)


def similarity_summary(trace: Sequence[StepTrace]) -> dict[str, Any]:
    """Mean/min/max/first/last of ``s``, a histogram over :data:`SIMILARITY_BINS`, mean ``w_h`` and the
    projected fraction of a session's steps (NaN-free: steps without a history gradient are skipped)."""
    s = np.array([t.s for t in trace if not math.isnan(t.s)], dtype=np.float64)
    if s.size == 0:
        return {"similarity_steps": 0}
    counts, _ = np.histogram(np.clip(s, -1.0, 1.0), bins=SIMILARITY_BINS)
    return {
        "similarity_steps": int(s.size),
        "similarity_mean": float(s.mean()),
        "similarity_min": float(s.min()),
        "similarity_max": float(s.max()),
        "similarity_first": float(s[0]),
        "similarity_last": float(s[-1]),
        "similarity_negative_fraction": float((s < 0).mean()),
        "similarity_histogram": [int(c) for c in counts],
        "history_weight_mean": float(np.mean([t.w_h for t in trace])),
        "projected_fraction": float(np.mean([t.projected for t in trace])),
    }


def harmonic_mean(a: float, b: float) -> float:
    """``2ab / (a + b)``; 0 when both are 0."""
    return 0.0 if a + b <= 0 else 2.0 * a * b / (a + b)
