"""Partitioners (pure numpy) and ``partition_dataset`` end to end on real Parquet."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.dataset_io import load_split, write_dataset
from fedtwin.pipelines.data.heterogeneity import distribution, js_divergence
from fedtwin.pipelines.data.partition import (
    PARTITIONERS,
    DirichletPartitioner,
    IIDPartitioner,
    PartitionConfig,
    ShardPartitioner,
    load_device_shard,
    load_partition_manifest,
    load_shared,
    load_test,
    make_partitioner,
    partition_dataset,
)

SHAPE = (2, 1, 2, 2)


def balanced_labels(per_class: int, num_classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes), per_class))


def mean_js(labels: np.ndarray, device: np.ndarray, num_devices: int, k: int = 10) -> float:
    hists = np.stack([np.bincount(labels[device == d], minlength=k) for d in range(num_devices)])
    return float(np.mean(js_divergence(distribution(hists), distribution(hists.sum(axis=0)))))


@pytest.mark.parametrize("partitioner", [IIDPartitioner(), DirichletPartitioner(0.3, 2), ShardPartitioner(2)])
def test_every_row_goes_to_exactly_one_valid_device_and_seed_reproduces(partitioner):
    # Prepare
    labels = balanced_labels(40)

    # Execute
    a = partitioner.assign(labels, 20, np.random.default_rng(7))
    b = partitioner.assign(labels, 20, np.random.default_rng(7))
    c = partitioner.assign(labels, 20, np.random.default_rng(8))

    # Assert
    assert a.shape == labels.shape and a.dtype == np.int64
    assert a.min() >= 0 and a.max() < 20
    sizes = np.bincount(a, minlength=20)
    assert sizes.sum() == 400 and sizes.min() >= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_iid_sizes_differ_by_at_most_one():
    sizes = np.bincount(IIDPartitioner().assign(balanced_labels(10), 7, np.random.default_rng(0)), minlength=7)
    assert sorted(sizes.tolist()) == [14, 14, 14, 14, 14, 15, 15]


def test_dirichlet_min_size_holds_even_when_resampling_could_never_succeed():
    # Prepare: 600 rows, 100 devices, min 6 -> every device must get exactly 6
    labels = balanced_labels(60)

    # Execute
    tight = DirichletPartitioner(alpha=0.1, min_size=6).assign(labels, 100, np.random.default_rng(0))
    loose = DirichletPartitioner(alpha=0.05, min_size=10).assign(balanced_labels(100), 50, np.random.default_rng(0))

    # Assert
    assert np.bincount(tight, minlength=100).tolist() == [6] * 100
    assert np.bincount(loose, minlength=50).min() >= 10
    with pytest.raises(ValueError, match="600 rows cannot give 100 devices 7 example"):
        DirichletPartitioner(alpha=0.1, min_size=7).assign(labels, 100, np.random.default_rng(0))


def test_smaller_alpha_gives_more_label_skew():
    labels = balanced_labels(100)
    skewed = DirichletPartitioner(alpha=0.1).assign(labels, 20, np.random.default_rng(0))
    mild = DirichletPartitioner(alpha=100.0).assign(labels, 20, np.random.default_rng(0))
    iid = IIDPartitioner().assign(labels, 20, np.random.default_rng(0))
    js_skewed, js_mild, js_iid = (mean_js(labels, d, 20) for d in (skewed, mild, iid))
    assert js_skewed > 0.4 > 0.1 > js_mild
    assert js_iid < 0.1


@pytest.mark.parametrize("num_devices,per", [(50, 2), (10, 3), (20, 10)])
def test_shards_give_each_device_exactly_l_distinct_labels(num_devices, per):
    labels = balanced_labels(100)
    device = ShardPartitioner(per).assign(labels, num_devices, np.random.default_rng(1))
    counts = [len(np.unique(labels[device == d])) for d in range(num_devices)]
    assert counts == [per] * num_devices
    assert np.bincount(device).sum() == 1000


def test_shards_reject_more_labels_than_classes():
    with pytest.raises(ValueError, match=r"labels_per_device: must be in \[1, 10\]"):
        ShardPartitioner(11).assign(balanced_labels(10), 5, np.random.default_rng(0))


def test_registry_and_config_build_the_named_partitioner():
    assert set(PARTITIONERS) == {"iid", "dirichlet", "shards", "by-group"}
    p = make_partitioner(PartitionConfig(scheme="dirichlet", alpha=0.2, min_size=3))
    assert isinstance(p, DirichletPartitioner) and p.get_params() == {"alpha": 0.2, "min_size": 3}
    assert make_partitioner(PartitionConfig(scheme="shards", labels_per_device=4)).get_params() == {
        "labels_per_device": 4
    }
    for kwargs, message in [
        ({"devices": 0}, "devices: must be >= 1"),
        ({"scheme": "zipf"}, "scheme: unknown partitioner 'zipf'; choose one of by-group, dirichlet, iid, shards"),
        ({"alpha": 0.0}, "alpha: must be > 0"),
        ({"shared_fraction": 1.0}, r"shared_fraction: must be in \[0, 1\)"),
        ({"shared_classes": 0}, "shared_classes: must be >= 1"),
        ({"devices": None}, "devices: must be set for scheme dirichlet"),
    ]:
        with pytest.raises(ValueError, match=message):
            PartitionConfig(**kwargs)


@pytest.fixture()
def dataset(tmp_path):
    """A real dataset: 200 train clips (20 per class), 30 test clips, pixel 0 encodes the row number."""

    def clips(labels, prefix):
        n = len(labels)
        pixels = np.zeros((n, *SHAPE), dtype=np.uint8)
        pixels.reshape(n, -1)[:, 0] = np.arange(n) % 256
        return ClipArrays(pixels, labels.astype(np.int64), np.asarray([f"{prefix}{i}" for i in range(n)], dtype=str))

    path = tmp_path / "src"
    write_dataset(
        path,
        {"train": clips(balanced_labels(20), "tr"), "test": clips(balanced_labels(3, seed=1), "te")},
        {"class_names": [str(c) for c in range(10)]},
    )
    return path


def test_partition_dataset_writes_disjoint_shards_shared_and_test(dataset, tmp_path):
    # Prepare
    cfg = PartitionConfig(
        devices=7, scheme="dirichlet", alpha=0.5, shared_fraction=0.1, shared_classes=3, seed=4, devices_per_file=3
    )

    # Execute
    written = partition_dataset(dataset, tmp_path / "part", cfg)
    m = load_partition_manifest(tmp_path / "part")
    shards = [load_device_shard(m, d) for d in range(m.num_devices)]
    shared = load_shared(m)
    test = load_test(tmp_path / "part")

    # Assert: every train row is in exactly one place
    train = load_split(dataset, "train")
    device_ids = np.concatenate([s.video_ids for s in shards])
    assert len(device_ids) == len(set(device_ids)) == 180
    assert set(device_ids).isdisjoint(shared.video_ids)
    assert set(device_ids) | set(shared.video_ids) == set(train.video_ids)
    # shared: 10% of 200 rows, only from the 3 recorded classes
    assert len(shared) == 20 and len(m.shared.classes) == 3
    assert set(shared.labels.tolist()) <= set(m.shared.classes)
    assert list(m.shared.label_histogram) == np.bincount(shared.labels, minlength=10).tolist()
    # manifest entries match the shards and the JS definition
    assert m.num_devices == 7 and written.num_devices == 7
    global_hist = sum(np.bincount(s.labels, minlength=10) for s in shards)
    np.testing.assert_array_equal(m.global_label_histogram, global_hist)
    for d, s in enumerate(shards):
        assert m.num_examples[d] == len(s)
        np.testing.assert_array_equal(m.label_histograms[d], np.bincount(s.labels, minlength=10))
        expected_js = js_divergence(distribution(np.bincount(s.labels, minlength=10)), distribution(global_hist))
        assert m.js[d] == pytest.approx(expected_js, abs=1e-6)
    assert m.shared.js == pytest.approx(
        js_divergence(distribution(np.array(m.shared.label_histogram)), distribution(global_hist)), abs=1e-6
    )
    # shard pixels are the source rows (pixel 0 holds the source row number)
    row_of = {vid: i for i, vid in enumerate(train.video_ids)}
    for s in shards:
        rows = np.array([row_of[v] for v in s.video_ids])
        np.testing.assert_array_equal(s.clips, train.clips[rows])
    np.testing.assert_array_equal(test.clips, load_split(dataset, "test").clips)
    # packed layout: 3 devices per file, so 3 files
    assert sorted(p.name for p in (tmp_path / "part" / "devices").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert m.scheme == "dirichlet" and m.params == {"alpha": 0.5, "min_size": 1} and m.seed == 4


def test_partition_is_reproducible_from_the_seed(dataset, tmp_path):
    cfg = PartitionConfig(devices=5, scheme="shards", labels_per_device=2, seed=1)
    a = partition_dataset(dataset, tmp_path / "a", cfg)
    b = partition_dataset(dataset, tmp_path / "b", cfg)
    c = partition_dataset(
        dataset, tmp_path / "c", PartitionConfig(devices=5, scheme="shards", labels_per_device=2, seed=2)
    )
    np.testing.assert_array_equal(a.label_histograms, b.label_histograms)
    np.testing.assert_array_equal(load_device_shard(a, 3).video_ids, load_device_shard(b, 3).video_ids)
    assert not np.array_equal(a.label_histograms, c.label_histograms)
    assert ((a.label_histograms > 0).sum(axis=1) == 2).all()


def test_infeasible_partition_and_bad_inputs_are_dataset_errors(dataset, tmp_path):
    with pytest.raises(DatasetError, match=r"train\.parquet \(200 rows\) with iid: 200 rows cannot give 201 devices"):
        partition_dataset(dataset, tmp_path / "p", PartitionConfig(devices=201, scheme="iid"))
    with pytest.raises(DatasetError, match="shared_fraction: 0.5 needs 100 rows but the 2 shared classes hold 40"):
        partition_dataset(dataset, tmp_path / "p", PartitionConfig(devices=2, shared_fraction=0.5, shared_classes=2))
    with pytest.raises(DatasetError, match=r"nowhere/manifest\.json: file not found"):
        partition_dataset(tmp_path / "nowhere", tmp_path / "p", PartitionConfig(devices=2))
    assert not (tmp_path / "p").exists()


def test_partition_manifest_validation(dataset, tmp_path):
    # Prepare
    m = partition_dataset(dataset, tmp_path / "part", PartitionConfig(devices=3, scheme="iid"))
    path = tmp_path / "part" / "manifest.json"
    obj = json.loads(path.read_text())

    # Execute / Assert
    with pytest.raises(DatasetError, match=r"no device 3 \(devices are 0\.\.2\)"):
        load_device_shard(m, 3)
    obj["devices"][1]["label_histogram"][0] += 1
    path.write_text(json.dumps(obj))
    with pytest.raises(
        DatasetError, match=r"manifest\.json: devices\[1\]: label_histogram does not sum to num_examples; re-run"
    ):
        load_partition_manifest(tmp_path / "part")
    del obj["devices"][2]
    path.write_text(json.dumps(obj))
    with pytest.raises(DatasetError, match="num_devices is 3 but 2 device entries are listed"):
        load_partition_manifest(tmp_path / "part")
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable JSON"):
        load_partition_manifest(tmp_path / "part")


class RoundRobin:
    """A user's partitioner (found by import path): row i goes to device (i + shift) % N."""

    def __init__(self, shift: int = 0) -> None:
        self.shift = shift

    def get_params(self) -> dict:
        return {"shift": self.shift}

    def assign(self, labels: np.ndarray, num_devices: int, rng: np.random.Generator) -> np.ndarray:
        return (np.arange(len(labels)) + self.shift) % num_devices


class Broken(RoundRobin):
    """Breaks the contract in the way ``mode`` says."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def assign(self, labels: np.ndarray, num_devices: int, rng: np.random.Generator) -> np.ndarray:
        good = super().assign(labels, num_devices, rng)
        return {"range": good + 1, "empty": good % (num_devices - 1), "shape": good[:-1], "float": good * 1.0}[
            self.mode
        ]


def test_plugin_partitioner_by_import_path_end_to_end(dataset, tmp_path):
    cfg = PartitionConfig(devices=4, scheme=f"{__name__}:RoundRobin", params={"shift": 1})

    m = partition_dataset(dataset, tmp_path / "p", cfg)

    assert m.scheme == f"{__name__}:RoundRobin" and m.params == {"shift": 1}
    assert m.num_examples.tolist() == [50, 50, 50, 50]
    assert load_device_shard(m, 1).video_ids[0] == "tr0"  # row 0 went to device (0 + 1) % 4


@pytest.mark.parametrize(
    ("mode", "problem"),
    [
        ("range", r"device indices in \[1, 4\], outside \[0, 4\)"),
        ("empty", r"no rows for 1 device\(s\) \(e\.g\. device 3\); every device needs at least one"),
        ("shape", r"an array shaped \(199,\) of int64, not 200 integer device indices"),
        ("float", r"an array shaped \(200,\) of float64, not 200 integer device indices"),
    ],
)
def test_plugin_partitioner_breaking_the_contract_is_a_one_line_error(dataset, tmp_path, mode, problem):
    cfg = PartitionConfig(devices=4, scheme=f"{__name__}:Broken", params={"mode": mode})

    with pytest.raises(
        DatasetError, match=rf"^data\.partition\.scheme: '{__name__}:Broken'\.assign\(\) returned {problem}$"
    ):
        partition_dataset(dataset, tmp_path / "p", cfg)
    assert not (tmp_path / "p").exists()
