"""Device hosts: one process serving many virtual edge devices.

A device is a small object (its shard path and its local state). A host owns the devices
:func:`pipelines.federated.hosts.devices_of` gives it (sticky, so device state such as momentum buffers
stays put), opens shards lazily through a bounded LRU cache, trains its selected devices one after
another and returns one pre-summed ``HostFitResult``. Raw clips never leave this process: results carry weights, counts,
label histograms and scalar metrics only.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.trainer_base import TorchActor
from pipelines.core.seeding import torch_generator
from pipelines.data.clips import ClipArrays
from pipelines.data.heterogeneity import label_histogram
from pipelines.data.partition_manifest import PartitionManifest, load_device_shard, load_partition_manifest
from pipelines.federated.hosts import devices_of
from pipelines.federated.messages import DeviceFailure, FitResult, FitTask, HostFitResult
from pipelines.model.networks import ModelConfig
from pipelines.model.state import ModelState, load_state, state_from_model
from pipelines.model.training import local_train

logger = logging.getLogger(__name__)


@dataclass
class EdgeDevice:
    """One simulated edge device: where its shard lives and what it keeps between rounds."""

    device_id: int
    num_examples: int
    local_state: dict[str, Any] = field(default_factory=dict)
    rounds_trained: int = 0


@dataclass(frozen=True)
class HostSettings:
    """Everything a host needs besides the partition (picklable, built by the driver)."""

    seed: int
    model: ModelConfig
    torch_threads: int = 1
    shard_cache_size: int = 64
    fail_devices: tuple[int, ...] = ()
    hang_devices: tuple[int, ...] = ()
    hang_s: float = 3600.0
    chaos_rounds: tuple[int, ...] = ()


class DeviceHost(TorchActor):
    """Plain class behind ``actors.federated.ray_actors.DeviceHostActor``; testable in-process."""

    def __init__(self, host_id: int, num_hosts: int, partition_dir: str, settings: HostSettings) -> None:
        if not 0 <= host_id < num_hosts:
            raise ValueError(f"host_id {host_id} outside [0, {num_hosts})")
        super().__init__(settings.torch_threads)
        self.host_id = host_id
        self.num_hosts = num_hosts
        self.partition_dir = partition_dir
        self.settings = settings
        self.manifest: PartitionManifest = load_partition_manifest(partition_dir)
        self.num_classes = self.manifest.num_classes
        self.devices = {
            d: EdgeDevice(d, int(self.manifest.num_examples[d]))
            for d in devices_of(host_id, num_hosts, self.manifest.num_devices)
        }
        self.model = self.new_model(settings.model, settings.seed)
        self._cache: OrderedDict[int, ClipArrays] = OrderedDict()

    # ------------------------------------------------------------------ data
    def shard(self, device_id: int) -> ClipArrays:
        """The device's clips, from the LRU cache or disk."""
        if device_id in self._cache:
            self._cache.move_to_end(device_id)
            return self._cache[device_id]
        data = load_device_shard(self.manifest, device_id)
        self._cache[device_id] = data
        while len(self._cache) > self.settings.shard_cache_size:
            self._cache.popitem(last=False)
        return data

    # ------------------------------------------------------------------ training
    def fit(
        self, state: ModelState, tasks: Sequence[FitTask], payload: Mapping[str, ModelState] | None = None
    ) -> HostFitResult:
        """Train each task's device from ``state`` in order; failures become ``DeviceFailure`` values.

        ``payload`` holds other round-wide arrays the strategy broadcasts (e.g. FedDUM's global device
        momentum under ``"optimizer_state"``); the driver puts it in the object store once per round.
        """
        results: list[FitResult] = []
        failures: list[DeviceFailure] = []
        for task in tasks:
            try:
                results.append(self._fit_device(state, task, payload or {}))
            except Exception as err:  # one bad device must not take the host's other devices down
                logger.warning("device %d failed in round %d: %s", task.device_id, task.round_num, err)
                failures.append(DeviceFailure(task.device_id, task.round_num, f"{type(err).__name__}: {err}"))
        return HostFitResult.from_devices(self.host_id, results, failures)

    def _fit_device(self, state: ModelState, task: FitTask, payload: Mapping[str, ModelState]) -> FitResult:
        device = self.devices.get(task.device_id)
        if device is None:
            raise KeyError(f"device {task.device_id} is not served by host {self.host_id}/{self.num_hosts}")
        self._maybe_inject_fault(task)
        started = time.perf_counter()
        data = self.shard(task.device_id)
        load_state(self.model, state)
        settings = task.settings
        start_mode = settings.optimizer_start
        # Where the optimizer's buffers start: "fresh" each round, "local" = this device's own buffers
        # from the last round it trained (FedDUM, persisted here and checkpointed via device_states),
        # "global" = the strategy's broadcast buffer (FedDUM's global variant).
        start_state = {
            "fresh": None,
            "local": device.local_state.get("optimizer_state"),
            "global": payload.get("optimizer_state"),
        }[start_mode]
        # One stream per (run, round, device): training is reproducible whatever host runs the device.
        generator = torch_generator(self.settings.seed, task.round_num, task.device_id)
        train = local_train(
            self.model, data, settings, optimizer_state=start_state, generator=generator, device=self.device
        )
        if start_mode == "local":
            device.local_state["optimizer_state"] = train.optimizer_state
        # Only the global variant needs the buffers back (pre-summed by the host, never per device).
        extras = {"optimizer_state": train.optimizer_state} if start_mode == "global" else {}
        device.rounds_trained += 1
        metrics = {
            "train_loss": float(train.mean_loss),
            "steps": float(train.steps),
            "fit_seconds": time.perf_counter() - started,
        }
        hist = label_histogram(data.labels, self.num_classes)
        return FitResult(task.device_id, len(data), hist, metrics, state_from_model(self.model), extras)

    def _maybe_inject_fault(self, task: FitTask) -> None:
        s = self.settings
        if s.chaos_rounds and task.round_num not in s.chaos_rounds:
            return
        if task.device_id in s.fail_devices:
            raise RuntimeError(f"injected failure (federation.chaos.fail_devices) in round {task.round_num}")
        if task.device_id in s.hang_devices:
            time.sleep(s.hang_s)

    # ------------------------------------------------------------------ state
    def device_states(self) -> dict[int, dict[str, Any]]:
        """Local state of every device this host serves (for checkpoints)."""
        return {d.device_id: {"rounds_trained": d.rounds_trained, **d.local_state} for d in self.devices.values()}

    def load_device_states(self, states: Mapping[int, Mapping[str, Any]]) -> None:
        """Restore what :meth:`device_states` returned (on resume)."""
        for device_id, local in states.items():
            device = self.devices.get(int(device_id))
            if device is not None:
                local = dict(local)
                device.rounds_trained = int(local.pop("rounds_trained", 0))
                device.local_state = local

    def info(self) -> dict[str, Any]:
        """Who and where this host is (used by tests and the progress banner)."""
        return {
            "host_id": self.host_id,
            "pid": os.getpid(),
            "devices": len(self.devices),
            "torch_device": self.device,
            "cached_shards": len(self._cache),
        }

    def ping(self) -> int:
        """Liveness probe: returns the host id."""
        return self.host_id
