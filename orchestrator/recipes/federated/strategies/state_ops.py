"""State arithmetic of the server-update strategies (FedDU, FedDUM): interpolation, EMA server momentum,
norms and prefixed checkpoint keys. Pure numpy on ``ModelState`` dicts; integer buffers are copied."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedtwin.pipelines.model.state import ModelState, is_float


def interpolate(base: Mapping[str, np.ndarray], target: Mapping[str, np.ndarray], alpha: float) -> ModelState:
    """``base + alpha * (target - base)`` on float entries (base's dtype); integer buffers from ``base``.

    ``alpha = 0`` returns a copy of ``base`` and ``alpha = 1`` a copy of ``target`` (cast to base's dtype).
    """
    out: ModelState = {}
    for key, value in base.items():
        if is_float(value):
            step = np.asarray(target[key], dtype=np.float64) - value
            out[key] = (value + alpha * step).astype(value.dtype)
        else:
            out[key] = np.array(value, copy=True)
    return out


def ema_momentum_step(
    current: Mapping[str, np.ndarray],
    proposed: Mapping[str, np.ndarray],
    velocity: Mapping[str, np.ndarray],
    beta: float,
    first: str = "zero",
    scale: float = 1.0,
) -> tuple[ModelState, ModelState]:
    """One EMA server-momentum step: ``m_t = beta m_{t-1} + (1 - beta) Delta_t``, ``w = w_old + scale * m_t``.

    Args:
        current: w_old, the global state before the round.
        proposed: the round's new state without momentum; ``Delta_t = proposed - current``.
        velocity: m_{t-1} (empty before the first update).
        beta: beta_s.
        first: the velocity before the first update: ``"zero"`` (m_{-1} = 0, so m_0 = (1 - beta) Delta_0)
            or ``"delta"`` (m_0 = Delta_0, the FedDUMAP reference code; the first update is then applied
            ``1/(1 - beta)`` times in total).
        scale: multiplies m_t in the weight update only (Adam-style bias correction passes
            ``1 / (1 - beta^k)``); the returned velocity is unscaled.

    Returns:
        ``(w_old + scale * m_t, m_t)``; the velocity is float64, integer buffers come from ``proposed``.
    """
    new: ModelState = {}
    new_velocity: ModelState = {}
    for key, value in proposed.items():
        if not is_float(value):
            new[key] = np.array(value, copy=True)
            continue
        old = np.asarray(current[key], dtype=np.float64)
        delta = np.asarray(value, dtype=np.float64) - old
        if key in velocity:
            m = beta * velocity[key] + (1.0 - beta) * delta
        else:
            m = delta if first == "delta" else (1.0 - beta) * delta
        new_velocity[key] = m
        new[key] = (old + scale * m).astype(value.dtype)
    return new, new_velocity


def state_norm(state: Mapping[str, np.ndarray]) -> float:
    """L2 norm over all float entries (0 for an empty state)."""
    return float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in state.values() if is_float(v))))


def prefixed(prefix: str, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``{"<prefix>/<key>": array}`` for a strategy's checkpoint."""
    return {f"{prefix}/{k}": v for k, v in state.items()}


def load_prefixed(prefix: str, state: Mapping[str, np.ndarray]) -> ModelState:
    """Inverse of :func:`prefixed` (keys with other prefixes are ignored)."""
    head = f"{prefix}/"
    return {k[len(head) :]: np.array(v) for k, v in state.items() if k.startswith(head)}
