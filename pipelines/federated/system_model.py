"""The modelled clock of a federated deployment: device speeds and links, payloads, round times.

Pure arithmetic on numbers the run already knows (no timing of this machine enters it), so a round's
modelled time depends only on the configuration and the seed:

- a device's compute time is the FLOPs of its local training divided by its speed, where the FLOPs
  are the FLOPs of one training step (counted once per model,
  :func:`fedtwin.pipelines.model.flops.count_step_flops`) times its steps; a shorter last batch costs
  its share of a step (the counted FLOPs grow linearly with the batch);
- its download and upload times are the payload bytes divided by its link's bandwidth;
- speeds and bandwidths come per device from a :class:`Profile` (one value for all, a seeded
  lognormal spread around a median, or a table per device id);
- the server's time is its FLOPs (folding the device results, FedDU's server pass and its evaluations
  on the shared data) divided by the server's speed;
- a round takes as long as its slowest reporting device plus the server's time.

Nothing here imports Ray, torch or the orchestrator; the federated recipe wires it in
(``fedtwin.orchestrator.recipes.federated.system_clock``). ``docs/system_model.md`` explains the model.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

#: Seed streams of the drawn profiles: each quantity has its own, so changing one profile's kind
#: leaves the others' draws alone.
SPEED_STREAM, DOWNLOAD_STREAM, UPLOAD_STREAM = 1, 2, 3
#: FLOPs of folding one reporting device's array into the running sum (a multiply and an add per value).
FOLD_FLOPS_PER_VALUE = 2.0


@dataclass(frozen=True)
class Profile:
    """How one per-device quantity (speed, bandwidth) is spread over the devices.

    Attributes:
        kind: ``fixed`` (``value`` for every device), ``lognormal`` (``value`` is the median; the log
            of the quantity has standard deviation ``sigma``) or ``table`` (``table[device_id]``).
        value: the value or median.
        sigma: the lognormal spread (0 = every device at the median).
        table: per-device values (``kind: table``).
    """

    kind: Literal["fixed", "lognormal", "table"]
    value: float = 1.0
    sigma: float = 0.0
    table: Mapping[int, float] | None = None

    def draw(self, num_devices: int, seed: int, stream: int) -> np.ndarray:
        """The quantity of devices ``0 .. num_devices - 1``; seeded by ``(seed, stream)`` for ``lognormal``.

        Raises:
            ValueError: a table misses a device or holds a value that is not > 0.
        """
        if self.kind == "fixed":
            return np.full(num_devices, float(self.value))
        if self.kind == "lognormal":
            rng = np.random.default_rng([seed, stream])
            return float(self.value) * np.exp(float(self.sigma) * rng.standard_normal(num_devices))
        table = self.table or {}
        missing = [d for d in range(num_devices) if d not in table]
        if missing:
            raise ValueError(f"the table has no value for device {missing[0]} (it needs devices 0..{num_devices - 1})")
        values = np.array([float(table[d]) for d in range(num_devices)])
        if not np.all(values > 0):
            bad = int(np.argmin(values > 0))
            raise ValueError(f"device {bad}: value must be > 0, got {values[bad]}")
        return values


def read_table(path: str | Path) -> dict[int, float]:
    """A CSV of ``device_id,value`` rows (a header row first) as ``{device_id: value}``.

    Raises:
        ValueError: the file is missing, has no ``device_id``/``value`` columns, or a row does not parse.
    """
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise ValueError(f"cannot read {path} ({err.strerror or err})") from None
    if not rows or not {"device_id", "value"} <= set(rows[0]):
        raise ValueError(f"{path}: expected a header row 'device_id,value' and one row per device")
    table: dict[int, float] = {}
    for line, row in enumerate(rows, start=2):
        try:
            table[int(row["device_id"])] = float(row["value"])
        except (TypeError, ValueError):
            raise ValueError(f"{path}, line {line}: expected an integer device_id and a number") from None
    return table


@dataclass(frozen=True)
class DeviceFleet:
    """Every device's speed (FLOP/s) and link bandwidths (bytes/s), drawn once per run."""

    speed: np.ndarray
    download: np.ndarray
    upload: np.ndarray

    @classmethod
    def draw(
        cls, num_devices: int, seed: int, *, speed: Profile, download: Profile, upload: Profile, scale: Sequence[float]
    ) -> DeviceFleet:
        """Draw the three profiles; ``scale`` converts their units (e.g. GFLOP/s, Mbit/s) to FLOP/s and bytes/s."""
        return cls(
            speed.draw(num_devices, seed, SPEED_STREAM) * scale[0],
            download.draw(num_devices, seed, DOWNLOAD_STREAM) * scale[1],
            upload.draw(num_devices, seed, UPLOAD_STREAM) * scale[2],
        )


def examples_processed(num_examples: int, epochs: int, batch_size: int, max_steps: int | None = None) -> int:
    """Examples a local training call runs through (every epoch's batches, the last one possibly short,
    stopping after ``max_steps`` steps)."""
    if num_examples <= 0:
        return 0
    per_epoch = math.ceil(num_examples / batch_size)
    steps = per_epoch * epochs if max_steps is None else min(per_epoch * epochs, max_steps)
    full_epochs, rest = divmod(steps, per_epoch)
    return full_epochs * num_examples + rest * batch_size  # a partial epoch stops before its short batch


@dataclass(frozen=True)
class DeviceTime:
    """One device's modelled round: seconds to download, train and upload."""

    download_s: float
    compute_s: float
    upload_s: float

    @property
    def total_s(self) -> float:
        """Download + compute + upload."""
        return self.download_s + self.compute_s + self.upload_s


def device_time(
    fleet: DeviceFleet,
    device_id: int,
    *,
    train_flops: float,
    download_bytes: float,
    upload_bytes: float,
) -> DeviceTime:
    """Device ``device_id``'s round: its FLOPs over its speed, its payloads over its links."""
    return DeviceTime(
        download_bytes / float(fleet.download[device_id]),
        train_flops / float(fleet.speed[device_id]),
        upload_bytes / float(fleet.upload[device_id]),
    )


@dataclass(frozen=True)
class Admission:
    """Which sampled devices train this round.

    Attributes:
        kept: the devices that train (sorted), at most ``wanted``.
        late: devices whose modelled time exceeds the deadline (not dispatched).
        surplus: over-selected devices that would make the deadline but were not needed: the
            ``wanted`` fastest were kept.
    """

    kept: tuple[int, ...]
    late: tuple[int, ...]
    surplus: tuple[int, ...]


def admit(times: Mapping[int, float], wanted: int, deadline_s: float | None = None) -> Admission:
    """Keep the devices that make ``deadline_s`` (all without one), then the ``wanted`` fastest of them.

    Ties in time are broken by device id, so the choice is reproducible.
    """
    on_time = sorted(d for d, t in times.items() if deadline_s is None or t <= deadline_s)
    late = sorted(set(times) - set(on_time))
    by_speed = sorted(on_time, key=lambda d: (times[d], d))
    kept = sorted(by_speed[:wanted])
    return Admission(tuple(kept), tuple(late), tuple(sorted(by_speed[wanted:])))


def round_time(device_seconds: Iterable[float], server_s: float) -> float:
    """The slowest reporting device plus the server's time (0 devices: the server's time alone)."""
    return max(device_seconds, default=0.0) + server_s


def fold_flops(num_values: int, num_devices: int) -> float:
    """FLOPs of folding ``num_devices`` results of ``num_values`` numbers each (weights and extras)."""
    return FOLD_FLOPS_PER_VALUE * float(num_values) * float(num_devices)


def state_bytes(arrays: Mapping[str, Any]) -> int:
    """Bytes of a state (a mapping of arrays), as they travel."""
    return int(sum(np.asarray(v).nbytes for v in arrays.values()))


def time_to_accuracy(
    records: Sequence[Mapping[str, Any]],
    target: float | None,
    *,
    key: str = "test_accuracy",
    clock: str = "sim_time_s",
) -> float | None:
    """The ``clock`` reading of the first record whose ``key`` reaches ``target`` (None: never, or no target).

    ``clock="sim_time_s"`` gives modelled time to accuracy. Any other key is read as a per-record
    duration and summed up to that record (``clock="round_seconds"``: this machine's wall-clock).
    """
    if target is None:
        return None
    elapsed = 0.0
    for record in records:
        if clock != "sim_time_s":
            elapsed += float(record.get(clock) or 0.0)
        value = record.get(key)
        if value is not None and value >= target:
            if clock == "sim_time_s":
                return None if record.get("sim_time_s") is None else float(record["sim_time_s"])
            return elapsed
    return None
