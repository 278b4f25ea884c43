"""The ``transfer:`` section of recipe ``transfer`` (online transfer with similarity-weighted gradient mixing).

Source data (the meta-model's clean domain) is the spec's ``data.generator``; the new scene is the same
generator seen through ``stream.shift``. Everything else about online transfer lives here, one
sub-section per stage::

    transfer:
      pretrain:     {epochs: 6, batch_size: 32, optimizer: adam, lr: 0.003}       # the meta-model
      stream:       {sessions: 4, clips_per_session: 100, shift: {blur_sigma: 1.0, contrast: 0.5, noise_std: 0.1}}
      verification: {conf_threshold: 0.5, background: false, background_digits: [8, 9]}
      mixing:       {mode: simmix, w_min: 0.1, w_max: 0.9, granularity: global}
      bank:         {size: 500, policy: gss, per_class_quota: true, update: true}
      training:     {epochs: 5, batch_size: 16, history_batch_size: null, optimizer: adam, lr: 0.001}

The trainer actor receives this object as is; small methods derive what its pieces take
(``local_train`` settings, the bank's label space). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fedtwin.pipelines.core.checks import check
from fedtwin.pipelines.data.moving_digits import NUM_DIGIT_CLASSES, ShiftConfig
from fedtwin.pipelines.model.settings import TrainSettings


@dataclass(frozen=True)
class PretrainConfig:
    """Training of the meta-model on the clean source train split (once, before the sessions)."""

    epochs: int = 6
    batch_size: int = 32
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 3e-3

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"epochs: must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size: must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")

    def train_settings(self) -> TrainSettings:
        """The ``local_train`` settings of the meta-model."""
        return TrainSettings(epochs=self.epochs, batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr)


@dataclass(frozen=True)
class StreamConfig:
    """The new scene: shifted clips arriving in sessions.

    The stream is the train split of the shifted domain, generated with seed ``data.seed +
    data_seed_offset`` (other clips than the source ones) and just large enough for every session;
    new-scene accuracy is measured on that domain's test split (``test_per_class`` clips per class,
    default ``data.generator.test_per_class``).
    """

    sessions: int = 4
    clips_per_session: int = 100
    shift: ShiftConfig = field(default_factory=ShiftConfig)
    data_seed_offset: int = 1
    test_per_class: int | None = None

    def __post_init__(self) -> None:
        check(self.sessions >= 1, f"sessions: must be >= 1, got {self.sessions}")
        check(self.clips_per_session >= 1, f"clips_per_session: must be >= 1, got {self.clips_per_session}")
        check(self.data_seed_offset >= 0, f"data_seed_offset: must be >= 0, got {self.data_seed_offset}")
        check(
            self.test_per_class is None or self.test_per_class >= 1,
            f"test_per_class: must be >= 1 or null, got {self.test_per_class}",
        )


@dataclass(frozen=True)
class VerificationConfig:
    """Simulated user verification of the model's predictions on each session's clips.

    With ``background`` on, the digits in ``background_digits`` play "other objects": they
    share one extra "other" class (in source and new scene alike), a confident prediction of a real
    class on them is a false positive that becomes a hard negative, and the remaining digits are the
    classes of interest.
    """

    conf_threshold: float = 0.5
    background: bool = False
    background_digits: tuple[int, ...] = (8, 9)
    keep_true_negatives: bool = False

    def __post_init__(self) -> None:
        check(0.0 <= self.conf_threshold <= 1.0, f"conf_threshold: must be in [0, 1], got {self.conf_threshold}")
        digits = self.background_digits
        check(
            all(0 <= d < NUM_DIGIT_CLASSES for d in digits) and len(set(digits)) == len(digits),
            f"background_digits: must be distinct digits in 0..9, got {list(digits)}",
        )
        check(
            not self.background or 1 <= len(digits) < NUM_DIGIT_CLASSES - 1,
            f"background_digits: with background on, name 1 to 8 digits, got {list(digits)}",
        )

    @property
    def other_digits(self) -> tuple[int, ...] | None:
        """The digits that share the "other" class, or ``None`` without one (``background`` off)."""
        return self.background_digits if self.background else None


@dataclass(frozen=True)
class MixingConfig:
    """How history and transfer gradients combine (``fedtwin.pipelines.transfer.gradient_mixing.GradientMixer``).

    ``mode``: ``simmix`` (similarity weights + A-GEM safeguard), ``finetune`` (new gradient only),
    ``replay`` (fixed ``replay_weight``), ``agem`` (new gradient, projected). ``project: null`` keeps the
    mode's own safeguard setting.
    """

    mode: Literal["simmix", "finetune", "replay", "agem"] = "simmix"
    w_min: float = 0.1
    w_max: float = 0.9
    granularity: Literal["global", "layer"] = "global"
    replay_weight: float = 0.5
    project: bool | None = None

    def __post_init__(self) -> None:
        check(
            0.0 <= self.w_min <= self.w_max <= 1.0,
            f"w_min: need 0 <= w_min <= w_max <= 1, got w_min={self.w_min}, w_max={self.w_max}",
        )
        check(0.0 <= self.replay_weight <= 1.0, f"replay_weight: must be in [0, 1], got {self.replay_weight}")


@dataclass(frozen=True)
class BankConfig:
    """The history sample bank (``fedtwin.pipelines.transfer.history_bank.HistoryBank``).

    It starts from ``source_clips`` clips of the source train split (all of them when null) offered in
    order under ``policy``; with ``update`` on, each session's verified transfer samples are offered too
    after the session, under the same policy (they are not force-kept).
    """

    size: int = 500
    policy: Literal["gss", "reservoir"] = "gss"
    per_class_quota: bool = True
    n_compare: int = 32
    update: bool = True
    source_clips: int | None = None

    def __post_init__(self) -> None:
        check(self.size >= 1, f"size: must be >= 1, got {self.size}")
        check(self.n_compare >= 1, f"n_compare: must be >= 1, got {self.n_compare}")
        check(
            self.source_clips is None or self.source_clips >= 1,
            f"source_clips: must be >= 1 or null, got {self.source_clips}",
        )


@dataclass(frozen=True)
class SessionTrainingConfig:
    """Training within one session: ``epochs`` passes over its transfer samples, each batch paired with
    a history batch of ``history_batch_size`` clips (null: the same as ``batch_size``).

    Optimizer state carries over from session to session (one continuous online optimisation).
    """

    epochs: int = 5
    batch_size: int = 16
    history_batch_size: int | None = None
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check(self.epochs >= 1, f"epochs: must be >= 1, got {self.epochs}")
        check(self.batch_size >= 1, f"batch_size: must be >= 1, got {self.batch_size}")
        check(
            self.history_batch_size is None or self.history_batch_size >= 1,
            f"history_batch_size: must be >= 1 or null, got {self.history_batch_size}",
        )
        check(self.lr > 0, f"lr: must be > 0, got {self.lr}")
        check(0 <= self.momentum < 1, f"momentum: must be in [0, 1), got {self.momentum}")
        check(self.weight_decay >= 0, f"weight_decay: must be >= 0, got {self.weight_decay}")

    @property
    def history_batch(self) -> int:
        """History clips paired with each transfer batch."""
        return self.history_batch_size or self.batch_size

    def train_settings(self) -> TrainSettings:
        """The ``local_train`` settings of one session."""
        return TrainSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )


@dataclass(frozen=True)
class TransferConfig:
    """Online transfer of a meta-model to a new scene (``docs/transfer.md`` has the math)."""

    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    training: SessionTrainingConfig = field(default_factory=SessionTrainingConfig)
    session_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        check(self.session_timeout_s > 0, f"session_timeout_s: must be > 0, got {self.session_timeout_s}")
        check(
            not self.bank.per_class_quota or self.bank.size >= self.num_classes,
            f"bank.size: must be >= the {self.num_classes} classes with per_class_quota on, got {self.bank.size}",
        )

    @property
    def num_classes(self) -> int:
        """Size of the label space: the ten digits, or the digits of interest plus one "other" class."""
        v = self.verification
        return NUM_DIGIT_CLASSES - len(v.background_digits) + 1 if v.background else NUM_DIGIT_CLASSES
