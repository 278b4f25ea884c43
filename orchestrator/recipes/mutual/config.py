"""The ``twin`` section of an experiment spec: settings of recipe ``mutual`` (twin co-training, MMT-style).

The source domain is ``data.generator`` (clean moving digits, ``data.seed``); the target domain is the
same generator seen through ``twin.target.shift`` with its own clips (``twin.target.seed``). Defaults
follow Mutual Mean-Teaching (Ge et al., ICLR 2020: MMT loss, shared labels, per-iteration EMA with
alpha 0.999) except where the doc string of a field says why not; ``docs/mutual.md`` has the math.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fedtwin.pipelines.data.moving_digits import ShiftConfig


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


@dataclass(frozen=True)
class TargetDomainConfig:
    """The unlabelled shifted domain the twins adapt to (its labels are only used for metrics).

    Attributes:
        shift: blur, contrast and noise of the target camera.
        seed: data seed of the target clips; ``None`` uses ``data.seed + 1`` (other clips than the source).
        train_per_class: unlabelled clips per class; ``None`` keeps ``data.generator.train_per_class``.
        test_per_class: held-out target clips per class for the final score; ``None`` keeps the source's.
        class_motion: direction of travel depends on the class in the target (a motion shift).
    """

    shift: ShiftConfig = field(default_factory=ShiftConfig)
    seed: int | None = None
    train_per_class: int | None = None
    test_per_class: int | None = None
    class_motion: bool = False

    def __post_init__(self) -> None:
        _check(self.seed is None or self.seed >= 0, f"seed: must be >= 0 or null, got {self.seed}")
        for name in ("train_per_class", "test_per_class"):
            value = getattr(self, name)
            _check(value is None or value >= 1, f"{name}: must be >= 1 or null, got {value}")


@dataclass(frozen=True)
class TwinConfig:
    """Twin co-training with mutual pseudo-labels.

    Attributes:
        networks: 2 twins, or 1 for the single-network self-training baseline (labels from itself).
        pretrain_epochs: supervised epochs on the clean source split (each twin its own seed).
        pretrain_lr: learning rate of pre-training.
        epochs: adaptation epochs (cluster, then train one pass on the pseudo-labels).
        lr: adaptation learning rate (Adam).
        weight_decay: adaptation weight decay (MMT: 5e-4).
        batch_size: clips per step.
        ema_unit: ``iter`` (MMT: after every step, alpha with warm-up) or ``epoch`` (the per-cycle variant: lambda once per epoch).
        ema_momentum: alpha (``iter``) or lambda (``epoch``); the Tune sweep's ``twin.ema_momentum``.
        label_mode: ``cross`` (each twin labelled by its peer's EMA) or ``shared`` (MMT).
        loss: ``hard`` (CE on the pseudo-labels) or ``mmt`` (soft CE + triplets from the peer EMA).
        lambda_id: MMT weight of the soft CE.
        lambda_tri: MMT weight of the soft triplet.
        label_smoothing: MMT's epsilon in the hard CE.
        use_triplet: MMT triplet terms on or off.
        clustering: ``kmeans`` (cosine) or ``dbscan``.
        num_clusters: K for k-means; ``null`` estimates it once by silhouette over ``k_candidates``.
        k_candidates: K values tried by the estimate.
        dbscan_metric: ``jaccard`` (k-reciprocal) or ``cosine``.
        dbscan_rho: DBSCAN eps = mean of the smallest ``rho`` fraction of pairwise distances (epoch 1).
        dbscan_min_samples: DBSCAN core-point threshold.
        shared_features: how shared mode combines the twins' features (``concat`` or MMT's ``mean``).
        dropout: dropout on the embedding before the head (0.5 decouples the twins more).
        augment_a: twin A's view (a name in ``fedtwin.pipelines.mutual.augment.AUGMENTATIONS``); ``augment_a_params``
            its arguments.
        augment_b: twin B's view; ``augment_b_params`` its arguments (mirroring is off: a mirrored
            digit is not a digit).
        q_min: quality filter on the unlabelled clips: keep scores above it (0 keeps all non-flat clips).
        final: ``select`` the lower-loss EMA model, or ``fuse`` both by convergence and fine-tune.
        finetune_epochs: fine-tuning epochs after ``fuse``.
        target: the shifted domain.
        timeout_s: longest wait for one twin call or clustering task before the run fails.
    """

    networks: int = 2
    pretrain_epochs: int = 6
    pretrain_lr: float = 3e-3
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 32
    ema_unit: Literal["iter", "epoch"] = "iter"
    ema_momentum: float = 0.999
    label_mode: Literal["cross", "shared"] = "shared"
    loss: Literal["hard", "mmt"] = "mmt"
    lambda_id: float = 0.5
    lambda_tri: float = 0.8
    label_smoothing: float = 0.1
    use_triplet: bool = True
    clustering: Literal["kmeans", "dbscan"] = "kmeans"
    num_clusters: int | None = 10
    k_candidates: tuple[int, ...] = (6, 8, 10, 12, 14)
    dbscan_metric: Literal["jaccard", "cosine"] = "jaccard"
    dbscan_rho: float = 1.6e-3
    dbscan_min_samples: int = 4
    shared_features: Literal["concat", "mean"] = "concat"
    dropout: float = 0.0
    augment_a: str = "temporal_crop"
    augment_a_params: dict[str, Any] = field(default_factory=dict)
    augment_b: str = "photometric"
    augment_b_params: dict[str, Any] = field(default_factory=lambda: {"flip_p": 0.0})
    q_min: float = 0.0
    final: Literal["select", "fuse"] = "select"
    finetune_epochs: int = 2
    target: TargetDomainConfig = field(default_factory=TargetDomainConfig)
    timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        from fedtwin.pipelines.mutual.augment import AUGMENTATIONS

        _check(self.networks in (1, 2), f"networks: must be 1 or 2, got {self.networks}")
        for name in ("pretrain_epochs", "finetune_epochs"):
            _check(getattr(self, name) >= 0, f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("epochs", "batch_size", "dbscan_min_samples"):
            _check(getattr(self, name) >= 1, f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "pretrain_lr"):
            _check(getattr(self, name) > 0, f"{name}: must be > 0, got {getattr(self, name)}")
        _check(self.timeout_s > 0, f"timeout_s: must be > 0, got {self.timeout_s}")
        _check(self.weight_decay >= 0, f"weight_decay: must be >= 0, got {self.weight_decay}")
        for name in ("ema_momentum", "lambda_id", "lambda_tri"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"{name}: must be in [0, 1], got {value}")
        _check(0.0 <= self.label_smoothing < 1.0, f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        _check(0.0 <= self.dropout < 1.0, f"dropout: must be in [0, 1), got {self.dropout}")
        _check(
            self.num_clusters is None or self.num_clusters >= 2,
            f"num_clusters: must be >= 2 or null (estimate), got {self.num_clusters}",
        )
        _check(
            len(self.k_candidates) > 0 and min(self.k_candidates) >= 2,
            f"k_candidates: must be a non-empty list of K >= 2, got {list(self.k_candidates)}",
        )
        _check(0.0 < self.dbscan_rho <= 1.0, f"dbscan_rho: must be in (0, 1], got {self.dbscan_rho}")
        _check(0.0 <= self.q_min < 1.0, f"q_min: must be in [0, 1), got {self.q_min}")
        for name in ("augment_a", "augment_b"):
            value = getattr(self, name)
            _check(value in AUGMENTATIONS, f"{name}: must be one of {sorted(AUGMENTATIONS)}, got {value!r}")
        _check(
            not (self.networks == 1 and self.loss == "mmt"), "loss: 'mmt' needs a peer; with networks: 1 use loss: hard"
        )
        _check(not (self.final == "fuse" and self.networks == 1), "final: 'fuse' needs networks: 2")

    def augment_params(self, index: int) -> Mapping[str, Any]:
        """Arguments of twin ``index``'s augmentation."""
        return self.augment_a_params if index == 0 else self.augment_b_params

    def augment_name(self, index: int) -> str:
        """Augmentation name of twin ``index``."""
        return self.augment_a if index == 0 else self.augment_b
