"""Which backend a run gets: ``resources.backend`` picks the in-process or the Ray backend.

Kept apart from the :class:`~fedtwin.orchestrator.recipes.federated.backend.Backend` contract, which both
backends import, so that no module imports one that imports it back; the Ray backend (and Ray) is
imported only when a run asks for it.
"""

from __future__ import annotations

from typing import Any

from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.recipes.federated.backend import Backend


def make_backend(
    spec: ExperimentSpec,
    partition_dir: str,
    num_devices: int,
    num_hosts: int,
    scheduling_strategy: Any = None,
    server_node: bool = False,
) -> Backend:
    """The backend ``resources.backend`` asks for, with its hosts and evaluator (or server node) started."""
    if spec.resources.backend == "local":
        from fedtwin.orchestrator.recipes.federated.local_backend import LocalBackend

        return LocalBackend(spec, partition_dir, num_devices, num_hosts, server_node=server_node)
    from fedtwin.orchestrator.recipes.federated.ray_backend import RayBackend

    return RayBackend(spec, partition_dir, num_devices, num_hosts, scheduling_strategy, server_node=server_node)
