"""Model state as plain numpy: what travels between the driver, actors and checkpoints.

A ``ModelState`` is an ordered ``dict[str, np.ndarray]`` built from a torch ``state_dict``. Only CPU numpy
crosses process boundaries, so the object store can share it zero-copy and nothing on the wire is tied
to a device or to torch's pickle format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported by the two functions that touch a module, so specs load without it
    import torch

ModelState = dict[str, np.ndarray]


def state_from_model(model: torch.nn.Module) -> ModelState:
    """Copy a module's ``state_dict`` into CPU numpy arrays (one copy, detached)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_state(model: torch.nn.Module, state: Mapping[str, np.ndarray]) -> None:
    """Load numpy arrays into ``model`` in place (arrays may be read-only object-store views)."""
    import torch

    own = model.state_dict()
    missing = set(own) - set(state)
    unexpected = set(state) - set(own)
    if missing or unexpected:
        raise KeyError(f"state does not match model: missing={sorted(missing)} unexpected={sorted(unexpected)}")
    with torch.no_grad():
        for key, target in own.items():
            # torch.from_numpy refuses read-only arrays; copy_ from an explicit copy is cheap at our sizes.
            target.copy_(torch.as_tensor(np.array(state[key], copy=True)))


def is_float(array: np.ndarray) -> bool:
    """True for arrays that are averaged; integer buffers (e.g. BatchNorm counters) are copied instead."""
    return np.issubdtype(array.dtype, np.floating)


def zeros_like(state: Mapping[str, np.ndarray]) -> ModelState:
    """A float64 accumulator with the keys and shapes of ``state``."""
    return {k: np.zeros(v.shape, dtype=np.float64) for k, v in state.items()}


def add_scaled(acc: ModelState, state: Mapping[str, np.ndarray], weight: float) -> None:
    """``acc += weight * state`` for float entries; integer entries are carried over unchanged."""
    for key, value in state.items():
        if is_float(value):
            acc[key] += weight * value
        else:
            acc[key] = np.array(value, copy=True)


def cast_like(acc: Mapping[str, np.ndarray], like: Mapping[str, np.ndarray]) -> ModelState:
    """Cast an accumulator back to the dtypes of ``like`` (float32 weights, int buffers)."""
    return {k: np.asarray(acc[k]).astype(like[k].dtype, copy=True) for k in like}


def weighted_average(states: Iterable[Mapping[str, np.ndarray]], weights: Iterable[float]) -> ModelState:
    """Weighted mean of states; weights need not sum to one (they are normalised here)."""
    acc: ModelState | None = None
    like: Mapping[str, np.ndarray] | None = None
    total = 0.0
    for state, weight in zip(states, weights, strict=True):
        if acc is None:
            acc, like = zeros_like(state), state
        add_scaled(acc, state, float(weight))
        total += float(weight)
    if acc is None or like is None or total <= 0:
        raise ValueError("weighted_average needs at least one state with a positive weight")
    for key, value in like.items():
        if is_float(value):
            acc[key] /= total
    return cast_like(acc, like)


def flatten(state: Mapping[str, np.ndarray]) -> np.ndarray:
    """Concatenate the float entries into one float64 vector (for norms and similarities)."""
    return np.concatenate([np.ravel(v).astype(np.float64) for v in state.values() if is_float(v)])
