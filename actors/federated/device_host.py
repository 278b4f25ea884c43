"""Device hosts: one process serving many virtual edge devices.

A device is a small object (its id, size and local state). A host owns the devices
:func:`fedtwin.pipelines.federated.hosts.devices_of` gives it (sticky, so device state such as momentum buffers
stays put), reads their rows from its :class:`~fedtwin.pipelines.data.device_store.DeviceStore` (one
memory-mapped file of exactly its devices, built on first use and reused by later runs on the node),
trains its selected devices one after another and returns one pre-summed ``HostFitResult``. Device
state kept here between rounds: FedDUM's momentum buffers (``optimizer_state``) and SCAFFOLD's control
variate ``c_i`` (``control_variate``, one float32 copy of the model's trainable parameters per device
that has trained).

Per device, a host pays for the training and little else: the model, its optimizer and one torch
generator are reused (reset per device, not rebuilt; same results bit for bit), weights are copied in
and summed out through numpy views of the parameters (the partial sum grows in place, no per-device
copy), and label histograms come from the manifest. Raw clips never leave this process: results carry weights, counts,
label histograms and scalar metrics only.

Restarts. A host process can die (OOM, a lost node, a drill's SIGKILL); Ray restarts it by running the
constructor again, which starts every device with empty local state. Each start draws a fresh
``incarnation`` token; the driver passes the token it last synced with to :meth:`DeviceHost.fit` and
:meth:`DeviceHost.device_states`, and a host whose token differs raises :class:`StaleHostError` instead of
training devices whose state it lost. The driver then restores the devices (:meth:`load_device_states`
from the last checkpoint, chunk by chunk, then :meth:`replay` of the rounds since) and tries again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedtwin.actors.federated.fault_hook import FaultHook, FaultPoint, no_faults
from fedtwin.actors.trainer_base import TorchActor
from fedtwin.pipelines.core.errors import FedtwinError
from fedtwin.pipelines.core.seeding import reseed
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.device_store import DeviceStore, cache_dir, cache_max_bytes
from fedtwin.pipelines.data.partition_manifest import PartitionManifest, load_device_shard, load_partition_manifest
from fedtwin.pipelines.federated.control_variates import CONTROL_KEY, DELTA_KEY, change, correction
from fedtwin.pipelines.federated.hosts import devices_of, host_of
from fedtwin.pipelines.federated.messages import DeviceFailure, FitResult, FitTask, HostFitResult
from fedtwin.pipelines.federated.state_chunks import chunk_by_bytes, state_nbytes
from fedtwin.pipelines.model.networks import ModelConfig, VideoCNN
from fedtwin.pipelines.model.state import ModelState, add_scaled, load_state, state_from_model, zeros_like
from fedtwin.pipelines.model.training import TrainWorkspace, local_train

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
    shard_cache_size: int = 64  # decoded shards kept when the device store is off
    cache_dir: str | None = None  # device store folder (None: $FEDTWIN_CACHE_DIR or ~/.cache/fedtwin)
    cache_max_gb: float | None = None  # device store bound (None: $FEDTWIN_CACHE_MAX_GB or 20; 0: off)
    fault_hook: FaultHook | None = None  # a drill's (see actors/federated/fault_hook.py); None in production


class StaleHostError(RuntimeError):
    """The host restarted since the driver last synced it: its devices' local state must be restored first."""


class DeviceHost(TorchActor):
    """Plain class behind ``fedtwin.actors.federated.ray_actors.DeviceHostActor``; testable in-process."""

    model: VideoCNN  # built in __init__, so never None here

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
        self._workspace = TrainWorkspace()
        self._generator = torch.Generator()
        # numpy views of the model's tensors (CPU): weights go in and partial sums come out without copies.
        self._views = {k: v.numpy() for k, v in self.model.state_dict().items()} if self.device == "cpu" else None
        self._store: DeviceStore | None = None
        self._store_error: str | None = None
        self._cache: OrderedDict[int, ClipArrays] = OrderedDict()  # only when the store is off
        self._shard_reads = 0
        # A new token per process start (Ray reruns this constructor on restart): see the module docstring.
        self.incarnation = uuid.uuid4().hex
        self._fault: FaultHook = settings.fault_hook or no_faults

    # ------------------------------------------------------------------ data
    def store(self) -> DeviceStore | None:
        """This host's device store, opened (or built) on first use; None when the store is off.

        A store that cannot be built (a device file missing or not matching the manifest) is not tried
        again by this process: the host reads each device's rows directly, so only the devices of the
        bad file fail, each with its own one-line error.
        """
        if self._store is None and self._store_error is None and cache_max_bytes(self.settings.cache_max_gb) > 0:
            try:
                self._store = DeviceStore(
                    self.manifest,
                    sorted(self.devices),
                    cache_dir(self.settings.cache_dir),
                    cache_max_bytes(self.settings.cache_max_gb),
                )
            except (FedtwinError, OSError) as err:  # a bad file, an unreachable store, a full disk
                self._store_error = f"{type(err).__name__}: {err}"
                logger.warning("host %d: no device store (%s); reading devices one by one", self.host_id, err)
        return self._store

    def shard(self, device_id: int) -> ClipArrays | tuple[np.ndarray, np.ndarray]:
        """The device's clips: ``(clips, labels)`` views from the store, or ``ClipArrays`` read from the
        partition (LRU of ``shard_cache_size``) when the store is off."""
        store = self.store()
        if store is not None:
            return store.arrays(device_id)
        if device_id in self._cache:
            self._cache.move_to_end(device_id)
            return self._cache[device_id]
        data = load_device_shard(self.manifest, device_id)
        self._shard_reads += 1
        self._cache[device_id] = data
        while len(self._cache) > self.settings.shard_cache_size:
            self._cache.popitem(last=False)
        return data

    # ------------------------------------------------------------------ training
    def fit(
        self,
        state: ModelState,
        tasks: Sequence[FitTask],
        payload: Mapping[str, ModelState] | None = None,
        incarnation: str | None = None,
    ) -> HostFitResult:
        """Train each task's device from ``state`` in order; failures become ``DeviceFailure`` values.

        Args:
            state: the round's global weights.
            tasks: this host's devices of the round, in the order their partial sum is folded.
            payload: other round-wide arrays the strategy broadcasts (e.g. FedDUM's global device
                momentum under ``"optimizer_state"``); the driver puts it in the object store once per round.
            incarnation: the token the driver last synced with (None: do not check).

        Raises:
            StaleHostError: ``incarnation`` is not this process's (the host restarted and lost device state).
        """
        started = time.time()
        self._check_incarnation(incarnation)
        # The host id the tasks belong to: this host's own, or one it serves after a lost node (see serve).
        host_id = host_of(tasks[0].device_id, self.num_hosts) if tasks else self.host_id
        results: list[FitResult] = []
        failures: list[DeviceFailure] = []
        fold = _HostSum()
        for i, task in enumerate(tasks):
            try:
                self._device(task.device_id)
                self._fault(FaultPoint("device", task.round_num, host_id, task.device_id, i), self)
                results.append(self._train_device(state, task, payload or {}, fold))
            except Exception as err:  # one bad device must not take the host's other devices down
                logger.warning("device %d failed in round %d: %s", task.device_id, task.round_num, err)
                failures.append(DeviceFailure(task.device_id, task.round_num, f"{type(err).__name__}: {err}"))
        self._fault(FaultPoint("answer", tasks[-1].round_num if tasks else 0, host_id, None, len(tasks)), self)
        return HostFitResult(
            host_id,
            tuple(results),
            tuple(failures),
            fold.partial,
            fold.total,
            fold.extras,
            started=started,
            finished=time.time(),
        )

    def replay(
        self, state: ModelState, tasks: Sequence[FitTask], payload: Mapping[str, ModelState] | None = None
    ) -> int:
        """Re-apply a past round to the local state of its devices (after a restart); returns devices retrained.

        ``tasks`` are the devices of this host that succeeded in that round. Only a device whose training
        keeps local state (``optimizer_start == "local"``, FedDUM's device momentum; ``control_variates``,
        SCAFFOLD's ``c_i``) is trained again, exactly as it was (same weights, payload, seed stream and
        starting state, so the same state comes out); for the others only the round counter moves.
        The fault hook is not called here.
        """
        retrained = 0
        for task in tasks:
            device = self._device(task.device_id)
            if task.settings.optimizer_start == "local" or task.settings.control_variates:
                self._train_device(state, task, payload or {})
                retrained += 1
            else:
                device.rounds_trained += 1
        return retrained

    def serve(self, host_ids: Sequence[int]) -> None:
        """Serve the devices of these host ids: its own, plus those of hosts whose node was lost and that
        could not be placed again (and back to its own when they are). Devices it keeps keep their state;
        new ones start empty until the driver restores them (``load_device_states``, ``replay``)."""
        wanted = sorted(d for h in host_ids for d in devices_of(h, self.num_hosts, self.manifest.num_devices))
        if wanted == sorted(self.devices):
            return
        self.devices = {d: self.devices.get(d) or EdgeDevice(d, int(self.manifest.num_examples[d])) for d in wanted}
        self._store, self._store_error = None, None  # rebuilt for the new set of devices on first use

    def _device(self, device_id: int) -> EdgeDevice:
        device = self.devices.get(device_id)
        if device is None:
            raise KeyError(f"device {device_id} is not served by host {self.host_id}/{self.num_hosts}")
        return device

    def _train_device(
        self, state: ModelState, task: FitTask, payload: Mapping[str, ModelState], fold: _HostSum | None = None
    ) -> FitResult:
        device = self._device(task.device_id)
        started = time.perf_counter()
        data = self.shard(task.device_id)
        self._load(state)
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
        # SCAFFOLD: steps corrected by c - c_i (c from the payload, c_i kept here; either missing = 0).
        c_i = device.local_state.get(CONTROL_KEY, {}) if settings.control_variates else {}
        grad_correction = correction(payload.get(CONTROL_KEY, {}), c_i) if settings.control_variates else None
        # One stream per (run, round, device): training is reproducible whatever host runs the device.
        generator = reseed(self._generator, self.settings.seed, task.round_num, task.device_id)
        train = local_train(
            self.model,
            data,
            settings,
            optimizer_state=start_state,
            generator=generator,
            device=self.device,
            workspace=self._workspace,
            return_optimizer_state=start_mode != "fresh",
            grad_correction=grad_correction,
            return_mean_gradient=settings.control_variates,
        )
        # Only the global variant needs the buffers back (pre-summed by the host, never per device).
        extras = {"optimizer_state": train.optimizer_state} if start_mode == "global" else {}
        # SCAFFOLD option II: the new c_i is the mean raw gradient; c_i+ - c_i is pre-summed like weights.
        new_c_i = train.mean_gradient if settings.control_variates and train.steps > 0 else None
        if new_c_i is not None:
            extras[DELTA_KEY] = change(new_c_i, c_i)
        metrics = {
            "train_loss": float(train.mean_loss),
            "steps": float(train.steps),
            "fit_seconds": time.perf_counter() - started,
        }
        num_examples = int(self.manifest.num_examples[task.device_id])
        hist = self.manifest.label_histograms[task.device_id].copy()
        result = FitResult(task.device_id, num_examples, hist, metrics)
        if fold is not None:
            fold.add(self._weights(), num_examples, extras)
        # The device's state moves last: a device that raised above keeps the state it had, which is
        # what the driver's copy (checkpoint + replayed successful rounds) assumes.
        if start_mode == "local":
            device.local_state["optimizer_state"] = train.optimizer_state
        if new_c_i is not None:
            device.local_state[CONTROL_KEY] = new_c_i
        device.rounds_trained += 1
        return result

    def _load(self, state: ModelState) -> None:
        """Copy the round's weights into the model (straight into the parameters' memory on the CPU)."""
        if self._views is None or state.keys() != self._views.keys():
            load_state(self.model, state)  # also names missing or unexpected keys
            return
        for key, view in self._views.items():
            np.copyto(view, state[key])

    def _weights(self) -> ModelState:
        """The model's weights: views of its memory on the CPU (read before the next device trains)."""
        return self._views if self._views is not None else state_from_model(self.model)

    def _check_incarnation(self, incarnation: str | None) -> None:
        if incarnation is not None and incarnation != self.incarnation:
            raise StaleHostError(
                f"host {self.host_id} restarted (incarnation {self.incarnation[:8]}, driver expected "
                f"{incarnation[:8]}); its devices' local state must be restored first"
            )

    # ------------------------------------------------------------------ state
    def device_states(
        self, incarnation: str | None = None, devices: Sequence[int] | None = None
    ) -> dict[int, dict[str, Any]]:
        """Local state of every device this host serves, or of ``devices`` only (for checkpoints).

        Raises:
            StaleHostError: ``incarnation`` is given and is not this process's.
        """
        self._check_incarnation(incarnation)
        chosen = self.devices.values() if devices is None else (self._device(int(d)) for d in devices)
        return {d.device_id: {"rounds_trained": d.rounds_trained, **d.local_state} for d in chosen}

    def state_chunks(self, host_id: int, max_bytes: int, incarnation: str | None = None) -> list[list[int]]:
        """The devices of host id ``host_id`` that this host serves, in id order, grouped so that each
        group's :meth:`device_states` holds about ``max_bytes`` at most (a checkpoint asks chunk by chunk)."""
        self._check_incarnation(incarnation)
        mine = sorted(d for d in self.devices if host_of(d, self.num_hosts) == host_id)
        return chunk_by_bytes(((d, state_nbytes(self.devices[d].local_state)) for d in mine), max_bytes)

    def load_device_states(
        self, states: Mapping[int, Mapping[str, Any]], host_ids: Sequence[int] | None = None, reset: bool = True
    ) -> str:
        """Restore what :meth:`device_states` returned (on resume, after a restart); returns the incarnation.

        Devices of this host missing from ``states`` start empty (they had not trained at that point).
        With ``host_ids`` only the devices of those host ids are restored (taken over after a lost node);
        the others keep their state. ``reset=False`` adds ``states`` to what earlier calls restored (a
        restore sent chunk by chunk: the first call resets, the next ones add).
        """
        mine = {d for d in self.devices if host_ids is None or host_of(d, self.num_hosts) in host_ids}
        for device_id in mine if reset else ():
            self.devices[device_id].local_state, self.devices[device_id].rounds_trained = {}, 0
        for device_id, local in states.items():
            device = self.devices.get(int(device_id)) if int(device_id) in mine else None
            if device is not None:
                local = dict(local)
                device.rounds_trained = int(local.pop("rounds_trained", 0))
                device.local_state = local
        return self.incarnation

    def info(self) -> dict[str, Any]:
        """Who and where this host is, and what it read (tests, the progress banner, benchmarks).

        ``source_reads`` lists the partition files this process opened to build its device store (empty
        when it reused an entry: ``cache_hits`` is then 1); ``store`` describes the entry (None until the
        first device trained, or when the store is off, in which case ``shard_reads`` counts row-group reads).
        """
        store = self._store.info() if self._store is not None else None
        return {
            "host_id": self.host_id,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "incarnation": self.incarnation,
            "devices": len(self.devices),
            "torch_device": self.device,
            "cached_shards": len(self._cache),
            "store": store,
            "store_error": self._store_error,
            "source_reads": store["source_reads"] if store else [],
            "cache_hits": int(bool(store and store["cache_hit"])),
            "shard_reads": self._shard_reads,
            "peak_rss_mb": _peak_rss_mb(),
        }

    def ping(self) -> int:
        """Liveness probe: returns the host id."""
        return self.host_id


class _HostSum:
    """A host's round partial sum ``sum_k n_k w_k`` (float64), grown in place device by device.

    The same arithmetic, in the same order, as ``HostFitResult.from_devices`` over per-device copies.
    """

    def __init__(self) -> None:
        self.partial: ModelState | None = None
        self.extras: dict[str, ModelState] = {}
        self.total = 0

    def add(self, weights: Mapping[str, np.ndarray], num_examples: int, extras: Mapping[str, ModelState]) -> None:
        if self.partial is None:
            self.partial = zeros_like(weights)
        add_scaled(self.partial, weights, float(num_examples))
        for name, extra in extras.items():
            if name not in self.extras:
                self.extras[name] = zeros_like(extra)
            add_scaled(self.extras[name], extra, float(num_examples))
        self.total += num_examples


def _peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux ``ru_maxrss`` is in KB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
