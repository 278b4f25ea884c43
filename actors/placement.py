"""Actor placement and fault-tolerance options in one place (not ad hoc at call sites).

:func:`actor_options` builds the keyword arguments of ``ActorClass.options(...)``; :func:`trainer_gpus`
is the one GPU policy of single-trainer recipes (mutual, incremental, transfer). Nothing here imports
Ray: the options are plain dicts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any


def actor_options(
    *,
    num_cpus: float,
    num_gpus: float = 0.0,
    max_restarts: int = 2,
    max_task_retries: int = 0,
    name: str | None = None,
    scheduling_strategy: Any = None,
    plugin_paths: Sequence[str] = (),
    resources: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Keyword options for ``ActorClass.options(...)``.

    ``max_task_retries`` stays 0 by default: a device round that died with its host is reported as a
    failure rather than silently re-run, so round results never depend on retry timing.

    Args:
        num_cpus: CPUs the actor reserves.
        num_gpus: GPUs (or a fraction of one) the actor reserves.
        max_restarts: how often Ray restarts the actor after its process dies.
        max_task_retries: how often Ray re-runs a method call lost with the process.
        name: a named actor, or ``None``.
        scheduling_strategy: e.g. a Tune trial's placement group strategy, or ``None``.
        plugin_paths: folders holding user plugin modules (``plugins.paths``); they are put first on
            the actor's ``PYTHONPATH`` (before the driver's own) so plugins import inside the worker.
        resources: custom Ray resources the actor also reserves (e.g. ``{"edge": 1}`` to pin it to the
            nodes that advertise ``edge``).
    """
    options: dict[str, Any] = {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "max_restarts": max_restarts,
        "max_task_retries": max_task_retries,
    }
    if resources:
        options["resources"] = {str(k): float(v) for k, v in resources.items()}
    if name is not None:
        options["name"] = name
    if scheduling_strategy is not None:
        options["scheduling_strategy"] = scheduling_strategy
    if plugin_paths:
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": plugin_pythonpath(plugin_paths)}}
    return options


def plugin_pythonpath(plugin_paths: Sequence[str], existing: str | None = None) -> str:
    """``PYTHONPATH`` for a worker: the plugin folders (absolute) first, then ``existing``.

    ``existing`` defaults to this process's ``PYTHONPATH``; empty entries are dropped.
    """
    current = os.environ.get("PYTHONPATH", "") if existing is None else existing
    entries = [os.path.abspath(p) for p in plugin_paths] + [p for p in current.split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(entries))


def trainer_gpus(requested: float, cluster_gpus: float, in_placement_group: bool, share: float = 1.0) -> float:
    """GPUs one trainer actor asks for.

    Args:
        requested: ``resources.gpus_per_host``; taken as is when > 0.
        cluster_gpus: GPUs in the cluster (``ray.cluster_resources().get("GPU", 0)``).
        in_placement_group: the actor is placed in a Tune trial's placement group, whose bundles
            already reserve the trial's GPUs; asking for more would never be scheduled.
        share: the fraction of one GPU the trainer takes when the cluster has one (e.g. 1/2 for each
            of two twin networks sharing a GPU).

    Returns:
        ``requested`` if > 0; else 0 inside a placement group; else ``share`` when the cluster has a
        whole GPU, 0 without one.
    """
    if requested > 0:
        return requested
    if in_placement_group:
        return 0.0
    return share if cluster_gpus >= 1 else 0.0
