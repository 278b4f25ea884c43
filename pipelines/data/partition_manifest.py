"""The partition manifest (``manifest.json`` of a partition directory) and the shard loaders.

Layout of a partition directory::

    manifest.json            this manifest (kind "fedtwin-partition")
    devices/part-00000.parquet   devices 0..255, one Parquet row group per device, in device order
    devices/part-00001.parquet   devices 256..511, ...
    shared.parquet           the server-held split (possibly empty)
    test.parquet             the source dataset's test split, unchanged

Each device entry records its file, its first row inside that file, its size, label histogram and the
JS divergence of its labels to the label distribution of all device data, plus its ``group`` (camera,
owner) when every device holds the videos of exactly one group (``by-group``). Hosts keep the (picklable)
``PartitionManifest`` and call :func:`load_device_shard`, which decodes only that device's row group.

The directory may be a local folder or a URI (``s3://``, ``gs://``, ``file://``; see
:mod:`fedtwin.pipelines.core.storage`): ``directory`` and ``DeviceEntry.path`` are then URI strings, and reads
fetch only the Parquet footer and the row groups asked for. :attr:`PartitionManifest.content_key` names
the partition's content (a hash of its ``manifest.json`` bytes), for caches that must never serve a
changed partition stale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedtwin.pipelines.core import storage
from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.dataset_io import read_clip_rows, read_clips
from fedtwin.pipelines.data.manifest import MANIFEST_NAME, FieldReader
from fedtwin.pipelines.data.manifest_devices import read_device_entries
from fedtwin.pipelines.data.schema import SCHEMA_VERSION, ClipShape

PARTITION_KIND = "fedtwin-partition"
REPARTITION_HINT = "re-run `fedtwin data partition`"


@dataclass(frozen=True)
class SplitEntry:
    """A server-side split of the partition (``shared`` or ``test``)."""

    path: str
    num_examples: int
    label_histogram: tuple[int, ...]
    js: float | None = None  # JS to the global device label distribution (None when empty)
    classes: tuple[int, ...] | None = None  # shared split: the classes it was restricted to


@dataclass(frozen=True)
class DeviceEntry:
    """What a host needs to load one device's shard."""

    device_id: int
    path: Path | str  # absolute path, or a URI
    row_offset: int
    num_examples: int
    label_histogram: np.ndarray
    js: float


@dataclass(frozen=True, eq=False)
class PartitionManifest:
    """A loaded, validated partition; per-device fields are arrays indexed by device id."""

    directory: Path | str  # a local folder, or a URI string (s3://, gs://)
    clip_shape: ClipShape
    num_classes: int
    class_names: tuple[str, ...]
    scheme: str
    params: dict[str, Any]
    seed: int
    device_paths: tuple[str, ...]  # relative to ``directory``
    row_offsets: np.ndarray  # int64 (N,)
    num_examples: np.ndarray  # int64 (N,)
    label_histograms: np.ndarray  # int64 (N, K)
    js: np.ndarray  # float64 (N,)
    global_label_histogram: np.ndarray  # int64 (K,), over all device data
    shared: SplitEntry
    test: SplitEntry
    source: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    device_groups: tuple[str, ...] | None = None  # each device's group (by-group), else None
    content_key: str = ""  # sha256 (first 16 hex digits) of the manifest.json bytes it was loaded from

    @property
    def num_devices(self) -> int:
        """Number of devices (ids 0..num_devices-1)."""
        return len(self.device_paths)

    def device(self, device_id: int) -> DeviceEntry:
        """The entry of one device; ``DatasetError`` for an unknown id."""
        if not 0 <= device_id < self.num_devices:
            raise DatasetError(f"{self.directory}: no device {device_id} (devices are 0..{self.num_devices - 1})")
        return DeviceEntry(
            device_id,
            storage.child(self.directory, self.device_paths[device_id]),
            int(self.row_offsets[device_id]),
            int(self.num_examples[device_id]),
            self.label_histograms[device_id],
            float(self.js[device_id]),
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json`` (without ``directory``)."""
        devices = [
            {
                "id": i,
                "path": self.device_paths[i],
                "row_offset": int(self.row_offsets[i]),
                "num_examples": int(self.num_examples[i]),
                "label_histogram": self.label_histograms[i].tolist(),
                "js": round(float(self.js[i]), 6),
                **({"group": self.device_groups[i]} if self.device_groups is not None else {}),
            }
            for i in range(self.num_devices)
        ]
        return {
            "kind": PARTITION_KIND,
            "schema_version": SCHEMA_VERSION,
            "clip_shape": list(self.clip_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "scheme": self.scheme,
            "params": self.params,
            "seed": self.seed,
            "config": self.config,
            "source": self.source,
            "num_devices": self.num_devices,
            "global_label_histogram": self.global_label_histogram.tolist(),
            "js_summary": js_summary(self.js),
            "shared": _split_json(self.shared),
            "test": _split_json(self.test),
            "devices": devices,
        }


def js_summary(js: np.ndarray) -> dict[str, float]:
    """Mean, min, median and max of per-device JS values."""
    if len(js) == 0:
        return {}
    return {
        k: round(float(f(js)), 6)
        for k, f in (("mean", np.mean), ("min", np.min), ("median", np.median), ("max", np.max))
    }


def _split_json(entry: SplitEntry) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": entry.path,
        "num_examples": entry.num_examples,
        "label_histogram": list(entry.label_histogram),
    }
    if entry.js is not None:
        out["js"] = round(entry.js, 6)
    if entry.classes is not None:
        out["classes"] = list(entry.classes)
    return out


def _read_split(fr: FieldReader, obj: Any, name: str, num_classes: int) -> SplitEntry:
    entry = fr.get(obj, name, dict)
    where = f"{name}."
    hist = fr.int_list(entry, "label_histogram", num_classes, where)
    num = fr.get(entry, "num_examples", int, where)
    if sum(hist) != num:
        raise fr.fail(f"{name}: label_histogram does not sum to num_examples")
    js = fr.get(entry, "js", (int, float), where) if "js" in entry else None
    classes = tuple(fr.int_list(entry, "classes", None, where)) if "classes" in entry else None
    return SplitEntry(
        fr.relative_path(entry, "path", where), num, tuple(hist), None if js is None else float(js), classes
    )


def load_partition_manifest(partition_dir: str | Path) -> PartitionManifest:
    """Read and validate ``partition_dir/manifest.json`` (a local folder or a URI).

    Raises:
        DatasetError: missing, malformed or inconsistent manifest (one line naming the file and the fix).
    """
    directory = storage.as_location(partition_dir)
    path = storage.child(directory, MANIFEST_NAME)
    fr = FieldReader(path, REPARTITION_HINT)
    raw = _read_manifest_bytes(path)
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: unreadable JSON ({err}); {REPARTITION_HINT}") from None
    fr.header(obj, PARTITION_KIND)
    k = fr.get(obj, "num_classes", int)
    class_names = fr.get(obj, "class_names", list)
    if k < 1 or len(class_names) != k:
        raise fr.fail(f"class_names should list {k} names")
    devices = fr.get(obj, "devices", list)
    if len(devices) != fr.get(obj, "num_devices", int) or not devices:
        raise fr.fail(f"num_devices is {obj['num_devices']} but {len(devices)} device entries are listed")
    paths, offsets, sizes, hists, js, groups = read_device_entries(fr, devices, k)
    if groups and len(groups) != len(devices):
        raise fr.fail("either every device entry has a group or none has")
    hist_arr = np.asarray(hists, dtype=np.int64).reshape(len(devices), k)
    sizes_arr = np.asarray(sizes, dtype=np.int64)
    if np.any(hist_arr.sum(axis=1) != sizes_arr):
        bad = int(np.flatnonzero(hist_arr.sum(axis=1) != sizes_arr)[0])
        raise fr.fail(f"devices[{bad}]: label_histogram does not sum to num_examples")
    return PartitionManifest(
        directory=directory,
        clip_shape=fr.clip_shape(obj),
        num_classes=k,
        class_names=tuple(str(c) for c in class_names),
        scheme=fr.get(obj, "scheme", str),
        params=fr.get(obj, "params", dict),
        seed=fr.get(obj, "seed", int),
        device_paths=tuple(paths),
        row_offsets=np.asarray(offsets, dtype=np.int64),
        num_examples=sizes_arr,
        label_histograms=hist_arr,
        js=np.asarray(js, dtype=np.float64),
        global_label_histogram=np.asarray(fr.int_list(obj, "global_label_histogram", k), dtype=np.int64),
        shared=_read_split(fr, obj, "shared", k),
        test=_read_split(fr, obj, "test", k),
        source=obj.get("source", {}),
        config=obj.get("config", {}),
        device_groups=tuple(groups) if groups else None,
        content_key=hashlib.sha256(raw).hexdigest()[:16],
    )


def _read_manifest_bytes(path: Path | str) -> bytes:
    try:
        return storage.read_bytes(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; {REPARTITION_HINT}") from None
    except OSError as err:  # local read errors (storage errors are one-line FedtwinErrors already)
        raise DatasetError(f"{path}: unreadable ({err}); {REPARTITION_HINT}") from None


def record_source(partition_dir: str | Path, source: str) -> None:
    """Set ``source.path`` of a local partition's manifest to ``source`` (the URI its local input came from)."""
    from fedtwin.pipelines.core.atomic_write import write_json_atomic

    path = Path(partition_dir) / MANIFEST_NAME
    obj = json.loads(path.read_text(encoding="utf-8"))
    obj.setdefault("source", {})["path"] = source
    write_json_atomic(path, obj)


def _manifest(partition: str | Path | PartitionManifest) -> PartitionManifest:
    return partition if isinstance(partition, PartitionManifest) else load_partition_manifest(partition)


def load_device_shard(partition: str | Path | PartitionManifest, device_id: int) -> ClipArrays:
    """Load one device's clips, decoding only its row group.

    Pass a loaded :class:`PartitionManifest` when loading many shards: a path re-reads the manifest.

    Raises:
        DatasetError: unknown device, missing file, or a file that does not match the manifest.
    """
    m = _manifest(partition)
    d = m.device(device_id)
    clips = read_clip_rows(d.path, m.clip_shape, d.row_offset, d.num_examples, REPARTITION_HINT)
    if not np.array_equal(np.bincount(clips.labels, minlength=m.num_classes), d.label_histogram):
        raise DatasetError(f"{d.path}: device {device_id}'s labels do not match {MANIFEST_NAME}; {REPARTITION_HINT}")
    return clips


def _load_split(m: PartitionManifest, entry: SplitEntry) -> ClipArrays:
    path = storage.child(m.directory, entry.path)
    clips = read_clips(path, m.clip_shape, REPARTITION_HINT)
    if len(clips) != entry.num_examples:
        raise DatasetError(
            f"{path}: has {len(clips)} rows but {MANIFEST_NAME} says {entry.num_examples}; {REPARTITION_HINT}"
        )
    return clips


def load_shared(partition: str | Path | PartitionManifest) -> ClipArrays:
    """The server-held ``shared`` split (may be empty)."""
    m = _manifest(partition)
    return _load_split(m, m.shared)


def load_test(partition: str | Path | PartitionManifest) -> ClipArrays:
    """The test split."""
    m = _manifest(partition)
    return _load_split(m, m.test)
