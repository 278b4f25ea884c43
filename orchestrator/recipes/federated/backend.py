"""How the federated recipe reaches its device hosts: the Ray backend or the in-process one."""

from __future__ import annotations

from typing import Any

from orchestrator.config.spec import ExperimentSpec


def make_backend(
    spec: ExperimentSpec,
    partition_dir: str,
    num_devices: int,
    num_hosts: int,
    scheduling_strategy: Any = None,
    server_node: bool = False,
) -> Any:
    """The backend ``resources.backend`` asks for, with its hosts and evaluator (or server node) started."""
    if spec.resources.backend == "local":
        from orchestrator.recipes.federated.local_backend import LocalBackend

        return LocalBackend(spec, partition_dir, num_devices, num_hosts, server_node=server_node)
    from orchestrator.recipes.federated.ray_backend import RayBackend

    return RayBackend(spec, partition_dir, num_devices, num_hosts, scheduling_strategy, server_node=server_node)
