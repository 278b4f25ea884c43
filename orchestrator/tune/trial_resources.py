"""What one Tune trial reserves, whether that fits the cluster, and how many trials run at once.

A trial is a whole driver: the trial process itself plus the actors its recipe starts (for the
federated recipe, one device host per ``resources.hosts`` and the evaluator or server node; for a
trainer recipe, its trainer). Each recipe declares these bundles (``Recipe.footprint``); the placement
group holds all of them, so a trial starts only when its whole footprint is free and two half-started
trials can never deadlock each other. GPUs are shared by fraction (``resources.gpus_per_host: 0.25``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.config.recipes import recipe_class
from fedtwin.orchestrator.config.spec import ExperimentSpec
from fedtwin.orchestrator.run.footprint import Bundle, Footprint, bundle, describe_bundle
from fedtwin.orchestrator.tune.sweep_config import SweepResourcesConfig
from fedtwin.pipelines.core.errors import FedtwinError


class SweepResourcesError(FedtwinError):
    """One trial's footprint cannot be placed on the cluster (the sweep would wait forever)."""


def trial_footprint(spec: ExperimentSpec, res: SweepResourcesConfig) -> Footprint:
    """Bundles for one trial of ``spec``: the driver's, then whatever its recipe declares for its actors."""
    driver = bundle(res.driver_cpus, res.driver_gpus)
    try:
        return recipe_class(spec.recipe).footprint(spec, driver)
    except ConfigError as err:
        raise SweepResourcesError(str(err)) from None


def check_fit(footprint: Footprint, nodes: Sequence[Mapping[str, float]]) -> None:
    """Raise :class:`SweepResourcesError`, saying what to change, when no trial could ever start."""
    cluster: Bundle = {}
    for node in nodes:
        for key, value in node.items():
            cluster[key] = cluster.get(key, 0.0) + float(value)
    need = footprint.total
    short = {k: v for k, v in need.items() if v > cluster.get(k, 0.0) + 1e-9}
    if short:
        have = ", ".join(f"{k} {cluster.get(k, 0.0):g}" for k in sorted(short))
        raise SweepResourcesError(
            f"one trial needs {describe_bundle(need)} ({footprint.describe()}) but the cluster has only {have}; lower "
            "resources.hosts / resources.cpus_per_host / resources.gpus_per_host (sweep overrides) or "
            "resources.driver_cpus in the sweep file, or add nodes (on an autoscaling cluster set "
            "resources.check_fit: false)"
        )
    for one in footprint.bundles:
        if not any(all(float(node.get(k, 0.0)) + 1e-9 >= v for k, v in one.items()) for node in nodes):
            raise SweepResourcesError(
                f"no single node can hold the bundle {describe_bundle(one)} of one trial ({footprint.describe()}); "
                "use smaller per-host shares (resources.cpus_per_host / gpus_per_host) or bigger nodes"
            )


def max_concurrent(footprint: Footprint, cluster: Mapping[str, float]) -> int:
    """How many trials fit side by side in ``cluster`` (at least 1)."""
    fits = [
        math.floor(float(cluster.get(key, 0.0)) / value + 1e-9) for key, value in footprint.total.items() if value > 0
    ]
    return max(1, min(fits)) if fits else 1
