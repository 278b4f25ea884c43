"""Local paths and object-storage URIs behind one small API (``pyarrow.fs``).

Every place fedtwin stores or reads data, run folders or sweeps takes either a local path or a URI:

- ``s3://bucket/prefix``: :class:`pyarrow.fs.S3FileSystem`. Credentials come from the AWS chain
  (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``~/.aws/credentials``
  and ``AWS_PROFILE``, then the EC2 instance profile). The region is ``AWS_REGION`` or
  ``AWS_DEFAULT_REGION`` (else looked up from the bucket). An S3-compatible server (MinIO, moto,
  Ceph) is named by ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (e.g. ``http://127.0.0.1:9000``),
  which fedtwin passes to pyarrow as ``endpoint_override``/``scheme`` (pyarrow does not read them).
- ``gs://bucket/prefix`` (or ``gcs://``): :class:`pyarrow.fs.GcsFileSystem` with Google's default
  credentials (``GOOGLE_APPLICATION_CREDENTIALS``, or the VM's service account).
- ``file:///abs/path`` and plain paths: the local disk.

Object stores have no rename, so "atomic" means: one object is written with one PUT (readers see
the old or the new object, never a part of it), and a multi-file artifact (a dataset, a partition, a
checkpoint) is published by writing its marker file (``manifest.json``, ``meta.json``) last; readers
treat a folder without its marker as absent.

Errors are :class:`StorageError` (a ``FedtwinError``): one line naming the location and the fix.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fedtwin.pipelines.core.storage_errors import ENDPOINT_VARS as _ENDPOINT_VARS
from fedtwin.pipelines.core.storage_errors import (  # noqa: F401 (StorageError, has_aws_credentials: re-exported)
    StorageError,
    error_for,
    errors_as_storage,
    has_aws_credentials,
)

#: Schemes fedtwin reads and writes (``gcs`` is an alias of ``gs``).
SCHEMES = ("s3", "gs", "gcs", "file")
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")


# ---------------------------------------------------------------------------------------------- names
def is_uri(location: object) -> bool:
    """Whether ``location`` is a ``scheme://...`` string (any scheme; see :func:`check_scheme`)."""
    return isinstance(location, str) and _URI.match(location) is not None


def is_remote(location: object) -> bool:
    """Whether ``location`` lives on object storage (a URI other than ``file://``)."""
    return is_uri(location) and scheme_of(str(location)) != "file"


def scheme_of(location: str | os.PathLike[str]) -> str:
    """``s3``, ``gs``, ``file``... for a URI; ``""`` for a plain path."""
    match = _URI.match(str(location)) if isinstance(location, str) else None
    return match.group(1).lower() if match else ""


def check_scheme(location: str | os.PathLike[str], field: str = "path") -> None:
    """``StorageError`` unless ``location`` is a plain path or a URI with a supported scheme."""
    scheme = scheme_of(location)
    if scheme and scheme not in SCHEMES:
        raise StorageError(
            f"{field} {location}: unknown scheme '{scheme}://'; use a local path, s3://, gs:// or file://"
        )
    if scheme in ("s3", "gs", "gcs") and not urlparse(str(location)).netloc:
        raise StorageError(f"{field} {location}: no bucket in the URI; write {scheme}://BUCKET/prefix")


def as_location(location: str | os.PathLike[str]) -> Path | str:
    """The canonical form: a ``Path`` for local places (``file://`` included), the URI string otherwise."""
    if isinstance(location, Path):
        return location
    text = os.fspath(location)
    check_scheme(text)
    if scheme_of(text) == "file":
        return Path(urlparse(text).path)
    return text if is_uri(text) else Path(text)


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """``base/part/...`` as a string, for paths and URIs alike (no ``//`` collapsing of the scheme)."""
    if not is_uri(base):
        return str(Path(os.fspath(base), *parts))
    out = str(base).rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            out += "/" + part
    return out


def child(base: Path | str, *parts: str) -> Path | str:
    """Like :func:`join`, but keeps a ``Path`` a ``Path`` (local) and a URI a string."""
    return Path(base, *parts) if isinstance(base, Path) else as_location(join(base, *parts))


def name_of(location: str | os.PathLike[str]) -> str:
    """The last component (``s3://b/runs/x`` -> ``x``)."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def parent_of(location: str | os.PathLike[str]) -> str:
    """Everything but the last component."""
    if not is_uri(location):
        return str(Path(os.fspath(location)).parent)
    text = str(location).rstrip("/")
    head, _, _ = text.rpartition("/")
    return head if not head.endswith(":/") else text


def absolute(location: str | os.PathLike[str]) -> str:
    """A URI unchanged; a local path made absolute (trials and jobs run in other folders)."""
    return str(location) if is_uri(location) else str(Path(os.fspath(location)).resolve())


# ---------------------------------------------------------------------------------------------- filesystems
_FS_CACHE: dict[tuple[Any, ...], Any] = {}
_FS_LOCK = threading.Lock()


def _s3_options(bucket: str) -> dict[str, Any]:
    # Delayed open: a small object is one PutObject (not a multipart upload), and opening costs no request.
    opts: dict[str, Any] = {"allow_delayed_open": True}
    endpoint = next((os.environ[v] for v in _ENDPOINT_VARS if os.environ.get(v)), None)
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        opts["endpoint_override"] = parsed.netloc + parsed.path.rstrip("/")
        opts["scheme"] = parsed.scheme or "https"
    region = next((os.environ[v] for v in _REGION_VARS if os.environ.get(v)), None)
    if region:
        opts["region"] = region
    elif not endpoint:
        import pyarrow.fs as pafs

        with contextlib.suppress(OSError):  # unknown bucket: the first real call says so
            opts["region"] = pafs.resolve_s3_region(bucket)
    return opts


def filesystem(location: str | os.PathLike[str]) -> Any:
    """The ``pyarrow.fs.FileSystem`` for ``location`` (one per scheme, bucket and AWS settings)."""
    import pyarrow.fs as pafs

    check_scheme(location)
    scheme = scheme_of(location)
    if scheme in ("", "file"):
        return pafs.LocalFileSystem()
    bucket = urlparse(str(location)).netloc
    env = tuple(os.environ.get(v, "") for v in (*_ENDPOINT_VARS, *_REGION_VARS, "AWS_ACCESS_KEY_ID", "AWS_PROFILE"))
    key = (scheme, bucket if scheme == "s3" else "", env)
    with _FS_LOCK:
        if key not in _FS_CACHE:
            if scheme == "s3":
                _FS_CACHE[key] = pafs.S3FileSystem(**_s3_options(bucket))
            else:
                _FS_CACHE[key] = pafs.GcsFileSystem()
        return _FS_CACHE[key]


def resolve(location: str | os.PathLike[str]) -> tuple[Any, str]:
    """``(filesystem, path inside it)``: ``s3://b/k`` -> ``(S3FileSystem, "b/k")``; local -> absolute path."""
    fs = filesystem(location)
    text = os.fspath(location)
    if not is_uri(text):
        return fs, str(Path(text).absolute())
    parsed = urlparse(text)
    if scheme_of(text) == "file":
        return fs, parsed.path
    return fs, (parsed.netloc + parsed.path).rstrip("/")


# ---------------------------------------------------------------------------------------------- reads
def exists(location: str | os.PathLike[str]) -> bool:
    """Whether a file or a folder (a non-empty prefix on object stores) is there."""
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    with errors_as_storage(location):
        return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(location: str | os.PathLike[str]) -> bool:
    """Whether a file (object) is there."""
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    with errors_as_storage(location):
        return fs.get_file_info(path).type == pafs.FileType.File


def is_dir(location: str | os.PathLike[str]) -> bool:
    """Whether a folder (a non-empty prefix, or an explicit directory marker) is there."""
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    with errors_as_storage(location):
        return fs.get_file_info(path).type == pafs.FileType.Directory


def list_dir(location: str | os.PathLike[str]) -> list[str]:
    """Names directly inside a folder (files and sub-folders), sorted; ``[]`` if it is missing."""
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    with errors_as_storage(location):
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    return sorted(info.base_name for info in infos)


def list_files(location: str | os.PathLike[str]) -> list[str]:
    """Relative paths (``/``-separated) of every file below a folder, sorted; ``[]`` if it is missing."""
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    with errors_as_storage(location):
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=True))
    root = path.rstrip("/") + "/"
    return sorted(i.path[len(root) :] for i in infos if i.type == pafs.FileType.File and i.path.startswith(root))


def open_input_file(location: str | os.PathLike[str]) -> Any:
    """A random-access reader (``pyarrow.NativeFile``): Parquet reads only the footer and the row groups asked for.

    Raises:
        FileNotFoundError: nothing there.
        StorageError: the store refused (missing bucket, no credentials, unreachable endpoint).
    """
    fs, path = resolve(location)
    with errors_as_storage(location):
        try:
            return fs.open_input_file(path)
        except FileNotFoundError:
            raise
        except OSError as err:
            if "not found" in str(err).lower() or "no such file" in str(err).lower():
                raise FileNotFoundError(str(location)) from None
            raise


def read_bytes(location: str | os.PathLike[str]) -> bytes:
    """The whole file (``FileNotFoundError`` if missing)."""
    with open_input_file(location) as fh:
        return bytes(fh.read())


def read_text(location: str | os.PathLike[str]) -> str:
    """The whole file as UTF-8 text."""
    return read_bytes(location).decode("utf-8")


# ---------------------------------------------------------------------------------------------- writes
def write_bytes_atomic(location: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``location`` with ``data``: temp file + rename locally, one PUT on object stores."""
    if not is_remote(location):
        path = Path(as_location(location))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return
    fs, key = resolve(location)
    with errors_as_storage(location), fs.open_output_stream(key) as out:
        out.write(data)


def write_text_atomic(location: str | os.PathLike[str], text: str) -> None:
    """:func:`write_bytes_atomic` of UTF-8 text."""
    write_bytes_atomic(location, text.encode("utf-8"))


def upload_file(local: str | os.PathLike[str], location: str | os.PathLike[str]) -> None:
    """Copy one local file to ``location`` (one object, streamed)."""
    if not is_remote(location):
        target = Path(as_location(location))
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.copyfile(local, tmp)
        os.replace(tmp, target)
        return
    fs, path = resolve(location)
    with errors_as_storage(location), open(local, "rb") as src, fs.open_output_stream(path) as out:
        shutil.copyfileobj(src, out, 8 * 2**20)


def download_file(location: str | os.PathLike[str], local: str | os.PathLike[str]) -> None:
    """Copy one file from ``location`` to a local path."""
    Path(local).parent.mkdir(parents=True, exist_ok=True)
    with open_input_file(location) as src, open(local, "wb") as out:
        while chunk := src.read(8 * 2**20):
            out.write(chunk)


def upload_dir(local: str | os.PathLike[str], location: str | os.PathLike[str], last: Iterable[str] = ()) -> None:
    """Copy a local folder's files to ``location``; the relative paths in ``last`` go last (markers)."""
    root = Path(local)
    last = [name for name in last if (root / name).is_file()]
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    for rel in [f for f in files if f not in last] + list(last):
        upload_file(root / rel, join(location, rel))


def download_dir(location: str | os.PathLike[str], local: str | os.PathLike[str]) -> None:
    """Copy every file below ``location`` into a local folder."""
    for rel in list_files(location):
        download_file(join(location, rel), Path(local, *rel.split("/")))


def delete_file(location: str | os.PathLike[str]) -> None:
    """Remove one file; nothing if it is missing."""
    if not is_remote(location):
        with contextlib.suppress(FileNotFoundError):
            Path(as_location(location)).unlink()
        return
    fs, path = resolve(location)
    with contextlib.suppress(FileNotFoundError), errors_as_storage(location):
        fs.delete_file(path)


def delete_dir(location: str | os.PathLike[str]) -> None:
    """Remove a folder and everything below it; nothing if it is missing."""
    if not is_remote(location):
        shutil.rmtree(as_location(location), ignore_errors=True)
        return
    fs, path = resolve(location)
    with contextlib.suppress(FileNotFoundError), errors_as_storage(location):
        fs.delete_dir(path)


# ---------------------------------------------------------------------------------------------- checks
def check_location(location: str | os.PathLike[str], field: str, *, writable: bool = False) -> None:
    """Preflight: the scheme is known and, on object storage, the bucket exists and answers with our credentials.

    Costs one or two requests; with ``writable`` a small probe object is written and deleted, so a
    read-only credential fails here and not after a run's first round.

    Raises:
        StorageError: one line naming ``field`` (exit 2).
    """
    check_scheme(location, field)
    if not is_remote(location):
        return
    import pyarrow.fs as pafs

    if scheme_of(location) == "s3" and not has_aws_credentials():
        raise StorageError(
            f"{field} {location}: no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE (~/.aws/credentials), or run on a node with an instance profile"
        )
    fs, path = resolve(location)
    bucket = path.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket)
    except OSError as err:
        raise error_for(location, err, field) from None
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{field} {location}: bucket '{bucket}' does not exist; create it or fix {field}")
    if writable:
        probe = f"{path}/.fedtwin-write-probe-{os.getpid()}"
        try:
            with fs.open_output_stream(probe) as out:
                out.write(b"")
            fs.delete_file(probe)
        except OSError as err:
            raise error_for(location, err, field) from None
    else:
        try:
            fs.get_file_info(path)
        except OSError as err:
            raise error_for(location, err, field) from None
