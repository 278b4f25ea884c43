"""Small video CNNs built from 3D convolutions, with the feature taps the recipes need.

Every model takes float clips ``(B, T, C, H, W)`` in ``[0, 1]`` and offers three views:

- ``model(x)`` -> logits ``(B, K)``;
- ``model.forward_features(x)`` -> ``(feature_map, embedding)``: the last stage's map shaped
  ``(B, T', C', H', W')`` (time kept, for spatio-temporal distillation) and the pooled vector ``(B, D)``
  the head consumes (for clustering);
- ``model.classify(embedding)`` -> logits, through ``model.head`` (a ``Linear`` that
  :func:`expand_head` grows for new classes and recipes may re-initialise from centroids).

Two architectures share one skeleton (stem, stages, global max pool, linear head):

- ``tiny3d`` (CPU default): the input is average-pooled 2x over space first (moving digits are 8x8
  images upscaled to 16x16, so a 16x16 canvas loses almost nothing), then (2+1)D blocks, a ``(1,3,3)``
  spatial conv followed by a ``(3,1,1)`` temporal conv, each with GroupNorm, and max-pooling over space.
  About 10k parameters and well under a millisecond per clip for a training step on one core.
- ``c3d``: full ``3x3x3`` convolutions at full resolution, wider stages; a GPU option.

Max rather than average pooling is deliberate: a small digit on a mostly empty canvas is averaged away
by global average pooling. GroupNorm (not BatchNorm) keeps the model free of
running statistics, which federated averaging and tiny device batches handle badly.

Model plugins. ``ModelConfig.arch`` names a built-in (``MODELS``), an entry point of the
``fedtwin.models`` group, or an import path ``"pkg.module:Name"``; :mod:`fedtwin.pipelines.model.arch`
looks the name up without torch, so the config can resolve it too. The plugin is a callable
``plugin(cfg: ModelConfig) -> torch.nn.Module``, usually an ``nn.Module`` subclass whose ``__init__``
takes the config; it may declare ``default_widths`` and ``default_input_pool`` (class attributes) to
fill those fields when the YAML leaves them out. :func:`build_model` resolves the name in the process
that calls it (device hosts, evaluators, trainers), so only the string travels to Ray workers. Every
recipe needs ``model(x) -> logits``; the twin, incremental and transfer recipes also need the feature
taps above (``FEATURE_API``; the incremental feature distillation also reads ``model.stages``), which
:func:`check_model_api` verifies with a one-line error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as nnf

from fedtwin.pipelines.model.arch import BUILTIN_ARCH_DEFAULTS, resolve_arch  # torch-free, shared with the config
from fedtwin.pipelines.model.config import ModelConfig  # the torch-free section; networks builds it
from fedtwin.pipelines.plugins import PluginError

#: What the twin, incremental and transfer recipes call besides ``model(x)`` (see the module docstring).
FEATURE_API = ("forward_features", "classify", "head", "cfg")


@dataclass(frozen=True)
class ArchSpec:
    """A built-in architecture: its block type and the defaults it brings; calling it builds the model.

    It has the shape every model plugin has: ``spec(cfg) -> nn.Module`` plus ``default_widths`` and
    ``default_input_pool``.
    """

    block: Callable[[int, int, int], nn.Module]  # (in_channels, out_channels, norm_groups) -> module
    default_widths: tuple[int, ...]
    default_input_pool: int
    description: str

    def __call__(self, cfg: ModelConfig) -> VideoCNN:
        """The :class:`VideoCNN` of this architecture for ``cfg``."""
        return VideoCNN(cfg, self)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    groups = math.gcd(channels, min(groups, channels))
    return nn.GroupNorm(groups, channels)


class SpatialConv(nn.Sequential):
    """``(1,3,3)`` convolution + GroupNorm + ReLU: a per-frame spatial filter written as a 3D conv."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__(nn.Conv3d(cin, cout, (1, 3, 3), padding=(0, 1, 1), bias=False), _norm(cout, groups), nn.ReLU())


class FactorisedBlock(nn.Sequential):
    """(2+1)D block: spatial ``(1,3,3)`` then temporal ``(3,1,1)`` convolution, each normalised.

    Factorising a ``3x3x3`` kernel this way costs ``9 + 3`` instead of ``27`` multiply-adds per
    channel pair and adds a non-linearity between space and time.
    """

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__(
            SpatialConv(cin, cout, groups),
            nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False),
            _norm(cout, groups),
            nn.ReLU(),
        )


class FullBlock(nn.Sequential):
    """Plain ``3x3x3`` convolution + GroupNorm + ReLU (the heavier, C3D-style block)."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__(nn.Conv3d(cin, cout, 3, padding=1, bias=False), _norm(cout, groups), nn.ReLU())


#: The built-in architectures; :data:`fedtwin.pipelines.model.arch.BUILTIN_ARCHS` names them by import path
#: and :data:`~fedtwin.pipelines.model.arch.BUILTIN_ARCH_DEFAULTS` holds their widths and input pooling
#: (read without torch when a spec loads).
TINY3D = ArchSpec(FactorisedBlock, *BUILTIN_ARCH_DEFAULTS["tiny3d"], "(2+1)D, 2x input pooling; CPU default")
C3D = ArchSpec(FullBlock, *BUILTIN_ARCH_DEFAULTS["c3d"], "full 3x3x3 convs at full resolution; GPU option")
#: The built-in model plugins by name (the ``builtins`` table of the ``fedtwin.models`` group).
MODELS: dict[str, ArchSpec] = {"tiny3d": TINY3D, "c3d": C3D}


class VideoCNN(nn.Module):
    """Stem, stages with spatial max-pooling between them, global max pool, linear head.

    The stem of ``tiny3d`` is spatial only: a single-channel input has no motion features worth a
    temporal conv yet, and skipping it saves a third of the compute of the largest layer.
    """

    def __init__(self, cfg: ModelConfig, spec: ArchSpec | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        if spec is None:
            if cfg.arch not in MODELS:
                raise ValueError(f"VideoCNN: arch {cfg.arch!r} is not built in; pass its ArchSpec")
            spec = MODELS[cfg.arch]
        widths: tuple[int, ...] = cfg.widths or ()
        stages: list[nn.Module] = []
        cin = cfg.in_channels
        for i, width in enumerate(widths):
            first: nn.Module = (
                SpatialConv(cin, width, cfg.norm_groups)
                if (i == 0 and spec.block is FactorisedBlock)
                else spec.block(cin, width, cfg.norm_groups)
            )
            blocks = [first] + [spec.block(width, width, cfg.norm_groups) for _ in range(cfg.depth - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(widths[-1], cfg.num_classes)
        self.embedding_dim = widths[-1]

    def _check_input(self, x: torch.Tensor) -> None:
        cfg = self.cfg
        if x.dim() != 5 or x.shape[1] != cfg.frames or x.shape[2] != cfg.in_channels:
            raise ValueError(
                f"expected clips shaped (B, T={cfg.frames}, C={cfg.in_channels}, H, W), got {tuple(x.shape)}"
            )

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the last stage's map ``(B, T', C', H', W')`` and the pooled embedding ``(B, C')``."""
        self._check_input(x)
        cfg = self.cfg
        # Fixed standardisation (no statistics to learn or average) and Conv3d's (B, C, T, H, W) layout.
        h = ((x - cfg.input_mean) / cfg.input_std).transpose(1, 2)
        pool = cfg.input_pool or 1
        if pool > 1:
            h = nnf.avg_pool3d(h, (1, pool, pool))
        for i, stage in enumerate(self.stages):
            if i > 0:
                h = _max_pool_space(h)
            h = stage(h)
            if i in cfg.temporal_pool:
                h = nnf.max_pool3d(h, (2, 1, 1))
        embedding = h.amax(dim=(2, 3, 4))
        return h.transpose(1, 2), embedding

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits from a pooled embedding (dropout, then ``self.head``)."""
        return self.head(self.dropout(embedding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` for float clips ``(B, T, C, H, W)`` in ``[0, 1]``."""
        return self.classify(self.forward_features(x)[1])


def _max_pool_space(h: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool over (H, W) of a ``(B, C, T, H, W)`` map, rounding odd sizes up.

    Without autograd, the max of the four strided views is ~10x faster on CPU than ``max_pool3d``,
    whose kernel computes argmax indices even for inference; with autograd ``max_pool3d``'s backward
    is the faster one. Both give identical values.
    """
    height, width = h.shape[-2:]
    if (torch.is_grad_enabled() and h.requires_grad) or height % 2 or width % 2:
        return nnf.max_pool3d(h, (1, 2, 2), ceil_mode=True)
    rows = torch.maximum(h[..., 0::2, :], h[..., 1::2, :])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


def build_model(cfg: ModelConfig, seed: int, *, needs: Iterable[str] = ()) -> VideoCNN:
    """Build a model whose initial weights depend only on ``cfg`` and ``seed``.

    ``cfg.arch`` is resolved in the calling process (a Ray worker resolves it again from the string),
    so a user's model class never has to be pickled. torch initialises layers from its global RNG;
    forking it and seeding inside the fork makes the weights reproducible without changing the
    caller's random stream (library code never reseeds the global RNG for good).

    Args:
        cfg: the model settings.
        seed: the initialisation seed.
        needs: attributes the caller uses besides ``forward`` (e.g. ``FEATURE_API``), checked here.

    Raises:
        PluginError: the plugin does not resolve, builds no ``nn.Module``, or lacks one of ``needs``.
    """
    plugin = resolve_arch(cfg.arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = plugin(cfg)
    if not isinstance(model, nn.Module):
        raise PluginError(f"model.arch: {cfg.arch!r} built a {type(model).__name__}, not a torch.nn.Module")
    check_model_api(model, needs, cfg.arch)
    return model  # type: ignore[return-value]  # VideoCNN or a plugin offering the same calls


def check_model_api(model: nn.Module, needs: Iterable[str], arch: str, *, field: str = "model.arch") -> None:
    """Fail with one line when ``model`` lacks attributes a recipe calls (e.g. ``FEATURE_API``).

    Raises:
        PluginError: naming ``field``, the model class and what is missing.
    """
    needs = tuple(needs)
    missing = [name for name in needs if not hasattr(model, name)]
    if "head" in needs and "head" not in missing and not isinstance(model.head, nn.Linear):
        missing.append("head (an nn.Linear)")
    if missing:
        raise PluginError(
            f"{field}: {arch!r} builds {type(model).__qualname__}, which lacks {', '.join(missing)}; this recipe "
            "needs forward_features(x) -> (map, embedding), classify(embedding), a Linear head and cfg "
            "(see pipelines/model/networks.py)"
        )


def check_feature_api(cfg: ModelConfig) -> None:
    """Before a run: a model class named by ``cfg.arch`` defines ``forward_features`` and ``classify``.

    The recipes that read features (mutual, incremental, transfer) call this from ``preflight`` so a plain
    classifier plugin fails before Ray starts with one line instead of inside an actor; instance attributes
    (``head``, ``cfg``) are checked again when the model is built (``build_model(needs=FEATURE_API)``).
    """
    plugin = resolve_arch(cfg.arch)
    if isinstance(plugin, type):
        missing = [name for name in ("forward_features", "classify") if not callable(getattr(plugin, name, None))]
        if missing:
            raise PluginError(
                f"model.arch: {cfg.arch!r} ({plugin.__qualname__}) lacks {', '.join(missing)}; this recipe needs "
                "forward_features(x) -> (map, embedding) and classify(embedding) (see pipelines/model/networks.py)"
            )


def expand_head(model: VideoCNN, num_classes: int, *, generator: torch.Generator | None = None) -> None:
    """Grow ``model.head`` to ``num_classes`` outputs in place, keeping the old classes' rows.

    New rows start at zero (a new class begins with logit 0; its gradient is not zero, so it learns)
    or, with a ``generator``, at torch's default ``Linear`` uniform range drawn from it. The head keeps
    the old head's device and dtype, and ``model.cfg.num_classes`` is updated.

    Raises:
        ValueError: when ``num_classes`` is smaller than the current number of classes.
    """
    old = model.head
    if num_classes < old.out_features:
        raise ValueError(f"expand_head: num_classes={num_classes} is below the current {old.out_features}")
    extra = num_classes - old.out_features
    weight = torch.zeros(num_classes, old.in_features, dtype=old.weight.dtype)
    bias = torch.zeros(num_classes, dtype=old.bias.dtype)
    if generator is not None and extra:
        bound = 1.0 / math.sqrt(old.in_features)  # nn.Linear's default uniform range
        weight[old.out_features :].uniform_(-bound, bound, generator=generator)
        bias[old.out_features :].uniform_(-bound, bound, generator=generator)
    with torch.no_grad():
        weight[: old.out_features] = old.weight.detach().cpu()
        bias[: old.out_features] = old.bias.detach().cpu()
    new = nn.Linear(old.in_features, num_classes, device="meta")  # no init, so no global RNG draws
    new.weight = nn.Parameter(weight.to(old.weight.device))
    new.bias = nn.Parameter(bias.to(old.bias.device))
    model.head = new
    model.cfg = replace(model.cfg, num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
