"""History sample bank for online transfer, updated from gradient signatures (GSS) or by reservoir sampling.

The bank keeps at most ``capacity`` clips (uint8) with their labels. Two admission policies:

- ``"gss"`` (default), GSS-greedy (Aljundi et al., NeurIPS 2019) on last-layer gradient signatures
  ``sig(x) = (p - onehot(y)) ⊗ feat(x)``: a sample's score is its largest cosine to up to ``n_compare``
  random bank items (its redundancy). While there is room it is added; when full, a victim ``j`` is drawn
  with probability proportional to ``score(j) + 1`` and replaced if ``score(x) < score(j)``.
- ``"reservoir"``: uniform reservoir sampling over the stream.

With ``per_class_quota`` every class holds at most ``floor(capacity / num_classes)`` items, and a sample of
a class at its quota competes only against items of its own class (a per-class reservoir for
``"reservoir"``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

POLICIES = ("gss", "reservoir")


def signatures(probs: np.ndarray, labels: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Closed-form cross-entropy gradient of a linear head's weight, one row per sample.

    For ``logits = W feat + b`` with ``W`` of shape (K, D), ``dCE/dW = (p - onehot(y)) feat^T``.

    Args:
        probs: (N, K) softmax probabilities.
        labels: (N,) integer labels in [0, K).
        features: (N, D) head inputs (the embeddings).

    Returns:
        (N, K*D) float32 signatures, row-major in (K, D) like ``nn.Linear.weight``.
    """
    probs = np.asarray(probs, dtype=np.float32)
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    n, k = probs.shape
    if labels.shape != (n,) or features.ndim != 2 or features.shape[0] != n:
        raise ValueError(
            f"signatures need probs (N, K), labels (N,), features (N, D); got {probs.shape}, "
            f"{labels.shape}, {features.shape}"
        )
    err = probs.copy()
    err[np.arange(n), labels] -= 1.0
    return (err[:, :, None] * features[:, None, :]).reshape(n, k * features.shape[1])


class AddOutcome(NamedTuple):
    """How many samples of one :meth:`HistoryBank.add` call were appended, swapped in, or turned away."""

    added: int
    replaced: int
    rejected: int


class HistoryBank:
    """Fixed-size, class-balanced store of history clips.

    Args:
        capacity: maximum number of clips ``M``.
        num_classes: size of the label space (including a background class if one is used).
        policy: ``"gss"`` or ``"reservoir"``.
        n_compare: number of random bank items a GSS score compares against.
        per_class_quota: cap each class at ``floor(capacity / num_classes)`` items.
    """

    def __init__(
        self,
        capacity: int,
        num_classes: int,
        policy: str = "gss",
        n_compare: int = 32,
        per_class_quota: bool = True,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"history bank policy={policy!r} is unknown; use one of {POLICIES}")
        if num_classes < 1 or capacity < 1 or n_compare < 1:
            raise ValueError(
                f"history bank needs capacity, num_classes, n_compare >= 1; got {capacity}, {num_classes}, {n_compare}"
            )
        if per_class_quota and capacity < num_classes:
            raise ValueError(
                f"history bank capacity={capacity} < num_classes={num_classes} leaves a per-class quota of 0; "
                "raise the capacity or set per_class_quota=False"
            )
        self.capacity = capacity
        self.num_classes = num_classes
        self.policy = policy
        self.n_compare = n_compare
        self.per_class_quota = per_class_quota
        self.quota = capacity // num_classes if per_class_quota else capacity
        self._size = 0
        self._clips: np.ndarray | None = None  # allocated on the first add, when the clip shape is known
        self._labels = np.zeros(capacity, dtype=np.int64)
        self._sigs: np.ndarray | None = None  # unit-norm signatures (gss only)
        self._scores = np.zeros(capacity, dtype=np.float64)  # GSS score of each item when it was stored
        self._counts = np.zeros(num_classes, dtype=np.int64)  # stored items per class
        self._seen = np.zeros(num_classes, dtype=np.int64)  # stream counts, for the reservoir
        self._seen_total = 0

    def __len__(self) -> int:
        return self._size

    @property
    def clips(self) -> np.ndarray:
        """(len, T, C, H, W) uint8 view of the stored clips."""
        if self._clips is None:
            raise ValueError("history bank is empty: add clips before reading them")
        return self._clips[: self._size]

    @property
    def labels(self) -> np.ndarray:
        """(len,) int64 view of the stored labels."""
        return self._labels[: self._size]

    def composition(self) -> np.ndarray:
        """Number of stored items per class, shape (num_classes,)."""
        return self._counts.copy()

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of everything that changes as the bank fills (for checkpoints; settings not included).

        :meth:`load_state_dict` on a bank built with the same settings restores it exactly, so a resumed
        run admits and evicts the same items as an uninterrupted one.
        """
        state = {
            "labels": self.labels.copy(),
            "scores": self._scores[: self._size].copy(),
            "counts": self._counts.copy(),
            "seen": self._seen.copy(),
            "seen_total": np.array([self._seen_total], dtype=np.int64),
        }
        if self._clips is not None:
            state["clips"] = self.clips.copy()
        if self._sigs is not None:
            state["signatures"] = self._sigs[: self._size].copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned (replaces the current contents)."""
        labels = np.asarray(state["labels"], dtype=np.int64)
        size = len(labels)
        counts = np.asarray(state["counts"], dtype=np.int64)
        if size > self.capacity or counts.shape != (self.num_classes,):
            raise ValueError(
                f"history bank state holds {size} items over {counts.shape[0]} classes; this bank has "
                f"capacity {self.capacity} and {self.num_classes} classes (build it with the saved settings)"
            )
        self._clips = self._sigs = None
        self._size = size
        self._labels[:] = 0
        self._labels[:size] = labels
        self._scores[:] = 0.0
        self._scores[:size] = state["scores"]
        self._counts = counts.copy()
        self._seen = np.asarray(state["seen"], dtype=np.int64).copy()
        self._seen_total = int(np.asarray(state["seen_total"]).reshape(-1)[0])
        if "clips" in state:
            clips = np.asarray(state["clips"])
            self._clips = np.zeros((self.capacity, *clips.shape[1:]), dtype=np.uint8)
            self._clips[:size] = clips
        if "signatures" in state:
            sigs = np.asarray(state["signatures"], dtype=np.float32)
            self._sigs = np.zeros((self.capacity, sigs.shape[1]), dtype=np.float32)
            self._sigs[:size] = sigs

    def add(
        self,
        clips: np.ndarray,
        labels: np.ndarray,
        signatures: np.ndarray | None,
        rng: np.random.Generator,
    ) -> AddOutcome:
        """Offer samples to the bank one by one, in order.

        Args:
            clips: (N, T, C, H, W) uint8 clips.
            labels: (N,) integer labels in [0, num_classes).
            signatures: (N, S) gradient signatures (see :func:`signatures`); required for ``"gss"``,
                ignored by ``"reservoir"``.
            rng: source of all random choices.
        """
        clips = np.asarray(clips)
        labels = np.asarray(labels, dtype=np.int64)
        self._check_batch(clips, labels)
        sigs = None
        if self.policy == "gss":
            sigs = self._unit_signatures(signatures, len(labels))
        stored_clips = self._clips
        assert stored_clips is not None  # allocated by _check_batch
        added = replaced = 0
        for i, y in enumerate(labels):
            y = int(y)
            self._seen[y] += 1
            self._seen_total += 1
            if sigs is not None:  # policy "gss"
                slot, score = self._gss_slot(sigs[i], y, rng)
            else:
                slot, score = self._reservoir_slot(y, rng), 0.0
            if slot is None:
                continue
            if slot == self._size:
                self._size += 1
                added += 1
            else:
                replaced += 1
                self._counts[self._labels[slot]] -= 1
            self._counts[y] += 1
            stored_clips[slot] = clips[i]
            self._labels[slot] = y
            self._scores[slot] = score
            if sigs is not None:
                assert self._sigs is not None  # allocated by _unit_signatures
                self._sigs[slot] = sigs[i]
        return AddOutcome(added, replaced, len(labels) - added - replaced)

    def sample_batch(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``batch_size`` distinct items drawn uniformly: (clips, labels) copies."""
        if not 1 <= batch_size <= self._size:
            raise ValueError(f"history batch_size={batch_size} must lie in [1, {self._size}] (items in the bank)")
        idx = rng.choice(self._size, size=batch_size, replace=False)
        return self.clips[idx], self.labels[idx]

    def cycle_batches(self, batch_size: int, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Endless full-size batches walking through the shuffled bank (the paired history batches of each step).

        Each pass visits every item once in a fresh random order; a batch that straddles two passes takes
        its tail from the next one. Items added while iterating join at the next pass; the bank never
        shrinks, so pending indices stay valid (they may point at an item that replaced the old one).
        """
        if batch_size < 1:
            raise ValueError(f"history batch_size={batch_size} must be >= 1")
        if self._size == 0:
            raise ValueError("history bank is empty: add clips before drawing history batches")
        order = np.empty(0, dtype=np.int64)
        while True:
            while len(order) < batch_size:
                order = np.concatenate([order, rng.permutation(self._size)])
            idx, order = order[:batch_size], order[batch_size:]
            yield self.clips[idx], self.labels[idx]

    # ---- admission policies -------------------------------------------------------------------------

    def _class_full(self, y: int) -> bool:
        return self.per_class_quota and self._counts[y] >= self.quota

    def _gss_slot(self, sig: np.ndarray, y: int, rng: np.random.Generator) -> tuple[int | None, float]:
        score = self._gss_score(sig, rng)
        if not self._class_full(y) and self._size < self.capacity:
            return self._size, score
        # Full (the bank, or this class under the quota): compete with a redundancy-weighted victim.
        pool = np.flatnonzero(self.labels == y) if self.per_class_quota else np.arange(self._size)
        # Cosines lie in [-1, 1]; the +1 shift (as in GSS) makes them valid sampling weights.
        weights = self._scores[pool] + 1.0
        total = weights.sum()
        j = int(rng.choice(pool, p=weights / total)) if total > 0 else int(rng.choice(pool))
        return (j, score) if score < self._scores[j] else (None, score)

    def _gss_score(self, sig: np.ndarray, rng: np.random.Generator) -> float:
        if self._size == 0:
            return 0.0
        assert self._sigs is not None  # add() ran _unit_signatures, which allocates it
        k = min(self.n_compare, self._size)
        ref = rng.choice(self._size, size=k, replace=False)
        return float(np.max(self._sigs[ref] @ sig))

    def _reservoir_slot(self, y: int, rng: np.random.Generator) -> int | None:
        if self.per_class_quota:
            if not self._class_full(y):
                return self._size
            # Per-class reservoir: the n-th sample of class y is kept with probability quota / n.
            r = int(rng.integers(self._seen[y]))
            return int(np.flatnonzero(self.labels == y)[r]) if r < self.quota else None
        if self._size < self.capacity:
            return self._size
        r = int(rng.integers(self._seen_total))
        return r if r < self.capacity else None

    # ---- validation -----------------------------------------------------------------------------------

    def _check_batch(self, clips: np.ndarray, labels: np.ndarray) -> None:
        if clips.dtype != np.uint8 or clips.ndim < 2:
            raise ValueError(f"history bank stores uint8 clips (N, T, C, H, W); got {clips.dtype} {clips.shape}")
        if labels.shape != (clips.shape[0],):
            raise ValueError(f"history bank got {clips.shape[0]} clips but labels of shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"history bank labels must lie in [0, {self.num_classes}); got range [{labels.min()}, {labels.max()}]"
            )
        if self._clips is None:
            self._clips = np.zeros((self.capacity, *clips.shape[1:]), dtype=np.uint8)
        elif clips.shape[1:] != self._clips.shape[1:]:
            raise ValueError(f"history bank holds clips of shape {self._clips.shape[1:]}, got {clips.shape[1:]}")

    def _unit_signatures(self, sigs: np.ndarray | None, n: int) -> np.ndarray:
        if sigs is None:
            raise ValueError("history bank policy='gss' needs signatures; compute them with signatures()")
        sigs = np.asarray(sigs, dtype=np.float32)
        if sigs.ndim != 2 or sigs.shape[0] != n:
            raise ValueError(f"history bank signatures must be (N={n}, S); got {sigs.shape}")
        if self._sigs is None:
            self._sigs = np.zeros((self.capacity, sigs.shape[1]), dtype=np.float32)
        elif sigs.shape[1] != self._sigs.shape[1]:
            raise ValueError(f"history bank signatures have width {self._sigs.shape[1]}, got {sigs.shape[1]}")
        norms = np.linalg.norm(sigs, axis=1, keepdims=True)
        # A zero signature (a perfectly fit sample) stays zero: cosine 0 to everything.
        return np.divide(sigs, norms, out=np.zeros_like(sigs), where=norms > 0)
