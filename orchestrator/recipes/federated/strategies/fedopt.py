"""The adaptive server optimizers of Reddi et al., *Adaptive Federated Optimization* (ICLR 2021).

The server treats the round's change as a pseudo-gradient and steps along it with a per-coordinate
learning rate, like Adam on one "batch" per round::

    Delta_t = mean_i(w_i) - w_t                       (example-weighted mean of the devices' weights)
    m_t     = beta1 * m_{t-1} + (1 - beta1) * Delta_t                  m_{-1} = 0
    v_t     = second-moment rule of the subclass (Adam, Yogi, Adagrad)  v_{-1} = tau^2
    w_{t+1} = w_t + server_lr * m_t / (sqrt(v_t) + tau)

``tau`` bounds how large a step a coordinate with a tiny second moment may take (the paper's
"adaptivity"); there is no bias correction, as in the paper. The subclasses (one file each:
``fedadam.py``, ``fedyogi.py``, ``fedadagrad.py``) differ only in :meth:`FedOpt.second_moment`. ``m`` and
``v`` are strategy state: float64, checkpointed under ``m/<key>`` and ``v/<key>`` and restored bit for bit
on ``--resume``. Integer buffers are taken from the mean.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedtwin.orchestrator.recipes.federated.strategies.base import AggregatedFit, Strategy
from fedtwin.orchestrator.recipes.federated.strategies.state_ops import load_prefixed, prefixed, state_norm
from fedtwin.pipelines.model.state import ModelState, is_float


@dataclass(frozen=True)
class FedOptParams:
    """``strategy.params`` of ``fedadam``, ``fedyogi`` and ``fedadagrad``.

    Attributes:
        server_lr: eta, the server learning rate (> 0). The paper tunes it per task (roughly 10^-2 to
            10^-0.5 for Adam and Yogi); 0.01 is a conservative start; sweep it with ``fedtwin tune``.
        beta1: first-moment decay in [0, 1) (paper: 0.9; all three rules use it).
        beta2: second-moment decay in [0, 1) (paper: 0.99; unused by Adagrad).
        tau: adaptivity, > 0 (paper: 10^-3).
    """

    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        for ok, name, rule in (
            (self.server_lr > 0, "server_lr", "must be > 0"),
            (0 <= self.beta1 < 1, "beta1", "must be in [0, 1)"),
            (0 <= self.beta2 < 1, "beta2", "must be in [0, 1)"),
            (self.tau > 0, "tau", "must be > 0"),
        ):
            if not ok:
                raise ValueError(f"{name}: {rule}, got {getattr(self, name)!r}")


class FedOpt(Strategy):
    """Shared server math of FedAdam, FedYogi and FedAdagrad (see the module docstring)."""

    Params = FedOptParams

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.m: ModelState = {}
        self.v: ModelState = {}

    @staticmethod
    @abstractmethod
    def second_moment(v: np.ndarray, delta_sq: np.ndarray, beta2: float) -> np.ndarray:
        """``v_t`` from ``v_{t-1}`` and ``Delta_t^2`` (float64 arrays)."""

    def aggregate_fit(
        self, round_num: int, current: ModelState, fit: AggregatedFit
    ) -> tuple[ModelState, dict[str, float]]:
        """One adaptive step along the pseudo-gradient ``mean - current``."""
        p = self.params
        new: ModelState = {}
        pseudo: ModelState = {}
        for key, mean in fit.mean_state.items():
            if not is_float(mean):
                new[key] = np.array(mean, copy=True)
                continue
            w = np.asarray(current[key], dtype=np.float64)
            delta = np.asarray(mean, dtype=np.float64) - w
            m_prev = self.m.get(key, 0.0)
            v_prev = self.v[key] if key in self.v else np.full_like(delta, p.tau**2)
            m = p.beta1 * m_prev + (1.0 - p.beta1) * delta
            v = self.second_moment(v_prev, delta * delta, p.beta2)
            self.m[key], self.v[key], pseudo[key] = m, v, delta
            new[key] = (w + p.server_lr * m / (np.sqrt(v) + p.tau)).astype(mean.dtype)
        step = {k: np.asarray(new[k], dtype=np.float64) - current[k] for k in pseudo}
        return new, {
            "pseudo_grad_norm": state_norm(pseudo),
            "server_step_norm": state_norm(step),
            "server_m_norm": state_norm(self.m),
        }

    def state_dict(self) -> dict[str, np.ndarray]:
        """The first and second moments (float64), keyed ``m/<key>`` and ``v/<key>``."""
        return {**prefixed("m", self.m), **prefixed("v", self.v)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state_dict`."""
        self.m = load_prefixed("m", state)
        self.v = load_prefixed("v", state)
