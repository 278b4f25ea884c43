"""State arithmetic of FedDU/FedDUM: interpolation, EMA server momentum, prefixed checkpoint keys.

FedDUM (from FedDUMAP, TIST 2024; details reconstructed from the reference code) decouples two momenta:

- **server (global) momentum** on every global update ``Delta_t = w_new - w_old``, in EMA form:
  ``m_t = beta_s m_{t-1} + (1 - beta_s) Delta_t`` (``m_0 = Delta_0``), then ``w_new <- w_old + m_t``;
- **device momentum** ``beta_d``: SGD momentum of local training. Its buffer either persists on the
  device between the rounds it is selected (``local``, the default: stateful devices on sticky hosts)
  or starts from the global buffer ``v^{t-1}`` (``global``, the reference's fsgdm path), where the
  server averages the uploaded buffers and interpolates them towards the server pass's buffer by
  alpha_t, exactly like the weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pipelines.model.state import ModelState, is_float


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
    first: str = "delta",
) -> tuple[ModelState, ModelState]:
    """One EMA server-momentum step.

    Args:
        current: w_old, the global state before the round.
        proposed: the round's new state without momentum (FedDU's output).
        velocity: m_{t-1} (empty in the first round).
        beta: beta_s.
        first: the first round's velocity: ``"delta"`` (m_0 = Delta_0, the reference) or ``"zero"``
            (m_{-1} = 0, so m_0 = (1 - beta_s) Delta_0).

    Returns:
        ``(w_old + m_t, m_t)``; the velocity is float64, integer buffers come from ``proposed``.
    """
    new: ModelState = {}
    new_velocity: ModelState = {}
    for key, value in proposed.items():
        if not is_float(value):
            new[key] = np.array(value, copy=True)
            continue
        delta = np.asarray(value, dtype=np.float64) - np.asarray(current[key], dtype=np.float64)
        if key in velocity:
            m = beta * velocity[key] + (1.0 - beta) * delta
        else:
            m = delta if first == "delta" else (1.0 - beta) * delta
        new_velocity[key] = m
        new[key] = (np.asarray(current[key], dtype=np.float64) + m).astype(value.dtype)
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
    return {k[len(head):]: np.array(v) for k, v in state.items() if k.startswith(head)}
