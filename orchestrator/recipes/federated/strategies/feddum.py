"""FedDUM (from FedDUMAP, ACM TIST 2024): FedDU with decoupled server and device momentum.

Each round FedDU proposes ``w_t^FedDU`` (FedAvg, then the dynamic server update on D0, see
:mod:`fedtwin.orchestrator.recipes.federated.strategies.feddu`); FedDUM then puts EMA **server momentum** on
the global update and guards the *final* update::

    Delta_t = w_t^FedDU - w_{t-1}
    m_t     = beta_s m_{t-1} + (1 - beta_s) Delta_t            m_{-1} = 0, beta_s = 0.3
    w_t     = w_{t-1} + m_t / (1 - beta_s^k)                   k = updates kept so far (Adam's bias correction)
    revert to w_half (and keep m_{t-1}) when the D0 loss of w_t is not finite or > revert_factor x loss(w_half)

**Device momentum** ``beta_d`` is SGD momentum of local training in EMA form (``v <- beta_d v +
(1 - beta_d) g``, ``v_0 = 0``; run as PyTorch SGD with the lr scaled by ``1 - beta_d``), so it smooths
the local steps without making them ``1/(1 - beta_d)`` times larger. By default it starts from zero
every round (``device_momentum_init: fresh``); ``local`` keeps each device's buffer on its host between
the rounds it trains (also while it sits idle), ``global`` broadcasts one server-averaged buffer (the
reference code's variant). The server pass is plain SGD unless ``server_sgd_momentum`` asks otherwise,
so ``tau_eff`` describes its step.
Docs: ``docs/feddu.md``, section FedDUM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import numpy as np

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.recipes.federated.strategies.base import AggregatedFit
from fedtwin.orchestrator.recipes.federated.strategies.context import StrategyContext
from fedtwin.orchestrator.recipes.federated.strategies.feddu import FedDU, FedDUParams
from fedtwin.orchestrator.recipes.federated.strategies.state_ops import (
    ema_momentum_step,
    interpolate,
    load_prefixed,
    prefixed,
    state_norm,
)
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import ModelState

#: Checkpoint key of the number of server-momentum updates kept (the bias correction's k).
UPDATES_KEY = "server_momentum_updates"


@dataclass(frozen=True)
class FedDUMParams(FedDUParams):
    """FedDU's parameters plus FedDUM's (``strategy.params`` of ``strategy.name: feddum``).

    ``server_sgd_momentum`` differs from FedDU: ``null`` means a plain SGD server pass (momentum 0),
    not the devices' momentum.

    Attributes:
        momentum: beta_s, the server (global) momentum in EMA form (the Tune sweep's name); 0 = FedDU's
            update with FedDUM's devices and guard. The EMA averages about ``1/(1 - beta_s)`` rounds of
            updates (1.4 at the default 0.3, chosen on held-out seeds: docs/results/feddum_momentum.md):
            0.9 lags by about 10 rounds, too many for runs of tens of rounds (below FedAvg on the
            quickstart workload), but may suit runs of hundreds.
        momentum_init: how the first rounds are treated: ``debiased`` (m_{-1} = 0 and the update divided
            by ``1 - beta_s^k``, like Adam's first moment: the first update is applied in full at once, so
            the start is not delayed; about 1.6 times in total at beta_s 0.5), ``zero`` (m_{-1} = 0
            without correction: every update is applied once in total, spread over about
            ``1/(1 - beta_s)`` rounds, so early progress lags), ``delta`` (m_0 = Delta_0 as in the
            FedDUMAP reference code: the first, most biased update is applied ``1/(1 - beta_s)`` times in
            total; kept for reproducing that code, not for use).
        device_momentum: beta_d, SGD momentum of local training (0 = the devices train with
            ``training.momentum``). Restarted every round (``fresh``), the average needs about
            ``1/(1 - beta_d)`` steps to build up, and the part still in the buffer at the round's end is
            dropped: a round of K steps moves about ``K - beta_d (1 - beta_d^K) / (1 - beta_d)`` gradient
            steps, 11 of 12 at the default 0.5 but 5.6 of 12 at 0.9. With ``training.optimizer: adam``
            beta_d does not apply: the device momentum is Adam's own moment estimates, restarted or kept
            as ``device_momentum_init`` says.
        device_momentum_form: ``ema`` (the lr scaled by ``1 - beta_d``: the step is lr times an average
            of the gradients started at zero, so the step size stays ``lr``; see :func:`momentum_settings`)
            or ``classic`` (PyTorch's momentum on the unchanged lr: the steady-state step is
            ``lr / (1 - beta_d)``, the old FedDUM behaviour). The server pass uses the same form when
            ``server_sgd_momentum`` > 0.
        device_momentum_init: where a device's buffer starts each round: ``fresh`` (zero; momentum acts
            within the round), ``local`` (the device's own buffer from the last round it trained, kept
            on its host while it sits idle and checkpointed) or ``global`` (the server-averaged buffer,
            interpolated towards the server pass's buffer by alpha_t when the pass has momentum).
    """

    momentum: float = 0.3
    momentum_init: Literal["debiased", "zero", "delta"] = "debiased"
    device_momentum: float = 0.5
    device_momentum_form: Literal["ema", "classic"] = "ema"
    device_momentum_init: Literal["fresh", "local", "global"] = "fresh"

    def __post_init__(self) -> None:
        super().__post_init__()
        for ok, name, rule in (
            (0 <= self.momentum < 1, "momentum", "must be in [0, 1)"),
            (0 <= self.device_momentum < 1, "device_momentum", "must be in [0, 1)"),
        ):
            if not ok:
                raise ValueError(f"{name}: {rule}, got {getattr(self, name)!r}")


class MomentumSettings(TypedDict):
    """The two ``TrainSettings`` fields :func:`momentum_settings` sets."""

    lr: float
    momentum: float


def momentum_settings(lr: float, beta: float, form: str) -> MomentumSettings:
    """``lr`` and ``momentum`` of PyTorch SGD for momentum ``beta`` in ``form``.

    ``ema`` scales the learning rate by ``1 - beta``: the step ``lr (1 - beta) v`` with ``v <- beta v + g``
    equals ``lr u`` with ``u <- beta u + (1 - beta) g``, an average of the gradients started at zero, so
    every gradient is applied at most once in total, as without momentum (exactly once if the buffer
    is not dropped). (PyTorch's own ``dampening`` would
    start the average at the first gradient, which is then applied about ``1/(1 - beta)`` times in
    total; that first gradient at a freshly broadcast model is the largest of the round.)
    ``classic`` is PyTorch's plain momentum on the unchanged lr: steady-state steps ``1/(1 - beta)`` larger.
    """
    if beta == 0:
        return {"lr": lr, "momentum": 0.0}
    return {"lr": lr * (1.0 - beta) if form == "ema" else lr, "momentum": beta}


class FedDUM(FedDU):
    """FedDU plus EMA server momentum under a guard on the final update, plus device momentum."""

    name = "feddum"
    Params = FedDUMParams

    def __init__(
        self, params: Any, *, num_devices: int, devices_per_round: int, context: StrategyContext | None = None
    ) -> None:
        super().__init__(params, num_devices=num_devices, devices_per_round=devices_per_round, context=context)
        self.server_velocity: ModelState = {}  # m_t (float64)
        self.device_velocity: ModelState = {}  # the global device buffer v_t ("global" variant)
        self.momentum_updates = 0  # k: server-momentum updates kept (reverted rounds do not count)

    # ------------------------------------------------------------------ configure
    @property
    def _global_device_momentum(self) -> bool:
        p = self.params
        return bool(p.device_momentum > 0 and p.device_momentum_init == "global")

    def device_settings(self, settings: TrainSettings) -> TrainSettings:
        """The round's ``training`` settings with FedDUM's device momentum (a changed copy)."""
        p = self.params
        if p.device_momentum == 0:
            return settings
        if settings.optimizer == "sgd":
            return dataclasses.replace(
                settings,
                **momentum_settings(settings.lr, p.device_momentum, p.device_momentum_form),
                optimizer_start=p.device_momentum_init,
            )
        if p.device_momentum_init == "global":
            raise ConfigError(
                "strategy.params.device_momentum_init: the global FedDUM variant averages SGD momentum "
                f"buffers but training.optimizer is {settings.optimizer!r}; use training.optimizer: sgd "
                "or device_momentum_init: fresh or local"
            )
        # Adam: its own moment estimates are the device momentum, restarted ("fresh") or kept ("local").
        return dataclasses.replace(settings, optimizer_start=p.device_momentum_init)

    def round_payload(self, round_num: int) -> dict[str, ModelState]:
        """The global device momentum buffer, in the ``global`` variant."""
        if self._global_device_momentum:
            return {"optimizer_state": self.device_velocity}
        return {}

    def server_settings(self) -> TrainSettings:
        """FedDU's server-pass settings, but plain SGD momentum (0) unless ``server_sgd_momentum`` is set:
        the pass never inherits beta_d, so ``tau_eff = alpha_t * tau0`` describes the step it took."""
        p = self.params
        base = super().server_settings()
        momentum = p.server_sgd_momentum or 0.0
        return dataclasses.replace(base, **momentum_settings(base.lr, momentum, p.device_momentum_form))

    # ------------------------------------------------------------------ aggregate
    def aggregate_fit(
        self, round_num: int, current: ModelState, fit: AggregatedFit
    ) -> tuple[ModelState, dict[str, float]]:
        """FedDU's update, server momentum on it, then the revert guard on the final state."""
        p = self.params
        v_half = dict(fit.extra_means.get("optimizer_state", {})) if self._global_device_momentum else {}
        # The global variant's pass starts from the devices' mean buffer when it has momentum at all.
        pass_buffers = v_half if v_half and self.server_settings().momentum > 0 else {}
        if pass_buffers and self.server_settings().optimizer != "sgd":
            raise ConfigError("strategy.params.server_optimizer: FedDUM's global device momentum needs sgd")
        step = self.server_step(round_num, current, fit, optimizer_state=pass_buffers)

        beta = p.momentum
        k = self.momentum_updates + 1
        scale = 1.0 / (1.0 - beta**k) if p.momentum_init == "debiased" and beta > 0 else 1.0
        first = "delta" if p.momentum_init == "delta" else "zero"
        proposed, velocity = ema_momentum_step(current, step.candidate, self.server_velocity, beta, first, scale)

        # The guard judges the state that would be kept (after momentum), against w_half's D0 loss.
        reverted = self.check_revert(proposed, step.loss_before, step.metrics)
        if reverted:
            new, applied = step.w_half, 0.0
            if self._global_device_momentum:
                self.device_velocity = v_half
        else:
            new, applied = proposed, (0.0 if step.skipped else step.alpha)
            self.server_velocity, self.momentum_updates = velocity, k
            if self._global_device_momentum:
                moved = pass_buffers and not step.skipped and step.optimizer_state
                self.device_velocity = interpolate(v_half, step.optimizer_state, step.alpha) if moved else v_half
        metrics = step.finish(applied, reverted)
        metrics["server_momentum_norm"] = state_norm(self.server_velocity)
        metrics["momentum_scale"] = scale
        if self._global_device_momentum:
            metrics["device_momentum_norm"] = state_norm(self.device_velocity)
        return new, metrics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """Server momentum, its update count and (global variant) the device momentum buffer."""
        return {
            **prefixed("server_momentum", self.server_velocity),
            **prefixed("device_momentum", self.device_velocity),
            UPDATES_KEY: np.array(self.momentum_updates, dtype=np.int64),
        }

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict` (a checkpoint without the count has no bias left to correct)."""
        self.server_velocity = load_prefixed("server_momentum", state)
        self.device_velocity = load_prefixed("device_momentum", state)
        if UPDATES_KEY in state:
            self.momentum_updates = int(np.asarray(state[UPDATES_KEY]))
        else:
            self.momentum_updates = 10**6 if self.server_velocity else 0
