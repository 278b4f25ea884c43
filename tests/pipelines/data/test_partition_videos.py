"""Partitioning datasets whose videos have several clips: whole videos move, ``by-group``, the plot."""

from __future__ import annotations

import json
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.dataset_io import load_split, write_dataset
from fedtwin.pipelines.data.partition import (
    PartitionConfig,
    carve_shared,
    load_device_shard,
    load_partition_manifest,
    load_shared,
    make_partitioner,
    partition_dataset,
    video_units,
)
from fedtwin.pipelines.data.partition_plot import plot_partition
from fedtwin.pipelines.data.schema import GROUP

SHAPE = (2, 1, 4, 4)
GROUPS = ("cam-b", "cam-a", "cam-d", "cam-c")  # sorted: a, b, c, d


def write_videos(path, *, videos_per_class=12, clips_per_video=3, classes=4, with_group=True):
    """A dataset whose train videos have ``clips_per_video`` clips each (rows of a video interleaved with
    other videos' rows), video ``v`` filmed by camera ``GROUPS[v % 4]``."""
    rng = np.random.default_rng(0)
    vids = np.repeat(np.arange(classes * videos_per_class), clips_per_video)
    rng.shuffle(vids)  # clips of one video are not contiguous
    labels = vids % classes
    n = len(vids)
    pixels = np.zeros((n, *SHAPE), dtype=np.uint8)
    pixels.reshape(n, -1)[:, 0] = vids
    train = ClipArrays(pixels, labels.astype(np.int64), np.asarray([f"v{v:03d}" for v in vids], dtype=str))
    test = ClipArrays(
        np.zeros((classes, *SHAPE), np.uint8),
        np.arange(classes, dtype=np.int64),
        np.asarray([f"t{c}" for c in range(classes)], dtype=str),
    )
    write_dataset(path, {"train": train, "test": test}, {"class_names": [f"c{c}" for c in range(classes)]})
    if with_group:  # what `fedtwin data import-videos` writes for an index with a group column
        table = pq.read_table(path / "train.parquet")
        groups = pa.array([GROUPS[v % len(GROUPS)] for v in vids], pa.string())
        pq.write_table(
            table.append_column(pa.field(GROUP, pa.string(), nullable=False), groups), path / "train.parquet"
        )
    return path, vids


@pytest.fixture()
def videos(tmp_path):
    return write_videos(tmp_path / "ds")


def owners(m):
    """video id -> set of places ('shared' or a device id) holding its clips."""
    held: dict[str, set] = {}
    for d in range(m.num_devices):
        for v in load_device_shard(m, d).video_ids:
            held.setdefault(str(v), set()).add(d)
    for v in load_shared(m).video_ids:
        held.setdefault(str(v), set()).add("shared")
    return held


@pytest.mark.parametrize(
    "cfg",
    [
        PartitionConfig(devices=5, scheme="iid", shared_fraction=0.1, seed=1),
        PartitionConfig(devices=6, scheme="dirichlet", alpha=0.3, min_size=2, shared_fraction=0.1, seed=2),
        PartitionConfig(devices=4, scheme="shards", labels_per_device=2, shared_fraction=0.1, shared_classes=2, seed=3),
        PartitionConfig(devices=None, scheme="by-group", shared_fraction=0.1, seed=4),
    ],
    ids=lambda c: c.scheme,
)
def test_every_scheme_keeps_the_clips_of_a_video_together(videos, tmp_path, cfg):
    # Execute
    m = partition_dataset(videos[0], tmp_path / "p", cfg)

    # Assert: each of the 48 videos lies whole in exactly one place; shared took ~10% of the videos
    held = owners(m)
    assert len(held) == 48 and all(len(places) == 1 for places in held.values())
    assert m.num_examples.sum() + m.shared.num_examples == 144
    assert m.shared.num_examples == 3 * 5  # round(0.1 * 48) = 5 videos of 3 clips
    train = load_split(videos[0], "train")
    assert sorted(np.bincount(np.unique(train.video_ids, return_counts=True)[1])) == [0, 0, 0, 48]


def test_by_group_makes_one_device_per_sorted_group(videos, tmp_path):
    # Execute
    m = partition_dataset(videos[0], tmp_path / "p", PartitionConfig(devices=None, scheme="by-group"))

    # Assert: device d holds exactly the videos of the d-th camera in sorted order, recorded in the manifest
    assert m.num_devices == 4 and m.device_groups == ("cam-a", "cam-b", "cam-c", "cam-d")
    for d, cam in enumerate(m.device_groups):
        expected = {f"v{v:03d}" for v in range(48) if GROUPS[v % 4] == cam}
        assert set(load_device_shard(m, d).video_ids) == expected
    entries = json.loads((tmp_path / "p" / "manifest.json").read_text())["devices"]
    assert [e["group"] for e in entries] == ["cam-a", "cam-b", "cam-c", "cam-d"]
    assert m.config["devices"] is None and m.scheme == "by-group" and m.params == {}
    # the same with the count given explicitly
    same = partition_dataset(videos[0], tmp_path / "q", PartitionConfig(devices=4, scheme="by-group"))
    np.testing.assert_array_equal(same.label_histograms, m.label_histograms)


def test_by_group_errors_are_one_line(videos, tmp_path):
    no_groups, _ = write_videos(tmp_path / "plain", with_group=False)
    with pytest.raises(
        DatasetError,
        match=r"^data\.partition\.scheme: by-group needs a 'group' column, but .*"
        r"train\.parquet has none; import the videos with an index",
    ) as err:
        partition_dataset(no_groups, tmp_path / "p", PartitionConfig(devices=None, scheme="by-group"))
    assert "\n" not in str(err.value)
    with pytest.raises(
        DatasetError,
        match=r"\(144 rows in 48 videos\) with by-group: devices: 3 given but the data "
        r"has 4 groups; set it to 4, or to null \(omit --devices\) for one device per group$",
    ):
        partition_dataset(videos[0], tmp_path / "p", PartitionConfig(devices=3, scheme="by-group"))
    with pytest.raises(ValueError, match="^devices: must be set for scheme iid"):
        PartitionConfig(devices=None, scheme="iid")
    assert not (tmp_path / "p").exists()


def test_one_clip_per_video_gives_exactly_the_row_assignment(tmp_path):
    """Datasets with one clip per video (generated moving digits) partition as rows always did."""
    # Prepare: unique video ids, so videos are rows
    rng = np.random.default_rng(5)
    labels = rng.permutation(np.repeat(np.arange(10), 30)).astype(np.int64)
    ids = np.asarray([f"r{i}" for i in range(300)], dtype=str)
    write_dataset(
        tmp_path / "ds",
        {
            "train": ClipArrays(np.zeros((300, *SHAPE), np.uint8), labels, ids),
            "test": ClipArrays(np.zeros((1, *SHAPE), np.uint8), labels[:1], ids[:1]),
        },
        {"class_names": [str(c) for c in range(10)]},
    )
    cfg = PartitionConfig(devices=12, scheme="dirichlet", alpha=0.4, shared_fraction=0.05, shared_classes=4, seed=9)

    # Execute
    m = partition_dataset(tmp_path / "ds", tmp_path / "p", cfg)

    # Assert: the row-level recipe (carve, then assign the rest) with the same seeds gives the same shards
    s0, s1 = np.random.SeedSequence(cfg.seed).spawn(2)
    shared, rest, _ = carve_shared(labels, 0.05, 4, np.random.default_rng(s0))
    device = make_partitioner(cfg).assign(labels[rest], 12, np.random.default_rng(s1))
    for d in range(12):
        np.testing.assert_array_equal(load_device_shard(m, d).video_ids, ids[rest[device == d]])
    np.testing.assert_array_equal(load_shared(m).video_ids, ids[shared])
    unit, first = video_units(ids)
    np.testing.assert_array_equal(unit, np.arange(300)) and np.testing.assert_array_equal(first, np.arange(300))


def test_video_units_number_videos_by_first_appearance():
    unit, first = video_units(np.asarray(["b", "a", "b", "c", "a"], dtype=str))
    assert unit.tolist() == [0, 1, 0, 2, 1] and first.tolist() == [0, 1, 3]


def test_partition_plot_is_a_png(videos, tmp_path):
    m = partition_dataset(
        videos[0], tmp_path / "p", PartitionConfig(devices=None, scheme="by-group", shared_fraction=0.1)
    )
    out = plot_partition(load_partition_manifest(m.directory), tmp_path / "p" / "plots" / "partition.png")
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width > 600 and height > 250


def test_manifest_groups_are_all_or_none(videos, tmp_path):
    partition_dataset(videos[0], tmp_path / "p", PartitionConfig(devices=None, scheme="by-group"))
    path = tmp_path / "p" / "manifest.json"
    obj = json.loads(path.read_text())
    del obj["devices"][2]["group"]
    path.write_text(json.dumps(obj))
    with pytest.raises(DatasetError, match="either every device entry has a group or none has"):
        load_partition_manifest(tmp_path / "p")
