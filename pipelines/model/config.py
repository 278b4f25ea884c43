"""``model:``, the settings of a video model, without torch (``fedtwin.pipelines.model.networks`` builds it).

Loading and printing an experiment spec reads this section; it must not pay torch's import. The
architecture named by ``arch`` is looked up in :mod:`fedtwin.pipelines.model.arch` (also torch-free): a
built-in's defaults come from a table, a plugin (an entry point or ``pkg.module:Name``) is imported when
the section is built, to read its ``default_widths`` and ``default_input_pool`` and to fail early on a
typo; whether the plugin module imports torch is up to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedtwin.pipelines.model.arch import arch_defaults


@dataclass(frozen=True)
class ModelConfig:
    """Settings of a video model; ``None`` fields take the architecture's defaults (see ``MODELS``).

    Range errors are ``ValueError("field: rule, got value")``; the config loader prefixes the section.
    ``arch`` is resolved here too, so a typo or an unimportable plugin fails when the config loads.

    Attributes:
        arch: a built-in name in ``MODELS`` (``"tiny3d"`` or ``"c3d"``), an entry point of the
            ``fedtwin.models`` group, or an import path ``"pkg.module:Name"`` (see the module docstring).
        widths: channels per stage; stage ``i > 0`` is preceded by a 2x spatial max-pool.
        depth: blocks per stage (>= 1); tiny3d's first block is spatial only (see ``VideoCNN``).
        num_classes: size of the classification head.
        in_channels: channels of the input clips (1 for moving digits).
        frames: clip length ``T`` the model expects; inputs with another length are rejected.
        input_pool: spatial average-pool factor applied to the input before the stem (1 = none).
        temporal_pool: stages (0-based) after which time is max-pooled 2x, e.g. ``(1,)``; empty keeps
            every frame, so the feature map has ``T' = T``.
        norm_groups: GroupNorm groups (capped at a layer's channel count).
        dropout: dropout on the embedding before the head.
        input_mean: fixed standardisation constant subtracted from inputs in ``[0, 1]``.
        input_std: fixed standardisation constant dividing the centred inputs.
    """

    arch: str = "tiny3d"
    widths: tuple[int, ...] | None = None
    depth: int = 1
    num_classes: int = 10
    in_channels: int = 1
    frames: int = 8
    input_pool: int | None = None
    temporal_pool: tuple[int, ...] = ()
    norm_groups: int = 4
    dropout: float = 0.0
    input_mean: float = 0.1
    input_std: float = 0.2

    def __post_init__(self) -> None:
        # Resolve arch defaults here so the saved, resolved spec shows the widths actually built.
        default_widths, default_pool = arch_defaults(self.arch)
        if self.widths is None:
            object.__setattr__(self, "widths", tuple(default_widths))
        else:
            object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        if self.input_pool is None:
            object.__setattr__(self, "input_pool", int(default_pool))
        object.__setattr__(self, "temporal_pool", tuple(int(s) for s in self.temporal_pool))
        widths = self.widths or ()
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths: must be a non-empty list of positive ints, got {list(widths)}")
        rules = {
            "depth": (self.depth >= 1, "must be >= 1"),
            "num_classes": (self.num_classes >= 1, "must be >= 1"),
            "in_channels": (self.in_channels >= 1, "must be >= 1"),
            "frames": (self.frames >= 1, "must be >= 1"),
            "input_pool": ((self.input_pool or 0) >= 1, "must be >= 1 (1 = no pooling)"),
            "norm_groups": (self.norm_groups >= 1, "must be >= 1"),
            "dropout": (0.0 <= self.dropout < 1.0, "must be in [0, 1)"),
            "input_std": (self.input_std > 0, "must be > 0"),
        }
        for name, (ok, rule) in rules.items():
            if not ok:
                raise ValueError(f"{name}: {rule}, got {getattr(self, name)!r}")
        bad = [s for s in self.temporal_pool if not 0 <= s < len(widths)]
        if bad:
            raise ValueError(f"temporal_pool: stages must be in 0..{len(widths) - 1}, got {list(self.temporal_pool)}")
        if self.frames % (2 ** len(set(self.temporal_pool))) != 0:
            raise ValueError(
                f"frames: must be divisible by 2**{len(set(self.temporal_pool))} to pool time at stages "
                f"{list(self.temporal_pool)}, got {self.frames}; pool fewer stages"
            )
