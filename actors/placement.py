"""Actor placement and fault-tolerance options in one place (not ad hoc at call sites)."""

from __future__ import annotations

from typing import Any


def actor_options(
    *,
    num_cpus: float,
    num_gpus: float = 0.0,
    max_restarts: int = 2,
    max_task_retries: int = 0,
    name: str | None = None,
    scheduling_strategy: Any = None,
) -> dict[str, Any]:
    """Keyword options for ``ActorClass.options(...)``.

    ``max_task_retries`` stays 0 by default: a device round that died with its host is reported as a
    failure rather than silently re-run, so round results never depend on retry timing.
    """
    options: dict[str, Any] = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "max_restarts": max_restarts,
        "max_task_retries": max_task_retries,
    }
    if name is not None:
        options["name"] = name
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    return options


def torch_device(prefer_gpu: bool = True) -> str:
    """``cuda`` when this process can see a GPU (Ray sets CUDA_VISIBLE_DEVICES per actor), else ``cpu``."""
    import torch

    return "cuda" if prefer_gpu and torch.cuda.is_available() else "cpu"


def prepare_torch(threads: int) -> None:
    """Set this process's torch threads and pay torch's one-off optimizer import now.

    The first optimizer a process builds imports ``torch._dynamo`` (1.5 s idle, up to 6 s on a busy
    2-core machine). Doing it while actors start up overlaps it with Ray start-up instead of charging it
    to the first round.
    """
    import torch

    torch.set_num_threads(threads)
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
