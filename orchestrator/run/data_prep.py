"""Data on first use: make a dataset and partition it once, then reuse both by content hash.

A dataset comes from the moving-digits generator (``data.generator``, when ``data.dataset`` is null) or
from a dataset plugin (``data.dataset`` with ``data.dataset_params``). Two runs with the same ``data``
section share ``<root>/datasets/<name>-<hash>`` and ``<root>/partitions/<dataset>-<hash>``. A file lock
keeps concurrent Tune trials from making the same data twice.

Dataset plugins. ``data.dataset`` names a built-in (``DATASETS``: ``moving-digits``), an entry point of
the ``fedtwin.datasets`` group or an import path ``"pkg.module:make"``: a callable
``make(out_dir: Path, params: dict, seed: int) -> None`` that creates ``out_dir`` (it does not exist
yet) as a fedtwin dataset directory with ``train`` and ``test`` splits: Parquet clips plus
``manifest.json``, most simply through :func:`fedtwin.pipelines.data.dataset_io.write_dataset`. Its output is
validated before it is moved into place; a failure is one line naming ``data.dataset``.

Object storage. ``data.root`` (and ``data.path``) may be URIs (``s3://bucket/prefix``, ``gs://``): data
is then made in a local temporary folder and uploaded with its ``manifest.json`` last, so a folder
without a manifest is never used. The lock is per node; two nodes making the same data at once both
upload the same deterministic files, which is harmless.
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedtwin.orchestrator.config.loader import from_dict, to_dict
from fedtwin.orchestrator.run import phases
from fedtwin.pipelines.core import storage
from fedtwin.pipelines.core.atomic_write import staged_input, staged_output
from fedtwin.pipelines.core.errors import DatasetError, FedtwinError
from fedtwin.pipelines.data.dataset_io import load_split
from fedtwin.pipelines.data.manifest import MANIFEST_NAME, load_dataset_manifest
from fedtwin.pipelines.data.moving_digits import MovingDigitsConfig, make_moving_digits_dataset
from fedtwin.pipelines.data.partition import PartitionConfig, partition_dataset
from fedtwin.pipelines.data.partition_manifest import record_source
from fedtwin.pipelines.plugins import load_plugin

if TYPE_CHECKING:
    from fedtwin.orchestrator.config.sections import DataConfig

logger = logging.getLogger(__name__)

DATASET_GROUP = "fedtwin.datasets"
#: Splits every dataset plugin must write (partitioning reads ``train``; evaluation reads ``test``).
REQUIRED_SPLITS = ("train", "test")


def make_moving_digits(out_dir: Path, params: Mapping[str, Any], seed: int) -> None:
    """The built-in dataset plugin ``moving-digits``: ``params`` are ``MovingDigitsConfig`` fields."""
    cfg = from_dict(MovingDigitsConfig, dict(params), "data.dataset_params")
    make_moving_digits_dataset(out_dir, cfg, seed=seed)


#: The built-in dataset plugins (the ``builtins`` table of the ``fedtwin.datasets`` group).
DATASETS: dict[str, Any] = {"moving-digits": make_moving_digits}


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _lock_path(root: Path | str, name: str) -> Path:
    """The lock file of ``name`` under ``root`` (for a URI root, a per-node file in the temp folder)."""
    if storage.is_remote(root):
        digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / "fedtwin-locks" / f"{digest}{name}"
    return Path(root) / name


def _has_manifest(folder: Path | str) -> bool:
    if storage.is_remote(folder):
        return storage.is_file(storage.join(str(folder), MANIFEST_NAME))
    return (Path(folder) / MANIFEST_NAME).is_file()


def ensure_generated(root: str | Path, generator: MovingDigitsConfig, seed: int) -> Path | str:
    """A moving-digits dataset directory for ``(generator, seed)`` under ``root``, created if missing.

    Every recipe that needs generated clips (clean source data, a shifted target domain, motion
    classes) calls this; equal settings share one directory. A URI ``root`` gives a URI.
    """
    root = storage.as_location(root)
    key = _digest({"generator": to_dict(generator), "seed": seed})
    out = storage.child(root, "datasets", f"moving-digits-{key}")
    with _locked(_lock_path(root, f".lock-dataset-{key}")):
        if not _has_manifest(out):
            logger.info("generating moving digits into %s", out)
            with (
                phases.phase("generating demo data (first use)"),
                staged_output(out, overwrite=True, what="data.root") as local,
            ):
                make_moving_digits_dataset(local, generator, seed=seed)
    return out


def _takes_out_dir_params_seed(obj: Any) -> bool:
    if not callable(obj):
        return False
    try:
        inspect.signature(obj).bind(Path("."), {}, 0)
    except TypeError:
        return False
    except ValueError:  # no introspectable signature: let the call decide
        pass
    return True


def resolve_dataset(ref: str, *, field: str = "data.dataset") -> Any:
    """The dataset plugin ``ref`` names (built-in, ``fedtwin.datasets`` entry point or import path).

    Raises:
        PluginError: one line naming ``field``.
    """
    return load_plugin(
        ref,
        DATASET_GROUP,
        DATASETS,
        field=field,
        check=_takes_out_dir_params_seed,
        expected="a callable make(out_dir, params, seed)",
        kind="dataset",
    )


def ensure_plugin_dataset(root: str | Path, ref: str, params: Mapping[str, Any], seed: int) -> Path | str:
    """The dataset directory dataset plugin ``ref`` makes from ``(params, seed)``, made once under ``root``.

    The plugin writes into a fresh temporary folder; its output is validated (manifest, the ``train``
    and ``test`` splits, every clip file against the manifest) and then renamed into place, so a broken
    or interrupted plugin never leaves a directory that later runs would reuse.

    Raises:
        PluginError: ``ref`` does not resolve to a ``make(out_dir, params, seed)`` callable.
        FedtwinError: the plugin rejected ``params`` or wrote an invalid dataset (one line naming
            ``data.dataset_params`` or ``data.dataset``).
    """
    make = resolve_dataset(ref)
    root = storage.as_location(root)
    key = _digest({"dataset": ref, "params": to_dict(params), "seed": seed})
    out = storage.child(root, "datasets", f"{_slug(ref)}-{key}")
    with _locked(_lock_path(root, f".lock-dataset-{key}")):
        if _has_manifest(out):
            return out
        if isinstance(out, str):  # object storage: made and checked locally, then uploaded
            logger.info("making dataset %s (%s) into %s", ref, params, out)
            with (
                phases.phase(f"making dataset {ref} (first use)"),
                staged_output(out, overwrite=True, what="data.root") as local,
            ):
                _call_plugin(make, ref, local, params, seed)
                _validate_output(local, ref)
            return out
        if out.exists():  # a folder without a manifest is no finished dataset (e.g. made by hand)
            raise FedtwinError(f"data.dataset: {out} exists without {MANIFEST_NAME}; remove it and run again")
        tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
        out.parent.mkdir(parents=True, exist_ok=True)
        logger.info("making dataset %s (%s) into %s", ref, params, out)
        try:
            with phases.phase(f"making dataset {ref} (first use)"):
                _call_plugin(make, ref, tmp, params, seed)
            _validate_output(tmp, ref)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _call_plugin(make: Any, ref: str, tmp: Path, params: Mapping[str, Any], seed: int) -> None:
    try:
        make(tmp, copy.deepcopy(dict(params)), seed)
    except FedtwinError:
        raise
    except (ValueError, TypeError, KeyError) as err:  # the plugin's own check of its parameters
        text = " ".join(str(err).split())
        raise FedtwinError(
            f"data.dataset_params: dataset {ref!r} rejected them ({type(err).__name__}: {text})"
        ) from None


def _validate_output(tmp: Path, ref: str) -> None:
    """Check what plugin ``ref`` wrote into ``tmp`` is a readable dataset with train and test splits."""
    hint = (
        "a dataset plugin must create out_dir with train and test splits "
        "(see fedtwin.pipelines.data.dataset_io.write_dataset)"
    )
    if not (tmp / MANIFEST_NAME).is_file():
        raise FedtwinError(f"data.dataset: {ref!r} wrote no {MANIFEST_NAME} into out_dir; {hint}")
    try:
        manifest = load_dataset_manifest(tmp)
        missing = [s for s in REQUIRED_SPLITS if s not in manifest.splits]
        if missing:
            raise FedtwinError(f"data.dataset: {ref!r} wrote no {', '.join(missing)} split; {hint}")
        for split in REQUIRED_SPLITS:
            load_split(tmp, split)
    except DatasetError as err:
        text = " ".join(str(err).split())
        raise FedtwinError(f"data.dataset: {ref!r} wrote an invalid dataset ({text})") from None


def _slug(ref: str) -> str:
    """A folder-name form of a plugin reference (``my_pkg.data:make`` -> ``my_pkg.data-make``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", ref).strip("-.") or "dataset"


def _check_one_source(data: DataConfig) -> None:
    if data.path is not None and getattr(data, "dataset", None) is not None:
        raise FedtwinError(
            f"data.dataset: {data.dataset!r} and data.path {data.path} both name the data; set one of them"
        )


def ensure_dataset(data: DataConfig) -> Path | str:
    """The (unpartitioned) dataset directory of ``data``: a dataset plugin's or moving digits from ``generator``."""
    _check_one_source(data)
    dataset = getattr(data, "dataset", None)
    if dataset is None:
        return ensure_generated(data.root, data.generator, data.seed)
    return ensure_plugin_dataset(data.root, dataset, getattr(data, "dataset_params", None) or {}, data.seed)


def existing_dir(path: str | Path, kind: str, make_hint: str) -> Path | str:
    """``data.path`` checked to hold a ``manifest.json``; ``kind``/``make_hint`` name what and how."""
    path = storage.as_location(path)
    if not _has_manifest(path):
        raise FedtwinError(
            f"data.path {path}: no manifest.json there; this recipe needs a {kind} ({make_hint}) "
            "or no data.path to generate moving digits"
        )
    return path


def dataset_or_generated(data: DataConfig) -> Path | str:
    """``data.path`` (a dataset directory with train and test splits) or the made dataset (see ``ensure_dataset``)."""
    _check_one_source(data)
    if data.path is None:
        return ensure_dataset(data)
    return existing_dir(data.path, "dataset directory", "`fedtwin data make moving-digits OUT/`")


def _partition_key(partition: PartitionConfig) -> dict[str, Any]:
    """The partition settings hashed into the folder name; empty ``params`` are left out so folders
    made before partitioner plugins existed keep their names."""
    key: dict[str, Any] = to_dict(partition)
    if not key.get("params"):
        key.pop("params", None)
    return key


def ensure_partition(data: DataConfig) -> Path | str:
    """The partition directory the run trains on: ``data.path`` or one made from the dataset.

    A URI ``data.root`` gives a URI: the dataset is downloaded, partitioned locally and uploaded.
    """
    _check_one_source(data)
    if data.path is not None:
        return existing_dir(data.path, "partition directory", "`fedtwin data partition IN/ OUT/ ...`")
    dataset = ensure_dataset(data)
    name = storage.name_of(dataset)
    root = storage.as_location(data.root)
    key = _digest({"dataset": name, "partition": _partition_key(data.partition)})
    out = storage.child(root, "partitions", f"{name}-{key}")
    with _locked(_lock_path(root, f".lock-partition-{key}")):
        if not _has_manifest(out):
            logger.info("partitioning %s into %s", dataset, out)
            with (
                phases.phase("partitioning"),
                staged_input(dataset) as src,
                staged_output(out, overwrite=True, what="data.root") as local,
            ):
                partition_dataset(src, local, data.partition)
                if storage.is_remote(dataset):
                    record_source(local, str(dataset))
    return out
