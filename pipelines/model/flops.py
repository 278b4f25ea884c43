"""FLOPs of one training step and one forward pass of a model, counted by PyTorch's FLOP counter.

The modelled clock (:mod:`fedtwin.pipelines.federated.system_model`) charges a device for its local
training in FLOPs. The count comes from ``torch.utils.flop_counter.FlopCounterMode`` on one step of
cross-entropy training (forward and backward) on a batch of zeros, once per model: it counts matrix
multiplications and convolutions, which grow linearly with the batch, and leaves out elementwise
work, normalisation and the optimizer's update.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as nnf
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step (forward + backward) and of one forward pass, at ``batch_size``."""

    train: float
    forward: float
    batch_size: int

    @property
    def train_per_example(self) -> float:
        """Training FLOPs per example."""
        return self.train / self.batch_size

    @property
    def forward_per_example(self) -> float:
        """Forward (evaluation) FLOPs per example."""
        return self.forward / self.batch_size


def count_step_flops(model: nn.Module, clip_shape: Sequence[int], batch_size: int) -> StepFlops:
    """Count a training step and a forward pass of ``model`` on clips of ``clip_shape`` (T, C, H, W).

    The model is copied first, so its weights and gradients are left as they were.
    """
    probe = copy.deepcopy(model).cpu().train()
    x = torch.zeros((batch_size, *(int(d) for d in clip_shape)))
    with FlopCounterMode(display=False) as counter:
        logits = probe(x)
        nnf.cross_entropy(logits, torch.zeros(batch_size, dtype=torch.long)).backward()
    train = float(counter.get_total_flops())
    probe.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        probe(x)
    return StepFlops(train=train, forward=float(counter.get_total_flops()), batch_size=batch_size)
