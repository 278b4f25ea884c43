"""``manifest.json`` of a clip dataset: typed form, JSON form and validated loading.

A dataset directory holds ``<split>.parquet`` files and this manifest::

    {"kind": "fedtwin-dataset", "schema_version": 1, "clip_shape": [T, C, H, W], "dtype": "uint8",
     "num_classes": 10, "class_names": ["0", ...],
     "splits": {"train": {"path": "train.parquet", "num_examples": 6000, "label_histogram": [...]}},
     "info": {"generator": {...}}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedtwin.pipelines.core import storage
from fedtwin.pipelines.core.errors import DatasetError
from fedtwin.pipelines.data.schema import CLIP_DTYPE, SCHEMA_VERSION, ClipShape

MANIFEST_NAME = "manifest.json"
DATASET_KIND = "fedtwin-dataset"
REGENERATE_HINT = "regenerate with `fedtwin data make moving-digits`"


@dataclass(frozen=True)
class SplitInfo:
    """One split's file (relative to the dataset directory), size and label histogram."""

    path: str
    num_examples: int
    label_histogram: tuple[int, ...]


@dataclass(frozen=True)
class DatasetManifest:
    """A loaded, validated dataset manifest; ``directory`` is where it was read from (a ``Path``, or a
    URI string for object storage)."""

    directory: Path | str
    clip_shape: ClipShape
    num_classes: int
    class_names: tuple[str, ...]
    splits: dict[str, SplitInfo]
    info: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def split_path(self, split: str) -> Path | str:
        """Where ``split``'s Parquet file is (a path, or a URI), or ``DatasetError`` naming the known splits."""
        if split not in self.splits:
            known = ", ".join(sorted(self.splits)) or "none"
            raise DatasetError(f"{storage.child(self.directory, MANIFEST_NAME)}: no split '{split}' (has: {known})")
        return storage.child(self.directory, self.splits[split].path)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json`` (without ``directory``)."""
        return {
            "kind": DATASET_KIND,
            "schema_version": self.schema_version,
            "clip_shape": list(self.clip_shape),
            "dtype": CLIP_DTYPE,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "splits": {
                name: {"path": s.path, "num_examples": s.num_examples, "label_histogram": list(s.label_histogram)}
                for name, s in self.splits.items()
            },
            "info": self.info,
        }


class FieldReader:
    """Typed access to a parsed JSON manifest; every failure is a one-line ``DatasetError``."""

    def __init__(self, source: Path | str, fix: str) -> None:
        self.source = source
        self.fix = fix

    def fail(self, problem: str) -> DatasetError:
        """A ``DatasetError`` naming the manifest file, the problem and the fix."""
        return DatasetError(f"{self.source}: {problem}; {self.fix}")

    def get(self, obj: Any, key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
        """``obj[key]``, checked to be a ``kind`` (bools are never accepted as numbers)."""
        label = f"{where}{key}"
        if not isinstance(obj, dict) or key not in obj:
            raise self.fail(f"field '{label}' missing")
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            raise self.fail(f"field '{label}' should be {'/'.join(k.__name__ for k in kinds)}, got {value!r}")
        return value

    def int_list(self, obj: Any, key: str, length: int | None = None, where: str = "") -> list[int]:
        """A list of non-negative ints (optionally of a given length)."""
        value: list[int] = self.get(obj, key, list, where)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
            raise self.fail(f"field '{where}{key}' should hold non-negative integers")
        if length is not None and len(value) != length:
            raise self.fail(f"field '{where}{key}' has {len(value)} entries, expected {length}")
        return value

    def relative_path(self, obj: Any, key: str, where: str = "") -> str:
        """A path inside the manifest's directory (no absolute paths, no '..')."""
        value: str = self.get(obj, key, str, where)
        if Path(value).is_absolute() or ".." in Path(value).parts:
            raise self.fail(f"field '{where}{key}' must be a path inside the directory, got {value!r}")
        return value

    def clip_shape(self, obj: Any) -> ClipShape:
        """The (T, C, H, W) clip shape: four positive ints."""
        shape = self.get(obj, "clip_shape", list)
        if len(shape) != 4 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
            raise self.fail(f"clip_shape should be 4 positive ints [T, C, H, W], got {shape}")
        return (shape[0], shape[1], shape[2], shape[3])

    def header(self, obj: Any, kind: str) -> None:
        """Check the manifest's kind and schema version."""
        if not isinstance(obj, dict) or obj.get("kind") != kind:
            found = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
            raise self.fail(f"not a {kind} manifest (kind={found!r})")
        version = self.get(obj, "schema_version", int)
        if version != SCHEMA_VERSION:
            raise self.fail(f"schema_version {version} is not supported (this fedtwin reads {SCHEMA_VERSION})")


def read_json(path: Path | str, fix: str) -> Any:
    """Parse a JSON file (a path or a URI), mapping a missing or malformed file to a one-line ``DatasetError``."""
    try:
        if storage.is_remote(path):
            return json.loads(storage.read_text(path))
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; {fix}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: unreadable JSON ({err}); {fix}") from None


def load_dataset_manifest(dataset_dir: str | Path) -> DatasetManifest:
    """Read and validate ``dataset_dir/manifest.json`` (a local folder or a URI such as ``s3://b/data/x``).

    Raises:
        DatasetError: the manifest is missing, malformed, of another schema version, or inconsistent.
        StorageError: the object store refused (missing bucket, no credentials).
    """
    directory = storage.as_location(dataset_dir)
    path = storage.child(directory, MANIFEST_NAME)
    fr = FieldReader(path, REGENERATE_HINT)
    obj = read_json(path, REGENERATE_HINT)
    fr.header(obj, DATASET_KIND)
    clip_shape = fr.clip_shape(obj)
    if fr.get(obj, "dtype", str) != CLIP_DTYPE:
        raise fr.fail(f"dtype {obj['dtype']!r} is not supported (expected {CLIP_DTYPE!r})")
    num_classes = fr.get(obj, "num_classes", int)
    class_names = fr.get(obj, "class_names", list)
    if num_classes < 1 or len(class_names) != num_classes or not all(isinstance(c, str) for c in class_names):
        raise fr.fail(f"class_names should be {num_classes} strings, got {class_names!r}")
    splits = {}
    for name, entry in fr.get(obj, "splits", dict).items():
        where = f"splits.{name}."
        splits[name] = SplitInfo(
            path=fr.relative_path(entry, "path", where),
            num_examples=fr.get(entry, "num_examples", int, where),
            label_histogram=tuple(fr.int_list(entry, "label_histogram", num_classes, where)),
        )
        if sum(splits[name].label_histogram) != splits[name].num_examples:
            raise fr.fail(f"split '{name}': label_histogram does not sum to num_examples")
    info = obj.get("info", {})
    return DatasetManifest(
        directory, clip_shape, num_classes, tuple(class_names), splits, info if isinstance(info, dict) else {}
    )
