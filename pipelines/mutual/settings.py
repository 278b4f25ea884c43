"""The ``twin:`` section of recipe ``mutual``, one frozen dataclass per concern; the twins receive it as is.

::

    twin:
      networks: 2                  # 1 = the single-network self-training baseline
      label_mode: shared           # shared (MMT) | cross (each twin labelled by its peer's EMA)
      pretrain:   {epochs: 6, lr: 0.003, batch_size: 32, optimizer: adam}
      adaptation: {epochs: 10, lr: 0.001, weight_decay: 0.0005, batch_size: 32, optimizer: adam,
                   dropout: 0.0, q_min: 0.0}
      views:      {a: temporal_crop, a_params: {}, b: photometric, b_params: {flip_p: 0.0}}
      clustering: {method: kmeans, num_clusters: 10, ...}
      loss:       {kind: mmt, lambda_id: 0.5, lambda_tri: 0.8, label_smoothing: 0.1, use_triplet: true}
      ema:        {unit: iter, momentum: 0.999}
      final:      {mode: select, finetune_epochs: 2}
      target:     {shift: {...}, seed: null}

Defaults follow Mutual Mean-Teaching (Ge et al., ICLR 2020: MMT loss, shared labels, per-iteration EMA
with alpha 0.999) except where a field's doc says why not. Every value lives here once: the driver,
the twin actors and the clustering task read these objects, with small methods for derived values.
This module imports neither torch nor Ray, so loading a spec stays cheap.

Keys of the flat section of fedtwin 0.2 (``twin.lr``, ``twin.ema_unit``, ...) still load, with a
warning naming the new key (``LEGACY_KEYS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from fedtwin.pipelines.core.checks import check
from fedtwin.pipelines.data.moving_digits import ShiftConfig
from fedtwin.pipelines.model.settings import TrainSettings

#: Registered twin views (``fedtwin.pipelines.mutual.augment`` builds them; it checks it has exactly these).
AUGMENTATION_NAMES = ("temporal_crop", "photometric", "none")
LossKind = Literal["hard", "mmt"]


@dataclass(frozen=True)
class PretrainSettings:
    """Supervised pre-training of each twin on the clean source split (each twin from its own seed).

    ``candidates`` (networks: 1 only): pre-train this many networks exactly as twins a and b are
    pre-trained and keep the one with the lower pre-training loss (the twins' rule), so a single-network
    baseline gets the same pre-training luck as the twins; 1 pre-trains twin a's network only.
    """

    epochs: int = 6
    lr: float = 3e-3
    batch_size: int = 32
    optimizer: Literal["sgd", "adam"] = "adam"
    candidates: int = 1

    def __post_init__(self) -> None:
        check(self.candidates in (1, 2), f"candidates: must be 1 or 2, got {self.candidates}")
        check(self.epochs >= 0, f"epochs: must be >= 0, got {self.epochs}")
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(self.batch_size >= 1, f"batch_size: must be >= 1, got {self.batch_size}")

    def train_settings(self) -> TrainSettings:
        """The ``local_train`` settings of pre-training."""
        return TrainSettings(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer)


@dataclass(frozen=True)
class AdaptationSettings:
    """Adaptation on the pseudo-labels: ``epochs`` cycles of clustering, then one pass of training.

    Attributes:
        epochs: adaptation epochs (steps of the run after the pre-training step 0).
        lr: learning rate. 1e-3, the value the study in ``docs/results/mutual.md`` ran with (MMT's
            3.5e-4 is for an ImageNet-initialised ResNet and was not measured here).
        weight_decay: L2 weight decay (MMT: 5e-4).
        batch_size: clips per step.
        optimizer: ``adam`` (MMT) or ``sgd``.
        dropout: dropout on the embedding before the head (0.5 decouples the twins more).
        q_min: quality filter on the unlabelled clips: keep scores above it (0 keeps all non-flat clips).
        labels: ``pseudo`` (the clustering's ids) or ``oracle``: the hidden target labels replace the
            pseudo-labels, the supervised upper bound of a study (same model, budget and views).
    """

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int = 32
    optimizer: Literal["sgd", "adam"] = "adam"
    dropout: float = 0.0
    q_min: float = 0.0
    labels: Literal["pseudo", "oracle"] = "pseudo"

    def __post_init__(self) -> None:
        check(self.labels in ("pseudo", "oracle"), f"labels: must be 'pseudo' or 'oracle', got {self.labels!r}")
        check(self.epochs >= 1, f"epochs: must be >= 1, got {self.epochs}")
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, f"weight_decay: must be >= 0, got {self.weight_decay}")
        check(self.batch_size >= 1, f"batch_size: must be >= 1, got {self.batch_size}")
        check(0.0 <= self.dropout < 1.0, f"dropout: must be in [0, 1), got {self.dropout}")
        check(0.0 <= self.q_min < 1.0, f"q_min: must be in [0, 1), got {self.q_min}")

    def train_settings(self, epochs: int) -> TrainSettings:
        """The ``local_train`` settings of ``epochs`` passes on pseudo-labels (one per adaptation epoch;
        the fused model's fine-tuning uses ``final.finetune_epochs``)."""
        return TrainSettings(
            epochs=epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
        )


@dataclass(frozen=True)
class ViewSettings:
    """Each twin's own augmentation (its "view"): a name in ``AUGMENTATION_NAMES`` and its arguments.

    Twin B's photometric view does not mirror (``flip_p: 0``): a mirrored digit is not a digit.
    """

    a: str = "temporal_crop"
    a_params: dict[str, Any] = field(default_factory=dict)
    b: str = "photometric"
    b_params: dict[str, Any] = field(default_factory=lambda: {"flip_p": 0.0})

    def __post_init__(self) -> None:
        for name in ("a", "b"):
            value = getattr(self, name)
            check(value in AUGMENTATION_NAMES, f"{name}: must be one of {sorted(AUGMENTATION_NAMES)}, got {value!r}")

    def name(self, index: int) -> str:
        """Augmentation name of twin ``index`` (0 = a, 1 = b)."""
        return self.a if index == 0 else self.b

    def params(self, index: int) -> Mapping[str, Any]:
        """Arguments of twin ``index``'s augmentation."""
        return self.a_params if index == 0 else self.b_params


@dataclass(frozen=True)
class ClusterSettings:
    """How one epoch's features become cluster ids (``twin.clustering``).

    Attributes:
        method: ``"kmeans"`` (cosine k-means) or ``"dbscan"`` (unknown K; outliers get -1).
        num_clusters: K for k-means; ``None`` estimates it once by silhouette over ``k_candidates``.
        k_candidates: the K values tried when ``num_clusters`` is ``None``.
        n_init: k-means++ restarts.
        dbscan_metric: ``"jaccard"`` (k-reciprocal) or ``"cosine"``.
        dbscan_rho: DBSCAN eps = mean of the smallest ``rho`` fraction of pairwise distances (fixed at
            the first epoch).
        dbscan_min_samples: DBSCAN core-point threshold.
        shared_features: how shared mode combines the twins' features: ``"concat"`` or MMT's ``"mean"``.
    """

    method: Literal["kmeans", "dbscan"] = "kmeans"
    num_clusters: int | None = 10
    k_candidates: tuple[int, ...] = (6, 8, 10, 12, 14)
    n_init: int = 3
    dbscan_metric: Literal["jaccard", "cosine"] = "jaccard"
    dbscan_rho: float = 1.6e-3
    dbscan_min_samples: int = 4
    shared_features: Literal["concat", "mean"] = "concat"

    def __post_init__(self) -> None:
        check(
            self.num_clusters is None or self.num_clusters >= 2,
            f"num_clusters: must be >= 2 or null (estimate), got {self.num_clusters}",
        )
        check(
            len(self.k_candidates) > 0 and min(self.k_candidates) >= 2,
            f"k_candidates: must be a non-empty list of K >= 2, got {list(self.k_candidates)}",
        )
        check(self.n_init >= 1, f"n_init: must be >= 1, got {self.n_init}")
        check(0.0 < self.dbscan_rho <= 1.0, f"dbscan_rho: must be in (0, 1], got {self.dbscan_rho}")
        check(self.dbscan_min_samples >= 1, f"dbscan_min_samples: must be >= 1, got {self.dbscan_min_samples}")


@dataclass(frozen=True)
class LossSettings:
    """Which loss a twin minimises (``twin.loss``).

    Attributes:
        kind: ``"hard"`` (plain CE on the pseudo-labels) or ``"mmt"``.
        lambda_id: MMT weight of the soft CE against the label-smoothed CE.
        lambda_tri: MMT weight of the soft triplet against the hard triplet.
        label_smoothing: MMT's epsilon in the hard CE.
        use_triplet: include MMT's two triplet terms.
        unit_triplet: feed the triplet terms L2-normalised embeddings (own and peer). Our pooled ReLU
            embeddings are unnormalised (norms near 20 on moving digits); on them the triplet softmax
            saturates and the nets raise the feature scale instead of separating clusters.
        teacher: whose EMA gives the MMT soft targets: ``peer`` (MMT) or ``self`` (each network's own
            mean model: MMT without the mutual part; the only MMT choice with networks: 1).
    """

    kind: LossKind = "mmt"
    lambda_id: float = 0.5
    lambda_tri: float = 0.8
    label_smoothing: float = 0.1
    use_triplet: bool = True
    unit_triplet: bool = True
    teacher: Literal["peer", "self"] = "peer"

    def __post_init__(self) -> None:
        check(self.teacher in ("peer", "self"), f"teacher: must be 'peer' or 'self', got {self.teacher!r}")
        for name in ("lambda_id", "lambda_tri"):
            value = getattr(self, name)
            check(0.0 <= value <= 1.0, f"{name}: must be in [0, 1], got {value}")
        check(0.0 <= self.label_smoothing < 1.0, f"label_smoothing: must be in [0, 1), got {self.label_smoothing}")

    @property
    def needs_peer(self) -> bool:
        """Whether the loss reads the peer EMA's outputs."""
        return self.kind == "mmt" and (self.lambda_id > 0 or (self.use_triplet and self.lambda_tri > 0))


@dataclass(frozen=True)
class EmaSettings:
    """The temporal mean model (``twin.ema``).

    Attributes:
        unit: ``iter`` (MMT: after every step, alpha with warm-up) or ``epoch`` (lambda once per epoch).
        momentum: alpha (``iter``) or lambda (``epoch``).
    """

    unit: Literal["iter", "epoch"] = "iter"
    momentum: float = 0.999

    def __post_init__(self) -> None:
        check(self.unit in ("iter", "epoch"), f"unit: must be 'iter' or 'epoch', got {self.unit!r}")
        check(0.0 <= self.momentum <= 1.0, f"momentum: must be in [0, 1], got {self.momentum}")


@dataclass(frozen=True)
class FinalSettings:
    """The end of training: ``select`` the lower-loss EMA model, or ``fuse`` both by convergence and
    fine-tune ``finetune_epochs`` on the last pseudo-labels."""

    mode: Literal["select", "fuse"] = "select"
    finetune_epochs: int = 2

    def __post_init__(self) -> None:
        check(self.finetune_epochs >= 0, f"finetune_epochs: must be >= 0, got {self.finetune_epochs}")


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
        check(self.seed is None or self.seed >= 0, f"seed: must be >= 0 or null, got {self.seed}")
        for name in ("train_per_class", "test_per_class"):
            value = getattr(self, name)
            check(value is None or value >= 1, f"{name}: must be >= 1 or null, got {value}")


@dataclass(frozen=True)
class TwinConfig:
    """Twin co-training with mutual pseudo-labels: the ``twin:`` section (see the module docstring).

    Attributes:
        networks: 2 twins, or 1 for the single-network self-training baseline (labels from itself).
        label_mode: ``cross`` (each twin labelled by its peer's EMA) or ``shared`` (MMT).
        pretrain: supervised pre-training on the source.
        adaptation: training on the pseudo-labels.
        views: each twin's augmentation.
        clustering: the clusterer that makes the pseudo-labels.
        loss: hard CE or MMT's loss.
        ema: the temporal mean model.
        final: select or fuse at the end.
        target: the shifted domain.
        timeout_s: longest wait for one twin call or clustering task before the run fails.
    """

    networks: int = 2
    label_mode: Literal["cross", "shared"] = "shared"
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    adaptation: AdaptationSettings = field(default_factory=AdaptationSettings)
    views: ViewSettings = field(default_factory=ViewSettings)
    clustering: ClusterSettings = field(default_factory=ClusterSettings)
    loss: LossSettings = field(default_factory=LossSettings)
    ema: EmaSettings = field(default_factory=EmaSettings)
    final: FinalSettings = field(default_factory=FinalSettings)
    target: TargetDomainConfig = field(default_factory=TargetDomainConfig)
    timeout_s: float = 1800.0

    #: Flat keys of fedtwin 0.2 -> their grouped keys (a flat key that is now a group's name moves to
    #: the first target only when its value is not a mapping); they load with a warning.
    LEGACY_KEYS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "pretrain_epochs": ("pretrain.epochs",),
        "pretrain_lr": ("pretrain.lr",),
        "epochs": ("adaptation.epochs",),
        "lr": ("adaptation.lr",),
        "weight_decay": ("adaptation.weight_decay",),
        "batch_size": ("adaptation.batch_size", "pretrain.batch_size"),
        "dropout": ("adaptation.dropout",),
        "q_min": ("adaptation.q_min",),
        "ema_unit": ("ema.unit",),
        "ema_momentum": ("ema.momentum",),
        "loss": ("loss.kind",),
        "lambda_id": ("loss.lambda_id",),
        "lambda_tri": ("loss.lambda_tri",),
        "label_smoothing": ("loss.label_smoothing",),
        "use_triplet": ("loss.use_triplet",),
        "clustering": ("clustering.method",),
        "num_clusters": ("clustering.num_clusters",),
        "k_candidates": ("clustering.k_candidates",),
        "dbscan_metric": ("clustering.dbscan_metric",),
        "dbscan_rho": ("clustering.dbscan_rho",),
        "dbscan_min_samples": ("clustering.dbscan_min_samples",),
        "shared_features": ("clustering.shared_features",),
        "augment_a": ("views.a",),
        "augment_a_params": ("views.a_params",),
        "augment_b": ("views.b",),
        "augment_b_params": ("views.b_params",),
        "final": ("final.mode",),
        "finetune_epochs": ("final.finetune_epochs",),
    }

    def __post_init__(self) -> None:
        check(self.networks in (1, 2), f"networks: must be 1 or 2, got {self.networks}")
        check(self.timeout_s > 0, f"timeout_s: must be > 0, got {self.timeout_s}")
        check(
            not (self.networks == 1 and self.loss.kind == "mmt" and self.loss.teacher == "peer"),
            "loss.kind: 'mmt' needs a peer; with networks: 1 use loss.kind: hard or loss.teacher: self",
        )
        check(
            self.networks == 1 or self.pretrain.candidates == 1,
            "pretrain.candidates: only for networks: 1 (twins pre-train one network each); set it to 1",
        )
        check(not (self.final.mode == "fuse" and self.networks == 1), "final.mode: 'fuse' needs networks: 2")

    @property
    def pretrained_networks(self) -> int:
        """Networks pre-trained at step 0: the twins, or ``pretrain.candidates`` for networks: 1."""
        return self.networks if self.networks == 2 else self.pretrain.candidates

    @property
    def effective_label_mode(self) -> Literal["cross", "shared", "self"]:
        """``label_mode``, or ``self`` for the single-network baseline (it labels itself)."""
        return "self" if self.networks == 1 else self.label_mode
