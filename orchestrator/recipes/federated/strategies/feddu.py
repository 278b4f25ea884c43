"""FedDU (from FedDUAP, IJCAI 2022) and FedDUM (from FedDUMAP, TIST 2024): dynamic server update.

After FedAvg has produced ``w_half`` the server measures how inaccurate ``w_half`` is on its shared
data D0 and how non-IID this round's devices are compared with D0, and moves the model towards a
full server pass over D0 by a fraction ``alpha_t`` (FedDUAP's dynamic server update)::

    alpha_t = C * decay^t * (1 - acc_t) * n0*D(P'_t) / (n0*D(P'_t) + n'_t*D(P0) + eps),  clipped to [0, alpha_max]
    w_t     = w_half + alpha_t * (w_server - w_half)          (= w_half - eta * tau_eff * g_hat, tau_eff = alpha_t * tau0)

``D`` is the base-2 Jensen-Shannon divergence to the label distribution of all device data (or the
uniform one), computed from the label histograms the selected devices *report*: the server sees
weights and class counts, never device data. FedDUM (flag ``feddum``) adds server momentum on the
global update and device momentum (:mod:`orchestrator.recipes.federated.strategies.feddum`). Docs: ``docs/feddu.md``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from orchestrator.config.loader import ConfigError
from orchestrator.recipes.federated.strategies.base import AggregatedFit
from orchestrator.recipes.federated.strategies.context import ServerAccess, StrategyContext
from orchestrator.recipes.federated.strategies.fedavg import FedAvg, fedavg_update
from orchestrator.recipes.federated.strategies.feddum import (
    ema_momentum_step,
    interpolate,
    load_prefixed,
    prefixed,
    state_norm,
)
from pipelines.data.heterogeneity import distribution, js_divergence
from pipelines.federated.messages import FitTask
from pipelines.model.settings import TrainSettings
from pipelines.model.state import ModelState

#: Below this both divergences count as zero (IID devices and IID server): the IID/IID fallback.
IID_EPS = 1e-12
#: Added to the denominator of the ratio, as in the reference code.
RATIO_EPS = 1e-12


@dataclass(frozen=True)
class FedDUParams:
    """Parameters of FedDU/FedDUM (``strategy.params``); defaults follow the FedDUAP/FedDUMAP reference code.

    Attributes:
        decay: per-round decay of the server's influence (README value 0.999; argparse default 0.99).
        C: scale of alpha (and of tau_eff).
        alpha_max: alpha is clipped to ``[0, alpha_max]``; 1 keeps ``tau_eff <= tau0`` (reconstructed;
            the papers give no bound).
        skip_below: no server pass when ``alpha_t <= skip_below`` (reference code: 1e-3).
        revert_factor: revert to ``w_half`` when the D0 loss after the update exceeds this multiple of
            the loss before it (reference: 3); ``null`` disables the guard.
        server_epochs: E of the server pass; ``null`` = ``training.epochs``.
        server_batch_size: B of the server pass; ``null`` = ``training.batch_size``.
        server_lr: eta of the server pass; ``null`` = the round's device learning rate (with its decay).
        server_optimizer: ``sgd`` (the reference's plain SGD) or ``adam``; ``null`` = ``training.optimizer``.
        server_sgd_momentum: SGD momentum of the server pass (fresh buffer each pass); ``null`` = the
            momentum the devices train with this round (``training.momentum``, or beta_d under FedDUM).
        js_reference: the distribution D measures against: ``global`` (all device data, P) or ``uniform``.
        fixed_alpha: use this alpha every round instead of the schedule; 1.0 is the naive "always a full
            server pass" baseline.
        feddum: FedDUM: server momentum ``momentum`` on the global update plus device momentum.
        momentum: beta_s, the server (global) momentum of FedDUM in EMA form (the Tune sweep's name).
        momentum_init: ``delta`` starts the EMA at m_0 = Delta_0 (as the reference code does), so
            the first round's update is applied 1/(1 - beta_s) times in total; ``zero`` starts it at
            m_{-1} = 0, so every update is applied exactly once in total (spread over rounds).
        device_momentum: beta_d, SGD momentum of local training under FedDUM (0 = no device momentum).
            With ``training.optimizer: adam`` the device momentum is Adam's moment estimates, kept per
            device (``local`` only).
        device_momentum_init: where a device's momentum buffer starts each round: ``local`` (its own
            buffer from the last round it trained, kept on its host and checkpointed) or ``global`` (the
            averaged, server-interpolated buffer, as in the reference code's fsgdm path).
    """

    decay: float = 0.999
    C: float = 1.0
    alpha_max: float = 1.0
    skip_below: float = 1e-3
    revert_factor: float | None = 3.0
    server_epochs: int | None = None
    server_batch_size: int | None = None
    server_lr: float | None = None
    server_optimizer: Literal["sgd", "adam"] | None = None
    server_sgd_momentum: float | None = None
    js_reference: Literal["global", "uniform"] = "global"
    fixed_alpha: float | None = None
    feddum: bool = False
    momentum: float = 0.9
    momentum_init: Literal["delta", "zero"] = "delta"
    device_momentum: float = 0.9
    device_momentum_init: Literal["local", "global"] = "local"

    def __post_init__(self) -> None:
        checks = [
            (0 < self.decay <= 1, "decay", "must be in (0, 1]"),
            (self.C > 0, "C", "must be > 0"),
            (self.alpha_max > 0, "alpha_max", "must be > 0"),
            (self.skip_below >= 0, "skip_below", "must be >= 0"),
            (self.revert_factor is None or self.revert_factor >= 1, "revert_factor", "must be >= 1 or null"),
            (self.server_epochs is None or self.server_epochs >= 1, "server_epochs", "must be >= 1 or null"),
            (self.server_batch_size is None or self.server_batch_size >= 1, "server_batch_size", "must be >= 1 or null"),
            (self.server_lr is None or self.server_lr > 0, "server_lr", "must be > 0 or null"),
            (self.fixed_alpha is None or 0 <= self.fixed_alpha <= 1, "fixed_alpha", "must be in [0, 1] or null"),
            (self.server_sgd_momentum is None or 0 <= self.server_sgd_momentum < 1, "server_sgd_momentum",
             "must be in [0, 1) or null"),
            (0 <= self.momentum < 1, "momentum", "must be in [0, 1)"),
            (0 <= self.device_momentum < 1, "device_momentum", "must be in [0, 1)"),
        ]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"{name}: {rule}, got {getattr(self, name)!r}")


def feddu_alpha(
    *,
    acc: float,
    round_index: int,
    n0: int,
    n_selected: int,
    js_selected: float,
    js_server: float,
    C: float = 1.0,
    decay: float = 0.999,
    alpha_max: float = 1.0,
) -> float:
    """FedDUAP's alpha_t (the formula in the module docstring), clipped to ``[0, alpha_max]``.

    Args:
        acc: acc_t, top-1 accuracy of ``w_half`` on D0.
        round_index: t (0 in the first round).
        n0: size of D0.
        n_selected: n'_t, examples of this round's successful devices.
        js_selected: D(P'_t).
        js_server: D(P0).
        C: scale.
        decay: per-round decay.
        alpha_max: upper clip.
    """
    if js_selected < IID_EPS and js_server < IID_EPS:
        # IID devices and IID server: 0/0 in the formula; use its limit for equal divergences.
        ratio = n0 / (n0 + n_selected)
    else:
        ratio = n0 * js_selected / (n0 * js_selected + n_selected * js_server + RATIO_EPS)
    alpha = C * decay**round_index * (1.0 - acc) * ratio
    return float(min(max(alpha, 0.0), alpha_max))


class FedDU(FedAvg):
    """FedAvg followed by an adaptive, guarded step towards a server pass on D0 (optionally FedDUM)."""

    name = "feddu"
    needs_server = True
    Params = FedDUParams  # type: ignore[assignment]

    def __init__(
        self, params: Any, *, num_devices: int, devices_per_round: int, context: StrategyContext | None = None
    ) -> None:
        super().__init__(params, num_devices=num_devices, devices_per_round=devices_per_round, context=context)
        if context is None or context.global_label_histogram is None or context.server_label_histogram is None:
            raise ValueError("FedDU needs a StrategyContext with the global and the server label histograms")
        if context.num_server_examples == 0:
            raise ValueError(
                "strategy feddu needs shared server data; set data.partition.shared_fraction > 0"
            )
        k = context.num_classes
        if params.js_reference == "global":
            self.reference = distribution(np.asarray(context.global_label_histogram))
        else:
            self.reference = np.full(k, 1.0 / k)
        self.n0 = context.num_server_examples
        self.js_server = float(js_divergence(distribution(np.asarray(context.server_label_histogram)), self.reference))
        self.server_velocity: ModelState = {}  # FedDUM m_t (float64)
        self.device_velocity: ModelState = {}  # FedDUM global device buffer v_t ("global" variant)
        self._round_settings: TrainSettings | None = None

    # ------------------------------------------------------------------ configure
    @property
    def _global_device_momentum(self) -> bool:
        p = self.params
        return bool(p.feddum and p.device_momentum > 0 and p.device_momentum_init == "global")

    def configure_fit(self, round_num: int, device_ids: Sequence[int], settings: TrainSettings) -> list[FitTask]:
        """Add FedDUM device momentum; remember the round's device settings (the server pass's defaults)."""
        p = self.params
        if p.feddum and p.device_momentum > 0:
            if settings.optimizer == "sgd":
                settings = dataclasses.replace(settings, momentum=p.device_momentum)
            elif p.device_momentum_init == "global":
                raise ConfigError(
                    "strategy.params.device_momentum_init: the global FedDUM variant averages SGD momentum "
                    f"buffers but training.optimizer is {settings.optimizer!r}; use training.optimizer: sgd "
                    "or device_momentum_init: local"
                )
            # With Adam, the device momentum is Adam's own moment estimates (beta_d does not apply):
            # "local" keeps them on the device between its rounds, like SGD buffers.
            settings = dataclasses.replace(settings, optimizer_start=p.device_momentum_init)
        self._round_settings = settings
        return super().configure_fit(round_num, device_ids, settings)

    def round_payload(self, round_num: int) -> dict[str, ModelState]:
        """The global device momentum buffer, in the ``global`` variant of FedDUM."""
        if self._global_device_momentum:
            return {"optimizer_state": self.device_velocity}
        return {}

    def server_settings(self) -> TrainSettings:
        """E, B, eta, optimizer and SGD momentum of this round's server pass: the params where set, else
        the round's device settings. Like the reference code's pass: no weight decay, no step cap, a
        fresh optimizer."""
        p, device = self.params, self._round_settings

        def pick(value: Any, key: str) -> Any:
            if value is not None:
                return value
            if device is None:
                raise ValueError(f"strategy.params.server_{key}: unset and no round training settings to default to")
            return getattr(device, key)

        return TrainSettings(
            epochs=pick(p.server_epochs, "epochs"),
            batch_size=pick(p.server_batch_size, "batch_size"),
            lr=pick(p.server_lr, "lr"),
            optimizer=p.server_optimizer or (device.optimizer if device is not None else "sgd"),
            momentum=p.server_sgd_momentum if p.server_sgd_momentum is not None
            else (device.momentum if device is not None else 0.0),
        )

    # ------------------------------------------------------------------ aggregate
    def aggregate_fit(
        self, round_num: int, current: ModelState, fit: AggregatedFit
    ) -> tuple[ModelState, dict[str, float]]:
        """FedAvg, then the dynamic server update with its skip and revert guards (then FedDUM momentum)."""
        p = self.params
        server = self._server()
        w_half = fedavg_update(current, fit)
        hist = fit.pooled_label_histogram(self.reference.shape[0])
        n_selected = int(fit.num_examples)
        js_selected = float(js_divergence(distribution(hist), self.reference))
        before = server.evaluate(w_half)
        acc = float(before["accuracy"])
        if p.fixed_alpha is not None:
            alpha = float(p.fixed_alpha)
        else:
            alpha = feddu_alpha(
                acc=acc, round_index=round_num - 1, n0=self.n0, n_selected=n_selected, js_selected=js_selected,
                js_server=self.js_server, C=p.C, decay=p.decay, alpha_max=p.alpha_max,
            )
        settings = self.server_settings()
        tau0 = math.ceil(self.n0 / settings.batch_size) * settings.epochs
        v_half = dict(fit.extra_means.get("optimizer_state", {})) if self._global_device_momentum else {}
        new, v_new, applied = w_half, v_half, 0.0
        skipped = alpha <= p.skip_below
        reverted = False
        metrics: dict[str, float] = {}
        if not skipped:
            if v_half and settings.optimizer != "sgd":
                raise ConfigError("strategy.params.server_optimizer: FedDUM's global device momentum needs sgd")
            # The global FedDUM variant starts the pass from the averaged device buffer v^{t-1/2}.
            result = server.server_pass(w_half, settings, round_num=round_num, optimizer_state=v_half or None)
            candidate = interpolate(w_half, result.state, alpha)
            if p.revert_factor is not None:
                after = server.evaluate(candidate)
                metrics["server_loss_after"] = float(after["loss"])
                reverted = float(after["loss"]) > p.revert_factor * float(before["loss"])
            if not reverted:
                new, applied = candidate, alpha
                if v_half:
                    v_new = interpolate(v_half, result.optimizer_state, alpha)
        m = max(len(fit.results), 1)
        device = self._round_settings
        epochs, batch_size = (device.epochs, device.batch_size) if device is not None else (1, 1)
        tau_avg_dev = n_selected * float(epochs) / (m * float(batch_size))
        metrics.update({
            "acc_t": acc,
            "server_loss": float(before["loss"]),
            "alpha_t": alpha,
            "alpha_applied": applied,
            "tau0": float(tau0),
            "tau_eff": applied * tau0,
            "tau_avg_dev": tau_avg_dev,  # the reference code's average device step count ...
            "server_iter": alpha * tau_avg_dev,  # ... and the server step count it logs
            "js_selected": js_selected,
            "js_server": self.js_server,
            "n_selected": float(n_selected),
            "n0": float(self.n0),
            "skipped": skipped,
            "reverted": reverted,
        })
        if p.feddum:
            new = self._server_momentum(current, new)
            metrics["server_momentum_norm"] = state_norm(self.server_velocity)
            if self._global_device_momentum:
                self.device_velocity = v_new
                metrics["device_momentum_norm"] = state_norm(v_new)
        return new, metrics

    def _server(self) -> ServerAccess:
        if self.context is None or self.context.server is None:
            raise RuntimeError("FedDU has no server access; build it with StrategyContext(server=...)")
        return self.context.server

    def _server_momentum(self, current: ModelState, proposed: ModelState) -> ModelState:
        """w <- w_old + m_t with m_t = beta_s m_{t-1} + (1 - beta_s) (proposed - w_old)."""
        new, self.server_velocity = ema_momentum_step(
            current, proposed, self.server_velocity, self.params.momentum, first=self.params.momentum_init
        )
        return new

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """FedDUM's server momentum and (global variant) device momentum buffer."""
        return {**prefixed("server_momentum", self.server_velocity), **prefixed("device_momentum", self.device_velocity)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`."""
        self.server_velocity = load_prefixed("server_momentum", state)
        self.device_velocity = load_prefixed("device_momentum", state)
