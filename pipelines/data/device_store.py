"""A device host's own copy of its devices' rows: one memory-mapped Arrow IPC file per node cache entry.

Reading a device's Parquet row group costs a file open, a footer parse and a decompression, about as
much as the device's training step on a small model. A host therefore materialises the rows of exactly
the devices it serves, once, into one uncompressed Arrow IPC file, and memory-maps it: a device's clips
are then a zero-copy slice of the mapped file.

Cache entries live in a per-node folder (``FEDTWIN_CACHE_DIR``, default ``~/.cache/fedtwin``, under
``devices/``), one file per (partition content, device set)::

    <partition content key>-<device set key>.arrow

The partition content key is a hash of the partition's ``manifest.json`` bytes
(``PartitionManifest.content_key``), so a changed partition is never served stale; the device set key
is a hash of the sorted device ids (and the clip shape). A second run on the same node with the same
partition and host layout opens the existing file without reading the partition. The folder is bounded
in bytes (``FEDTWIN_CACHE_MAX_GB``, default 20): after writing an entry, whole entries are evicted,
least recently used first (an entry's mtime is touched whenever a host opens it), never the entry just
opened. ``FEDTWIN_CACHE_MAX_GB=0`` turns the store off (hosts read each device's row group directly).

Source rows are read only through :func:`fedtwin.pipelines.data.dataset_io.open_parquet`, which takes local paths
and object-storage URIs alike; each device file is opened once and only the host's row groups are
decoded. Memory: the mapped pages are file-backed and clean, so the kernel can drop them under pressure
(a host's RSS counts the pages it touched, shared with the page cache); building an entry holds one
device file's selected rows at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fedtwin.pipelines.core import storage
from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.dataset_io import check_clip_schema, open_parquet
from fedtwin.pipelines.data.partition_manifest import REPARTITION_HINT, PartitionManifest
from fedtwin.pipelines.data.schema import CLIP, LABEL, REQUIRED_COLUMNS, VIDEO_ID, clip_size

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "FEDTWIN_CACHE_DIR"
CACHE_MAX_GB_ENV = "FEDTWIN_CACHE_MAX_GB"
DEFAULT_CACHE_MAX_GB = 20.0
_FORMAT = "1"  # bump when the entry layout changes
_META_KEY = b"fedtwin.device_store"


def cache_dir(configured: str | None = None) -> Path:
    """The node's device cache folder: ``configured``, else ``$FEDTWIN_CACHE_DIR``, else ``~/.cache/fedtwin``."""
    base = configured or os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "fedtwin"
    return Path(base).expanduser() / "devices"


def cache_max_bytes(configured: float | None = None) -> int:
    """The cache bound in bytes: ``configured`` GB, else ``$FEDTWIN_CACHE_MAX_GB``, else 20 GB (0 = off)."""
    if configured is None:
        raw = os.environ.get(CACHE_MAX_GB_ENV)
        try:
            configured = float(raw) if raw else DEFAULT_CACHE_MAX_GB
        except ValueError:
            raise DatasetError(f"{CACHE_MAX_GB_ENV}={raw!r}: must be a number of GB (0 turns the store off)") from None
    return int(max(0.0, configured) * 2**30)


def entry_name(manifest: PartitionManifest, device_ids: Sequence[int]) -> str:
    """File name of the cache entry holding ``device_ids`` of ``manifest``'s partition.

    The key covers the manifest's bytes, the device set and the clip shape; for a local partition also
    the size and modification time of the device files these devices live in (a file rewritten in place
    under an unchanged manifest is not served stale). Object-store partitions are keyed by their
    manifest alone (asking every object for its date would cost a request per file).
    """
    if not manifest.content_key:
        raise ValueError("the manifest carries no content_key; load it with load_partition_manifest")
    ids = np.asarray(sorted(int(d) for d in device_ids), dtype=np.int64)
    files = [] if storage.is_remote(manifest.directory) else sorted({manifest.device_paths[d] for d in ids.tolist()})
    stamps = []
    for rel in files:
        try:
            st = Path(storage.child(manifest.directory, rel)).stat()
            stamps.append((rel, st.st_size, st.st_mtime_ns))
        except OSError:
            stamps.append((rel, -1, -1))  # missing: the build reports it
    digest = hashlib.sha256(ids.tobytes() + repr((_FORMAT, tuple(manifest.clip_shape), stamps)).encode()).hexdigest()
    return f"{manifest.content_key}-{digest[:16]}.arrow"


class DeviceStore:
    """The rows of a fixed set of devices, served as zero-copy views of one memory-mapped file.

    Args:
        manifest: the loaded partition manifest (local or on object storage).
        device_ids: the devices to hold (a host's own devices).
        directory: the cache folder (default :func:`cache_dir`).
        max_bytes: the cache bound (default :func:`cache_max_bytes`).

    Raises:
        DatasetError: a device file is missing, unreadable or does not match the manifest.
    """

    def __init__(
        self,
        manifest: PartitionManifest,
        device_ids: Sequence[int],
        directory: str | Path | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.device_ids = np.asarray(sorted(int(d) for d in device_ids), dtype=np.int64)
        self.directory = Path(directory) if directory is not None else cache_dir()
        self.max_bytes = cache_max_bytes() if max_bytes is None else int(max_bytes)
        self.path = self.directory / entry_name(manifest, self.device_ids.tolist())
        self.source_reads: list[str] = []
        sizes = manifest.num_examples[self.device_ids]
        self._starts = dict(zip(self.device_ids.tolist(), (np.cumsum(sizes) - sizes).tolist(), strict=True))
        self._sizes = dict(zip(self.device_ids.tolist(), sizes.tolist(), strict=True))
        self.cache_hit = self._open_existing()
        if not self.cache_hit:
            self._build()
            if not self._open_existing():
                raise DatasetError(f"{self.path}: the device cache entry just written does not read back")
            evict(self.directory, self.max_bytes, keep=self.path)

    # ------------------------------------------------------------------ reads
    def arrays(self, device_id: int) -> tuple[np.ndarray, np.ndarray]:
        """``(clips, labels)`` of one device: read-only views into the mapped file, no copy."""
        start = self._starts.get(int(device_id))
        if start is None:
            raise KeyError(f"device {device_id} is not in this store")
        b = int(np.searchsorted(self._batch_starts, start, side="right")) - 1
        lo = start - int(self._batch_starts[b])
        hi = lo + self._sizes[int(device_id)]
        return self._clips[b][lo:hi], self._labels[b][lo:hi]

    def get(self, device_id: int) -> ClipArrays:
        """One device's clips as ``ClipArrays`` (pixels and labels zero-copy; video ids decoded)."""
        clips, labels = self.arrays(device_id)
        b = int(np.searchsorted(self._batch_starts, self._starts[int(device_id)], side="right")) - 1
        lo = self._starts[int(device_id)] - int(self._batch_starts[b])
        ids = self._video_ids[b].slice(lo, len(labels)).to_pylist()
        return ClipArrays(clips, labels, np.asarray(ids, dtype=str) if ids else np.zeros(0, dtype="<U1"))

    def info(self) -> dict[str, Any]:
        """Where the entry is, how big, whether it was reused, and which source files were read to build it."""
        return {
            "path": str(self.path),
            "bytes": self.path.stat().st_size if self.path.exists() else 0,
            "devices": len(self.device_ids),
            "cache_hit": self.cache_hit,
            "source_reads": list(self.source_reads),
        }

    # ------------------------------------------------------------------ open / build
    def _open_existing(self) -> bool:
        """Map the entry if it exists and matches; False if it must be (re)built."""
        if not self.path.is_file():
            return False
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(self.path), "r"))
            meta = reader.schema.metadata or {}
            expected = sum(self._sizes.values())
            if meta.get(_META_KEY) != self.path.name.encode() or reader.num_record_batches == 0 and expected:
                return False
            batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        except (pa.ArrowException, OSError) as err:
            logger.warning("device cache entry %s is unreadable (%s); rebuilding it", self.path, err)
            return False
        if sum(b.num_rows for b in batches) != expected:
            return False
        shape = tuple(self.manifest.clip_shape)
        size = clip_size(shape)
        self._clips, self._labels, self._video_ids = [], [], []
        for batch in batches:
            col = batch.column(CLIP)
            n = len(col)
            buf = np.frombuffer(col.buffers()[1], dtype=np.uint8) if n else np.zeros(0, dtype=np.uint8)
            self._clips.append(buf[col.offset * size : (col.offset + n) * size].reshape(n, *shape))
            self._labels.append(batch.column(LABEL).to_numpy(zero_copy_only=True))
            self._video_ids.append(batch.column(VIDEO_ID))
        lengths = np.array([b.num_rows for b in batches], dtype=np.int64)
        self._batch_starts = np.cumsum(lengths) - lengths
        with contextlib.suppress(OSError):  # evicted meanwhile by another host: still mapped here
            os.utime(self.path)  # LRU: the entry was used now
        return True

    def _build(self) -> None:
        """Read this store's devices from the partition (one open per device file) into a new entry."""
        m = self.manifest
        by_file: dict[str, list[int]] = {}
        for d in self.device_ids.tolist():
            by_file.setdefault(m.device_paths[d], []).append(d)
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.directory)
        os.close(fd)
        try:
            with pa.OSFile(tmp, "wb") as sink:
                writer = None
                for rel, devices in sorted(by_file.items(), key=lambda item: item[1][0]):
                    table = self._read_devices(rel, devices)
                    table = table.replace_schema_metadata({_META_KEY: self.path.name.encode()})
                    if writer is None:
                        writer = pa.ipc.new_file(sink, table.schema)
                    writer.write_table(table.combine_chunks(), max_chunksize=max(1, table.num_rows))
                    del table
                    pa.default_memory_pool().release_unused()  # hold one device file's rows at a time
                if writer is None:  # no devices: an empty but valid entry
                    writer = pa.ipc.new_file(sink, pa.schema([]).with_metadata({_META_KEY: self.path.name.encode()}))
                writer.close()
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        logger.info(
            "device cache: wrote %s (%d devices, %.1f MB) from %d source files",
            self.path,
            len(self.device_ids),
            self.path.stat().st_size / 1e6,
            len(by_file),
        )

    def _read_devices(self, rel: str, devices: list[int]) -> pa.Table:
        """The rows of ``devices`` (all in device file ``rel``, ascending) as one table, checked against
        the manifest."""
        m = self.manifest
        location = m.device(devices[0]).path
        self.source_reads.append(str(location))
        pf = open_parquet(location, REPARTITION_HINT)
        check_clip_schema(pf.schema_arrow, location, m.clip_shape, REPARTITION_HINT)
        meta = pf.metadata
        group_rows = np.array([meta.row_group(g).num_rows for g in range(meta.num_row_groups)], dtype=np.int64)
        group_starts = np.cumsum(group_rows) - group_rows
        wanted: dict[int, tuple[int, int, int]] = {}  # device -> (first group, last group + 1, rows)
        for d in devices:
            offset, n = int(m.row_offsets[d]), int(m.num_examples[d])
            if offset < 0 or offset + n > int(meta.num_rows):
                raise DatasetError(
                    f"{location}: device {d}'s rows [{offset}, {offset + n}) are not in the file; {REPARTITION_HINT}"
                )
            first = int(np.searchsorted(group_starts, offset, side="right")) - 1
            wanted[d] = (first, max(first + 1, int(np.searchsorted(group_starts, offset + n, side="left"))), n)
        groups = sorted({g for first, end, _ in wanted.values() for g in range(first, end)})
        at = dict(zip(groups, (np.cumsum(group_rows[groups]) - group_rows[groups]).tolist(), strict=True))
        spans = [
            (d, at[first] + int(m.row_offsets[d]) - int(group_starts[first]), n) for d, (first, _, n) in wanted.items()
        ]
        try:
            table = pf.read_row_groups(groups, columns=list(REQUIRED_COLUMNS))
        except (pa.ArrowException, OSError) as err:
            problem = str(err).splitlines()[0]
            raise DatasetError(f"{location}: cannot read clips ({problem}); {REPARTITION_HINT}") from None
        parts = [table.slice(start, n) for _, start, n in spans]
        out = pa.concat_tables(parts) if parts else table.slice(0, 0)
        labels = out.column(LABEL).to_numpy()
        owner = np.repeat(np.arange(len(spans)), [n for _, _, n in spans])
        k = m.num_classes
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise DatasetError(f"{location}: labels outside [0, {k}); {REPARTITION_HINT}")
        hists = np.bincount(owner * k + labels, minlength=len(spans) * k).reshape(len(spans), k)
        bad = np.flatnonzero(np.any(hists != m.label_histograms[[d for d, _, _ in spans]], axis=1))
        if bad.size:
            raise DatasetError(
                f"{location}: device {spans[int(bad[0])][0]}'s labels do not match the manifest; {REPARTITION_HINT}"
            )
        return out


def evict(directory: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Delete whole cache entries, least recently used first, until the folder holds at most ``max_bytes``.

    ``keep`` (the entry in use) is never deleted, even if it alone is over the bound. A host that still
    maps a deleted entry keeps reading it (the file lives until it is unmapped). Returns what was deleted.
    """
    entries = []
    for path in directory.glob("*.arrow"):
        try:
            st = path.stat()
        except FileNotFoundError:  # another host evicted it meanwhile
            continue
        entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    deleted = []
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        if keep is not None and path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        deleted.append(path)
    if deleted:
        logger.info(
            "device cache: evicted %d entries from %s (bound %.1f GB)", len(deleted), directory, max_bytes / 2**30
        )
    return deleted
