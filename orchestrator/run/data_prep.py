"""Data on first use: generate and partition moving digits once, then reuse them by content hash.

Two runs with the same ``data`` section share ``<root>/datasets/<hash>`` and ``<root>/partitions/<hash>``.
A file lock keeps concurrent Tune trials from generating the same data twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path

from orchestrator.config.spec import DataConfig
from orchestrator.config.loader import to_dict
from pipelines.core.errors import FedtwinError
from pipelines.data.moving_digits import MovingDigitsConfig, make_moving_digits_dataset
from pipelines.data.partition import partition_dataset

logger = logging.getLogger(__name__)


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_generated(root: str | Path, generator: MovingDigitsConfig, seed: int) -> Path:
    """A moving-digits dataset directory for ``(generator, seed)`` under ``root``, created if missing.

    Every recipe that needs generated clips (clean source data, a shifted target domain, motion
    classes) calls this; equal settings share one directory.
    """
    root = Path(root)
    key = _digest({"generator": to_dict(generator), "seed": seed})
    out = root / "datasets" / f"moving-digits-{key}"
    with _locked(root / f".lock-dataset-{key}"):
        if not (out / "manifest.json").is_file():
            logger.info("generating moving digits into %s", out)
            make_moving_digits_dataset(out, generator, seed=seed)
    return out


def ensure_dataset(data: DataConfig) -> Path:
    """The generated (unpartitioned) dataset directory of ``data.generator``."""
    return ensure_generated(data.root, data.generator, data.seed)


def existing_dir(path: str | Path, kind: str, make_hint: str) -> Path:
    """``data.path`` checked to hold a ``manifest.json``; ``kind``/``make_hint`` name what and how."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise FedtwinError(
            f"data.path {path}: no manifest.json there; this recipe needs a {kind} ({make_hint}) "
            "or no data.path to generate moving digits"
        )
    return path


def dataset_or_generated(data: DataConfig) -> Path:
    """``data.path`` (a dataset directory with train and test splits) or the generated moving digits."""
    if data.path is None:
        return ensure_dataset(data)
    return existing_dir(data.path, "dataset directory", "`fedtwin data make moving-digits OUT/`")


def ensure_partition(data: DataConfig) -> Path:
    """The partition directory the run trains on: ``data.path`` or a generated one."""
    if data.path is not None:
        return existing_dir(data.path, "partition directory", "`fedtwin data partition IN/ OUT/ ...`")
    dataset = ensure_dataset(data)
    root = Path(data.root)
    key = _digest({"dataset": dataset.name, "partition": to_dict(data.partition)})
    out = root / "partitions" / f"{dataset.name}-{key}"
    with _locked(root / f".lock-partition-{key}"):
        if not (out / "manifest.json").is_file():
            logger.info("partitioning %s into %s", dataset, out)
            partition_dataset(dataset, out, data.partition)
    return out
