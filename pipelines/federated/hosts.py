"""The sticky device-to-host rule: which device host serves which device.

Device ``d`` always lives on host ``d % num_hosts``, so a device's local state (FedDUM momentum
buffers, its rounds trained) stays in one process between rounds, and a round's tasks can be grouped
per host without asking anyone. Hosts, aggregation and both backends use these two functions only.
"""

from __future__ import annotations


def host_of(device_id: int, num_hosts: int) -> int:
    """The host that serves ``device_id``."""
    if num_hosts < 1:
        raise ValueError(f"num_hosts must be >= 1, got {num_hosts}")
    return int(device_id) % num_hosts


def devices_of(host_id: int, num_hosts: int, num_devices: int) -> range:
    """The devices host ``host_id`` serves, in id order (the inverse of :func:`host_of`)."""
    if not 0 <= host_id < num_hosts:
        raise ValueError(f"host_id {host_id} outside [0, {num_hosts})")
    return range(host_id, num_devices, num_hosts)
