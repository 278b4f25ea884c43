"""The settings of one :func:`fedtwin.pipelines.model.training.local_train` call, as one validated value.

Every caller (a device's local epochs, the FedDU server pass, a twin's epoch, an incremental task, a
transfer session) builds a :class:`TrainSettings` from its own configuration; the federated round sends
it to the devices inside each ``FitTask``. Strategies that change the round's settings (FedDUM's device
momentum, FedProx's proximal term, SCAFFOLD's control variates) return a changed copy with
``dataclasses.replace``, which validates again.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Literal

#: Optimizers ``local_train`` can build.
OPTIMIZERS = ("sgd", "adam")
#: Where a federated device's optimizer buffers start each round (see ``TrainSettings.optimizer_start``).
OPTIMIZER_STARTS = ("fresh", "local", "global")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one training call.

    Attributes:
        epochs: passes over the data (>= 1).
        batch_size: examples per optimizer step (>= 1); an epoch's last batch may be smaller.
        lr: learning rate (> 0).
        optimizer: ``"sgd"`` or ``"adam"``; each call builds a fresh optimizer.
        momentum: SGD momentum in ``[0, 1)`` (Adam ignores it).
        weight_decay: L2 penalty passed to the optimizer (>= 0).
        max_steps: stop after this many optimizer steps even if epochs remain (``None``: no cap).
        optimizer_start: where a federated device's optimizer buffers start each round: ``"fresh"``
            (empty), ``"local"`` (the device's own buffers from the last round it trained, FedDUM) or
            ``"global"`` (the strategy's broadcast buffer, FedDUM's global variant). ``local_train``
            itself ignores it: its caller resolves the mode into the ``optimizer_state`` it passes.
        prox_mu: FedProx's proximal coefficient: every step adds ``prox_mu * (w - w_start)`` to the
            gradient, ``w_start`` being the weights the call started from (0: no term; >= 0).
        control_variates: SCAFFOLD: the device corrects each gradient with control variates and keeps
            its own between rounds. ``local_train`` itself ignores it: its caller turns it into the
            ``grad_correction`` it passes and asks for the mean gradient back.
    """

    epochs: int
    batch_size: int
    lr: float
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    max_steps: int | None = None
    optimizer_start: Literal["fresh", "local", "global"] = "fresh"
    prox_mu: float = 0.0
    control_variates: bool = False

    def __post_init__(self) -> None:
        checks = (
            (_is_int(self.epochs) and self.epochs >= 1, "epochs", "must be an integer >= 1"),
            (_is_int(self.batch_size) and self.batch_size >= 1, "batch_size", "must be an integer >= 1"),
            (isinstance(self.lr, numbers.Real) and self.lr > 0, "lr", "must be > 0"),
            (self.optimizer in OPTIMIZERS, "optimizer", f"is unknown; use one of {', '.join(OPTIMIZERS)}"),
            (isinstance(self.momentum, numbers.Real) and 0 <= self.momentum < 1, "momentum", "must be in [0, 1)"),
            (isinstance(self.weight_decay, numbers.Real) and self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (isinstance(self.prox_mu, numbers.Real) and self.prox_mu >= 0, "prox_mu", "must be >= 0"),
            (isinstance(self.control_variates, bool), "control_variates", "must be true or false"),
            (
                self.max_steps is None or (_is_int(self.max_steps) and self.max_steps >= 0),
                "max_steps",
                "must be an integer >= 0 or None",
            ),
            (
                self.optimizer_start in OPTIMIZER_STARTS,
                "optimizer_start",
                f"is unknown; use one of {', '.join(OPTIMIZER_STARTS)}",
            ),
        )
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"TrainSettings.{name}={getattr(self, name)!r} {rule}")
