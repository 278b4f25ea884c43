"""Bulk reading of a partition manifest's device entries: the same columns and the same errors as one by one."""

from __future__ import annotations

import copy
import json

import pytest

from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.manifest import FieldReader
from fedtwin.pipelines.data.manifest_devices import manifest_text, read_device_entries, read_device_entries_slow

K = 3
DEVICES = [
    {
        "id": i,
        "path": f"devices/part-{i // 2:05d}.parquet",
        "row_offset": 4 * (i % 2),
        "num_examples": 4,
        "label_histogram": [1, 2, 1],
        "js": 0.25 if i else 0,
    }
    for i in range(5)
]


def _fr() -> FieldReader:
    return FieldReader("p/manifest.json", "re-run `fedtwin data partition`")


def test_bulk_and_entry_by_entry_readers_give_the_same_columns():
    assert read_device_entries(_fr(), DEVICES, K) == read_device_entries_slow(_fr(), DEVICES, K)
    grouped = [{**d, "group": f"cam{d['id']}"} for d in DEVICES]
    assert read_device_entries(_fr(), grouped, K).groups == [f"cam{i}" for i in range(5)]


@pytest.mark.parametrize(
    ("entry", "field", "value", "message"),
    [
        (2, "id", 7, r"entry 2 has id 7"),
        (3, "path", "../elsewhere.parquet", r"devices\[3\]\.path' must be a path inside"),
        (1, "label_histogram", [1, -2, 1], r"devices\[1\]\.label_histogram' should hold non-negative"),
        (4, "label_histogram", [1, 2], r"devices\[4\]\.label_histogram' has 2 entries, expected 3"),
        (0, "num_examples", True, r"devices\[0\]\.num_examples' should be int"),
        (2, "js", "high", r"devices\[2\]\.js' should be int/float"),
    ],
)
def test_a_bad_entry_is_named_exactly_as_before(entry, field, value, message):
    devices = copy.deepcopy(DEVICES)
    devices[entry][field] = value
    with pytest.raises(DatasetError, match=message):
        read_device_entries(_fr(), devices, K)


def test_manifest_text_is_the_same_json_with_one_line_per_device():
    obj = {"kind": "fedtwin-partition", "num_devices": 5, "shared": {"path": "shared.parquet"}, "devices": DEVICES}
    text = manifest_text(obj)
    assert json.loads(text) == obj
    assert sum(line.strip().startswith('{"id"') for line in text.splitlines()) == 5
