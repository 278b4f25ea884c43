"""FedDU (from FedDUAP, IJCAI 2022): dynamic server update on shared server data.

After FedAvg has produced ``w_half`` the server measures how inaccurate ``w_half`` is on its shared
data D0 and how non-IID this round's devices are compared with D0, and moves the model towards a
full server pass over D0 by a fraction ``alpha_t`` (FedDUAP's dynamic server update)::

    alpha_t = C * decay^t * (1 - acc_t) * n0*D(P'_t) / (n0*D(P'_t) + n'_t*D(P0) + eps)
              clipped to [0, alpha_max]
    w_t     = w_half + alpha_t * (w_server - w_half)
            = w_half - eta * tau_eff * g_hat,  with tau_eff = alpha_t * tau0

``D`` is the base-2 Jensen-Shannon divergence to the label distribution of all device data (or the
uniform one), computed from the label histograms the selected devices *report*: the server sees
weights and class counts, never device data. FedDUM (server and device momentum) is its own strategy,
:class:`fedtwin.orchestrator.recipes.federated.strategies.feddum.FedDUM`. Docs: ``docs/feddu.md``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.recipes.federated.strategies.base import AggregatedFit
from fedtwin.orchestrator.recipes.federated.strategies.context import ServerAccess, StrategyContext
from fedtwin.orchestrator.recipes.federated.strategies.fedavg import FedAvg, fedavg_update
from fedtwin.orchestrator.recipes.federated.strategies.state_ops import interpolate
from fedtwin.pipelines.data.heterogeneity import distribution, js_divergence
from fedtwin.pipelines.federated.messages import FitTask
from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import ModelState

#: Below this both divergences count as zero (IID devices and IID server): the IID/IID fallback.
IID_EPS = 1e-12
#: Added to the denominator of the ratio, as in the reference code.
RATIO_EPS = 1e-12


@dataclass(frozen=True)
class FedDUParams:
    """Parameters of FedDU (``strategy.params``); defaults follow the FedDUAP reference code.

    Attributes:
        decay: per-round decay of the server's influence (README value 0.999; argparse default 0.99).
        C: scale of alpha (and of tau_eff).
        alpha_max: alpha is clipped to ``[0, alpha_max]``; 1 keeps ``tau_eff <= tau0`` (reconstructed;
            the papers give no bound).
        skip_below: no server pass when ``alpha_t <= skip_below`` (reference code: 1e-3).
        revert_factor: revert to ``w_half`` when the D0 loss after the update exceeds this multiple of
            the loss before it, or is not finite (reference: 3); ``null`` disables the guard.
        server_epochs: E of the server pass; ``null`` = ``training.epochs``.
        server_batch_size: B of the server pass; ``null`` = ``training.batch_size``.
        server_lr: eta of the server pass; ``null`` = the round's device learning rate (with its decay).
        server_optimizer: ``sgd`` (the reference's plain SGD) or ``adam``; ``null`` = ``training.optimizer``.
        server_sgd_momentum: SGD momentum of the server pass (fresh buffer each pass); ``null`` = the
            momentum the devices train with this round (``training.momentum``).
        js_reference: the distribution D measures against: ``global`` (all device data, P) or ``uniform``.
        fixed_alpha: use this alpha every round instead of the schedule; 1.0 is the naive "always a full
            server pass" baseline.
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

    def __post_init__(self) -> None:
        checks = [
            (0 < self.decay <= 1, "decay", "must be in (0, 1]"),
            (self.C > 0, "C", "must be > 0"),
            (self.alpha_max > 0, "alpha_max", "must be > 0"),
            (self.skip_below >= 0, "skip_below", "must be >= 0"),
            (self.revert_factor is None or self.revert_factor >= 1, "revert_factor", "must be >= 1 or null"),
            (self.server_epochs is None or self.server_epochs >= 1, "server_epochs", "must be >= 1 or null"),
            (
                self.server_batch_size is None or self.server_batch_size >= 1,
                "server_batch_size",
                "must be >= 1 or null",
            ),
            (self.server_lr is None or self.server_lr > 0, "server_lr", "must be > 0 or null"),
            (self.fixed_alpha is None or 0 <= self.fixed_alpha <= 1, "fixed_alpha", "must be in [0, 1] or null"),
            (
                self.server_sgd_momentum is None or 0 <= self.server_sgd_momentum < 1,
                "server_sgd_momentum",
                "must be in [0, 1) or null",
            ),
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


def should_revert(loss_after: float, loss_before: float, factor: float) -> bool:
    """The revert guard: the D0 loss after an update is not finite or exceeds ``factor`` x the loss before.

    A NaN or infinite loss always reverts (``NaN > x`` is false, so a plain comparison would keep it).
    A non-finite loss *before* the update cannot bound anything: then only a non-finite after reverts.
    """
    if not math.isfinite(loss_after):
        return True
    return math.isfinite(loss_before) and loss_after > factor * loss_before


@dataclass
class ServerStep:
    """FedDU's update of one round before its revert guard (what FedDUM puts its momentum on).

    Attributes:
        w_half: the FedAvg state w^{t-1/2}.
        candidate: ``w_half + alpha (w_server - w_half)``; ``w_half`` itself when the pass was skipped.
        alpha: alpha_t (schedule or ``fixed_alpha``).
        skipped: no server pass ran (``alpha <= skip_below``).
        loss_before: D0 loss of ``w_half`` (the guard's reference).
        tau0: steps of one full server pass.
        optimizer_state: the server pass's optimizer buffers (empty when skipped or without momentum).
        metrics: the round's FedDU fields that do not depend on the guard.
    """

    w_half: ModelState
    candidate: ModelState
    alpha: float
    skipped: bool
    loss_before: float
    tau0: int
    optimizer_state: ModelState = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def finish(self, applied: float, reverted: bool) -> dict[str, float]:
        """The round's metrics once the guard has decided (``applied``: the alpha that took effect)."""
        return {**self.metrics, "alpha_applied": applied, "tau_eff": applied * self.tau0, "reverted": reverted}


class FedDU(FedAvg):
    """FedAvg followed by an adaptive, guarded step towards a server pass on D0."""

    name = "feddu"
    needs_server = True
    Params = FedDUParams

    def __init__(
        self, params: Any, *, num_devices: int, devices_per_round: int, context: StrategyContext | None = None
    ) -> None:
        super().__init__(params, num_devices=num_devices, devices_per_round=devices_per_round, context=context)
        if context is None or context.global_label_histogram is None or context.server_label_histogram is None:
            raise ValueError(f"{self.name} needs a StrategyContext with the global and the server label histograms")
        if context.num_server_examples == 0:
            raise ValueError(f"strategy {self.name} needs shared server data; set data.partition.shared_fraction > 0")
        k = context.num_classes
        if params.js_reference == "global":
            self.reference = distribution(np.asarray(context.global_label_histogram))
        else:
            self.reference = np.full(k, 1.0 / k)
        self.n0 = context.num_server_examples
        self.js_server = float(js_divergence(distribution(np.asarray(context.server_label_histogram)), self.reference))
        self._round_settings: TrainSettings | None = None

    @classmethod
    def parse_params(cls, raw: Mapping[str, Any]) -> Any:
        """Validate ``strategy.params``. ``feddum`` was FedDUM's on/off flag here in fedtwin 0.1; FedDUM is
        its own strategy now (``strategy.name: feddum``), so ``feddum: true`` is an error saying so and
        ``feddum: false`` (what it always meant) is dropped with a warning."""
        raw = dict(raw)
        if cls is FedDU and "feddum" in raw:
            if raw.pop("feddum"):
                raise ConfigError(
                    "strategy.params.feddum: FedDUM is its own strategy now; set strategy.name: "
                    "feddum and drop the feddum key"
                )
            warnings.warn(
                "strategy.params.feddum: false is the default and will be rejected; drop the key",
                FutureWarning,
                stacklevel=2,
            )
        return super().parse_params(raw)

    # ------------------------------------------------------------------ configure
    def configure_fit(self, round_num: int, device_ids: Sequence[int], settings: TrainSettings) -> list[FitTask]:
        """Remember the round's ``training`` settings (the server pass's defaults); the devices train with
        :meth:`device_settings` of them."""
        self._round_settings = settings
        return super().configure_fit(round_num, device_ids, self.device_settings(settings))

    def device_settings(self, settings: TrainSettings) -> TrainSettings:
        """What the devices train with this round: the round's settings unchanged (FedDUM adds momentum)."""
        return settings

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
            momentum=p.server_sgd_momentum
            if p.server_sgd_momentum is not None
            else (device.momentum if device is not None else 0.0),
        )

    # ------------------------------------------------------------------ aggregate
    def aggregate_fit(
        self, round_num: int, current: ModelState, fit: AggregatedFit
    ) -> tuple[ModelState, dict[str, float]]:
        """FedAvg, then the dynamic server update with its skip and revert guards."""
        step = self.server_step(round_num, current, fit)
        if step.skipped:
            return step.w_half, step.finish(0.0, False)
        if self.check_revert(step.candidate, step.loss_before, step.metrics):
            return step.w_half, step.finish(0.0, True)
        return step.candidate, step.finish(step.alpha, False)

    def server_step(
        self,
        round_num: int,
        current: ModelState,
        fit: AggregatedFit,
        optimizer_state: Mapping[str, np.ndarray] | None = None,
    ) -> ServerStep:
        """FedAvg, alpha_t and (unless skipped) the server pass and the interpolation; no guard yet.

        Args:
            round_num: 1-based round.
            current: w_{t-1}.
            fit: the folded device results.
            optimizer_state: buffers the server pass starts from (FedDUM's global device momentum).
        """
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
                acc=acc,
                round_index=round_num - 1,
                n0=self.n0,
                n_selected=n_selected,
                js_selected=js_selected,
                js_server=self.js_server,
                C=p.C,
                decay=p.decay,
                alpha_max=p.alpha_max,
            )
        settings = self.server_settings()
        tau0 = math.ceil(self.n0 / settings.batch_size) * settings.epochs
        skipped = alpha <= p.skip_below
        candidate, buffers = w_half, {}
        if not skipped:
            result = server.server_pass(w_half, settings, round_num=round_num, optimizer_state=optimizer_state or None)
            candidate = interpolate(w_half, result.state, alpha)
            buffers = dict(result.optimizer_state)
        m = max(len(fit.results), 1)
        device = self._round_settings
        epochs, batch_size = (device.epochs, device.batch_size) if device is not None else (1, 1)
        tau_avg_dev = n_selected * float(epochs) / (m * float(batch_size))
        metrics = {
            "acc_t": acc,
            "server_loss": float(before["loss"]),
            "alpha_t": alpha,
            "tau0": float(tau0),
            "tau_avg_dev": tau_avg_dev,  # the reference code's average device step count ...
            "server_iter": alpha * tau_avg_dev,  # ... and the server step count it logs
            "js_selected": js_selected,
            "js_server": self.js_server,
            "n_selected": float(n_selected),
            "n0": float(self.n0),
            "skipped": skipped,
        }
        return ServerStep(w_half, candidate, alpha, skipped, float(before["loss"]), tau0, buffers, metrics)

    def check_revert(self, state: ModelState, loss_before: float, metrics: dict[str, float]) -> bool:
        """The revert guard on ``state`` (logs ``server_loss_after``); False when the guard is off."""
        factor = self.params.revert_factor
        if factor is None:
            return False
        after = float(self._server().evaluate(state)["loss"])
        metrics["server_loss_after"] = after
        return should_revert(after, loss_before, factor)

    def _server(self) -> ServerAccess:
        if self.context is None or self.context.server is None:
            raise RuntimeError(f"{self.name} has no server access; build it with StrategyContext(server=...)")
        return self.context.server

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, np.ndarray]:
        """FedDU keeps no state between rounds."""
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Accept the (empty) state of :meth:`state_dict`; FedDUM momentum is not FedDU state."""
        if state:
            raise ValueError(
                f"{self.name} keeps no state but the checkpoint holds {sorted(state)[:3]}...; a FedDUM "
                "checkpoint needs strategy.name: feddum"
            )
