"""Atomic creation of output directories and files: readers never see a half-written dataset.

Everything is written into a hidden temporary sibling (same filesystem) and renamed into place. An
output on object storage (``s3://``, ``gs://``) is built in a local temporary folder first and then
uploaded with its marker file (``manifest.json``) last (:func:`staged_output`): object stores have no
rename, and readers treat a folder without its manifest as absent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fedtwin.pipelines.core import storage
from fedtwin.pipelines.core.errors import DatasetError


def check_output_dir(out_dir: Path, overwrite: bool, what: str) -> None:
    """Fail early (before any work) if ``out_dir`` holds something and ``overwrite`` is off."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"{out_dir}: exists and is not a directory; choose another output path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DatasetError(f"{out_dir}: already exists and is not empty; choose another {what} or pass --overwrite")


@contextlib.contextmanager
def atomic_directory(out_dir: Path, overwrite: bool = False, what: str = "output directory") -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out_dir`` when the block exits without error.

    On error the temporary directory is removed and ``out_dir`` is left as it was. With
    ``overwrite``, an existing ``out_dir`` is moved aside, replaced, then deleted.

    Raises:
        DatasetError: ``out_dir`` exists (or appeared meanwhile) and ``overwrite`` is False.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite, what)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # os.mkdir (not tempfile.mkdtemp, which forces mode 0700) so the result gets the usual umask mode.
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        yield tmp
        _commit(tmp, out_dir, overwrite, what)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(tmp: Path, out_dir: Path, overwrite: bool, what: str) -> None:
    old: Path | None = None
    if overwrite and out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
    try:
        # rename(2) replaces an empty directory and fails on a non-empty one, so a concurrent
        # writer that got there first is never clobbered.
        os.replace(tmp, out_dir)
    except OSError as err:
        if old is not None:
            os.replace(old, out_dir)
        raise DatasetError(
            f"{out_dir}: already exists ({err.strerror}); choose another {what} or pass --overwrite"
        ) from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged_output(
    target: str | os.PathLike[str],
    overwrite: bool = False,
    what: str = "output directory",
    marker: str = "manifest.json",
) -> Iterator[Path]:
    """Yield a local path to write ``target``'s folder into; on a URI, upload it (``marker`` last) on success.

    For a local ``target`` this yields ``target`` itself (the writer makes it atomically as before).
    For a URI it yields a path inside a fresh temporary folder; nothing is uploaded if the block fails.

    Raises:
        DatasetError: ``target`` holds something and ``overwrite`` is off.
        StorageError: bad scheme, missing bucket, no credentials.
    """
    if not storage.is_remote(target):
        yield Path(storage.as_location(target))
        return
    check_remote_output(str(target), overwrite, what)
    with tempfile.TemporaryDirectory(prefix="fedtwin-stage-") as tmp:
        local = Path(tmp) / storage.name_of(str(target))
        yield local
        if overwrite:
            storage.delete_file(storage.join(str(target), marker))
            storage.delete_dir(str(target))
        storage.upload_dir(local, str(target), last=[marker])


def check_remote_output(target: str, overwrite: bool, what: str) -> None:
    """An object-storage output must be usable (bucket, credentials, write access) and empty unless ``overwrite``."""
    storage.check_location(target, what, writable=True)
    if not overwrite and storage.list_dir(target):
        raise DatasetError(f"{target}: already exists and is not empty; choose another {what} or pass --overwrite")


@contextlib.contextmanager
def staged_input(location: str | os.PathLike[str]) -> Iterator[Path]:
    """A local folder holding ``location``'s files: the folder itself, or a temporary download of a URI."""
    if not storage.is_remote(location):
        yield Path(storage.as_location(location))
        return
    with tempfile.TemporaryDirectory(prefix="fedtwin-input-") as tmp:
        local = Path(tmp) / storage.name_of(str(location))
        storage.download_dir(str(location), local)
        yield local


def dumps_readable(obj: Any, indent: str = "") -> str:
    """Dump JSON with nested objects indented but small flat values on one line.

    Histograms, shapes and each device entry stay on one line, so a manifest of 10,000 devices has
    about 10,000 readable lines.
    """
    flat = json.dumps(obj)
    nested = isinstance(obj, (dict, list)) and any(
        isinstance(v, dict) or (isinstance(v, list) and any(isinstance(x, (dict, list)) for x in v))
        for v in (obj.values() if isinstance(obj, dict) else obj)
    )
    if not isinstance(obj, (dict, list)) or (not nested and len(flat) <= 200) or not obj:
        return flat
    inner = indent + "  "
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {dumps_readable(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    return "[\n" + ",\n".join(inner + dumps_readable(v, inner) for v in obj) + f"\n{indent}]"


def write_with(path: Path | str, writer: Callable[[str], Any]) -> None:
    """Call ``writer(tmp_path)`` on a temp sibling of ``path``, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file + ``os.replace``."""
    write_with(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(path: Path | str, obj: Any, text: str | None = None) -> None:
    """Write ``obj`` as JSON (numpy scalars and arrays allowed), or the given ``text``, atomically."""
    body = text if text is not None else json.dumps(obj, indent=2, default=jsonable) + "\n"
    write_text_atomic(path, body)


def jsonable(obj: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths."""
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
