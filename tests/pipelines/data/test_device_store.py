"""DeviceStore: a host's devices in one memory-mapped cache entry, keyed by partition content, bounded by LRU."""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from fedtwin.orchestrator.config.loader import from_dict
from fedtwin.orchestrator.config.spec import DataConfig
from fedtwin.orchestrator.run.data_prep import ensure_partition
from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.device_store import DeviceStore, cache_max_bytes, entry_name, evict
from fedtwin.pipelines.data.partition_manifest import load_device_shard, load_partition_manifest


@pytest.fixture(scope="module")
def partition(tiny_data_root):
    data = from_dict(
        DataConfig,
        {
            "root": str(tiny_data_root),
            "generator": {"train_per_class": 30, "test_per_class": 5},
            "partition": {"devices": 12, "scheme": "dirichlet", "seed": 0, "devices_per_file": 5},
        },
    )
    return ensure_partition(data)


def test_store_serves_exactly_the_partition_rows_and_is_reused(partition, tmp_path):
    # Prepare
    manifest = load_partition_manifest(partition)
    mine = [1, 4, 7, 10]  # across three device files of five devices each
    # Execute: build, then open again (a second run on the node)
    first = DeviceStore(manifest, mine, tmp_path)
    second = DeviceStore(load_partition_manifest(partition), list(reversed(mine)), tmp_path)
    # Assert: the same clips and labels as the Parquet rows, only the needed files read, then none
    for store in (first, second):
        for d in mine:
            clips, labels = store.arrays(d)
            shard = load_device_shard(manifest, d)
            np.testing.assert_array_equal(clips, shard.clips)
            np.testing.assert_array_equal(labels, shard.labels)
            np.testing.assert_array_equal(store.get(d).video_ids, shard.video_ids)
    assert first.info()["cache_hit"] is False and len(first.info()["source_reads"]) == 3
    assert second.info()["cache_hit"] is True and second.info()["source_reads"] == []
    assert second.path == first.path and len(list(tmp_path.glob("*.arrow"))) == 1
    with pytest.raises(KeyError):
        first.arrays(2)  # not one of this store's devices


def test_a_changed_partition_or_device_set_gets_its_own_entry(partition, tmp_path):
    # Prepare: a copy of the partition whose first device file is rewritten under the same manifest
    copy = shutil.copytree(partition, tmp_path / "copy")
    manifest = load_partition_manifest(copy)
    before = entry_name(manifest, [0, 1])
    path = copy / manifest.device_paths[0]
    table = pq.read_table(path)
    time.sleep(0.01)
    pq.write_table(table, path, row_group_size=1)  # same rows, other layout: a new file
    # Execute / Assert: the key follows the file, the manifest and the device set
    assert entry_name(load_partition_manifest(copy), [0, 1]) != before
    assert entry_name(manifest, [0, 2]) != entry_name(manifest, [0, 1])
    store = DeviceStore(load_partition_manifest(copy), [0, 1], tmp_path / "cache")
    np.testing.assert_array_equal(store.arrays(1)[0], load_device_shard(manifest, 1).clips)


def test_a_device_file_that_does_not_match_the_manifest_fails_in_one_line(partition, tmp_path):
    copy = shutil.copytree(partition, tmp_path / "copy")
    manifest = load_partition_manifest(copy)
    table = pq.read_table(copy / manifest.device_paths[0])
    pq.write_table(table.slice(0, 2), copy / manifest.device_paths[0])
    with pytest.raises(DatasetError, match="re-run `fedtwin data partition`"):
        DeviceStore(load_partition_manifest(copy), [0, 1, 2, 3, 4], tmp_path / "cache")


def test_eviction_drops_least_recently_used_entries_but_never_the_one_in_use(partition, tmp_path):
    # Prepare: three entries, used in the order a, b, c
    manifest = load_partition_manifest(partition)
    stores = [DeviceStore(manifest, ids, tmp_path) for ids in ([0], [1], [2])]
    for i, store in enumerate(stores):
        os.utime(store.path, (1000 + i, 1000 + i))
    sizes = [store.path.stat().st_size for store in stores]
    # Execute: room for the two newest entries; then a bound smaller than the entry in use
    deleted = evict(tmp_path, sizes[1] + sizes[2])
    kept = evict(tmp_path, 0, keep=stores[2].path)
    # Assert
    assert deleted == [stores[0].path]
    assert kept == [stores[1].path] and [p.name for p in tmp_path.glob("*.arrow")] == [stores[2].path.name]
    np.testing.assert_array_equal(stores[0].arrays(0)[1], load_device_shard(manifest, 0).labels)  # still mapped


def test_cache_bound_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("FEDTWIN_CACHE_MAX_GB", "0.5")
    assert cache_max_bytes() == 2**29
    assert cache_max_bytes(0) == 0
    monkeypatch.setenv("FEDTWIN_CACHE_MAX_GB", "lots")
    with pytest.raises(DatasetError, match="FEDTWIN_CACHE_MAX_GB"):
        cache_max_bytes()
