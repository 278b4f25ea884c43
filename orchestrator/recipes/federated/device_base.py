"""Where a restarted device host's devices are rebuilt from: the driver's recovery copy of device state.

The copy is the state of every device at the last checkpoint. It is read chunk by chunk, only the
devices of the hosts being rebuilt, and sent to them in that many calls
(``DeviceHost.load_device_states(chunk, reset=False)``), so the driver never holds it all:

:class:`CheckpointBase`
    the last checkpoint's ``devices`` section on the driver's disk (every checkpoint the run writes,
    and a resume from one); a run on object storage keeps its checkpoints in a local working folder
    too, so the copy survives the loss of any host;
:class:`MemoryBase`
    device state given as one mapping (a checkpoint written before device state was streamed, which
    holds it inside ``state.safetensors``): one object per host in the object store, owned by the
    driver so that it outlives the hosts, until the run's next checkpoint replaces it;
:class:`EmptyBase`
    before the first checkpoint of a fresh run: every device starts empty.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import ray

from fedtwin.orchestrator.run.checkpoint_sections import StreamedSection
from fedtwin.pipelines.federated.hosts import host_of


class DeviceBase(Protocol):
    """The driver's recovery copy of device state."""

    def chunks(self, host_ids: Sequence[int]) -> Iterator[Any]:
        """The saved states of the devices of ``host_ids``, one chunk (a ``{device: state}`` mapping, or
        an object reference to one) at a time."""
        ...


class EmptyBase:
    """No device state saved yet."""

    def chunks(self, host_ids: Sequence[int]) -> Iterator[Any]:
        """Nothing: every device starts empty."""
        return iter(())


class MemoryBase:
    """Device states given whole, one driver-owned object per host in the object store."""

    def __init__(self, states_by_host: Mapping[int, Mapping[int, Any]]) -> None:
        self.refs = {h: ray.put(dict(states)) for h, states in states_by_host.items() if states}

    def chunks(self, host_ids: Sequence[int]) -> Iterator[Any]:
        """One object reference per host (the host reads it from the object store)."""
        return (self.refs[h] for h in host_ids if h in self.refs)


class CheckpointBase:
    """The ``devices`` section of a checkpoint on the driver's disk, read one chunk at a time."""

    def __init__(self, section: StreamedSection, num_hosts: int) -> None:
        self.section = section
        self.num_hosts = num_hosts

    def chunks(self, host_ids: Sequence[int]) -> Iterator[Any]:
        """Each chunk file's devices of ``host_ids`` (the other devices' arrays are not read)."""
        wanted = set(host_ids)
        return self.section.chunks(lambda key: host_of(int(key), self.num_hosts) in wanted)
