"""Similarity-weighted mixing of a new-data gradient with a history gradient (docs/transfer.md).

Each transfer step has two gradients over the trainable parameters: ``g_n`` on the transfer batch and
``g_h`` on the paired history batch. SimMix weighs them by their cosine similarity ``s``::

    w_h = clip((1 - s) / 2, w_min, w_max),  w_n = 1 - w_h,  g = w_n g_n + w_h g_h
    if <g, g_h> < 0:  g <- g - (<g, g_h> / ||g_h||^2) g_h        # A-GEM safeguard

The reference methods are settings of the same rule, so every arm of the study runs the same code:

==============  ==============================  ==========================================
mode            setting                         update
==============  ==============================  ==========================================
``finetune``    ``w_h = 0``, no projection      ``g = g_n``
``replay``      ``w_h = replay_weight`` (0.5)   ``g = (g_n + g_h) / 2``
``agem``        ``w_h = 0``, projection         ``g_n`` projected if ``<g_n, g_h> < 0``
``simmix``      ``w_h`` from ``s``, projection  the rule above
==============  ==============================  ==========================================

The flat-vector functions accept numpy arrays or torch tensors (1-D); :class:`GradientMixer` works on a
torch model. With ``granularity="layer"`` the same computation runs on each parameter tensor separately.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

MODES = ("simmix", "finetune", "replay", "agem")
GRANULARITIES = ("global", "layer")
# Projection is part of the method for A-GEM and SimMix, and absent from fine-tune and plain replay.
_DEFAULT_PROJECT = {"simmix": True, "finetune": False, "replay": False, "agem": True}
_EPS = 1e-12


def _dot(a: Any, b: Any) -> float:
    return float((a * b).sum())


def cosine_similarity(g_n: Any, g_h: Any) -> float:
    """Cosine similarity of two flat gradients, in [-1, 1]; 0 when either is the zero vector.

    Args:
        g_n: new-data gradient, 1-D numpy array or torch tensor.
        g_h: history gradient with the same shape.
    """
    return _dot(g_n, g_h) / (math.sqrt(_dot(g_n, g_n)) * math.sqrt(_dot(g_h, g_h)) + _EPS)


def simmix_weights(s: float, w_min: float = 0.1, w_max: float = 0.9) -> tuple[float, float]:
    """SimMix weights ``(w_n, w_h)`` with ``w_h = clip((1 - s)/2, w_min, w_max)`` and ``w_n = 1 - w_h``.

    Aligned gradients (s = 1) give mostly the new gradient, opposed ones (s = -1) mostly the history.
    """
    w_h = min(max((1.0 - s) / 2.0, w_min), w_max)
    return 1.0 - w_h, w_h


def agem_project(g: Any, g_ref: Any) -> Any:
    """A-GEM projection: remove from ``g`` its component against ``g_ref`` when they conflict.

    Returns ``g - (<g, g_ref> / ||g_ref||^2) g_ref`` if ``<g, g_ref> < 0``, else ``g`` itself (not a copy).
    A zero ``g_ref`` never conflicts, so it never divides by zero.
    """
    dot = _dot(g, g_ref)
    if dot >= 0.0:
        return g
    return g - (dot / _dot(g_ref, g_ref)) * g_ref


@dataclass(frozen=True)
class FlatMix:
    """One mixed flat gradient and what happened while mixing it."""

    g: Any
    s: float
    w_h: float
    projected: bool
    inner_after: float  # <g, g_h> after the (optional) projection


def mix_flat(g_n: Any, g_h: Any, w_h: float, project: bool, s: float | None = None) -> FlatMix:
    """``g = (1 - w_h) g_n + w_h g_h``, then the A-GEM safeguard against ``g_h`` when ``project``.

    Args:
        g_n: new-data gradient (1-D numpy array or torch tensor).
        g_h: history gradient, same shape.
        w_h: weight of the history gradient.
        project: apply the safeguard.
        s: cosine of ``g_n`` and ``g_h`` if already known (only recorded in the result).
    """
    if s is None:
        s = cosine_similarity(g_n, g_h)
    # w_h = 0 must reproduce g_n bit for bit (fine-tune, A-GEM), so skip the arithmetic in that case.
    g = g_n if w_h == 0.0 else (1.0 - w_h) * g_n + w_h * g_h
    projected = False
    if project:
        mixed = g
        g = agem_project(g, g_h)
        projected = g is not mixed
    return FlatMix(g=g, s=s, w_h=w_h, projected=projected, inner_after=_dot(g, g_h))


@dataclass(frozen=True)
class MixStats:
    """What one :meth:`GradientMixer.mix` call did (all plain Python values, ready for metrics).

    Attributes:
        s: cosine of the full flattened gradients (also in layer mode); NaN without a history loss.
        w_h: history weight; in layer mode the numel-weighted mean of the per-layer weights.
        projected: whether the safeguard changed the gradient (any layer in layer mode).
        inner_after: <g, g_h> of the written gradient over all parameters (NaN without a history loss).
        n_projected: number of projected blocks (0 or 1 globally, up to the number of tensors per layer).
        n_blocks: 1 globally, the number of parameter tensors in layer mode.
    """

    s: float
    w_h: float
    projected: bool
    inner_after: float
    n_projected: int
    n_blocks: int

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


class GradientMixer:
    """Computes both gradients of a step, mixes them and writes the result into ``param.grad``.

    Args:
        mode: ``"simmix"``, ``"finetune"``, ``"replay"`` or ``"agem"`` (see the module table).
        w_min: lower clip of the SimMix history weight.
        w_max: upper clip of the SimMix history weight.
        project: A-GEM safeguard on/off; ``None`` takes the mode's own setting (on for simmix and agem).
        granularity: ``"global"`` (one similarity over all parameters) or ``"layer"`` (per tensor).
        replay_weight: the fixed history weight of ``"replay"``.
        weight_fn: optional ``s -> w_h`` replacing the SimMix clip rule (a pluggable weight function).

    Example:
        >>> mixer = GradientMixer("simmix")
        >>> optimizer.zero_grad()
        >>> stats = mixer.mix(model, loss_fn(model(x_new), y_new), loss_fn(model(x_hist), y_hist))
        >>> optimizer.step()
    """

    def __init__(
        self,
        mode: str = "simmix",
        w_min: float = 0.1,
        w_max: float = 0.9,
        project: bool | None = None,
        granularity: str = "global",
        replay_weight: float = 0.5,
        weight_fn: Callable[[float], float] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"gradient mixing mode={mode!r} is unknown; use one of {MODES}")
        if granularity not in GRANULARITIES:
            raise ValueError(f"gradient mixing granularity={granularity!r} is unknown; use one of {GRANULARITIES}")
        if not 0.0 <= w_min <= w_max <= 1.0:
            raise ValueError(f"gradient mixing needs 0 <= w_min <= w_max <= 1, got w_min={w_min}, w_max={w_max}")
        if not 0.0 <= replay_weight <= 1.0:
            raise ValueError(f"gradient mixing replay_weight={replay_weight} must lie in [0, 1]")
        self.mode = mode
        self.w_min = w_min
        self.w_max = w_max
        self.project = _DEFAULT_PROJECT[mode] if project is None else project
        self.granularity = granularity
        self.replay_weight = replay_weight
        self.weight_fn = weight_fn

    @property
    def needs_history(self) -> bool:
        """False only when the history gradient cannot change the update (fine-tune without projection)."""
        return not (self.mode == "finetune" and not self.project)

    def history_weight(self, s: float) -> float:
        """The history weight ``w_h`` this mixer uses for similarity ``s``."""
        if self.mode in ("finetune", "agem"):
            return 0.0
        if self.mode == "replay":
            return self.replay_weight
        if self.weight_fn is not None:
            return float(self.weight_fn(s))
        return simmix_weights(s, self.w_min, self.w_max)[1]

    def mix_gradients(
        self, grads_new: Sequence[torch.Tensor], grads_hist: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], MixStats]:
        """Mix two per-parameter gradient lists (same shapes, same order); pure, nothing is written.

        Returns:
            The mixed gradient per parameter and the step's :class:`MixStats`.
        """
        if len(grads_new) != len(grads_hist):
            raise ValueError(f"got {len(grads_new)} new and {len(grads_hist)} history gradient tensors")
        if not grads_new:
            raise ValueError("no gradient tensors to mix (the model has no trainable parameters)")
        if self.granularity == "global":
            flat_n = torch.cat([g.reshape(-1) for g in grads_new])
            flat_h = torch.cat([g.reshape(-1) for g in grads_hist])
            s = cosine_similarity(flat_n, flat_h)
            res = mix_flat(flat_n, flat_h, self.history_weight(s), self.project, s=s)
            parts = torch.split(res.g, [g.numel() for g in grads_new])
            mixed = [part.view_as(g) for part, g in zip(parts, grads_new)]
            return mixed, MixStats(res.s, res.w_h, res.projected, res.inner_after, int(res.projected), 1)

        mixed, dots, nn_sq, hh_sq, w_sum, n_proj, inner = [], 0.0, 0.0, 0.0, 0.0, 0, 0.0
        for g_n, g_h in zip(grads_new, grads_hist):
            flat_n, flat_h = g_n.reshape(-1), g_h.reshape(-1)
            s_layer = cosine_similarity(flat_n, flat_h)
            res = mix_flat(flat_n, flat_h, self.history_weight(s_layer), self.project, s=s_layer)
            mixed.append(res.g.view_as(g_n))
            dots += _dot(flat_n, flat_h)
            nn_sq += _dot(flat_n, flat_n)
            hh_sq += _dot(flat_h, flat_h)
            w_sum += res.w_h * flat_n.numel()
            n_proj += int(res.projected)
            inner += res.inner_after
        s_global = dots / (math.sqrt(nn_sq) * math.sqrt(hh_sq) + _EPS)
        numel = sum(g.numel() for g in grads_new)
        return mixed, MixStats(s_global, w_sum / numel, n_proj > 0, inner, n_proj, len(mixed))

    def mix(self, model: torch.nn.Module, loss_new: torch.Tensor, loss_hist: torch.Tensor | None = None) -> MixStats:
        """Differentiate both losses over the trainable parameters and write the mix into ``.grad``.

        Existing ``.grad`` values are replaced, not accumulated. Parameters that neither loss reaches keep
        ``grad = None`` so the optimizer skips them, as after a plain ``backward()``. The two losses may
        share one graph (one forward over a concatenated batch): the first differentiation keeps it.

        Args:
            model: the module whose ``requires_grad`` parameters are updated.
            loss_new: scalar loss on the transfer batch.
            loss_hist: scalar loss on the paired history batch; may be ``None`` only for plain fine-tune,
                which then skips the second gradient and reports ``s = NaN``.
        """
        params = [p for p in model.parameters() if p.requires_grad]
        if loss_hist is None:
            if self.needs_history:
                raise ValueError(f"gradient mixing mode={self.mode!r} needs loss_hist (the history batch loss)")
            grads = torch.autograd.grad(loss_new, params, allow_unused=True)
            for p, g in zip(params, grads):
                p.grad = None if g is None else g.detach()
            nan = float("nan")
            return MixStats(nan, 0.0, False, nan, 0, 1 if self.granularity == "global" else len(params))
        raw_n = torch.autograd.grad(loss_new, params, retain_graph=True, allow_unused=True)
        raw_h = torch.autograd.grad(loss_hist, params, allow_unused=True)
        used = [i for i, (a, b) in enumerate(zip(raw_n, raw_h)) if a is not None or b is not None]
        grads_new = [raw_n[i] if raw_n[i] is not None else torch.zeros_like(params[i]) for i in used]
        grads_hist = [raw_h[i] if raw_h[i] is not None else torch.zeros_like(params[i]) for i in used]
        mixed, stats = self.mix_gradients(grads_new, grads_hist)
        for p in params:
            p.grad = None
        for i, g in zip(used, mixed):
            params[i].grad = g.detach().clone()
        return stats
