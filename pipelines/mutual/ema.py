"""Temporal mean ("parameter") models for twin co-training: ``E[θ] <- m E[θ] + (1 - m) θ``.

Two update units, both supported by ``EmaSchedule``:

- ``unit="iter"`` (MMT, default): after every optimiser step ``a = min(1 - 1/(step + 1), alpha)``,
  where ``step`` is the global iteration counted from 0. The warm-up term makes the first update a
  plain copy (``a = 0``) and lets the average track quickly while it holds few samples.
- ``unit="epoch"`` (cross pseudo-labelling): after every training cycle, constant ``lambda``.

Both start from ``E^(0)[θ] = θ`` (``init_ema``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TypeVar

import torch

from fedtwin.pipelines.mutual.settings import EmaSettings

M = TypeVar("M", bound=torch.nn.Module)


def init_ema(model: M) -> M:
    """``E^(0)[θ] = θ``: an independent copy of ``model`` with gradients switched off."""
    ema = copy.deepcopy(model)
    for param in ema.parameters():
        param.requires_grad_(False)
    return ema


@torch.no_grad()
def ema_update(ema_model: torch.nn.Module, model: torch.nn.Module, momentum: float) -> None:
    """In place ``E <- momentum * E + (1 - momentum) * θ`` over parameters and buffers.

    Float tensors (weights, BatchNorm running statistics) are interpolated; integer buffers such as
    ``num_batches_tracked`` have no meaningful average and are copied from ``model``.

    Args:
        ema_model: the mean model, updated in place.
        model: the trained model with the same architecture.
        momentum: weight of the old average, in ``[0, 1]``.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"ema_update: momentum={momentum} must be in [0, 1]")
    ema_state = ema_model.state_dict()
    state = model.state_dict()
    if ema_state.keys() != state.keys():
        missing = sorted(set(state) ^ set(ema_state))
        raise KeyError(f"ema_update: EMA and model differ in keys {missing}; build the EMA with init_ema")
    for key, ema_tensor in ema_state.items():
        value = state[key].detach()
        if ema_tensor.dtype.is_floating_point:
            ema_tensor.mul_(momentum).add_(value.to(ema_tensor.dtype), alpha=1.0 - momentum)
        else:
            ema_tensor.copy_(value)


@dataclass(frozen=True)
class EmaSchedule(EmaSettings):
    """When and with which momentum to update the mean model: ``twin.ema`` with the update rules.

    Stateless: the caller passes the global iteration, so the schedule survives checkpoints and
    resumption without state of its own. ``unit``: ``"iter"`` (update after every optimiser step) or
    ``"epoch"`` (after every cycle); ``momentum``: ``alpha`` for ``"iter"`` (MMT: 0.999) or ``lambda``
    for ``"epoch"`` (e.g. 0.5 or 0.9). Build it from the section with :meth:`of`.
    """

    @classmethod
    def of(cls, settings: EmaSettings) -> EmaSchedule:
        """The schedule of the ``twin.ema`` section ``settings``."""
        return cls(unit=settings.unit, momentum=settings.momentum)

    def iteration_momentum(self, step: int) -> float:
        """``min(1 - 1/(step + 1), alpha)`` for global iteration ``step`` (0-based)."""
        if step < 0:
            raise ValueError(f"EmaSchedule: step={step} must be >= 0")
        return min(1.0 - 1.0 / (step + 1), self.momentum)

    def after_iteration(self, ema_model: torch.nn.Module, model: torch.nn.Module, step: int) -> float | None:
        """Call after optimiser step ``step``; updates (and returns the momentum) only for ``unit="iter"``."""
        if self.unit != "iter":
            return None
        momentum = self.iteration_momentum(step)
        ema_update(ema_model, model, momentum)
        return momentum

    def after_epoch(self, ema_model: torch.nn.Module, model: torch.nn.Module) -> float | None:
        """Call at the end of a training cycle; updates (and returns lambda) only for ``unit="epoch"``."""
        if self.unit != "epoch":
            return None
        ema_update(ema_model, model, self.momentum)
        return self.momentum
