"""Dataset directories on disk: round trips through real Parquet, and one-line validation errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data import dataset_io
from fedtwin.pipelines.data.clips import ClipArrays
from fedtwin.pipelines.data.dataset_io import clips_to_table, load_split, read_clip_rows, read_clips, write_dataset
from fedtwin.pipelines.data.manifest import load_dataset_manifest
from fedtwin.pipelines.data.schema import CLIP, LABEL, META_SCHEMA_VERSION, VIDEO_ID

SHAPE = (2, 1, 3, 4)  # (T, C, H, W): 24 values per clip


def make_clips(labels: list[int], seed: int = 0, prefix: str = "v") -> ClipArrays:
    rng = np.random.default_rng(seed)
    n = len(labels)
    pixels = rng.integers(0, 256, (n, *SHAPE), dtype=np.uint8)
    ids = np.asarray([f"{prefix}{i}" for i in range(n)], dtype=str)
    return ClipArrays(pixels, np.asarray(labels, dtype=np.int64), ids)


INFO = {"class_names": ["a", "b", "c"], "generator": {"name": "test", "seed": 1}}


def test_write_then_load_round_trips_every_split(tmp_path):
    # Prepare
    train = make_clips([0, 2, 2, 1, 0], seed=1)
    test = make_clips([1, 1], seed=2, prefix="t")

    # Execute
    written = write_dataset(tmp_path / "ds", {"train": train, "test": test}, INFO)
    loaded_train = load_split(tmp_path / "ds", "train")
    loaded_test = load_split(tmp_path / "ds", "test")
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())

    # Assert
    np.testing.assert_array_equal(loaded_train.clips, train.clips)
    np.testing.assert_array_equal(loaded_train.labels, train.labels)
    np.testing.assert_array_equal(loaded_train.video_ids, train.video_ids)
    np.testing.assert_array_equal(loaded_test.clips, test.clips)
    assert manifest["schema_version"] == 1 and manifest["clip_shape"] == [2, 1, 3, 4]
    assert manifest["dtype"] == "uint8" and manifest["num_classes"] == 3 and manifest["class_names"] == ["a", "b", "c"]
    assert manifest["splits"]["train"] == {"path": "train.parquet", "num_examples": 5, "label_histogram": [2, 1, 2]}
    assert manifest["splits"]["test"]["label_histogram"] == [0, 2, 0]
    assert manifest["info"] == {"generator": {"name": "test", "seed": 1}}
    assert written.splits["train"].num_examples == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp dirs left behind


def test_read_clip_rows_returns_only_the_requested_rows(tmp_path):
    # Prepare: three row groups of sizes 2, 3, 1
    clips = make_clips([0, 1, 2, 0, 1, 2])
    table = clips_to_table(clips)
    path = tmp_path / "packed.parquet"
    with pq.ParquetWriter(path, table.schema) as w:
        for lo, n in ((0, 2), (2, 3), (5, 1)):
            w.write_table(table.slice(lo, n))

    # Execute
    middle = read_clip_rows(path, SHAPE, row_offset=1, num_rows=3)

    # Assert
    np.testing.assert_array_equal(middle.clips, clips.clips[1:4])
    np.testing.assert_array_equal(middle.video_ids, ["v1", "v2", "v3"])


def test_empty_split_round_trips(tmp_path):
    write_dataset(tmp_path / "ds", {"train": make_clips([0]), "shared": ClipArrays.empty(SHAPE)}, INFO)
    empty = load_split(tmp_path / "ds", "shared")
    assert len(empty) == 0 and empty.clip_shape == SHAPE


def _write_table(path, table):
    pq.write_table(table, path)
    return path


def test_missing_column_is_a_one_line_error_naming_file_and_column(tmp_path):
    path = _write_table(tmp_path / "x.parquet", clips_to_table(make_clips([0, 1])).drop_columns([LABEL]))
    with pytest.raises(DatasetError) as err:
        read_clips(path, SHAPE)
    message = str(err.value)
    assert message.startswith(str(path)) and "column 'label' missing" in message and "fedtwin data make" in message
    assert "\n" not in message


def test_wrong_clip_shape_is_an_error_naming_both_shapes(tmp_path):
    path = _write_table(tmp_path / "x.parquet", clips_to_table(make_clips([0, 1])))
    with pytest.raises(
        DatasetError,
        match=r"x\.parquet: clips hold 24 values \(shape \[2, 1, 3, 4\] in file\), expected shape \[2, 1, 3, 5\]",
    ):
        read_clips(path, (2, 1, 3, 5))


def test_wrong_schema_version_is_rejected(tmp_path):
    table = clips_to_table(make_clips([0]))
    table = table.replace_schema_metadata({**table.schema.metadata, META_SCHEMA_VERSION: b"2"})
    path = _write_table(tmp_path / "x.parquet", table)
    with pytest.raises(DatasetError, match=r"x\.parquet: schema version 2 is not supported"):
        read_clips(path, SHAPE)


def test_wrong_column_types_are_rejected(tmp_path):
    good = clips_to_table(make_clips([0]))
    as_list = pa.table(
        {CLIP: pa.array([list(range(24))], pa.list_(pa.uint8())), LABEL: good[LABEL], VIDEO_ID: good[VIDEO_ID]}
    )
    path = _write_table(tmp_path / "x.parquet", as_list)
    with pytest.raises(
        DatasetError, match=r"x\.parquet: column 'clip' has type list<.*uint8>, expected fixed_size_binary\[24\]"
    ):
        read_clips(path, SHAPE)


def test_missing_file_manifest_and_split_are_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"nope\.parquet: file not found"):
        read_clips(tmp_path / "nope.parquet", SHAPE)
    with pytest.raises(DatasetError, match=r"manifest\.json: file not found; regenerate"):
        load_split(tmp_path, "train")
    write_dataset(tmp_path / "ds", {"train": make_clips([0])}, INFO)
    with pytest.raises(DatasetError, match=r"manifest\.json: no split 'test' \(has: train\)"):
        load_split(tmp_path / "ds", "test")
    (tmp_path / "ds" / "train.parquet").unlink()
    with pytest.raises(DatasetError, match=r"ds/train\.parquet: file not found"):
        load_split(tmp_path / "ds", "train")


def test_manifest_schema_version_and_count_mismatch_are_errors(tmp_path):
    # Prepare
    write_dataset(tmp_path / "ds", {"train": make_clips([0, 1])}, INFO)
    path = tmp_path / "ds" / "manifest.json"
    manifest = json.loads(path.read_text())

    # Execute / Assert: a newer schema version
    path.write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(DatasetError, match=r"manifest\.json: schema_version 99 is not supported"):
        load_dataset_manifest(tmp_path / "ds")

    # Execute / Assert: a manifest that disagrees with the file
    manifest["splits"]["train"].update(num_examples=3, label_histogram=[2, 1, 0])
    path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match=r"train\.parquet: has 2 rows but manifest\.json says 3"):
        load_split(tmp_path / "ds", "train")


def test_existing_output_is_kept_unless_overwrite(tmp_path):
    write_dataset(tmp_path / "ds", {"train": make_clips([0])}, INFO)
    with pytest.raises(DatasetError, match="already exists and is not empty"):
        write_dataset(tmp_path / "ds", {"train": make_clips([1, 1])}, INFO)
    assert len(load_split(tmp_path / "ds", "train")) == 1
    write_dataset(tmp_path / "ds", {"train": make_clips([1, 1])}, INFO, overwrite=True)
    assert load_split(tmp_path / "ds", "train").labels.tolist() == [1, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_failure_while_writing_leaves_no_dataset_behind(tmp_path, monkeypatch):
    # Prepare: the second split's write fails half-way through the dataset
    real_write = dataset_io.write_clips
    calls = []

    def failing_write(path, clips):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        real_write(path, clips)

    monkeypatch.setattr(dataset_io, "write_clips", failing_write)

    # Execute
    with pytest.raises(OSError, match="disk full"):
        write_dataset(tmp_path / "ds", {"train": make_clips([0]), "test": make_clips([1])}, INFO)

    # Assert
    assert list(tmp_path.iterdir()) == []
