"""FedYogi (Reddi et al., *Adaptive Federated Optimization*, ICLR 2021): Yogi's second moment on the server.

``v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)``: ``v`` moves towards ``Delta^2`` by a
step proportional to ``Delta^2`` itself (not to the gap, as Adam's average does), so it grows or shrinks
more gently and one large round cannot blow the effective learning rate down at once. The rest of the
update is shared (:mod:`fedtwin.orchestrator.recipes.federated.strategies.fedopt`).
"""

from __future__ import annotations

import numpy as np

from fedtwin.orchestrator.recipes.federated.strategies.fedopt import FedOpt


class FedYogi(FedOpt):
    """Server Yogi on the pseudo-gradient (no bias correction, adaptivity ``tau``)."""

    name = "fedyogi"

    @staticmethod
    def second_moment(v: np.ndarray, delta_sq: np.ndarray, beta2: float) -> np.ndarray:
        """``v - (1 - beta2) * Delta^2 * sign(v - Delta^2)``."""
        return v - (1.0 - beta2) * delta_sq * np.sign(v - delta_sq)
