"""FedAdagrad (Reddi et al., *Adaptive Federated Optimization*, ICLR 2021): Adagrad's second moment on the server.

``v_t = v_{t-1} + Delta_t^2``: the squared pseudo-gradients add up for the whole run, so every coordinate's
step only shrinks, fastest where the updates were largest (``beta2`` is not used). The rest of the update
is shared (:mod:`fedtwin.orchestrator.recipes.federated.strategies.fedopt`).
"""

from __future__ import annotations

import numpy as np

from fedtwin.orchestrator.recipes.federated.strategies.fedopt import FedOpt


class FedAdagrad(FedOpt):
    """Server Adagrad on the pseudo-gradient (adaptivity ``tau``)."""

    name = "fedadagrad"

    @staticmethod
    def second_moment(v: np.ndarray, delta_sq: np.ndarray, beta2: float) -> np.ndarray:
        """``v + Delta^2``."""
        return v + delta_sq
