"""Recipe ``mutual``'s data: the clean source and the shifted target domain, generated on first use."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.run.data_prep import ensure_generated
from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig


def target_generator(spec: ExperimentSpec) -> tuple[MovingDigitsConfig, int]:
    """The shifted target domain: ``data.generator`` through ``twin.target`` (and its data seed)."""
    target = spec.twin.target
    source = spec.data.generator
    cfg = replace(
        source,
        shift=target.shift,
        class_motion=target.class_motion,
        train_per_class=target.train_per_class or source.train_per_class,
        test_per_class=target.test_per_class or source.test_per_class,
    )
    return cfg, target.seed if target.seed is not None else spec.data.seed + 1


def prepare_domains(spec: ExperimentSpec) -> tuple[Path | str, Path | str]:
    """Source and target dataset directories, generated on first use (cached by content hash); a URI
    ``data.root`` gives URIs."""
    if spec.data.generator.shift is not None:
        raise ConfigError(
            "data.generator.shift: the source domain must be clean for recipe 'mutual'; "
            "put the shift under twin.target.shift"
        )
    source = ensure_generated(spec.data.root, spec.data.generator, spec.data.seed)
    cfg, seed = target_generator(spec)
    return source, ensure_generated(spec.data.root, cfg, seed)
