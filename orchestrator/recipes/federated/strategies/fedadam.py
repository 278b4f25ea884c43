"""FedAdam (Reddi et al., *Adaptive Federated Optimization*, ICLR 2021): Adam's second moment on the server.

``v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t^2``: an exponential average of the squared pseudo-gradient,
so a coordinate's step shrinks when its recent updates were large. The rest of the update is shared with
FedYogi and FedAdagrad (:mod:`fedtwin.orchestrator.recipes.federated.strategies.fedopt`).
"""

from __future__ import annotations

import numpy as np

from fedtwin.orchestrator.recipes.federated.strategies.fedopt import FedOpt


class FedAdam(FedOpt):
    """Server Adam on the pseudo-gradient (no bias correction, adaptivity ``tau``)."""

    name = "fedadam"

    @staticmethod
    def second_moment(v: np.ndarray, delta_sq: np.ndarray, beta2: float) -> np.ndarray:
        """``beta2 * v + (1 - beta2) * Delta^2``."""
        return beta2 * v + (1.0 - beta2) * delta_sq
