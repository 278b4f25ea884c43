"""Terms a federated strategy adds to every gradient of :func:`fedtwin.pipelines.model.training.local_train`.

The loop computes a mini-batch gradient ``g`` (``loss.backward()`` or a ``grad_fn``), then hands the
parameters to :class:`StepTerms` before the optimizer steps. Each term is optional:

- **proximal** (FedProx): ``g += mu * (w - w_start)``, the gradient of ``mu/2 ||w - w_start||^2``, where
  ``w_start`` is the weights the call started from (the round's global model on a device);
- **correction** (SCAFFOLD): ``g += correction`` with ``correction = c - c_i`` given by the caller;
- **gradient mean**: the running mean of the raw ``g`` (before any term), which SCAFFOLD's device keeps as
  its next control variate.

With no term asked for, :func:`step_terms` returns None and the loop does exactly what it did before.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from fedtwin.pipelines.model.state import ModelState


class StepTerms:
    """The per-step gradient terms of one ``local_train`` call (see the module docstring)."""

    def __init__(
        self,
        named: list[tuple[str, nn.Parameter]],
        *,
        prox_mu: float = 0.0,
        correction: Mapping[str, np.ndarray] | None = None,
        mean_gradient: bool = False,
    ) -> None:
        self.named = named
        self.prox_mu = float(prox_mu)
        # w_start, copied once per call (the proximal centre does not move during the call).
        self.anchor = [p.detach().clone() for _, p in named] if self.prox_mu > 0 else None
        self.correction: list[torch.Tensor | None] | None = None
        if correction:
            unknown = sorted(set(correction) - {n for n, _ in named})
            if unknown:
                raise KeyError(f"grad_correction names no trainable parameter of the model: {unknown[:3]}")
            self.correction = [
                torch.as_tensor(np.asarray(correction[n], dtype=np.float32)).to(p.device).reshape(p.shape)
                if n in correction
                else None
                for n, p in named
            ]
        self.grad_sum = [torch.zeros_like(p, dtype=torch.float64) for _, p in named] if mean_gradient else None
        self.steps = 0

    def apply(self) -> None:
        """Add the terms to the parameters' ``.grad`` (after the backward pass, before the optimizer step)."""
        self.steps += 1
        with torch.no_grad():
            for i, (_, p) in enumerate(self.named):
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                if self.grad_sum is not None:
                    self.grad_sum[i].add_(p.grad)
                if self.anchor is not None:
                    p.grad.add_(p.detach() - self.anchor[i], alpha=self.prox_mu)
                shift = self.correction[i] if self.correction is not None else None
                if shift is not None:
                    p.grad.add_(shift)

    def mean_gradient(self) -> ModelState:
        """The mean raw gradient over the steps taken, float32, keyed by parameter name (empty: none asked
        for, or no step taken)."""
        if self.grad_sum is None or self.steps == 0:
            return {}
        return {n: (s / self.steps).to(torch.float32).cpu().numpy() for (n, _), s in zip(self.named, self.grad_sum)}


def step_terms(
    named: list[tuple[str, nn.Parameter]],
    prox_mu: float,
    correction: Mapping[str, np.ndarray] | None,
    mean_gradient: bool,
) -> StepTerms | None:
    """The call's :class:`StepTerms`, or None when it adds nothing (the loop then skips the hook)."""
    if prox_mu <= 0 and not correction and not mean_gradient:
        return None
    return StepTerms(named, prox_mu=prox_mu, correction=correction, mean_gradient=mean_gradient)
