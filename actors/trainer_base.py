"""What every actor holding a torch model shares: torch set-up, the device, the model, weights, ping.

Device hosts, the evaluator / server node, twin networks and the incremental and transfer trainers
all start the same way (set torch's threads, pay the optimizer import, pick ``cuda`` when Ray gave the
process a GPU) and build their model from a ``ModelConfig`` and a seed. :class:`TorchActor` does that
once; each subclass keeps its own public methods.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from fedtwin.actors.torch_runtime import prepare_torch, torch_device
from fedtwin.pipelines.model.networks import ModelConfig, VideoCNN, build_model
from fedtwin.pipelines.model.state import ModelState, load_state, state_from_model


class TorchActor:
    """Base of the plain classes behind fedtwin's actors (no Ray here; see the ``ray_actors`` modules).

    Args:
        torch_threads: intra-op threads of this process (``resources.torch_threads``).

    Attributes:
        device: ``"cuda"`` or ``"cpu"``, where the model lives and trains.
        model: the actor's model; ``None`` until a subclass builds it.
    """

    model: VideoCNN | None = None

    def __init__(self, torch_threads: int) -> None:
        prepare_torch(torch_threads)
        self.device = torch_device()

    def new_model(self, config: ModelConfig, seed: int, needs: Iterable[str] = ()) -> VideoCNN:
        """A model whose initial weights depend only on ``config`` and ``seed``, on this actor's device.

        ``needs`` names the model attributes this actor calls besides ``forward`` (``FEATURE_API``).
        """
        return build_model(config, seed=seed, needs=needs).to(self.device)

    def get_weights(self) -> ModelState:
        """The model's weights as numpy arrays."""
        return state_from_model(self._require_model())

    def set_weights(self, state: ModelState) -> None:
        """Load ``state`` (as returned by :meth:`get_weights`) into the model."""
        load_state(self._require_model(), state)

    def ping(self) -> int:
        """Liveness probe: the process id."""
        return os.getpid()

    def _require_model(self) -> VideoCNN:
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__} has no model yet")
        return self.model
