"""``fedtwin data partition``: split a dataset's train split into per-device shards plus a server split.

Whole videos move, never single clips: clips that share a ``video_id`` (the clips cut from one imported
video) always end up on one device or all in ``shared``. Steps (all seeded from ``PartitionConfig.seed``):
carve the server-held ``shared`` split out of the train videos (optionally restricted to K classes
chosen by the seed, as in the FedDU papers), assign the remaining videos to devices with the
partitioner ``scheme`` names (a built-in of ``PARTITIONERS``, an entry point or an import path; see
:mod:`fedtwin.pipelines.data.partitioners`), each video by the label of its clips, then write the shards (packed,
one row group per device), ``shared.parquet``, ``test.parquet`` and ``manifest.json`` atomically. Layout
and loaders: :mod:`fedtwin.pipelines.data.partition_manifest`.

With one clip per video (generated moving digits) a video is a row, so the results are those of
assigning rows. ``by-group`` makes one device per value of the dataset's optional ``group`` column.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from fedtwin.pipelines.core.atomic_write import atomic_directory, check_output_dir, write_json_atomic
from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.dataset_io import PARQUET_WRITE_OPTIONS, clips_to_table, load_split, write_clips
from fedtwin.pipelines.data.heterogeneity import distribution, js_divergence, label_histogram
from fedtwin.pipelines.data.manifest import MANIFEST_NAME, DatasetManifest, load_dataset_manifest
from fedtwin.pipelines.data.manifest_devices import manifest_text
from fedtwin.pipelines.data.partition_config import PartitionConfig, partitioner_kwargs
from fedtwin.pipelines.data.partition_manifest import (
    DeviceEntry,
    PartitionManifest,
    SplitEntry,
    load_device_shard,
    load_partition_manifest,
    load_shared,
    load_test,
)
from fedtwin.pipelines.data.partitioners import (
    PARTITIONERS,
    DirichletPartitioner,
    GroupPartitioner,
    IIDPartitioner,
    Partitioner,
    ShardPartitioner,
    needs_groups,
    resolve_partitioner,
)
from fedtwin.pipelines.data.schema import GROUP

__all__ = [
    "PARTITIONERS",
    "DeviceEntry",
    "DirichletPartitioner",
    "GroupPartitioner",
    "IIDPartitioner",
    "PartitionConfig",
    "PartitionManifest",
    "ShardPartitioner",
    "SplitEntry",
    "carve_shared",
    "load_device_shard",
    "load_partition_manifest",
    "load_shared",
    "load_test",
    "make_partitioner",
    "partition_dataset",
    "partitioner_kwargs",
    "video_units",
]

log = logging.getLogger(__name__)


def make_partitioner(cfg: PartitionConfig) -> Partitioner:
    """The partitioner ``cfg.scheme`` names, built with the parameters it declares."""
    cls = resolve_partitioner(cfg.scheme)
    try:
        kwargs = partitioner_kwargs(cls, cfg)
    except ValueError as err:
        raise DatasetError(f"data.partition.{err}") from None
    partitioner: Partitioner = cls(**kwargs)
    return partitioner


def carve_shared(
    labels: np.ndarray, fraction: float, num_classes_kept: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...] | None]:
    """Choose the server's ``shared`` rows (videos, when called by :func:`partition_dataset`).

    ``round(fraction * n)`` rows (at least 1 when ``fraction > 0``) are drawn uniformly, only from
    ``num_classes_kept`` classes picked at random when given.

    Returns:
        (shared row indices, remaining row indices, the kept classes or None); both index arrays sorted.
    """
    n = len(labels)
    num_shared = int(round(fraction * n))
    if fraction > 0:
        num_shared = max(1, num_shared)
    classes: tuple[int, ...] | None = None
    pool = np.arange(n)
    if num_classes_kept is not None:
        present = np.unique(labels)
        if num_classes_kept > len(present):
            raise ValueError(
                f"shared_classes: {num_classes_kept} exceeds the {len(present)} classes in the train split"
            )
        classes = tuple(int(c) for c in np.sort(rng.choice(present, num_classes_kept, replace=False)))
        pool = np.flatnonzero(np.isin(labels, classes))
    if num_shared > len(pool):
        raise ValueError(
            f"shared_fraction: {fraction} needs {num_shared} rows but the {len(classes or [])} shared classes "
            f"hold {len(pool)}; lower shared_fraction or raise shared_classes"
        )
    shared = np.sort(rng.choice(pool, num_shared, replace=False))
    rest = np.setdiff1d(np.arange(n), shared, assume_unique=True)
    return shared, rest, classes


def video_units(video_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group rows into videos (units), numbered in order of first appearance.

    Returns:
        (unit index of every row, first row of every unit). With unique ids, both are ``arange(n)``.
    """
    n = len(video_ids)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _, first, inverse = np.unique(video_ids, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # np.unique sorts by id; renumber by first row
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    return rank[inverse.reshape(n)], first[order].astype(np.int64)


def read_groups(split_path: str | Path) -> np.ndarray | None:
    """The ``group`` column of a clip file as a string array, or None if the file has none."""
    pf = pq.ParquetFile(split_path)
    if pf.schema_arrow.get_field_index(GROUP) < 0:
        return None
    return np.asarray(pf.read(columns=[GROUP]).column(GROUP).to_pylist(), dtype=str)


def partition_dataset(
    in_dir: str | Path, out_dir: str | Path, cfg: PartitionConfig, *, overwrite: bool = False
) -> PartitionManifest:
    """Partition dataset ``in_dir`` (its ``train`` and ``test`` splits) into ``out_dir``.

    Raises:
        DatasetError: unreadable input, an infeasible configuration (named option, value and fix),
            ``by-group`` on a dataset without groups, or ``out_dir`` already exists without ``overwrite``.
    """
    src = load_dataset_manifest(in_dir)
    out = Path(out_dir)
    check_output_dir(out, overwrite, what="partition directory")  # fail before the work, not after
    train = load_split(in_dir, "train")
    test = load_split(in_dir, "test")
    seeds = np.random.SeedSequence(cfg.seed).spawn(2)
    partitioner = make_partitioner(cfg)
    unit_of_row, first_rows = video_units(train.video_ids)
    unit_labels = train.labels[first_rows]
    _warn_mixed_labels(train, unit_of_row, unit_labels)
    groups = None
    if needs_groups(type(partitioner)):
        groups = read_groups(src.split_path("train"))
        if groups is None:
            raise DatasetError(
                f"data.partition.scheme: {cfg.scheme} needs a 'group' column, but {src.split_path('train')} has "
                "none; import the videos with an index that has a group column (path,label,group)"
            )
        groups = groups[first_rows]
    rows = f"{len(train)} rows" + (f" in {len(first_rows)} videos" if len(first_rows) != len(train) else "")
    try:
        shared_units, device_units, shared_classes = carve_shared(
            unit_labels, cfg.shared_fraction, cfg.shared_classes, np.random.default_rng(seeds[0])
        )
        num_devices = cfg.devices if cfg.devices is not None else _count_groups(groups, device_units)
        kwargs = {} if groups is None else {"groups": groups[device_units]}
        unit_device = partitioner.assign(
            unit_labels[device_units], num_devices, np.random.default_rng(seeds[1]), **kwargs
        )
    except ValueError as err:
        raise DatasetError(f"cannot partition {src.split_path('train')} ({rows}) with {cfg.scheme}: {err}") from None
    unit_device = _checked_assignment(unit_device, len(device_units), cfg.scheme, num_devices)
    params = partitioner.get_params()
    if not isinstance(params, dict):
        raise DatasetError(
            f"data.partition.scheme: {cfg.scheme!r}.get_params() returned {type(params).__name__}, not a dict"
        )

    # Units back to rows: every clip follows its video (-1: the video is in `shared`).
    device_of_unit = np.full(len(first_rows), -1, dtype=np.int64)
    device_of_unit[device_units] = unit_device
    row_device = device_of_unit[unit_of_row]
    shared_idx = np.flatnonzero(row_device < 0)
    device_idx = np.flatnonzero(row_device >= 0)
    device = row_device[device_idx]

    k = src.num_classes
    hists = np.bincount(device * k + train.labels[device_idx], minlength=num_devices * k).reshape(num_devices, k)
    global_hist = hists.sum(axis=0)
    global_p = distribution(global_hist)
    shared_hist = label_histogram(train.labels[shared_idx], k)
    shared_js = float(js_divergence(distribution(shared_hist), global_p)) if len(shared_idx) else None

    order = device_idx[np.argsort(device, kind="stable")]  # source rows grouped by device, in id order
    sizes = hists.sum(axis=1)
    with atomic_directory(out, overwrite, what="partition directory") as tmp:
        paths, offsets = _write_device_files(tmp, train, order, sizes, cfg.devices_per_file)
        write_clips(tmp / "shared.parquet", train.subset(shared_idx))
        shutil.copyfile(src.split_path("test"), tmp / "test.parquet")
        manifest = PartitionManifest(
            directory=out,
            clip_shape=src.clip_shape,
            num_classes=k,
            class_names=src.class_names,
            scheme=cfg.scheme,
            params=params,
            seed=cfg.seed,
            device_paths=tuple(paths),
            row_offsets=offsets,
            num_examples=sizes.astype(np.int64),
            label_histograms=hists.astype(np.int64),
            js=np.asarray(js_divergence(distribution(hists), global_p), dtype=np.float64).reshape(num_devices),
            global_label_histogram=global_hist.astype(np.int64),
            shared=SplitEntry(
                "shared.parquet", len(shared_idx), tuple(int(v) for v in shared_hist), shared_js, shared_classes
            ),
            test=SplitEntry("test.parquet", len(test), tuple(int(v) for v in label_histogram(test.labels, k))),
            source=_source_info(in_dir, src),
            config=dataclasses.asdict(cfg),
            device_groups=_device_groups(groups, device_units, unit_device, num_devices),
        )
        write_json_atomic(tmp / MANIFEST_NAME, None, text=manifest_text(manifest.to_json()))
    log.info("partitioned %s into %d devices at %s", in_dir, num_devices, out)
    return load_partition_manifest(out)  # exactly what hosts will read (JS rounded as stored)


def _count_groups(groups: np.ndarray | None, device_units: np.ndarray) -> int:
    """Devices of a by-group partition left to the data: the groups among the device videos."""
    if groups is None:  # PartitionConfig allows devices=None only for schemes that read groups
        raise ValueError("devices: must be set for a scheme that does not read groups")
    return len(np.unique(groups[device_units]))


def _warn_mixed_labels(train: ClipArrays, unit_of_row: np.ndarray, unit_labels: np.ndarray) -> None:
    """Log once when a video's clips carry several labels (it is assigned by its first clip's label)."""
    mixed = np.flatnonzero(train.labels != unit_labels[unit_of_row])
    if mixed.size:
        log.warning(
            "%d clips (e.g. of video %s) differ in label from the first clip of their video; "
            "videos are assigned to devices by their first clip's label",
            mixed.size,
            train.video_ids[mixed[0]],
        )


def _device_groups(
    groups: np.ndarray | None, device_units: np.ndarray, unit_device: np.ndarray, num_devices: int
) -> tuple[str, ...] | None:
    """Each device's group when every device holds exactly one (by-group), else None."""
    if groups is None:
        return None
    names: list[str] = []
    for d in range(num_devices):
        held = np.unique(groups[device_units[unit_device == d]])
        if len(held) != 1:
            return None
        names.append(str(held[0]))
    return tuple(names)


def _checked_assignment(device: object, num_rows: int, scheme: str, num_devices: int) -> np.ndarray:
    """``assign``'s result as int64, checked against the contract (plugins are not trusted blindly)."""
    arr = np.asarray(device)
    problem = None
    if arr.shape != (num_rows,) or not np.issubdtype(arr.dtype, np.integer):
        problem = f"an array shaped {arr.shape} of {arr.dtype}, not {num_rows} integer device indices"
    elif num_rows and (arr.min() < 0 or arr.max() >= num_devices):
        problem = f"device indices in [{arr.min()}, {arr.max()}], outside [0, {num_devices})"
    elif num_rows and (empty := np.flatnonzero(np.bincount(arr, minlength=num_devices) == 0)).size:
        problem = f"no rows for {empty.size} device(s) (e.g. device {empty[0]}); every device needs at least one"
    if problem:
        raise DatasetError(f"data.partition.scheme: {scheme!r}.assign() returned {problem}")
    return arr.astype(np.int64, copy=False)


def _write_device_files(
    tmp: Path, train: ClipArrays, order: np.ndarray, sizes: np.ndarray, per_file: int
) -> tuple[list[str], np.ndarray]:
    """Write devices' rows (``order``, grouped by device) into packed files, one row group per device."""
    (tmp / "devices").mkdir()
    num_devices = len(sizes)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    offsets = np.empty(num_devices, dtype=np.int64)
    paths: list[str] = []
    for first in range(0, num_devices, per_file):
        last = min(num_devices, first + per_file)
        rel = f"devices/part-{first // per_file:05d}.parquet"
        rows = order[starts[first] : ends[last - 1]]
        table = clips_to_table(train.subset(rows))
        with pq.ParquetWriter(tmp / rel, table.schema, **PARQUET_WRITE_OPTIONS) as writer:
            for dev in range(first, last):
                offsets[dev] = starts[dev] - starts[first]
                writer.write_table(table.slice(offsets[dev], sizes[dev]), row_group_size=max(1, int(sizes[dev])))
        paths.extend([rel] * (last - first))
    return paths, offsets


def _source_info(in_dir: str | Path, src: DatasetManifest) -> dict[str, object]:
    return {
        "path": str(in_dir),
        "clip_shape": list(src.clip_shape),
        "num_classes": src.num_classes,
        "class_names": list(src.class_names),
        "splits": {name: s.num_examples for name, s in src.splits.items()},
        "info": src.info,
    }
