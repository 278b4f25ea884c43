"""A user's fedtwin plugins in one file: a video model and a server strategy.

``experiment.yaml`` names them by import path (``my_plugin:FrameCNN``, ``my_plugin:FedAdam``) and lists
this folder under ``plugins.paths``, so the driver imports this file for the strategy and every device
host imports it again to build the model: only the string ``"my_plugin:FrameCNN"`` travels to the Ray
workers, never the class.

Set ``MY_PLUGIN_TRACE=/some/file`` to have every process that builds a ``FrameCNN`` append a line
``<pid> <process title>`` to that file; the example's test uses it to show that the device hosts (Ray
actor processes titled ``ray::DeviceHost...``) built the model themselves.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from fedtwin import AggregatedFit, Strategy
from fedtwin.pipelines.model.networks import ModelConfig
from fedtwin.pipelines.model.state import ModelState, is_float


# --------------------------------------------------------------------------------------------- model
class FrameCNN(nn.Module):
    """A frame-wise 2D CNN with a temporal mean: each frame is encoded alone, then frames are averaged.

    Unlike the built-in ``tiny3d`` it has no temporal convolution at all, so it cannot use the order of
    frames; it is a small, fast baseline for appearance-only classes (the digit of moving digits).

    Besides ``model(x) -> logits`` it offers the feature taps fedtwin's twin, incremental and transfer
    recipes use (``forward_features``, ``classify``, a ``Linear`` ``head``, ``cfg``). It has no 3D
    ``stages``, so the incremental recipe's feature distillation (which hooks them) needs
    ``distillation: logits`` with it. Each stage is ``Conv2d(3x3) -> GroupNorm -> ReLU -> MaxPool(2)``
    with ``cfg.widths`` channels.
    """

    # Fill ModelConfig.widths / input_pool when experiment.yaml leaves them out.
    default_widths = (8, 16)
    default_input_pool = 2

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        cin = cfg.in_channels
        for width in cfg.widths or self.default_widths:
            layers += [
                nn.Conv2d(cin, width, 3, padding=1, bias=False),
                nn.GroupNorm(min(cfg.norm_groups, width), width),
                nn.ReLU(),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            cin = width
        self.frame_encoder = nn.Sequential(*layers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(cin, cfg.num_classes)
        self.embedding_dim = cin
        _trace_construction()

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, T, C, H, W)`` clips in [0, 1] -> per-frame maps ``(B, T, C', H', W')`` and ``(B, C')``."""
        batch, frames = x.shape[:2]
        h = ((x - self.cfg.input_mean) / self.cfg.input_std).flatten(0, 1)  # every frame on its own
        if (self.cfg.input_pool or 1) > 1:
            h = nnf.avg_pool2d(h, self.cfg.input_pool)
        maps = self.frame_encoder(h).unflatten(0, (batch, frames))
        # Max over space keeps a small digit's response; the mean over time is the whole temporal model.
        embedding = maps.amax(dim=(3, 4)).mean(dim=1)
        return maps, embedding

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits from a pooled embedding."""
        return self.head(self.dropout(embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.classify(self.forward_features(x)[1])


def _trace_construction() -> None:
    """Append ``<pid> <process title>`` to ``$MY_PLUGIN_TRACE`` (if set).

    Ray titles an actor's process after the call it runs (``ray::DeviceHost.__init__``), so the trace
    names which actor built the model; elsewhere the title is the program (e.g. ``.../fedtwin``).
    """
    path = os.environ.get("MY_PLUGIN_TRACE")
    if not path:
        return
    try:
        with open("/proc/self/cmdline", "rb") as fh:  # Linux: shows the title Ray sets
            title = fh.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        title = sys.argv[0] if sys.argv else "?"
    with open(path, "a") as fh:  # one short line per model built: appends do not interleave
        fh.write(f"{os.getpid()} {title}\n")


# ------------------------------------------------------------------------------------------ strategy
@dataclass(frozen=True)
class FedAdamParams:
    """``strategy.params`` of :class:`FedAdam` (the defaults follow Reddi et al.'s recommendations)."""

    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3  # adaptivity: larger values make the step closer to plain server momentum

    def __post_init__(self) -> None:
        if not self.server_lr > 0:
            raise ValueError(f"server_lr: must be > 0, got {self.server_lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1, beta2: must be in [0, 1), got {self.beta1}, {self.beta2}")
        if not self.tau > 0:
            raise ValueError(f"tau: must be > 0, got {self.tau}")


class FedAdam(Strategy):
    """FedAdam (Reddi et al., "Adaptive Federated Optimization", ICLR 2021).

    The server treats ``delta = mean - w`` (the example-weighted mean of the device models minus the
    global model) as a pseudo-gradient and takes an Adam step on it::

        m <- beta1 * m + (1 - beta1) * delta
        v <- beta2 * v + (1 - beta2) * delta**2
        w <- w + server_lr * m / (sqrt(v) + tau)

    ``m`` and ``v`` are strategy state: they are checkpointed, so a resumed run continues exactly.
    Integer buffers are copied from the mean.
    """

    name = "fedadam"
    Params = FedAdamParams

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.m: ModelState = {}
        self.v: ModelState = {}

    def aggregate_fit(
        self, round_num: int, current: ModelState, fit: AggregatedFit
    ) -> tuple[ModelState, dict[str, float]]:
        """One server Adam step on the pseudo-gradient."""
        p = self.params
        new: ModelState = {}
        for key, mean in fit.mean_state.items():
            if not is_float(mean):
                new[key] = np.array(mean, copy=True)
                continue
            delta = mean.astype(np.float64) - current[key]
            self.m[key] = p.beta1 * self.m.get(key, 0.0) + (1 - p.beta1) * delta
            self.v[key] = p.beta2 * self.v.get(key, 0.0) + (1 - p.beta2) * delta * delta
            step = p.server_lr * self.m[key] / (np.sqrt(self.v[key]) + p.tau)
            new[key] = (current[key] + step).astype(mean.dtype)
        delta_norm = float(np.sqrt(sum(float(np.sum((fit.mean_state[k] - current[k]) ** 2)) for k in self.m)))
        return new, {"pseudo_gradient_norm": delta_norm}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The first and second moments, keyed by parameter name."""
        return {**{f"m/{k}": v for k, v in self.m.items()}, **{f"v/{k}": v for k, v in self.v.items()}}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore the moments."""
        self.m = {k[2:]: np.array(v, dtype=np.float64) for k, v in state.items() if k.startswith("m/")}
        self.v = {k[2:]: np.array(v, dtype=np.float64) for k, v in state.items() if k.startswith("v/")}
