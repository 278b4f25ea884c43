"""What recipe ``federated`` checks before its run folder exists (no Ray, no actors, nothing written).

Called by ``FederatedRecipe.preflight`` after :meth:`fedtwin.orchestrator.recipes.base.Recipe.preflight`,
after the common checks (:func:`fedtwin.orchestrator.run.preflight.check_common`, which already proved that a
``data.path`` holds a readable manifest whose clip files are there):

- ``data.path`` is a partition (not an unpartitioned dataset); without one, ``data.partition.scheme``
  resolves (before any data is generated);
- ``federation.devices_per_round`` is at most the number of devices (the partition's, or
  ``data.partition.devices`` when the data is generated);
- a strategy that needs server data (FedDU) gets a partition with a ``shared`` split.
"""

from __future__ import annotations

from typing import Any

from fedtwin.orchestrator.config.loader import ConfigError
from fedtwin.orchestrator.run.preflight import check_data_dir
from fedtwin.pipelines.core.errors import FedtwinError


def check_federated(spec: Any) -> None:
    """Raise a one-line ``FedtwinError`` (exit 2) for what would otherwise fail after the run started."""
    fed, data = spec.federation, spec.data
    if data.path is not None:
        found = check_data_dir(data.path)
        if found["kind"] != "partition":
            raise FedtwinError(
                f"data.path {data.path}: is a dataset, not a partition; partition it first "
                f"(`fedtwin data partition {data.path} OUT/ --devices N ...`) and point data.path at OUT/"
            )
        manifest = found["manifest"]
        num_devices, where = manifest.num_devices, f"the partition {data.path}"
        has_shared = manifest.shared.num_examples > 0
    else:
        from fedtwin.pipelines.data.partitioners import resolve_partitioner

        resolve_partitioner(data.partition.scheme)  # before any data is generated
        # None: one device per group (by-group); the count is known once the data is partitioned
        num_devices, where = data.partition.devices, "the generated partition (data.partition.devices)"
        has_shared = data.partition.shared_fraction > 0
    if num_devices is not None and fed.devices_per_round > num_devices:
        raise ConfigError(
            f"federation.devices_per_round: {fed.devices_per_round} is more than the {num_devices} devices of "
            f"{where}; lower it or partition over more devices"
        )
    from fedtwin.orchestrator.recipes.federated.strategies import strategy_class

    if strategy_class(spec.strategy.name).needs_server and not has_shared:
        raise FedtwinError(
            f"strategy {spec.strategy.name} needs shared server data but {where.split(' (')[0]} has none; set "
            "data.partition.shared_fraction > 0 (or partition with `fedtwin data partition --shared-fraction F`)"
        )
