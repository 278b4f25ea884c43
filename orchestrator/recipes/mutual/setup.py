"""Recipe ``mutual``'s translation of the spec into data directories and per-twin settings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from fedtwin.actors.mutual.twin_network import TwinSettings
from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.mutual.config import TwinConfig
from fedtwin.orchestrator.run.data_prep import ensure_generated
from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig
from fedtwin.pipelines.mutual.pseudo_labels import ClusterSettings
from fedtwin.pipelines.mutual.twin_training import LossSettings


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


def prepare_domains(spec: ExperimentSpec) -> tuple[Path, Path]:
    """Source and target dataset directories, generated on first use (cached by content hash)."""
    if spec.data.generator.shift is not None:
        raise ConfigError(
            "data.generator.shift: the source domain must be clean for recipe 'mutual'; "
            "put the shift under twin.target.shift"
        )
    source = ensure_generated(spec.data.root, spec.data.generator, spec.data.seed)
    cfg, seed = target_generator(spec)
    return source, ensure_generated(spec.data.root, cfg, seed)


def cluster_settings(tw: TwinConfig) -> ClusterSettings:
    """The clusterer the ``twin`` section asks for."""
    return ClusterSettings(
        method=tw.clustering,
        num_clusters=tw.num_clusters,
        k_candidates=tw.k_candidates,
        dbscan_metric=tw.dbscan_metric,
        dbscan_rho=tw.dbscan_rho,
        dbscan_min_samples=tw.dbscan_min_samples,
        shared_features=tw.shared_features,
    )


def twin_settings(spec: ExperimentSpec, index: int) -> TwinSettings:
    """Settings of twin ``index``: its own seed stream and its own view; everything else shared."""
    tw = spec.twin
    return TwinSettings(
        index=index,
        seed=spec.seed,
        model=spec.model,
        augment=tw.augment_name(index),
        augment_params=dict(tw.augment_params(index)),
        dropout=tw.dropout,
        ema_unit=tw.ema_unit,
        ema_momentum=tw.ema_momentum,
        loss=LossSettings(
            kind=tw.loss,
            lambda_id=tw.lambda_id,
            lambda_tri=tw.lambda_tri,
            label_smoothing=tw.label_smoothing,
            use_triplet=tw.use_triplet,
        ),
        lr=tw.lr,
        weight_decay=tw.weight_decay,
        batch_size=tw.batch_size,
        pretrain_epochs=tw.pretrain_epochs,
        pretrain_lr=tw.pretrain_lr,
        torch_threads=spec.resources.torch_threads,
    )
